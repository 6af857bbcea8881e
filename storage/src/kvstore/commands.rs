//! [`CommandStore`] over a [`KvEngine`]: command records, the per-device history, the
//! creation-time index, the idempotency keys, and the durable command cache (a FIFO queue per
//! device, the deadline index of PENDING and SENT commands, and each device's SENT commands),
//! all changed together under the device's lock.

use fleetgate_model::command::{Command, CommandEvent, CommandMode, CommandStatus, validate_key};
use fleetgate_model::{CommandId, DeviceId, Timestamp};

use super::{KvStore, LockKind, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, Entry, KeyRange, KvEngine, WriteBatch};
use crate::traits::{CommandStore, Enqueued, Mutation, Page, not_found};
use crate::value;

fn durability_of(c: &Command) -> Durability {
    if c.status == CommandStatus::Pending || c.mode == CommandMode::Async {
        Durability::Synced
    } else {
        Durability::Buffered
    }
}

fn command_id_of(cf: Cf, key: &[u8], v: &[u8]) -> Result<CommandId> {
    <[u8; 16]>::try_from(v)
        .map(CommandId::from_bytes)
        .map_err(|_| StorageError::Corrupt {
            cf: cf.name(),
            key: value::escape(key),
            reason: "index entry is not a command id".into(),
        })
}

/// The command's deadline index entry, while it has a deadline (PENDING with an expiry, SENT
/// with an ack deadline).
pub(super) fn deadline_key(c: &Command) -> Option<Vec<u8>> {
    c.deadline()
        .map(|at| keys::deadline(Some((at, &c.command_id))))
}

/// The device's SENT entry of the command, while it is SENT.
pub(super) fn sent_key(c: &Command) -> Option<Vec<u8>> {
    (c.status == CommandStatus::Sent).then(|| {
        let at = c.sent_time.unwrap_or(c.created_time);
        keys::sent(&c.device_id, Some((at, &c.command_id)))
    })
}

/// The device's idempotency entry of the command, if it has a key.
pub(super) fn idempotency_key(c: &Command) -> Option<Vec<u8>> {
    c.idempotency_key
        .as_deref()
        .map(|k| keys::idempotency(&c.device_id, Some(k)))
}

/// Adds to a batch the moves of the index entries derived from a command's state (deadline,
/// SENT entry) when it changes from `old` to `new`.
fn reindex(b: &mut WriteBatch, old: &Command, new: &Command) {
    let moves = [
        (
            deadline_key(old),
            deadline_key(new),
            new.device_id.as_str().as_bytes().to_vec(),
        ),
        (sent_key(old), sent_key(new), Vec::new()),
    ];
    for (before, after, value) in moves {
        if before == after {
            continue;
        }
        if let Some(k) = before {
            b.delete(Cf::CommandQueue, k);
        }
        if let Some(k) = after {
            b.put(Cf::CommandQueue, k, value);
        }
    }
}

impl<E: KvEngine> KvStore<E> {
    fn queue_entries(&self, device: &DeviceId, limit: usize) -> Result<Vec<Entry>> {
        self.engine.scan(
            Cf::CommandQueue,
            &KeyRange::prefix(&keys::queue(device, None)),
            limit,
        )
    }

    fn remove_from_queue(&self, b: &mut WriteBatch, c: &Command) -> Result<()> {
        // A device holds at most a few dozen pending commands: scanning its queue is cheap.
        for (k, v) in self.queue_entries(&c.device_id, usize::MAX)? {
            if command_id_of(Cf::CommandQueue, &k, &v)? == c.command_id {
                b.delete(Cf::CommandQueue, k);
            }
        }
        Ok(())
    }

    /// Adds the removal of a command's record and every entry derived from it (history, time,
    /// idempotency, deadline and SENT entries; not its queue entry) to a batch.
    fn delete_command_entries(&self, b: &mut WriteBatch, c: &Command) {
        b.delete(Cf::Commands, keys::command(&c.command_id));
        b.delete(
            Cf::Commands,
            keys::command_history(&c.device_id, Some((c.created_time, &c.command_id))),
        );
        b.delete(
            Cf::Commands,
            keys::command_by_time(Some((c.created_time, &c.command_id))),
        );
        if let Some(k) = idempotency_key(c) {
            b.delete(Cf::Commands, k);
        }
        if let Some(k) = deadline_key(c) {
            b.delete(Cf::CommandQueue, k);
        }
        if let Some(k) = sent_key(c) {
            b.delete(Cf::CommandQueue, k);
        }
    }

    /// Adds the removal of every command of `device` (queue, deadline, SENT and idempotency
    /// entries, records, indexes) to a batch.
    pub(super) fn delete_device_commands(
        &self,
        b: &mut WriteBatch,
        device: &DeviceId,
    ) -> Result<()> {
        let prefix = keys::command_history(device, None);
        let mut range = KeyRange::prefix(&prefix);
        loop {
            let entries = self.engine.scan(Cf::Commands, &range, 1024)?;
            for (k, _) in &entries {
                if let Some(id) = keys::tail::<16>(k).map(CommandId::from_bytes)
                    && let Some(c) = self.get_command(&id)?
                {
                    self.delete_command_entries(b, &c);
                }
                b.delete(Cf::Commands, k.clone());
            }
            match entries.last() {
                Some((k, _)) if entries.len() == 1024 => {
                    range = KeyRange::prefix_after(&prefix, Some(k))
                }
                _ => break,
            }
        }
        // The device's queue, and any entry whose record is gone (never expected; cleaned up
        // all the same).
        for (cf, prefix) in [
            (Cf::CommandQueue, keys::queue(device, None)),
            (Cf::CommandQueue, keys::sent(device, None)),
            (Cf::Commands, keys::idempotency(device, None)),
        ] {
            for (k, _) in self
                .engine
                .scan(cf, &KeyRange::prefix(&prefix), usize::MAX)?
            {
                b.delete(cf, k);
            }
        }
        Ok(())
    }

    fn commands_for(
        &self,
        cf: Cf,
        entries: &[Entry],
        id_of: impl Fn(&[u8], &[u8]) -> Result<CommandId>,
    ) -> Result<Vec<Command>> {
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let id = id_of(k, v)?;
            match self.get_command(&id)? {
                Some(c) => out.push(c),
                None => {
                    return Err(StorageError::Corrupt {
                        cf: cf.name(),
                        key: value::escape(k),
                        reason: format!("index entry for missing command {id}"),
                    });
                }
            }
        }
        Ok(out)
    }
}

fn tail_command_id(cf: Cf) -> impl Fn(&[u8], &[u8]) -> Result<CommandId> {
    move |k, _| {
        keys::tail::<16>(k)
            .map(CommandId::from_bytes)
            .ok_or_else(|| StorageError::Corrupt {
                cf: cf.name(),
                key: value::escape(k),
                reason: "index entry too short".into(),
            })
    }
}

impl<E: KvEngine> CommandStore for KvStore<E> {
    fn enqueue_command(&self, c: &Command) -> Result<Enqueued> {
        for (field, key) in [
            ("supersede_key", &c.supersede_key),
            ("idempotency_key", &c.idempotency_key),
        ] {
            if let Some(k) = key {
                validate_key(k).map_err(|e| StorageError::Conflict(format!("{field} {e}")))?;
            }
        }
        let device = &c.device_id;
        let _g = self.lock(&[(LockKind::Device, device.as_str())]);
        if !self.exists(Cf::Devices, &keys::id(device.as_str()))? {
            return Err(not_found("device", device));
        }
        if let Some(k) = idempotency_key(c)
            && let Some(v) = self.engine.get(Cf::Commands, &k)?
        {
            let id = command_id_of(Cf::Commands, &k, &v)?;
            let existing = self
                .get_command(&id)?
                .ok_or_else(|| StorageError::Corrupt {
                    cf: Cf::Commands.name(),
                    key: value::escape(&k),
                    reason: format!("idempotency entry for missing command {id}"),
                })?;
            return Ok(Enqueued::Existing(existing));
        }
        if self.exists(Cf::Commands, &keys::command(&c.command_id))? {
            return Err(StorageError::AlreadyExists {
                kind: "command",
                id: c.command_id.to_string(),
            });
        }
        let mut b = WriteBatch::new();
        let pending = c.status == CommandStatus::Pending;
        let queued = if pending || c.supersede_key.is_some() {
            self.queue_entries(device, usize::MAX)?
        } else {
            Vec::new()
        };
        let mut superseded = Vec::new();
        if let Some(key) = &c.supersede_key {
            for (k, v) in &queued {
                let id = command_id_of(Cf::CommandQueue, k, v)?;
                let Some(old) = self.get_command(&id)? else {
                    continue;
                };
                if old.status != CommandStatus::Pending
                    || old.supersede_key.as_deref() != Some(key.as_str())
                {
                    continue;
                }
                let mut new = old.clone();
                let at = c.created_time.max(old.created_time);
                new.apply(CommandEvent::Superseded { by: c.command_id }, at)
                    .map_err(StorageError::abort)?;
                b.delete(Cf::CommandQueue, k.clone());
                reindex(&mut b, &old, &new);
                put(&mut b, Cf::Commands, keys::command(&id), &new)?;
                superseded.push(new);
            }
        }
        if pending {
            let max = self.limits.max_pending_commands;
            if queued.len() - superseded.len() >= max {
                return Err(StorageError::LimitExceeded {
                    what: "pending commands per device",
                    limit: max as u64,
                });
            }
            let seq = match queued.last() {
                None => 0,
                Some((k, _)) => {
                    keys::tail::<8>(k).map_or(0, |t| u64::from_be_bytes(t).saturating_add(1))
                }
            };
            b.put(
                Cf::CommandQueue,
                keys::queue(device, Some(seq)),
                c.command_id.as_bytes().to_vec(),
            );
        }
        if let Some(k) = deadline_key(c) {
            b.put(Cf::CommandQueue, k, device.as_str());
        }
        if let Some(k) = sent_key(c) {
            b.put(Cf::CommandQueue, k, Vec::new());
        }
        if let Some(k) = idempotency_key(c) {
            b.put(Cf::Commands, k, c.command_id.as_bytes().to_vec());
        }
        put(&mut b, Cf::Commands, keys::command(&c.command_id), c)?;
        b.put(
            Cf::Commands,
            keys::command_history(device, Some((c.created_time, &c.command_id))),
            Vec::new(),
        );
        b.put(
            Cf::Commands,
            keys::command_by_time(Some((c.created_time, &c.command_id))),
            Vec::new(),
        );
        let durability = if superseded.is_empty() {
            durability_of(c)
        } else {
            Durability::Synced
        };
        self.engine.write(b, durability)?;
        Ok(Enqueued::Created { superseded })
    }

    fn get_command(&self, id: &CommandId) -> Result<Option<Command>> {
        self.read(Cf::Commands, &keys::command(id))
    }

    fn update_command(&self, id: &CommandId, f: Mutation<'_, Command>) -> Result<Command> {
        let device = self
            .get_command(id)?
            .ok_or_else(|| not_found("command", id))?
            .device_id;
        let _g = self.lock(&[(LockKind::Device, device.as_str())]);
        let old = self
            .get_command(id)?
            .ok_or_else(|| not_found("command", id))?;
        let mut new = old.clone();
        f(&mut new)?;
        if new.command_id != old.command_id
            || new.device_id != old.device_id
            || new.created_time != old.created_time
            || new.expires_at != old.expires_at
            || new.supersede_key != old.supersede_key
            || new.idempotency_key != old.idempotency_key
        {
            return Err(StorageError::Conflict(
                "a command's id, device, creation time, expiry and keys cannot change".into(),
            ));
        }
        if new.status == CommandStatus::Pending && old.status != CommandStatus::Pending {
            return Err(StorageError::Conflict(
                "a command cannot return to PENDING".into(),
            ));
        }
        let mut b = WriteBatch::new();
        if old.status == CommandStatus::Pending && new.status != CommandStatus::Pending {
            self.remove_from_queue(&mut b, &old)?;
        }
        reindex(&mut b, &old, &new);
        put(&mut b, Cf::Commands, keys::command(id), &new)?;
        self.engine.write(b, durability_of(&old))?;
        Ok(new)
    }

    fn pending_commands(&self, device: &DeviceId, limit: usize) -> Result<Vec<Command>> {
        let entries = self.queue_entries(device, limit)?;
        self.commands_for(Cf::CommandQueue, &entries, |k, v| {
            command_id_of(Cf::CommandQueue, k, v)
        })
    }

    fn due_commands(&self, now: Timestamp, limit: usize) -> Result<Vec<Command>> {
        let range = KeyRange {
            start: keys::deadline(None),
            end: [
                keys::deadline(None).as_slice(),
                &keys::time_bytes(now.plus_millis(1)),
            ]
            .concat(),
        };
        let entries = self.engine.scan(Cf::CommandQueue, &range, limit)?;
        self.commands_for(
            Cf::CommandQueue,
            &entries,
            tail_command_id(Cf::CommandQueue),
        )
    }

    fn unsettled_command(&self, device: &DeviceId) -> Result<Option<Command>> {
        let entries = self.engine.scan(
            Cf::CommandQueue,
            &KeyRange::prefix(&keys::sent(device, None)),
            1,
        )?;
        Ok(self
            .commands_for(
                Cf::CommandQueue,
                &entries,
                tail_command_id(Cf::CommandQueue),
            )?
            .pop())
    }

    fn list_device_commands(
        &self,
        device: &DeviceId,
        status: Option<CommandStatus>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Command>> {
        self.filtered_page(
            Cf::Commands,
            &keys::command_history(device, None),
            cursor,
            limit,
            |k, _| {
                let Some(id) = keys::tail::<16>(k).map(CommandId::from_bytes) else {
                    return Ok(None);
                };
                Ok(self
                    .get_command(&id)?
                    .filter(|c| status.is_none_or(|s| s == c.status)))
            },
        )
    }

    fn prune_commands(&self, before: Timestamp, limit: usize) -> Result<usize> {
        let prefix = keys::command_by_time(None);
        let end = [prefix.as_slice(), &keys::time_bytes(before)].concat();
        let mut range = KeyRange {
            start: prefix.clone(),
            end: end.clone(),
        };
        let mut pruned = 0;
        while pruned < limit {
            let entries = self.engine.scan(Cf::Commands, &range, 256)?;
            let mut b = WriteBatch::new();
            for (k, _) in &entries {
                if pruned == limit {
                    break;
                }
                let Some(id) = keys::tail::<16>(k).map(CommandId::from_bytes) else {
                    continue;
                };
                match self.get_command(&id)? {
                    // Terminal states never change again, so no lock is needed to delete them.
                    Some(c) if c.status.is_terminal() => {
                        self.delete_command_entries(&mut b, &c);
                        pruned += 1;
                    }
                    // Unsettled commands stay, however old.
                    Some(_) => {}
                    None => b.delete(Cf::Commands, k.clone()),
                }
            }
            if !b.is_empty() {
                self.engine.write(b, Durability::Buffered)?;
            }
            match entries.last() {
                Some((k, _)) if entries.len() == 256 => {
                    range = KeyRange {
                        start: [k.as_slice(), &[0]].concat(),
                        end: end.clone(),
                    };
                }
                _ => break,
            }
        }
        Ok(pruned)
    }
}
