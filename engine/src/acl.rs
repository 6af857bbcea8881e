//! Who may publish and subscribe where (spec/README.md decision 5, spec/device-management.md
//! §19, spec/app-side.md §10 row 6).
//!
//! Stored ACL rules are evaluated first: the matching rule with the highest priority decides,
//! a deny winning ties. Without a matching rule the built-in policy applies: a device publishes
//! only on the uplink system topics of its own `$oc/devices/{id}/` tree (a gateway also on its
//! sub-devices' trees) and on its product's custom topics that allow publishing; it subscribes
//! only within those trees (custom topics that allow subscribing). Everything else is refused.

use std::collections::HashSet;
use std::sync::Arc;

use fleetgate_model::DeviceId;
use fleetgate_model::product::CustomTopic;
use fleetgate_model::rule::{AclAccess, AclAction, AclRule, AclScope};
use fleetgate_model::topic::{
    DeviceTopic, DeviceTopicKind, Direction, OC_PREFIX, filter_matches, validate_filter,
};

use crate::flow::Rate;

/// What the engine knows of a product while its devices are connected.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductPolicy {
    /// The product.
    pub product_id: fleetgate_model::ProductId,
    /// Its resource space.
    pub app_id: fleetgate_model::AppId,
    /// Custom topics and their permissions.
    pub custom_topics: Vec<CustomTopic>,
    /// Uplink message rate of each device.
    pub messages: Rate,
    /// Uplink byte rate of each device.
    pub bytes: Rate,
    /// Milliseconds a device may stay over its budget, slowed down, before it is refused.
    pub max_throttle_ms: u64,
}

/// What a session knows of its authenticated device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// The device.
    pub device_id: DeviceId,
    /// Its product's policy, shared by every device of the product.
    pub product: Arc<ProductPolicy>,
    /// Sub-devices, when the device is a gateway.
    pub sub_devices: Option<Arc<HashSet<DeviceId>>>,
}

impl DeviceInfo {
    /// Whether `id` is this device or one of its sub-devices.
    pub fn owns(&self, id: &str) -> bool {
        self.device_id.as_str() == id || self.sub_devices.as_ref().is_some_and(|s| s.contains(id))
    }
}

/// The stored ACL rules, ordered for evaluation (highest priority first, deny before allow).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AclRules {
    rules: Vec<AclRule>,
}

impl AclRules {
    /// Orders `rules` for evaluation.
    pub fn new(mut rules: Vec<AclRule>) -> Self {
        rules.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| (a.access == AclAccess::Allow).cmp(&(b.access == AclAccess::Allow)))
        });
        AclRules { rules }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The access the first matching rule gives. A rule applies only to devices of the
    /// resource space that owns it, so one application's rules never reach another's devices.
    fn decide(
        &self,
        info: &DeviceInfo,
        username: &str,
        action: AclAction,
        topic: &str,
    ) -> Option<AclAccess> {
        self.rules
            .iter()
            .find(|r| {
                if r.app_id != info.product.app_id {
                    return false;
                }
                let scope = match &r.scope {
                    AclScope::All => true,
                    AclScope::DeviceId(d) => *d == info.device_id,
                    AclScope::Username(u) => u == username,
                };
                let act = r.action == AclAction::All || r.action == action;
                // For subscriptions the rule's filter must cover the requested filter; treating
                // the requested filter's wildcards as plain characters does exactly that.
                scope && act && (r.topic == topic || filter_matches(&r.topic, topic))
            })
            .map(|r| r.access)
    }
}

/// The families of downlink system topics a device is implicitly subscribed to (QoS 0), in bit
/// order of [`SubscriptionSet::system_qos1`](crate::session::subscriptions).
pub(crate) const DOWNLINK_FAMILIES: [&str; 6] = [
    "sys/messages/down",
    "sys/events/down",
    "sys/commands/request_id=r",
    "sys/properties/set/request_id=r",
    "sys/properties/get/request_id=r",
    "sys/shadow/get/response/request_id=r",
];

/// The family bit of a downlink system topic.
pub(crate) fn downlink_family(kind: &DeviceTopicKind) -> Option<u8> {
    use fleetgate_model::topic::{RequestKind, SysTopic};
    let DeviceTopicKind::Sys(t) = kind else {
        return None;
    };
    Some(match t {
        SysTopic::MessagesDown => 0,
        SysTopic::EventsDown => 1,
        SysTopic::Request(RequestKind::Command, _) => 2,
        SysTopic::Request(RequestKind::PropertiesSet, _) => 3,
        SysTopic::Request(RequestKind::PropertiesGet, _) => 4,
        SysTopic::Response(RequestKind::ShadowGet, _) => 5,
        _ => return None,
    })
}

/// The downlink families a filter of `device`'s own tree covers, as bits.
pub(crate) fn families_covered(filter: &str, device: &str) -> u8 {
    let mut bits = 0;
    for (i, suffix) in DOWNLINK_FAMILIES.iter().enumerate() {
        if filter_matches(filter, &format!("{OC_PREFIX}{device}/{suffix}")) {
            bits |= 1 << i;
        }
    }
    bits
}

fn custom_permission<'a>(info: &'a DeviceInfo, suffix: &str) -> Option<&'a CustomTopic> {
    info.product
        .custom_topics
        .iter()
        .find(|t| t.suffix == suffix)
}

/// Whether a device may publish on `topic`.
pub fn may_publish(info: &DeviceInfo, username: &str, topic: &str, rules: &AclRules) -> bool {
    if let Some(access) = rules.decide(info, username, AclAction::Publish, topic) {
        return access == AclAccess::Allow;
    }
    match DeviceTopic::parse(topic) {
        Ok(Some(t)) if info.owns(t.device_id.as_str()) => match &t.kind {
            DeviceTopicKind::Sys(s) => s.direction() == Direction::Up,
            DeviceTopicKind::User(suffix) => {
                custom_permission(info, suffix).is_some_and(|c| c.permission.may_publish())
            }
        },
        _ => false,
    }
}

/// What a subscription filter is, once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeScope {
    /// Within the device's (or a sub-device's) own tree.
    Own,
    /// Elsewhere, allowed by a stored rule.
    Granted,
}

/// Whether a device may subscribe to `filter` (already syntax-checked).
pub fn may_subscribe(
    info: &DeviceInfo,
    username: &str,
    filter: &str,
    rules: &AclRules,
) -> Option<SubscribeScope> {
    if validate_filter(filter).is_err() {
        return None;
    }
    let own = own_filter(info, filter);
    match rules.decide(info, username, AclAction::Subscribe, filter) {
        Some(AclAccess::Allow) => Some(if own {
            SubscribeScope::Own
        } else {
            SubscribeScope::Granted
        }),
        Some(AclAccess::Deny) => None,
        None => own.then_some(SubscribeScope::Own),
    }
}

/// A filter is within the device's own tree when its device level is literally the device or
/// one of its sub-devices; a literal custom-topic filter must name a custom topic that allows
/// subscribing.
fn own_filter(info: &DeviceInfo, filter: &str) -> bool {
    let Some(rest) = filter.strip_prefix(OC_PREFIX) else {
        return false;
    };
    let Some((device, tail)) = rest.split_once('/') else {
        return false;
    };
    if device.contains(['+', '#']) || !info.owns(device) {
        return false;
    }
    match tail.strip_prefix("user/") {
        Some(suffix) if !suffix.contains(['+', '#']) => {
            custom_permission(info, suffix).is_some_and(|c| c.permission.may_subscribe())
        }
        // Anything else within the tree: only the platform publishes there, and only what the
        // device may receive.
        _ => true,
    }
}

#[cfg(test)]
mod tests;
