//! Routing of device publications to other sessions (the internal publish path): a session
//! whose subscription outside its own tree was granted by a stored ACL rule registers the
//! filter here, and every accepted publication is delivered to the matching sessions. Runs as
//! an upstream handler, off the reactor threads. Such subscriptions are rare (a monitoring
//! client, an application gateway), so a list scanned per publication is enough.
//!
//! Routes never cross applications: a subscriber receives only publications of devices of
//! its own application, whatever its filter matches.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_model::topic::filter_matches;
use fleetgate_model::{AppId, DeviceId};
use parking_lot::RwLock;

use crate::engine::Shared;
use crate::session::Downlink;
use crate::upstream::{UpstreamEvent, UpstreamHandler};

/// One subscriber's routes.
#[derive(Debug)]
struct Routes {
    app: AppId,
    filters: Vec<(ByteString, QoS)>,
}

/// Filters granted outside the subscribers' own trees.
#[derive(Debug, Default)]
pub struct Router {
    routes: RwLock<HashMap<DeviceId, Routes>>,
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

    /// Adds (or changes the QoS of) a route of `device`, a device of `app`.
    pub fn subscribe(&self, device: &DeviceId, app: &AppId, filter: ByteString, qos: QoS) {
        let mut routes = self.routes.write();
        let entry = routes.entry(device.clone()).or_insert_with(|| Routes {
            app: app.clone(),
            filters: Vec::new(),
        });
        let list = &mut entry.filters;
        match list.iter_mut().find(|(f, _)| *f == filter) {
            Some(e) => e.1 = qos,
            None => list.push((filter, qos)),
        }
    }

    /// Removes a route.
    pub fn unsubscribe(&self, device: &DeviceId, filter: &str) {
        let mut routes = self.routes.write();
        if let Some(entry) = routes.get_mut(device) {
            entry.filters.retain(|(f, _)| f != filter);
            if entry.filters.is_empty() {
                routes.remove(device);
            }
        }
    }

    /// Removes every route of a device whose session ended.
    pub fn forget(&self, device: &DeviceId) {
        self.routes.write().remove(device);
    }

    /// The subscribers of `topic` in `app` other than `publisher`, with the QoS of their
    /// best route.
    pub fn matches(&self, topic: &str, app: &AppId, publisher: &DeviceId) -> Vec<(DeviceId, QoS)> {
        self.subscribers(topic, app, Some(publisher))
    }

    /// The subscribers of `topic` in `app` other than `except`, with the QoS of their best
    /// route.
    pub fn subscribers(
        &self,
        topic: &str,
        app: &AppId,
        except: Option<&DeviceId>,
    ) -> Vec<(DeviceId, QoS)> {
        self.routes
            .read()
            .iter()
            .filter(|(d, r)| Some(*d) != except && r.app == *app)
            .filter_map(|(d, r)| {
                r.filters
                    .iter()
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
        let targets = self.matches(&p.topic, &p.app_id, &p.device_id);
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
        let app = AppId::new("a").unwrap();
        let (m, d) = (
            DeviceId::new("monitor").unwrap(),
            DeviceId::new("d1").unwrap(),
        );
        r.subscribe(
            &m,
            &app,
            "$oc/devices/+/sys/messages/up".into(),
            QoS::AtLeastOnce,
        );
        r.subscribe(
            &d,
            &app,
            "$oc/devices/+/sys/messages/up".into(),
            QoS::AtMostOnce,
        );
        assert_eq!(
            r.matches("$oc/devices/d1/sys/messages/up", &app, &d),
            vec![(m.clone(), QoS::AtLeastOnce)]
        );
        assert!(
            r.matches("$oc/devices/d1/sys/events/up", &app, &d)
                .is_empty()
        );
        r.unsubscribe(&m, "$oc/devices/+/sys/messages/up");
        assert!(
            r.matches("$oc/devices/d1/sys/messages/up", &app, &d)
                .is_empty()
        );
        r.forget(&d);
        assert!(
            r.matches("$oc/devices/x/sys/messages/up", &app, &m)
                .is_empty()
        );
    }

    #[test]
    fn routes_never_cross_applications() {
        let r = Router::new();
        let (a, b) = (AppId::new("a").unwrap(), AppId::new("b").unwrap());
        let spy = DeviceId::new("spy").unwrap();
        let d = DeviceId::new("d1").unwrap();
        r.subscribe(
            &spy,
            &b,
            "$oc/devices/+/sys/messages/up".into(),
            QoS::AtLeastOnce,
        );
        assert!(
            r.matches("$oc/devices/d1/sys/messages/up", &a, &d)
                .is_empty()
        );
        assert_eq!(
            r.matches("$oc/devices/d1/sys/messages/up", &b, &d),
            vec![(spy, QoS::AtLeastOnce)]
        );
    }
}
