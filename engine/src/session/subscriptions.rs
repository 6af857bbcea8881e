//! A session's subscriptions. Downlink system topics of the device's own tree are subscribed
//! implicitly at QoS 0 (spec/README.md decision 4) and need no storage; explicit filters are
//! kept only when a device subscribes, and may raise a system family to QoS 1.

use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_model::topic::{DeviceTopic, DeviceTopicKind, filter_matches};

use crate::acl::{DeviceInfo, downlink_family, families_covered};

/// Explicit subscriptions and the QoS-1 bits of the downlink system families they cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionSet {
    filters: Vec<(ByteString, QoS)>,
    system_qos1: u8,
}

impl SubscriptionSet {
    /// Adds or replaces a filter at `qos`; returns whether it replaced one.
    pub fn insert(&mut self, filter: ByteString, qos: QoS, device: &str) -> bool {
        let replaced = match self.filters.iter_mut().find(|(f, _)| *f == filter) {
            Some(entry) => {
                entry.1 = qos;
                true
            }
            None => {
                self.filters.push((filter, qos));
                false
            }
        };
        self.recompute(device);
        replaced
    }

    /// Removes a filter; returns whether it existed.
    pub fn remove(&mut self, filter: &str, device: &str) -> bool {
        let before = self.filters.len();
        self.filters.retain(|(f, _)| f != filter);
        let removed = self.filters.len() != before;
        self.recompute(device);
        removed
    }

    fn recompute(&mut self, device: &str) {
        self.system_qos1 = self
            .filters
            .iter()
            .filter(|(_, q)| *q != QoS::AtMostOnce)
            .fold(0, |bits, (f, _)| bits | families_covered(f, device));
    }

    /// Whether `filter` is one of the explicit filters.
    pub fn contains(&self, filter: &str) -> bool {
        self.filters.iter().any(|(f, _)| f == filter)
    }

    /// Number of explicit filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether there are no explicit filters.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The QoS `topic` is delivered with to this session, before capping by the message's own
    /// QoS; `None` when the session does not receive it.
    pub fn qos_for(&self, device: &DeviceInfo, topic: &str) -> Option<QoS> {
        if let Ok(Some(t)) = DeviceTopic::parse(topic)
            && t.device_id == device.device_id
        {
            if let Some(bit) = downlink_family(&t.kind) {
                return Some(if self.system_qos1 & (1 << bit) != 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                });
            }
            if matches!(t.kind, DeviceTopicKind::Sys(_)) {
                // Uplink system topics are never delivered to the device.
                return None;
            }
        }
        self.filters
            .iter()
            .filter(|(f, _)| filter_matches(f, topic))
            .map(|(_, q)| *q)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::acl::ProductPolicy;
    use crate::flow::Rate;
    use fleetgate_model::testing;

    fn device() -> DeviceInfo {
        DeviceInfo {
            device_id: "d1".parse().unwrap(),
            product: Arc::new(ProductPolicy {
                product_id: testing::product_id("p"),
                app_id: testing::app(),
                custom_topics: vec![],
                messages: Rate::UNLIMITED,
                bytes: Rate::UNLIMITED,
                max_throttle_ms: 10_000,
            }),
            sub_devices: None,
        }
    }

    #[test]
    fn implicit_qos0_explicit_raises_to_qos1() {
        let d = device();
        let mut s = SubscriptionSet::default();
        let cmd = "$oc/devices/d1/sys/commands/request_id=7";
        assert_eq!(s.qos_for(&d, cmd), Some(QoS::AtMostOnce));
        assert_eq!(
            s.qos_for(&d, "$oc/devices/d1/sys/messages/down"),
            Some(QoS::AtMostOnce)
        );
        assert_eq!(
            s.qos_for(&d, "$oc/devices/d1/sys/properties/report"),
            None,
            "uplink topic"
        );
        assert_eq!(
            s.qos_for(&d, "$oc/devices/d2/sys/messages/down"),
            None,
            "another device"
        );
        s.insert(
            "$oc/devices/d1/sys/commands/#".into(),
            QoS::AtLeastOnce,
            "d1",
        );
        assert_eq!(s.qos_for(&d, cmd), Some(QoS::AtLeastOnce));
        assert_eq!(
            s.qos_for(&d, "$oc/devices/d1/sys/messages/down"),
            Some(QoS::AtMostOnce)
        );
        assert!(s.remove("$oc/devices/d1/sys/commands/#", "d1"));
        assert_eq!(s.qos_for(&d, cmd), Some(QoS::AtMostOnce));
        assert!(!s.remove("nothing", "d1"));
    }

    #[test]
    fn custom_topics_need_an_explicit_filter() {
        let d = device();
        let mut s = SubscriptionSet::default();
        let t = "$oc/devices/d1/user/cfg";
        assert_eq!(s.qos_for(&d, t), None);
        s.insert("$oc/devices/d1/user/#".into(), QoS::ExactlyOnce, "d1");
        s.insert("$oc/devices/d1/user/cfg".into(), QoS::AtLeastOnce, "d1");
        assert_eq!(s.qos_for(&d, t), Some(QoS::ExactlyOnce));
        assert!(
            s.insert("$oc/devices/d1/user/#".into(), QoS::AtMostOnce, "d1"),
            "replaced"
        );
        assert_eq!(s.qos_for(&d, t), Some(QoS::AtLeastOnce));
        assert_eq!(s.len(), 2);
    }
}
