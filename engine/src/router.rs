//! Routing of device publications to other sessions (the internal publish path): a session
//! whose subscription outside its own tree was granted by a stored ACL rule registers the
//! filter here, and every accepted publication is delivered to the matching sessions. Runs as
//! an upstream handler, off the reactor threads. Such subscriptions are rare (a monitoring
//! client, an application gateway), so a list scanned per publication is enough.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_model::DeviceId;
use fleetgate_model::topic::filter_matches;
use parking_lot::RwLock;

use crate::engine::Shared;
use crate::session::Downlink;
use crate::upstream::{UpstreamEvent, UpstreamHandler};

/// Filters granted outside the subscribers' own trees.
#[derive(Debug, Default)]
pub struct Router {
    routes: RwLock<HashMap<DeviceId, Vec<(ByteString, QoS)>>>,
    shared: RwLock<Weak<Shared>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        *self.shared.write() = Arc::downgrade(shared);
    }

    /// Adds (or changes the QoS of) a route.
    pub fn subscribe(&self, device: &DeviceId, filter: ByteString, qos: QoS) {
        let mut routes = self.routes.write();
        let list = routes.entry(device.clone()).or_default();
        match list.iter_mut().find(|(f, _)| *f == filter) {
            Some(e) => e.1 = qos,
            None => list.push((filter, qos)),
        }
    }

    /// Removes a route.
    pub fn unsubscribe(&self, device: &DeviceId, filter: &str) {
        let mut routes = self.routes.write();
        if let Some(list) = routes.get_mut(device) {
            list.retain(|(f, _)| f != filter);
            if list.is_empty() {
                routes.remove(device);
            }
        }
    }

    /// Removes every route of a device whose session ended.
    pub fn forget(&self, device: &DeviceId) {
        self.routes.write().remove(device);
    }

    /// The subscribers of `topic` other than `publisher`, with the QoS of their best route.
    pub fn matches(&self, topic: &str, publisher: &DeviceId) -> Vec<(DeviceId, QoS)> {
        self.routes
            .read()
            .iter()
            .filter(|(d, _)| *d != publisher)
            .filter_map(|(d, list)| {
                list.iter()
                    .filter(|(f, _)| filter_matches(f, topic))
                    .map(|(_, q)| *q)
                    .max()
                    .map(|q| (d.clone(), q))
            })
            .collect()
    }
}

impl UpstreamHandler for Router {
    fn handle(&self, event: &UpstreamEvent) {
        let UpstreamEvent::Published(p) = event else {
            return;
        };
        let targets = self.matches(&p.topic, &p.device_id);
        if targets.is_empty() {
            return;
        }
        let Some(shared) = self.shared.read().upgrade() else {
            return;
        };
        let qos = QoS::try_from(p.qos).unwrap_or(QoS::AtMostOnce);
        for (device, granted) in targets {
            let msg = Downlink {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                qos: qos.less_value(granted),
            };
            // An offline subscriber without a persistent session simply misses it.
            let _ = shared.deliver(&device, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_and_exclude_the_publisher() {
        let r = Router::new();
        let (m, d) = (
            DeviceId::new("monitor").unwrap(),
            DeviceId::new("d1").unwrap(),
        );
        r.subscribe(&m, "$oc/devices/+/sys/messages/up".into(), QoS::AtLeastOnce);
        r.subscribe(&d, "$oc/devices/+/sys/messages/up".into(), QoS::AtMostOnce);
        assert_eq!(
            r.matches("$oc/devices/d1/sys/messages/up", &d),
            vec![(m.clone(), QoS::AtLeastOnce)]
        );
        assert!(r.matches("$oc/devices/d1/sys/events/up", &d).is_empty());
        r.unsubscribe(&m, "$oc/devices/+/sys/messages/up");
        assert!(r.matches("$oc/devices/d1/sys/messages/up", &d).is_empty());
        r.forget(&d);
        assert!(r.matches("$oc/devices/x/sys/messages/up", &m).is_empty());
    }
}
