//! The device shadow (spec/device-management.md §7): per service a `desired` part written by
//! applications, a `reported` part written by property reports, and a version. The delta is
//! what desired still differs from reported; the platform pushes it until it is empty (§7.4).
//!
//! Versions increase by one on every change of a service shadow (desired write or report);
//! a desired write may name the version it read, and is refused when it moved (optimistic
//! locking). Writing `null` for a desired property removes it from `desired`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{DeviceId, ServiceId};
use crate::payload::{PropertiesData, ShadowData};
use crate::product::check_property_name;
use crate::time::Timestamp;

/// Properties with the time they were written or collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedProperties {
    /// Property name → value.
    pub properties: Map<String, Value>,
    /// When they were last written.
    pub event_time: Timestamp,
}

/// One service's shadow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceShadow {
    /// What the application wants applied.
    #[serde(default)]
    pub desired: Option<TimedProperties>,
    /// What the device last reported.
    #[serde(default)]
    pub reported: Option<TimedProperties>,
    /// Increases on every change; starts at 0.
    #[serde(default)]
    pub version: u64,
}

/// A device's whole shadow: exactly one per device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Shadow {
    /// Per-service shadows, ordered by service id.
    #[serde(default)]
    pub services: BTreeMap<ServiceId, ServiceShadow>,
}

/// Why a desired write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShadowError {
    /// The caller's version is not the current one.
    #[error(
        "shadow version conflict for service {service_id}: expected {expected}, current {current}"
    )]
    VersionConflict {
        /// The service.
        service_id: ServiceId,
        /// What the caller sent.
        expected: u64,
        /// What is stored.
        current: u64,
    },
    /// A key contains `.`, `$` or NUL, or is empty or too long (§7.2 rule 6).
    #[error("invalid shadow key {key:?}: {reason}")]
    BadKey {
        /// The key.
        key: String,
        /// The rule broken.
        reason: &'static str,
    },
    /// Nothing to write.
    #[error("desired properties may not be empty")]
    Empty,
}

/// Whether two property values are the same for delta purposes: JSON-equal, or a number and
/// a numeric string of the same value (devices and applications mix both).
pub fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match (a, b) {
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            matches!((num(a), num(b)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

impl ServiceShadow {
    /// The desired properties that reported does not (yet) match.
    pub fn delta(&self) -> Map<String, Value> {
        let Some(desired) = &self.desired else {
            return Map::new();
        };
        let reported = self.reported.as_ref().map(|r| &r.properties);
        desired
            .properties
            .iter()
            .filter(|(k, v)| {
                !reported
                    .and_then(|r| r.get(*k))
                    .is_some_and(|r| same_value(v, r))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Shadow {
    /// Merges reported properties into a service's `reported` part and bumps its version.
    /// Returns whether the service still has a delta afterwards.
    pub fn report(
        &mut self,
        service_id: &ServiceId,
        properties: &Map<String, Value>,
        event_time: Timestamp,
    ) -> bool {
        let svc = self.services.entry(service_id.clone()).or_default();
        let reported = svc.reported.get_or_insert_with(|| TimedProperties {
            properties: Map::new(),
            event_time,
        });
        for (k, v) in properties {
            reported.properties.insert(k.clone(), v.clone());
        }
        reported.event_time = reported.event_time.max(event_time);
        svc.version += 1;
        !svc.delta().is_empty()
    }

    /// Writes desired properties of one service, checking the version when given.
    /// Returns the service's new version.
    pub fn set_desired(
        &mut self,
        service_id: &ServiceId,
        properties: &Map<String, Value>,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<u64, ShadowError> {
        if properties.is_empty() {
            return Err(ShadowError::Empty);
        }
        for key in properties.keys() {
            check_property_name(key).map_err(|reason| ShadowError::BadKey {
                key: key.clone(),
                reason,
            })?;
        }
        let current = self.services.get(service_id).map_or(0, |s| s.version);
        if let Some(expected) = expected_version
            && expected != current
        {
            return Err(ShadowError::VersionConflict {
                service_id: service_id.clone(),
                expected,
                current,
            });
        }
        let svc = self.services.entry(service_id.clone()).or_default();
        let desired = svc.desired.get_or_insert_with(|| TimedProperties {
            properties: Map::new(),
            event_time: now,
        });
        for (k, v) in properties {
            if v.is_null() {
                desired.properties.remove(k);
            } else {
                desired.properties.insert(k.clone(), v.clone());
            }
        }
        desired.event_time = now;
        if desired.properties.is_empty() {
            svc.desired = None;
        }
        svc.version += 1;
        Ok(svc.version)
    }

    /// Every service's non-empty delta.
    pub fn delta(&self) -> Vec<(ServiceId, Map<String, Value>)> {
        self.services
            .iter()
            .map(|(id, s)| (id.clone(), s.delta()))
            .filter(|(_, d)| !d.is_empty())
            .collect()
    }

    /// Whether any desired value is still pending.
    pub fn has_delta(&self) -> bool {
        self.services.values().any(|s| !s.delta().is_empty())
    }

    /// The wire form (spec/device-protocol.md §7.5, spec/device-management.md §7.3), all
    /// services or one.
    pub fn to_wire(&self, service: Option<&ServiceId>) -> Vec<ShadowData> {
        let wire = |p: &TimedProperties| PropertiesData {
            properties: p.properties.clone(),
            event_time: Some(p.event_time.to_compact()),
        };
        self.services
            .iter()
            .filter(|(id, _)| service.is_none_or(|s| s == *id))
            .map(|(id, s)| ShadowData {
                service_id: id.clone(),
                desired: s.desired.as_ref().map(wire),
                reported: s.reported.as_ref().map(wire),
                version: Some(s.version),
            })
            .collect()
    }

    /// The shadow-get response for `device`.
    pub fn response(
        &self,
        device: &DeviceId,
        service: Option<&ServiceId>,
    ) -> crate::payload::ShadowGetResponse {
        crate::payload::ShadowGetResponse {
            object_device_id: device.clone(),
            shadow: self.to_wire(service),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn svc() -> ServiceId {
        ServiceId::new("WaterMeter").unwrap()
    }

    #[test]
    fn desired_then_matching_report_clears_the_delta() {
        let mut s = Shadow::default();
        let t = Timestamp::from_millis(1_000);
        assert_eq!(
            s.set_desired(&svc(), &map(json!({"temperature": "60"})), Some(0), t),
            Ok(1)
        );
        assert_eq!(s.delta(), vec![(svc(), map(json!({"temperature": "60"})))]);
        assert!(s.report(&svc(), &map(json!({"temperature": 50})), t));
        assert!(!s.report(&svc(), &map(json!({"temperature": 60, "flow": 3})), t));
        assert!(!s.has_delta());
        assert_eq!(s.services[&svc()].version, 3);
        // Desired values stay stored after they were applied.
        assert!(s.services[&svc()].desired.is_some());
    }

    #[test]
    fn version_conflicts_are_refused() {
        let mut s = Shadow::default();
        let t = Timestamp::from_millis(0);
        s.set_desired(&svc(), &map(json!({"a": 1})), None, t)
            .unwrap();
        let err = s
            .set_desired(&svc(), &map(json!({"a": 2})), Some(0), t)
            .unwrap_err();
        assert!(matches!(
            err,
            ShadowError::VersionConflict {
                current: 1,
                expected: 0,
                ..
            }
        ));
    }

    #[test]
    fn forbidden_keys_and_null_removal() {
        let mut s = Shadow::default();
        let t = Timestamp::from_millis(0);
        for bad in ["a.b", "$a", "a\u{0}"] {
            let mut m = Map::new();
            m.insert(bad.into(), json!(1));
            assert!(matches!(
                s.set_desired(&svc(), &m, None, t),
                Err(ShadowError::BadKey { .. })
            ));
        }
        s.set_desired(&svc(), &map(json!({"a": 1, "b": 2})), None, t)
            .unwrap();
        s.set_desired(&svc(), &map(json!({"a": null})), None, t)
            .unwrap();
        assert_eq!(s.delta(), vec![(svc(), map(json!({"b": 2})))]);
        s.set_desired(&svc(), &map(json!({"b": null})), None, t)
            .unwrap();
        assert!(s.services[&svc()].desired.is_none());
    }

    #[test]
    fn wire_form_matches_the_spec_example() {
        let mut s = Shadow::default();
        let t = Timestamp::parse_compact("20151212T121212Z").unwrap();
        s.set_desired(&svc(), &map(json!({"temperature": "60"})), None, t)
            .unwrap();
        let dev = DeviceId::new("40fe3542-f4cc-4b6a-98c3-61a49ba1acd4").unwrap();
        let v = serde_json::to_value(s.response(&dev, None)).unwrap();
        assert_eq!(
            v,
            json!({"object_device_id": "40fe3542-f4cc-4b6a-98c3-61a49ba1acd4",
                   "shadow": [{"service_id": "WaterMeter",
                               "desired": {"properties": {"temperature": "60"}, "event_time": "20151212T121212Z"},
                               "version": 1}]})
        );
    }
}
