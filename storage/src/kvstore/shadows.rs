//! [`ShadowStore`] over a [`KvEngine`]: one shadow document per device, changed under the
//! device's lock so that application writes and device reports never overwrite each other.

use fleetgate_model::DeviceId;
use fleetgate_model::shadow::Shadow;

use super::{KvStore, LockKind, put};
use crate::error::Result;
use crate::keys;
use crate::kv::{Cf, Durability, KvEngine, WriteBatch};
use crate::traits::{Mutation, ShadowStore, not_found};
use crate::value;

impl<E: KvEngine> ShadowStore for KvStore<E> {
    fn get_shadow(&self, device: &DeviceId) -> Result<Shadow> {
        Ok(self
            .read(Cf::Shadows, &keys::id(device.as_str()))?
            .unwrap_or_default())
    }

    fn peek_shadow(&self, device: &DeviceId) -> Result<Shadow> {
        let key = keys::id(device.as_str());
        match self.engine.get_uncached(Cf::Shadows, &key)? {
            None => Ok(Shadow::default()),
            Some(bytes) => value::decode(Cf::Shadows, &key, &bytes),
        }
    }

    fn update_shadow(
        &self,
        device: &DeviceId,
        durability: Durability,
        f: Mutation<'_, Shadow>,
    ) -> Result<Shadow> {
        let _g = self.lock(&[(LockKind::Device, device.as_str())]);
        if !self.exists(Cf::Devices, &keys::id(device.as_str()))? {
            return Err(not_found("device", device));
        }
        let mut shadow = self.get_shadow(device)?;
        f(&mut shadow)?;
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Shadows, keys::id(device.as_str()), &shadow)?;
        self.engine.write(b, durability)?;
        Ok(shadow)
    }
}
