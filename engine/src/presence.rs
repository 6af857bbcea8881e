//! Device status from connections (spec/device-management.md §5.2): a connected MQTT device is
//! ONLINE; it becomes OFFLINE when it has stayed disconnected for the grace period (one minute).
//! Runs as an upstream handler, so storage writes never happen on a reactor thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetgate_model::device::{DeviceStatus, StatusEvent};
use fleetgate_model::{DeviceId, Timestamp};
use fleetgate_storage::{DeviceQuery, Durability, Storage, StorageError};
use parking_lot::Mutex;

use crate::registry::Registry;
use crate::time::{Clock, Millis};
use crate::upstream::{UpstreamEvent, UpstreamHandler};

/// Offline checks by due time, and the sequence number that keeps equal times apart.
type Due = (BTreeMap<(Millis, u64), DeviceId>, u64);

/// Keeps device status in storage in step with connections.
#[derive(Debug)]
pub struct Presence {
    storage: Arc<dyn Storage>,
    registry: Arc<Registry>,
    clock: Clock,
    grace_ms: u64,
    /// Offline checks due, by time (the sequence number keeps equal times apart).
    due: Mutex<Due>,
}

impl Presence {
    /// A tracker with a grace period of `grace_secs`.
    pub fn new(
        storage: Arc<dyn Storage>,
        registry: Arc<Registry>,
        clock: Clock,
        grace_secs: u32,
    ) -> Self {
        Presence {
            storage,
            registry,
            clock,
            grace_ms: u64::from(grace_secs) * 1000,
            due: Mutex::new((BTreeMap::new(), 0)),
        }
    }

    fn check_later(&self, device: DeviceId) {
        let at = self.clock.now().plus(self.grace_ms);
        let mut due = self.due.lock();
        due.1 += 1;
        let seq = due.1;
        due.0.insert((at, seq), device);
    }

    /// Devices left ONLINE by a previous run get the usual grace period to reconnect.
    pub fn recover(&self) -> fleetgate_storage::Result<usize> {
        let query = DeviceQuery {
            status: Some(DeviceStatus::Online),
            ..Default::default()
        };
        let mut cursor: Option<String> = None;
        let mut n = 0;
        loop {
            let page = self.storage.list_devices(&query, cursor.as_deref(), 1000)?;
            for d in page.items {
                // Only long-connection devices are tracked here; NB-IoT status follows uplinks.
                self.check_later(d.device_id);
                n += 1;
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => return Ok(n),
            }
        }
    }

    fn set(&self, device: &DeviceId, event: StatusEvent) {
        let result = self.storage.apply_presence_event(
            device,
            event,
            Timestamp::now(),
            Durability::Buffered,
        );
        match result {
            Ok(_) | Err(StorageError::NotFound { .. }) => {}
            Err(e)
                if e.aborted::<fleetgate_model::device::StatusError>()
                    .is_some() => {}
            Err(e) => tracing::warn!(%device, error = %e, "cannot update device status"),
        }
    }
}

impl UpstreamHandler for Presence {
    fn handle(&self, event: &UpstreamEvent) {
        match event {
            UpstreamEvent::Connected(c) => self.set(&c.device_id, StatusEvent::Connected),
            UpstreamEvent::Disconnected(d) => self.check_later(d.device_id.clone()),
            UpstreamEvent::Woke(w) if w.registered => {
                self.set(&w.device_id, StatusEvent::Connected)
            }
            UpstreamEvent::Woke(w) => self.set(&w.device_id, StatusEvent::Uplink),
            UpstreamEvent::Published(_) | UpstreamEvent::CommandStatus(_) => {}
        }
    }

    fn tick(&self) {
        let now = self.clock.now();
        let ready: Vec<DeviceId> = {
            let mut due = self.due.lock();
            let later = due.0.split_off(&(now.plus(1), 0));
            std::mem::replace(&mut due.0, later).into_values().collect()
        };
        for device in ready {
            if !self.registry.is_online(&device) {
                self.set(&device, StatusEvent::ConnectionLost);
            }
        }
    }
}
