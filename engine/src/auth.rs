//! Device authentication for MQTT CONNECT (spec/device-protocol.md §3.5): credential look-up
//! through a bounded cache, HMAC verification, and the checks that map to CONNACK codes.
//! Look-ups that miss the cache run on a storage worker, never on a reactor thread.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use fleetgate_model::auth::{SignType, timestamp_fresh, verify_password};
use fleetgate_model::device::{Credential, DeviceSecret};
use fleetgate_model::product::Product;
use fleetgate_model::{DeviceId, ProductId, Timestamp};
use fleetgate_storage::Storage;
use quick_cache::sync::Cache;

use crate::acl::{DeviceInfo, ProductPolicy};
use crate::config::FlowConfig;
use crate::flow::Rate;

/// What a CONNECT presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The device id from the client id.
    pub device_id: DeviceId,
    /// Sign type from the client id.
    pub sign_type: SignType,
    /// `YYYYMMDDHH` from the client id (the HMAC key).
    pub timestamp: String,
    /// The presented password.
    pub password: Vec<u8>,
}

/// Why authentication failed; each maps to a CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown device, wrong password, stale timestamp (0x04 / 0x86).
    BadCredentials,
    /// Frozen device or certificate-only device (0x05 / 0x87).
    NotAuthorized,
    /// Storage failed (0x03 / 0x88).
    Unavailable,
}

/// The result handed back to the session.
pub type AuthOutcome = Result<Arc<DeviceInfo>, AuthError>;

/// A cached credential.
#[derive(Debug, Clone)]
pub struct AuthRecord {
    info: Arc<DeviceInfo>,
    secret: Option<DeviceSecret>,
    frozen: bool,
}

/// Credentials and product policies in memory, invalidated when they change.
#[derive(Debug)]
pub struct AuthCache {
    devices: Cache<DeviceId, AuthRecord>,
    products: DashMap<ProductId, Arc<ProductPolicy>>,
    flow: FlowConfig,
    window_hours: u32,
}

/// Most sub-devices loaded for one gateway's ACL.
const MAX_SUB_DEVICES: usize = 10_000;

impl AuthCache {
    /// A cache of `capacity` devices.
    pub fn new(capacity: usize, flow: FlowConfig, window_hours: u32) -> Self {
        AuthCache {
            devices: Cache::new(capacity.max(1)),
            products: DashMap::new(),
            flow,
            window_hours,
        }
    }

    /// Forgets a device's credential (reset, freeze, delete, gateway change).
    pub fn invalidate_device(&self, id: &DeviceId) {
        self.devices.remove(id);
    }

    /// Forgets a product's policy (custom topics or limits changed).
    pub fn invalidate_product(&self, id: &ProductId) {
        self.products.remove(id);
    }

    /// Verifies against the cache only; `None` on a miss.
    pub fn verify_cached(&self, req: &AuthRequest, now: Timestamp) -> Option<AuthOutcome> {
        self.devices
            .get(&req.device_id)
            .map(|r| self.check(&r, req, now))
    }

    /// Loads the credential from storage (a blocking call for a worker), caches it, verifies.
    pub fn verify_loading(
        &self,
        storage: &dyn Storage,
        req: &AuthRequest,
        now: Timestamp,
    ) -> AuthOutcome {
        match self.load(storage, &req.device_id) {
            Ok(Some(record)) => {
                let out = self.check(&record, req, now);
                self.devices.insert(req.device_id.clone(), record);
                out
            }
            Ok(None) => Err(AuthError::BadCredentials),
            Err(e) => {
                tracing::warn!(device = %req.device_id, error = %e, "credential look-up failed");
                Err(AuthError::Unavailable)
            }
        }
    }

    fn check(&self, record: &AuthRecord, req: &AuthRequest, now: Timestamp) -> AuthOutcome {
        if req.sign_type == SignType::TimestampCheck
            && !timestamp_fresh(&req.timestamp, now, self.window_hours)
        {
            return Err(AuthError::BadCredentials);
        }
        let Some(secret) = &record.secret else {
            // Certificate devices authenticate during the TLS handshake, not with a password.
            return Err(AuthError::NotAuthorized);
        };
        if !verify_password(secret, &req.timestamp, &req.password) {
            return Err(AuthError::BadCredentials);
        }
        if record.frozen {
            return Err(AuthError::NotAuthorized);
        }
        Ok(Arc::clone(&record.info))
    }

    fn load(
        &self,
        storage: &dyn Storage,
        id: &DeviceId,
    ) -> fleetgate_storage::Result<Option<AuthRecord>> {
        let Some(view) = storage.load_for_auth(id, MAX_SUB_DEVICES)? else {
            return Ok(None);
        };
        // A device always has its product (storage enforces it); refuse rather than guess.
        let Some(product) = self.product(storage, &view.device.product_id)? else {
            return Ok(None);
        };
        let sub_devices = (!view.sub_devices.is_empty())
            .then(|| Arc::new(view.sub_devices.into_iter().collect::<HashSet<_>>()));
        let credential = view.credential;
        let secret = match credential {
            Credential::Secret(s) => Some(s),
            Credential::Certificate(_) => None,
        };
        Ok(Some(AuthRecord {
            info: Arc::new(DeviceInfo {
                device_id: id.clone(),
                product,
                sub_devices,
            }),
            secret,
            frozen: view.frozen,
        }))
    }

    fn product(
        &self,
        storage: &dyn Storage,
        id: &ProductId,
    ) -> fleetgate_storage::Result<Option<Arc<ProductPolicy>>> {
        if let Some(p) = self.products.get(id) {
            return Ok(Some(Arc::clone(&p)));
        }
        let Some(product) = storage.get_product(id)? else {
            return Ok(None);
        };
        let policy = self.policy(&product);
        self.products.insert(id.clone(), Arc::clone(&policy));
        Ok(Some(policy))
    }

    fn default_rate(&self, messages: bool) -> Rate {
        if messages {
            Rate {
                per_sec: self.flow.device_messages_per_sec,
                burst: self.flow.device_message_burst,
            }
        } else {
            Rate {
                per_sec: self.flow.device_bytes_per_sec,
                burst: self.flow.device_byte_burst,
            }
        }
    }

    fn policy(&self, p: &Product) -> Arc<ProductPolicy> {
        let (mut messages, mut bytes) = (self.default_rate(true), self.default_rate(false));
        if let Some(limits) = p.flow_control {
            // A product's rate keeps the configured burst-to-rate proportion.
            let scale = |rate: Rate, per_sec: u32| Rate {
                per_sec,
                burst: if rate.per_sec == 0 {
                    per_sec.saturating_mul(2)
                } else {
                    ((u64::from(rate.burst) * u64::from(per_sec)) / u64::from(rate.per_sec))
                        .clamp(1, i32::MAX as u64) as u32
                },
            };
            messages = scale(messages, limits.messages_per_sec);
            bytes = scale(bytes, limits.bytes_per_sec);
        }
        Arc::new(ProductPolicy {
            product_id: p.product_id.clone(),
            app_id: p.app_id.clone(),
            custom_topics: p.custom_topics.clone(),
            messages,
            bytes,
            max_throttle_ms: u64::from(self.flow.max_throttle_secs) * 1000,
        })
    }
}

#[cfg(test)]
mod tests;
