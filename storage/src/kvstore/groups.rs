//! [`GroupStore`] over a [`KvEngine`]. A membership lives in three places written in one
//! batch: the device's `groups` list, the group's `device_count` and the `M{group}\0{device}`
//! index entry; both limits (groups per device, devices per group) are checked under the
//! locks of the device and the group.

use fleetgate_model::device::Group;
use fleetgate_model::{AppId, DeviceId, GroupId};

use super::devices::put_record;
use super::{KvStore, LockKind, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, KeyRange, KvEngine, WriteBatch};
use crate::traits::{GroupStore, Mutation, Page, not_found};

impl<E: KvEngine> KvStore<E> {
    /// Adds "one member fewer" for `group` to a batch (the caller holds the group's lock).
    pub(super) fn decrement_group(&self, b: &mut WriteBatch, group: &GroupId) -> Result<()> {
        if let Some(mut g) = self.get_group(group)? {
            g.device_count = g.device_count.saturating_sub(1);
            put(b, Cf::Groups, keys::id(group.as_str()), &g)?;
        }
        Ok(())
    }

    fn members(&self, group: &GroupId) -> Result<Vec<DeviceId>> {
        let prefix = keys::dev_by_group(group, None);
        let mut out = Vec::new();
        let mut range = KeyRange::prefix(&prefix);
        loop {
            let entries = self.engine.scan(Cf::Index, &range, 4096)?;
            for (k, _) in &entries {
                if let Some(id) = keys::last_part(k).and_then(|s| DeviceId::new(s).ok()) {
                    out.push(id);
                }
            }
            match entries.last() {
                Some((k, _)) if entries.len() == 4096 => {
                    range = KeyRange::prefix_after(&prefix, Some(k))
                }
                _ => return Ok(out),
            }
        }
    }
}

impl<E: KvEngine> GroupStore for KvStore<E> {
    fn create_group(&self, group: &Group) -> Result<()> {
        let id = &group.group_id;
        let _g = self.lock(&[(LockKind::Group, id.as_str())]);
        if self.exists(Cf::Groups, &keys::id(id.as_str()))? {
            return Err(StorageError::AlreadyExists {
                kind: "group",
                id: id.to_string(),
            });
        }
        let mut stored = group.clone();
        stored.device_count = 0;
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Groups, keys::id(id.as_str()), &stored)?;
        b.put(
            Cf::Index,
            keys::group_by_app(&group.app_id, Some(id)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn get_group(&self, id: &GroupId) -> Result<Option<Group>> {
        self.read(Cf::Groups, &keys::id(id.as_str()))
    }

    fn update_group(&self, id: &GroupId, f: Mutation<'_, Group>) -> Result<Group> {
        let _g = self.lock(&[(LockKind::Group, id.as_str())]);
        let old = self.get_group(id)?.ok_or_else(|| not_found("group", id))?;
        let mut new = old.clone();
        f(&mut new)?;
        if new.group_id != old.group_id
            || new.app_id != old.app_id
            || new.device_count != old.device_count
        {
            return Err(StorageError::Conflict(
                "a group's id, resource space and member count cannot be set".into(),
            ));
        }
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Groups, keys::id(id.as_str()), &new)?;
        self.engine.write(b, Durability::Synced)?;
        Ok(new)
    }

    fn delete_group(&self, id: &GroupId) -> Result<Group> {
        loop {
            let seen = self.members(id)?;
            let mut names = vec![(LockKind::Group, id.as_str())];
            names.extend(seen.iter().map(|d| (LockKind::Device, d.as_str())));
            let _g = self.lock(&names);
            if self.members(id)? != seen {
                continue;
            }
            let group = self.get_group(id)?.ok_or_else(|| not_found("group", id))?;
            let mut b = WriteBatch::new();
            for device_id in &seen {
                if let Some(mut d) = self.device_record(device_id)? {
                    d.groups.retain(|g| g != id);
                    put_record(&mut b, &d)?;
                }
                b.delete(Cf::Index, keys::dev_by_group(id, Some(device_id)));
            }
            b.delete(Cf::Groups, keys::id(id.as_str()));
            b.delete(Cf::Index, keys::group_by_app(&group.app_id, Some(id)));
            self.engine.write(b, Durability::Synced)?;
            return Ok(group);
        }
    }

    fn list_groups(
        &self,
        app: Option<&AppId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Group>> {
        match app {
            Some(app) => self.page_via_index(
                Cf::Index,
                &keys::group_by_app(app, None),
                cursor,
                limit,
                Cf::Groups,
                keys::id,
            ),
            None => self.page_records(Cf::Groups, b"", cursor, limit),
        }
    }

    fn add_member(&self, group: &GroupId, device: &DeviceId) -> Result<()> {
        let _g = self.lock(&[
            (LockKind::Group, group.as_str()),
            (LockKind::Device, device.as_str()),
        ]);
        let mut g = self
            .get_group(group)?
            .ok_or_else(|| not_found("group", group))?;
        let mut d = self
            .device_record(device)?
            .ok_or_else(|| not_found("device", device))?;
        if d.app_id != g.app_id {
            return Err(StorageError::Conflict(format!(
                "device {device} and group {group} belong to different resource spaces"
            )));
        }
        if d.groups.contains(group) {
            return Ok(());
        }
        if d.groups.len() >= self.limits.max_groups_per_device {
            return Err(StorageError::LimitExceeded {
                what: "groups per device",
                limit: self.limits.max_groups_per_device as u64,
            });
        }
        if g.device_count >= self.limits.max_devices_per_group {
            return Err(StorageError::LimitExceeded {
                what: "devices per group",
                limit: u64::from(self.limits.max_devices_per_group),
            });
        }
        d.groups.push(group.clone());
        g.device_count += 1;
        let mut b = WriteBatch::new();
        put_record(&mut b, &d)?;
        put(&mut b, Cf::Groups, keys::id(group.as_str()), &g)?;
        b.put(
            Cf::Index,
            keys::dev_by_group(group, Some(device)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn remove_member(&self, group: &GroupId, device: &DeviceId) -> Result<()> {
        let _g = self.lock(&[
            (LockKind::Group, group.as_str()),
            (LockKind::Device, device.as_str()),
        ]);
        let Some(mut d) = self.device_record(device)? else {
            return Ok(());
        };
        if !d.groups.contains(group) {
            return Ok(());
        }
        d.groups.retain(|g| g != group);
        let mut b = WriteBatch::new();
        put_record(&mut b, &d)?;
        self.decrement_group(&mut b, group)?;
        b.delete(Cf::Index, keys::dev_by_group(group, Some(device)));
        self.engine.write(b, Durability::Synced)
    }

    fn list_members(
        &self,
        group: &GroupId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<DeviceId>> {
        let prefix = keys::dev_by_group(group, None);
        let after = cursor.map(|c| [prefix.as_slice(), c.as_bytes()].concat());
        let range = KeyRange::prefix_after(&prefix, after.as_deref());
        let entries = self
            .engine
            .scan(Cf::Index, &range, limit.saturating_add(1))?;
        let more = entries.len() > limit;
        let items: Vec<DeviceId> = entries
            .iter()
            .take(limit)
            .filter_map(|(k, _)| keys::last_part(k).and_then(|s| DeviceId::new(s).ok()))
            .collect();
        let next = if more {
            items.last().map(|d| d.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }
}
