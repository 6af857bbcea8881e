//! [`DeviceStore`] over a [`KvEngine`]: devices, credentials, presence, and the device indexes
//! (by resource space, product, gateway, status, group, tag and node id) written in the same
//! batch as the device record.
//!
//! A device is stored as two records: the device record, with only the administrative part of
//! its status (FROZEN, else INACTIVE) and no connection times, and its presence (connection
//! status and times, a few bytes in its own column family). Connects and disconnects write the
//! presence alone; every read puts the two back together ([`Device::with_presence`]).

use std::collections::BTreeSet;

use fleetgate_model::device::{Credential, Device, DeviceStatus, Presence, StatusEvent};
use fleetgate_model::{DeviceId, NodeId, ProductId, Timestamp};

use super::{KvStore, LockKind, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, KeyRange, KvEngine, WriteBatch};
use crate::traits::{AuthView, DeviceQuery, DeviceStore, Mutation, Page, not_found};
use crate::value;

/// The status a device record stores: FROZEN, else INACTIVE (the connection statuses live in
/// the presence record).
pub(super) fn record_status(status: DeviceStatus) -> DeviceStatus {
    match status {
        DeviceStatus::Frozen => DeviceStatus::Frozen,
        _ => DeviceStatus::Inactive,
    }
}

/// Adds the device record of `d` (without its presence) to the batch.
pub(super) fn put_record(b: &mut WriteBatch, d: &Device) -> Result<()> {
    let (record, _) = d.split_presence(None);
    put(b, Cf::Devices, keys::id(d.device_id.as_str()), &record)
}

/// Adds the change from presence `old` to `new` to the batch.
fn put_presence(b: &mut WriteBatch, id: &DeviceId, old: Option<&Presence>, new: Option<&Presence>) {
    if old == new {
        return;
    }
    match new {
        Some(p) => b.put(
            Cf::Presence,
            keys::id(id.as_str()),
            value::encode_presence(p),
        ),
        None => b.delete(Cf::Presence, keys::id(id.as_str())),
    }
}

/// The non-unique index entries of a device (its record's status only).
pub(super) fn index_keys(d: &Device) -> BTreeSet<Vec<u8>> {
    let id = Some(&d.device_id);
    let mut keys = BTreeSet::from([
        keys::dev_by_app(&d.app_id, id),
        keys::dev_by_product(&d.product_id, id),
        keys::dev_by_status(record_status(d.status), id),
        keys::dev_by_node(&d.node_id, id),
    ]);
    if d.is_sub_device() {
        keys.insert(keys::dev_by_gateway(&d.gateway_id, id));
    }
    for t in &d.tags {
        keys.insert(keys::dev_by_tag(&t.tag_key, Some(&t.tag_value), id));
    }
    for g in &d.groups {
        keys.insert(keys::dev_by_group(g, id));
    }
    keys
}

impl DeviceQuery {
    /// Whether a device satisfies every filter of the query.
    pub fn matches(&self, d: &Device) -> bool {
        self.app_id.as_ref().is_none_or(|a| *a == d.app_id)
            && self.product_id.as_ref().is_none_or(|p| *p == d.product_id)
            && self.status.is_none_or(|s| s == d.status)
            && self
                .gateway_id
                .as_ref()
                .is_none_or(|g| *g == d.gateway_id && d.is_sub_device())
            && self.group_id.as_ref().is_none_or(|g| d.groups.contains(g))
            && self.tag.as_ref().is_none_or(|(k, v)| match (d.tag(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
            && self
                .node_id_prefix
                .as_ref()
                .is_none_or(|p| d.node_id.as_str().starts_with(p.as_str()))
    }

    /// What to drive a listing with: the most selective filter present. The status index
    /// knows only the records' statuses (INACTIVE, FROZEN); listings by a connection status
    /// walk the presence records.
    fn driver(&self) -> Driver {
        if let Some(g) = &self.group_id {
            Driver::Index(keys::dev_by_group(g, None))
        } else if let Some((k, Some(v))) = &self.tag {
            Driver::Index(keys::dev_by_tag(k, Some(v), None))
        } else if let Some(g) = &self.gateway_id {
            Driver::Index(keys::dev_by_gateway(g, None))
        } else if let Some(p) = &self.product_id {
            Driver::Index(keys::dev_by_product(p, None))
        } else if let Some(n) = &self.node_id_prefix {
            Driver::Index(keys::dev_by_node_prefix(n))
        } else if let Some(s) = self.status {
            match s {
                DeviceStatus::Inactive | DeviceStatus::Frozen => {
                    Driver::Index(keys::dev_by_status(s, None))
                }
                DeviceStatus::Online | DeviceStatus::Offline | DeviceStatus::Abnormal => {
                    Driver::Presence
                }
            }
        } else if let Some(a) = &self.app_id {
            Driver::Index(keys::dev_by_app(a, None))
        } else {
            Driver::All
        }
    }
}

/// How a device listing walks storage.
enum Driver {
    /// Entries of one index prefix.
    Index(Vec<u8>),
    /// The presence records.
    Presence,
    /// Every device record.
    All,
}

fn check_tags(d: &Device, max: usize) -> Result<()> {
    if d.tags.len() > max {
        return Err(StorageError::LimitExceeded {
            what: "tags per device",
            limit: max as u64,
        });
    }
    let unique: BTreeSet<_> = d.tags.iter().map(|t| &t.tag_key).collect();
    if unique.len() != d.tags.len() {
        return Err(StorageError::Conflict(
            "tag keys must be unique per device".into(),
        ));
    }
    Ok(())
}

impl<E: KvEngine> KvStore<E> {
    /// A device record as stored, without its presence.
    pub(super) fn device_record(&self, id: &DeviceId) -> Result<Option<Device>> {
        self.read(Cf::Devices, &keys::id(id.as_str()))
    }

    fn presence(&self, id: &DeviceId) -> Result<Option<Presence>> {
        let key = keys::id(id.as_str());
        self.engine
            .get(Cf::Presence, &key)?
            .map(|v| value::decode_presence(&key, &v))
            .transpose()
    }

    /// A device record put together with its presence.
    fn with_presence(&self, record: Device) -> Result<Device> {
        let presence = self.presence(&record.device_id)?;
        Ok(record.with_presence(presence.as_ref()))
    }

    fn device_key_locks<'a>(&self, d: &'a Device, node_key: &'a str) -> Vec<(LockKind, &'a str)> {
        let mut locks = vec![
            (LockKind::Device, d.device_id.as_str()),
            (LockKind::Node, node_key),
            (LockKind::Product, d.product_id.as_str()),
        ];
        if d.is_sub_device() {
            locks.push((LockKind::Device, d.gateway_id.as_str()));
        }
        locks
    }

    /// Reads a device, locks it together with `extra` stripes, and re-reads it; retries when
    /// the device's groups changed in between (the group stripes depend on them).
    pub(super) fn lock_device_with_groups(
        &self,
        id: &DeviceId,
    ) -> Result<(Device, Vec<parking_lot::MutexGuard<'_, ()>>)> {
        loop {
            let seen = self
                .get_device(id)?
                .ok_or_else(|| not_found("device", id))?;
            let mut names = vec![(LockKind::Device, id.as_str())];
            names.extend(seen.groups.iter().map(|g| (LockKind::Group, g.as_str())));
            let guards = self.lock(&names);
            let now = self
                .get_device(id)?
                .ok_or_else(|| not_found("device", id))?;
            if now.groups == seen.groups {
                return Ok((now, guards));
            }
        }
    }
}

impl<E: KvEngine> DeviceStore for KvStore<E> {
    fn create_device(&self, device: &Device, credential: &Credential) -> Result<()> {
        let node_key = format!("{}\0{}", device.product_id, device.node_id);
        let _g = self.lock(&self.device_key_locks(device, &node_key));
        let id = &device.device_id;
        if !self.exists(Cf::Products, &keys::id(device.product_id.as_str()))? {
            return Err(not_found("product", &device.product_id));
        }
        if self.exists(Cf::Devices, &keys::id(id.as_str()))? {
            return Err(StorageError::AlreadyExists {
                kind: "device",
                id: id.to_string(),
            });
        }
        let unique = keys::node_in_product(&device.product_id, &device.node_id);
        if self.exists(Cf::Index, &unique)? {
            return Err(StorageError::AlreadyExists {
                kind: "node_id in product",
                id: device.node_id.to_string(),
            });
        }
        if device.is_sub_device()
            && !self.exists(Cf::Devices, &keys::id(device.gateway_id.as_str()))?
        {
            return Err(not_found("gateway", &device.gateway_id));
        }
        if !device.groups.is_empty() {
            return Err(StorageError::Conflict(
                "group memberships are added after registration".into(),
            ));
        }
        check_tags(device, self.limits.max_tags_per_device)?;
        let (_, presence) = device.split_presence(None);
        let mut b = WriteBatch::new();
        put_record(&mut b, device)?;
        // A presence left by an earlier device of the same id is replaced or removed.
        b.delete(Cf::Presence, keys::id(id.as_str()));
        put_presence(&mut b, id, None, presence.as_ref());
        put(&mut b, Cf::Credentials, keys::id(id.as_str()), credential)?;
        b.put(Cf::Index, unique, id.as_str());
        for k in index_keys(device) {
            b.put(Cf::Index, k, Vec::new());
        }
        self.engine.write(b, Durability::Synced)
    }

    fn get_device(&self, id: &DeviceId) -> Result<Option<Device>> {
        self.device_record(id)?
            .map(|d| self.with_presence(d))
            .transpose()
    }

    fn get_credential(&self, id: &DeviceId) -> Result<Option<Credential>> {
        self.read(Cf::Credentials, &keys::id(id.as_str()))
    }

    fn set_credential(&self, id: &DeviceId, credential: &Credential) -> Result<()> {
        let _g = self.lock(&[(LockKind::Device, id.as_str())]);
        if !self.exists(Cf::Devices, &keys::id(id.as_str()))? {
            return Err(not_found("device", id));
        }
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Credentials, keys::id(id.as_str()), credential)?;
        self.engine.write(b, Durability::Synced)
    }

    fn delete_credential(&self, id: &DeviceId) -> Result<bool> {
        let _g = self.lock(&[(LockKind::Device, id.as_str())]);
        if !self.exists(Cf::Devices, &keys::id(id.as_str()))? {
            return Err(not_found("device", id));
        }
        let key = keys::id(id.as_str());
        if !self.exists(Cf::Credentials, &key)? {
            return Ok(false);
        }
        let mut b = WriteBatch::new();
        b.delete(Cf::Credentials, key);
        self.engine.write(b, Durability::Synced)?;
        Ok(true)
    }

    fn update_device(
        &self,
        id: &DeviceId,
        durability: Durability,
        f: Mutation<'_, Device>,
    ) -> Result<Device> {
        let _g = self.lock(&[(LockKind::Device, id.as_str())]);
        let record = self
            .device_record(id)?
            .ok_or_else(|| not_found("device", id))?;
        let stored = self.presence(id)?;
        let old = record.clone().with_presence(stored.as_ref());
        let mut new = old.clone();
        f(&mut new)?;
        if new.device_id != old.device_id
            || new.node_id != old.node_id
            || new.product_id != old.product_id
            || new.app_id != old.app_id
        {
            return Err(StorageError::Conflict(
                "a device's id, node id, product and resource space cannot change".into(),
            ));
        }
        if new.groups != old.groups {
            return Err(StorageError::Conflict(
                "group memberships change through the group operations".into(),
            ));
        }
        if new.gateway_id != old.gateway_id
            && new.is_sub_device()
            && !self.exists(Cf::Devices, &keys::id(new.gateway_id.as_str()))?
        {
            return Err(not_found("gateway", &new.gateway_id));
        }
        check_tags(&new, self.limits.max_tags_per_device)?;
        let (new_record, presence) = new.split_presence(stored.as_ref());
        let (before, after) = (index_keys(&record), index_keys(&new_record));
        let mut b = WriteBatch::new();
        for k in before.difference(&after) {
            b.delete(Cf::Index, k.clone());
        }
        for k in after.difference(&before) {
            b.put(Cf::Index, k.clone(), Vec::new());
        }
        if new_record != record {
            put_record(&mut b, &new_record)?;
        }
        put_presence(&mut b, id, stored.as_ref(), presence.as_ref());
        if !b.is_empty() {
            self.engine.write(b, durability)?;
        }
        Ok(new_record.with_presence(presence.as_ref()))
    }

    fn apply_presence_event(
        &self,
        id: &DeviceId,
        event: StatusEvent,
        at: Timestamp,
        durability: Durability,
    ) -> Result<Device> {
        if matches!(event, StatusEvent::Freeze | StatusEvent::Unfreeze) {
            return Err(StorageError::Conflict(
                "freezing and unfreezing change the device record: use update_device".into(),
            ));
        }
        let _g = self.lock(&[(LockKind::Device, id.as_str())]);
        let key = keys::id(id.as_str());
        // Read around the block cache: a reconnect storm reads every device once.
        let record: Device = match self.engine.get_uncached(Cf::Devices, &key)? {
            Some(v) => value::decode(Cf::Devices, &key, &v)?,
            None => return Err(not_found("device", id)),
        };
        let stored = self
            .engine
            .get_uncached(Cf::Presence, &key)?
            .map(|v| value::decode_presence(&key, &v))
            .transpose()?;
        let mut device = record.with_presence(stored.as_ref());
        device
            .apply_status(event, at)
            .map_err(StorageError::abort)?;
        let (_, presence) = device.split_presence(stored.as_ref());
        let mut b = WriteBatch::new();
        put_presence(&mut b, id, stored.as_ref(), presence.as_ref());
        if !b.is_empty() {
            self.engine.write(b, durability)?;
        }
        Ok(device)
    }

    fn load_for_auth(&self, id: &DeviceId, max_sub_devices: usize) -> Result<Option<AuthView>> {
        // The caller caches what it loads; the block cache would only keep a second copy of
        // blocks read once per connect.
        let key = keys::id(id.as_str());
        let Some(v) = self.engine.get_uncached(Cf::Devices, &key)? else {
            return Ok(None);
        };
        let device: Device = value::decode(Cf::Devices, &key, &v)?;
        let Some(v) = self.engine.get_uncached(Cf::Credentials, &key)? else {
            return Ok(None);
        };
        let credential: Credential = value::decode(Cf::Credentials, &key, &v)?;
        let prefix = keys::dev_by_gateway(id, None);
        let sub_devices = self
            .engine
            .scan_uncached(Cf::Index, &KeyRange::prefix(&prefix), max_sub_devices)?
            .iter()
            .filter_map(|(k, _)| keys::last_part(k).and_then(|s| DeviceId::new(s).ok()))
            .collect();
        Ok(Some(AuthView {
            frozen: device.status == DeviceStatus::Frozen,
            device,
            credential,
            sub_devices,
        }))
    }

    fn delete_device(&self, id: &DeviceId) -> Result<Device> {
        let (device, _g) = self.lock_device_with_groups(id)?;
        if self.any_with_prefix(Cf::Index, &keys::dev_by_gateway(id, None))? {
            return Err(StorageError::Conflict(format!(
                "gateway {id} still has sub-devices; delete them first"
            )));
        }
        let mut b = WriteBatch::new();
        b.delete(Cf::Devices, keys::id(id.as_str()));
        b.delete(Cf::Presence, keys::id(id.as_str()));
        b.delete(Cf::Credentials, keys::id(id.as_str()));
        b.delete(Cf::Shadows, keys::id(id.as_str()));
        b.delete(
            Cf::Index,
            keys::node_in_product(&device.product_id, &device.node_id),
        );
        for k in index_keys(&device) {
            b.delete(Cf::Index, k);
        }
        for g in &device.groups {
            self.decrement_group(&mut b, g)?;
        }
        self.delete_device_commands(&mut b, id)?;
        self.delete_device_ota(&mut b, id)?;
        self.delete_device_registration(&mut b, id)?;
        self.engine.write(b, Durability::Synced)?;
        Ok(device)
    }

    fn list_devices(
        &self,
        query: &DeviceQuery,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Device>> {
        // Filters that the driver does not cover are applied to each device.
        let load = |id: Option<&str>| -> Result<Option<Device>> {
            let Some(id) = id.and_then(|s| DeviceId::new(s).ok()) else {
                return Ok(None);
            };
            Ok(self.get_device(&id)?.filter(|d| query.matches(d)))
        };
        match query.driver() {
            Driver::Index(prefix) => {
                self.filtered_page(Cf::Index, &prefix, cursor, limit, |k, _| {
                    load(keys::last_part(k))
                })
            }
            Driver::Presence => self.filtered_page(Cf::Presence, b"", cursor, limit, |k, v| {
                // Most presences of another status are passed over without reading the device.
                let p = value::decode_presence(k, v)?;
                if query.status.is_some_and(|s| s != p.status) {
                    return Ok(None);
                }
                load(std::str::from_utf8(k).ok())
            }),
            Driver::All => self.filtered_page(Cf::Devices, b"", cursor, limit, |k, v| {
                let d: Device = value::decode(Cf::Devices, k, v)?;
                let d = self.with_presence(d)?;
                Ok(query.matches(&d).then_some(d))
            }),
        }
    }

    fn find_by_node(&self, node: &NodeId) -> Result<Vec<DeviceId>> {
        let entries = self.engine.scan(
            Cf::Index,
            &KeyRange::prefix(&keys::dev_by_node(node, None)),
            1024,
        )?;
        Ok(entries
            .iter()
            .filter_map(|(k, _)| keys::last_part(k).and_then(|s| DeviceId::new(s).ok()))
            .collect())
    }

    fn find_by_product_node(&self, product: &ProductId, node: &NodeId) -> Result<Option<DeviceId>> {
        let key = keys::node_in_product(product, node);
        match self.engine.get(Cf::Index, &key)? {
            None => Ok(None),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| DeviceId::new(s).ok())
                .map(Some)
                .ok_or_else(|| StorageError::Corrupt {
                    cf: Cf::Index.name(),
                    key: value::escape(&key),
                    reason: "not a device id".into(),
                }),
        }
    }
}
