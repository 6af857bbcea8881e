//! [`RegistrationStore`] over a [`KvEngine`]: LwM2M registrations by location (`r`), by device
//! (`d`) and by expiry (`x`), and their count (`c`, one partial count per lock stripe), all in
//! the `registrations` family and changed together under the device's lock.
//!
//! The count: every change of a registration holds its device's lock stripe, so the partial
//! count of that stripe can be read, changed and written in the same batch without another
//! lock. Only the sum means anything (a device's stripe may differ between builds); it is exact.
//! Writes are buffered: a registration is reproducible by its device.

use fleetgate_model::lwm2m::{Registration, RegistrationId};
use fleetgate_model::{DeviceId, Timestamp};
use parking_lot::MutexGuard;

use super::{KvStore, LockKind};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, KeyRange, KvEngine, WriteBatch};
use crate::traits::{RegistrationStore, not_found};
use crate::value;

/// Reads a location stored as 8 big-endian bytes (value of a `d` entry, tail of an `x` key).
pub(super) fn location_from(key: &[u8], bytes: &[u8]) -> Result<RegistrationId> {
    <[u8; 8]>::try_from(bytes)
        .map(|b| RegistrationId::from_u64(u64::from_be_bytes(b)))
        .map_err(|_| StorageError::Corrupt {
            cf: Cf::Registrations.name(),
            key: value::escape(key),
            reason: "not a registration location".into(),
        })
}

/// Reads a partial count.
pub(super) fn count_from(key: &[u8], bytes: &[u8]) -> Result<i64> {
    <[u8; 8]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt {
            cf: Cf::Registrations.name(),
            key: value::escape(key),
            reason: "not a registration count".into(),
        })
}

fn expiry_key(r: &Registration) -> Vec<u8> {
    keys::registration_expiry(Some((r.expires_at, r.location)))
}

impl<E: KvEngine> KvStore<E> {
    pub(super) fn read_registration(
        &self,
        location: RegistrationId,
    ) -> Result<Option<Registration>> {
        let key = keys::registration(location);
        match self.engine.get(Cf::Registrations, &key)? {
            None => Ok(None),
            Some(v) => value::decode_registration(&key, location, &v).map(Some),
        }
    }

    fn location_of_device(&self, device: &DeviceId) -> Result<Option<RegistrationId>> {
        let key = keys::registration_of_device(Some(device));
        match self.engine.get(Cf::Registrations, &key)? {
            None => Ok(None),
            Some(v) => location_from(&key, &v).map(Some),
        }
    }

    /// Adds a change of the registration count to a batch; the caller holds `device`'s lock,
    /// and no other change of the same count is in the batch.
    fn count_registration(&self, b: &mut WriteBatch, device: &DeviceId, delta: i64) -> Result<()> {
        let stripe = Self::stripe((LockKind::Device, device.as_str()));
        let key = keys::registration_count(Some(u16::try_from(stripe).unwrap_or(u16::MAX)));
        let current = match self.engine.get(Cf::Registrations, &key)? {
            None => 0,
            Some(v) => count_from(&key, &v)?,
        };
        b.put(
            Cf::Registrations,
            key,
            current.saturating_add(delta).to_be_bytes().to_vec(),
        );
        Ok(())
    }

    /// Adds the removal of a registration and its entries to a batch (caller holds the
    /// device's lock).
    fn delete_registration_entries(&self, b: &mut WriteBatch, r: &Registration) -> Result<()> {
        b.delete(Cf::Registrations, keys::registration(r.location));
        b.delete(Cf::Registrations, expiry_key(r));
        b.delete(
            Cf::Registrations,
            keys::registration_of_device(Some(&r.device_id)),
        );
        self.count_registration(b, &r.device_id, -1)
    }

    /// Adds the removal of a device's registration, if any, to a batch (device delete; the
    /// caller holds the device's lock).
    pub(super) fn delete_device_registration(
        &self,
        b: &mut WriteBatch,
        device: &DeviceId,
    ) -> Result<()> {
        let Some(location) = self.location_of_device(device)? else {
            return Ok(());
        };
        match self.read_registration(location)? {
            Some(r) if &r.device_id == device => self.delete_registration_entries(b, &r),
            _ => {
                b.delete(
                    Cf::Registrations,
                    keys::registration_of_device(Some(device)),
                );
                Ok(())
            }
        }
    }

    /// Reads a registration and locks its device and location, again until the device read
    /// before locking is still the owner.
    fn lock_registration(
        &self,
        location: RegistrationId,
    ) -> Result<Option<(Registration, Vec<MutexGuard<'_, ()>>)>> {
        let text = location.to_string();
        loop {
            let Some(seen) = self.read_registration(location)? else {
                return Ok(None);
            };
            let guards = self.lock(&[
                (LockKind::Device, seen.device_id.as_str()),
                (LockKind::Registration, &text),
            ]);
            match self.read_registration(location)? {
                None => return Ok(None),
                Some(r) if r.device_id == seen.device_id => return Ok(Some((r, guards))),
                Some(_) => {}
            }
        }
    }
}

impl<E: KvEngine> RegistrationStore for KvStore<E> {
    fn put_registration(&self, r: &Registration) -> Result<Option<Registration>> {
        r.validate().map_err(StorageError::Conflict)?;
        let text = r.location.to_string();
        let _g = self.lock(&[
            (LockKind::Device, r.device_id.as_str()),
            (LockKind::Registration, &text),
        ]);
        if !self.exists(Cf::Devices, &keys::id(r.device_id.as_str()))? {
            return Err(not_found("device", &r.device_id));
        }
        if let Some(other) = self.read_registration(r.location)?
            && other.device_id != r.device_id
        {
            return Err(StorageError::AlreadyExists {
                kind: "registration",
                id: text,
            });
        }
        let previous = match self.location_of_device(&r.device_id)? {
            Some(location) => self
                .read_registration(location)?
                .filter(|p| p.device_id == r.device_id),
            None => None,
        };
        let mut b = WriteBatch::new();
        match &previous {
            Some(p) => {
                // Deletes first: a put of the same key later in the batch wins.
                b.delete(Cf::Registrations, keys::registration(p.location));
                b.delete(Cf::Registrations, expiry_key(p));
            }
            None => self.count_registration(&mut b, &r.device_id, 1)?,
        }
        b.put(
            Cf::Registrations,
            keys::registration(r.location),
            value::encode_registration(r)?,
        );
        b.put(
            Cf::Registrations,
            keys::registration_of_device(Some(&r.device_id)),
            r.location.as_u64().to_be_bytes().to_vec(),
        );
        b.put(Cf::Registrations, expiry_key(r), Vec::new());
        self.engine.write(b, Durability::Buffered)?;
        Ok(previous)
    }

    fn get_registration(&self, location: &RegistrationId) -> Result<Option<Registration>> {
        self.read_registration(*location)
    }

    fn registration_of_device(&self, device: &DeviceId) -> Result<Option<Registration>> {
        match self.location_of_device(device)? {
            None => Ok(None),
            Some(location) => Ok(self
                .read_registration(location)?
                .filter(|r| &r.device_id == device)),
        }
    }

    fn touch_registration(
        &self,
        location: &RegistrationId,
        address: &str,
        now: Timestamp,
        lifetime_secs: Option<u32>,
    ) -> Result<Option<Registration>> {
        let Some((old, _g)) = self.lock_registration(*location)? else {
            return Ok(None);
        };
        if old.is_expired_at(now) {
            return Ok(None);
        }
        let mut r = old.clone();
        r.touch(address, now, lifetime_secs);
        r.validate().map_err(StorageError::Conflict)?;
        let mut b = WriteBatch::new();
        if r.expires_at != old.expires_at {
            b.delete(Cf::Registrations, expiry_key(&old));
            b.put(Cf::Registrations, expiry_key(&r), Vec::new());
        }
        b.put(
            Cf::Registrations,
            keys::registration(r.location),
            value::encode_registration(&r)?,
        );
        self.engine.write(b, Durability::Buffered)?;
        Ok(Some(r))
    }

    fn delete_registration(&self, location: &RegistrationId) -> Result<Option<Registration>> {
        let Some((r, _g)) = self.lock_registration(*location)? else {
            return Ok(None);
        };
        let mut b = WriteBatch::new();
        self.delete_registration_entries(&mut b, &r)?;
        self.engine.write(b, Durability::Buffered)?;
        Ok(Some(r))
    }

    fn due_registrations(&self, now: Timestamp, limit: usize) -> Result<Vec<Registration>> {
        let prefix = keys::registration_expiry(None);
        let range = KeyRange {
            end: [prefix.as_slice(), &keys::time_bytes(now.plus_millis(1))].concat(),
            start: prefix,
        };
        let entries = self.engine.scan(Cf::Registrations, &range, limit)?;
        let mut out = Vec::with_capacity(entries.len());
        for (k, _) in entries {
            // `x{expires_at (8)}{location (8)}`
            let location = location_from(&k, k.get(9..).unwrap_or_default())?;
            match self.read_registration(location)? {
                Some(r) => out.push(r),
                None => {
                    return Err(StorageError::Corrupt {
                        cf: Cf::Registrations.name(),
                        key: value::escape(&k),
                        reason: format!("expiry entry for missing registration {location}"),
                    });
                }
            }
        }
        Ok(out)
    }

    fn count_registrations(&self) -> Result<u64> {
        let entries = self.engine.scan(
            Cf::Registrations,
            &KeyRange::prefix(&keys::registration_count(None)),
            usize::MAX,
        )?;
        let mut total: i64 = 0;
        for (k, v) in entries {
            total = total.saturating_add(count_from(&k, &v)?);
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }
}
