//! [`CommandStore`] over a [`KvEngine`]: command records, the per-device history, the
//! creation-time index, and the durable command cache (a FIFO queue per device plus an expiry
//! index), all changed together under the device's lock.

use fleetgate_model::command::{Command, CommandMode, CommandStatus};
use fleetgate_model::{CommandId, DeviceId, Timestamp};

use super::{KvStore, LockKind, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, Entry, KeyRange, KvEngine, WriteBatch};
use crate::traits::{CommandStore, Mutation, Page, not_found};
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
            reason: "queue entry is not a command id".into(),
        })
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
        if let Some(at) = c.expires_at {
            b.delete(Cf::CommandQueue, keys::expiry(Some((at, &c.command_id))));
        }
        Ok(())
    }

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
    }

    /// Adds the removal of every command of `device` (queue, expiry, records, indexes) to a batch.
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
                    if c.status == CommandStatus::Pending {
                        self.remove_from_queue(b, &c)?;
                    }
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
        // Queue entries whose record is gone (never expected; cleaned up all the same).
        for (k, _) in self.queue_entries(device, usize::MAX)? {
            b.delete(Cf::CommandQueue, k);
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

impl<E: KvEngine> CommandStore for KvStore<E> {
    fn insert_command(&self, c: &Command) -> Result<()> {
        let _g = self.lock(&[(LockKind::Device, c.device_id.as_str())]);
        if !self.exists(Cf::Devices, &keys::id(c.device_id.as_str()))? {
            return Err(not_found("device", &c.device_id));
        }
        if self.exists(Cf::Commands, &keys::command(&c.command_id))? {
            return Err(StorageError::AlreadyExists {
                kind: "command",
                id: c.command_id.to_string(),
            });
        }
        let mut b = WriteBatch::new();
        if c.status == CommandStatus::Pending {
            let max = self.limits.max_pending_commands;
            let queued = self.queue_entries(&c.device_id, max.saturating_add(1))?;
            if queued.len() >= max {
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
                keys::queue(&c.device_id, Some(seq)),
                c.command_id.as_bytes().to_vec(),
            );
            if let Some(at) = c.expires_at {
                b.put(
                    Cf::CommandQueue,
                    keys::expiry(Some((at, &c.command_id))),
                    c.device_id.as_str(),
                );
            }
        }
        put(&mut b, Cf::Commands, keys::command(&c.command_id), c)?;
        b.put(
            Cf::Commands,
            keys::command_history(&c.device_id, Some((c.created_time, &c.command_id))),
            Vec::new(),
        );
        b.put(
            Cf::Commands,
            keys::command_by_time(Some((c.created_time, &c.command_id))),
            Vec::new(),
        );
        self.engine.write(b, durability_of(c))
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
        {
            return Err(StorageError::Conflict(
                "a command's id, device, creation time and expiry cannot change".into(),
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

    fn expired_pending(&self, now: Timestamp, limit: usize) -> Result<Vec<Command>> {
        let range = KeyRange {
            start: keys::expiry(None),
            end: [
                keys::expiry(None).as_slice(),
                &keys::time_bytes(now.plus_millis(1)),
            ]
            .concat(),
        };
        let entries = self.engine.scan(Cf::CommandQueue, &range, limit)?;
        self.commands_for(Cf::CommandQueue, &entries, |k, _| {
            keys::tail::<16>(k)
                .map(CommandId::from_bytes)
                .ok_or_else(|| StorageError::Corrupt {
                    cf: Cf::CommandQueue.name(),
                    key: value::escape(k),
                    reason: "expiry entry too short".into(),
                })
        })
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
