//! The `$oc/devices/{device_id}/...` topic grammar (spec/device-protocol.md §3.3, §3.4;
//! spec/device-management.md §19) as one typed parser and formatter, plus MQTT topic-filter
//! matching used by subscriptions and ACLs.
//!
//! ```text
//! topic      = "$oc/devices/" device_id "/" ( "sys/" sys | "user/" suffix )
//! sys        = "messages/up" | "messages/down" | "properties/report" | "events/up" | "events/down"
//!            | "gateway/sub_devices/properties/report"
//!            | ( "commands" | "properties/set" | "properties/get" | "shadow/get" )
//!              [ "/response" ] "/request_id=" request_id
//! ```

use std::fmt;

use crate::ids::{DeviceId, IdError, RequestId};
use crate::product::check_custom_topic_suffix;

/// The prefix of every platform topic.
pub const OC_PREFIX: &str = "$oc/devices/";
/// Longest topic accepted, in bytes (MQTT allows 65535; no platform topic comes near this).
pub const MAX_TOPIC_LEN: usize = 1024;

/// Who publishes on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device → platform.
    Up,
    /// Platform → device.
    Down,
}

/// The request/response families that carry a `request_id` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `commands`: platform-originated.
    Command,
    /// `properties/set`: platform-originated.
    PropertiesSet,
    /// `properties/get`: platform-originated.
    PropertiesGet,
    /// `shadow/get`: device-originated.
    ShadowGet,
}

impl RequestKind {
    const ALL: [RequestKind; 4] = [
        RequestKind::Command,
        RequestKind::PropertiesSet,
        RequestKind::PropertiesGet,
        RequestKind::ShadowGet,
    ];

    fn path(self) -> &'static str {
        match self {
            RequestKind::Command => "commands",
            RequestKind::PropertiesSet => "properties/set",
            RequestKind::PropertiesGet => "properties/get",
            RequestKind::ShadowGet => "shadow/get",
        }
    }

    /// Who sends the request (the response goes the other way).
    pub fn request_direction(self) -> Direction {
        match self {
            RequestKind::ShadowGet => Direction::Up,
            _ => Direction::Down,
        }
    }
}

/// A system topic below `$oc/devices/{device_id}/sys/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SysTopic {
    /// `messages/up`.
    MessagesUp,
    /// `messages/down`.
    MessagesDown,
    /// `properties/report`.
    PropertiesReport,
    /// `gateway/sub_devices/properties/report` (underscore, unlike the HTTPS path).
    GatewayPropertiesReport,
    /// `events/up`.
    EventsUp,
    /// `events/down`.
    EventsDown,
    /// `{kind}/request_id={id}`.
    Request(RequestKind, RequestId),
    /// `{kind}/response/request_id={id}`.
    Response(RequestKind, RequestId),
}

impl SysTopic {
    /// Who publishes on this topic.
    pub fn direction(&self) -> Direction {
        match self {
            SysTopic::MessagesUp
            | SysTopic::PropertiesReport
            | SysTopic::GatewayPropertiesReport
            | SysTopic::EventsUp => Direction::Up,
            SysTopic::MessagesDown | SysTopic::EventsDown => Direction::Down,
            SysTopic::Request(kind, _) => kind.request_direction(),
            SysTopic::Response(kind, _) => match kind.request_direction() {
                Direction::Up => Direction::Down,
                Direction::Down => Direction::Up,
            },
        }
    }
}

/// The part of a device topic after `{device_id}/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceTopicKind {
    /// A system topic.
    Sys(SysTopic),
    /// A custom topic `user/{suffix}` of the device's product.
    User(String),
}

/// A parsed `$oc/devices/{device_id}/...` topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceTopic {
    /// The device named by the topic.
    pub device_id: DeviceId,
    /// Which topic.
    pub kind: DeviceTopicKind,
}

/// Why a `$oc/` topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("topic longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// The device id level is invalid.
    #[error(transparent)]
    DeviceId(IdError),
    /// The request id is invalid.
    #[error(transparent)]
    RequestId(IdError),
    /// A `sys/` topic that is not in the catalogue.
    #[error("unknown system topic {0:?}")]
    UnknownSys(String),
    /// A malformed custom topic suffix.
    #[error("invalid custom topic suffix {suffix:?}: {reason}")]
    BadUserSuffix {
        /// The suffix.
        suffix: String,
        /// The rule broken.
        reason: &'static str,
    },
    /// `$oc/devices/{id}/` followed by something other than `sys/` or `user/`.
    #[error("not a platform topic: {0:?}")]
    Malformed(String),
}

impl DeviceTopic {
    /// A system topic of `device_id`.
    pub fn sys(device_id: DeviceId, topic: SysTopic) -> Self {
        Self {
            device_id,
            kind: DeviceTopicKind::Sys(topic),
        }
    }

    /// Parses a topic name. `Ok(None)` means the topic is not under `$oc/devices/` (a fully
    /// custom topic such as `/usr/xxx/data/up`); `Err` means it is, but is malformed.
    pub fn parse(topic: &str) -> Result<Option<DeviceTopic>, TopicError> {
        let Some(rest) = topic.strip_prefix(OC_PREFIX) else {
            return Ok(None);
        };
        if topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        let (device, rest) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::Malformed(topic.to_owned()))?;
        let device_id = DeviceId::new(device).map_err(TopicError::DeviceId)?;
        let kind = if let Some(sys) = rest.strip_prefix("sys/") {
            DeviceTopicKind::Sys(parse_sys(sys)?)
        } else if let Some(suffix) = rest.strip_prefix("user/") {
            check_custom_topic_suffix(suffix).map_err(|reason| TopicError::BadUserSuffix {
                suffix: suffix.to_owned(),
                reason,
            })?;
            DeviceTopicKind::User(suffix.to_owned())
        } else {
            return Err(TopicError::Malformed(topic.to_owned()));
        };
        Ok(Some(DeviceTopic { device_id, kind }))
    }
}

fn parse_sys(sys: &str) -> Result<SysTopic, TopicError> {
    let fixed = match sys {
        "messages/up" => Some(SysTopic::MessagesUp),
        "messages/down" => Some(SysTopic::MessagesDown),
        "properties/report" => Some(SysTopic::PropertiesReport),
        "gateway/sub_devices/properties/report" => Some(SysTopic::GatewayPropertiesReport),
        "events/up" => Some(SysTopic::EventsUp),
        "events/down" => Some(SysTopic::EventsDown),
        _ => None,
    };
    if let Some(t) = fixed {
        return Ok(t);
    }
    for kind in RequestKind::ALL {
        let Some(after) = sys.strip_prefix(kind.path()) else {
            continue;
        };
        let (response, id) = if let Some(id) = after.strip_prefix("/response/request_id=") {
            (true, id)
        } else if let Some(id) = after.strip_prefix("/request_id=") {
            (false, id)
        } else {
            continue;
        };
        let id = RequestId::new(id).map_err(TopicError::RequestId)?;
        return Ok(if response {
            SysTopic::Response(kind, id)
        } else {
            SysTopic::Request(kind, id)
        });
    }
    Err(TopicError::UnknownSys(sys.to_owned()))
}

impl fmt::Display for SysTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysTopic::MessagesUp => f.write_str("messages/up"),
            SysTopic::MessagesDown => f.write_str("messages/down"),
            SysTopic::PropertiesReport => f.write_str("properties/report"),
            SysTopic::GatewayPropertiesReport => {
                f.write_str("gateway/sub_devices/properties/report")
            }
            SysTopic::EventsUp => f.write_str("events/up"),
            SysTopic::EventsDown => f.write_str("events/down"),
            SysTopic::Request(kind, id) => write!(f, "{}/request_id={id}", kind.path()),
            SysTopic::Response(kind, id) => write!(f, "{}/response/request_id={id}", kind.path()),
        }
    }
}

impl fmt::Display for DeviceTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeviceTopicKind::Sys(t) => write!(f, "{OC_PREFIX}{}/sys/{t}", self.device_id),
            DeviceTopicKind::User(s) => write!(f, "{OC_PREFIX}{}/user/{s}", self.device_id),
        }
    }
}

/// Why a topic filter was refused ([MQTT-4.7.1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Empty filter.
    #[error("empty topic filter")]
    Empty,
    /// `#` not alone in the last level, or `+` not alone in its level.
    #[error("wildcards must occupy a whole level and '#' must be last")]
    BadWildcard,
    /// Contains NUL.
    #[error("topic filter contains NUL")]
    Nul,
}

/// Checks a subscription filter: `+` fills a whole level, `#` fills the last level.
pub fn validate_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if !last => return Err(FilterError::BadWildcard),
            "#" | "+" => {}
            l if l.contains(['#', '+']) => return Err(FilterError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a topic name matches a (valid) filter, including the rule that topics starting with
/// `$` are not matched by a filter whose first level is a wildcard ([MQTT-4.7.2-1]).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev() -> DeviceId {
        DeviceId::new("60a87ffebaccd902c2f1abbb_0001").unwrap()
    }

    #[test]
    fn parses_every_catalogue_topic() {
        let d = "60a87ffebaccd902c2f1abbb_0001";
        let cases = [
            ("messages/up", SysTopic::MessagesUp, Direction::Up),
            ("messages/down", SysTopic::MessagesDown, Direction::Down),
            (
                "properties/report",
                SysTopic::PropertiesReport,
                Direction::Up,
            ),
            (
                "gateway/sub_devices/properties/report",
                SysTopic::GatewayPropertiesReport,
                Direction::Up,
            ),
            ("events/up", SysTopic::EventsUp, Direction::Up),
            ("events/down", SysTopic::EventsDown, Direction::Down),
        ];
        for (suffix, want, dir) in cases {
            let t = DeviceTopic::parse(&format!("$oc/devices/{d}/sys/{suffix}"))
                .unwrap()
                .unwrap();
            assert_eq!(t.device_id, dev());
            assert_eq!(t.kind, DeviceTopicKind::Sys(want.clone()));
            assert_eq!(want.direction(), dir);
        }
        let rid = RequestId::new("7").unwrap();
        let requests = [
            ("commands", RequestKind::Command, Direction::Down),
            (
                "properties/set",
                RequestKind::PropertiesSet,
                Direction::Down,
            ),
            (
                "properties/get",
                RequestKind::PropertiesGet,
                Direction::Down,
            ),
            ("shadow/get", RequestKind::ShadowGet, Direction::Up),
        ];
        for (path, kind, dir) in requests {
            let req = DeviceTopic::parse(&format!("$oc/devices/{d}/sys/{path}/request_id=7"))
                .unwrap()
                .unwrap();
            assert_eq!(
                req.kind,
                DeviceTopicKind::Sys(SysTopic::Request(kind, rid.clone()))
            );
            assert_eq!(SysTopic::Request(kind, rid.clone()).direction(), dir);
            let resp =
                DeviceTopic::parse(&format!("$oc/devices/{d}/sys/{path}/response/request_id=7"))
                    .unwrap()
                    .unwrap();
            assert_eq!(
                resp.kind,
                DeviceTopicKind::Sys(SysTopic::Response(kind, rid.clone()))
            );
            assert_ne!(SysTopic::Response(kind, rid.clone()).direction(), dir);
        }
    }

    #[test]
    fn custom_and_foreign_topics() {
        let t = DeviceTopic::parse("$oc/devices/d1/user/data/up")
            .unwrap()
            .unwrap();
        assert_eq!(t.kind, DeviceTopicKind::User("data/up".into()));
        assert_eq!(DeviceTopic::parse("/usr/xxx/data/up"), Ok(None));
        assert!(DeviceTopic::parse("$oc/devices/d1/user/a//b").is_err());
        assert!(DeviceTopic::parse("$oc/devices/d1/user/").is_err());
        assert!(DeviceTopic::parse("$oc/devices/d1/sys/commands").is_err());
        assert!(DeviceTopic::parse("$oc/devices/d1/sys/commands/request_id=").is_err());
        assert!(
            DeviceTopic::parse("$oc/devices/d1/sys/gateway/sub-devices/properties/report").is_err()
        );
        assert!(DeviceTopic::parse("$oc/devices/d 1/sys/events/up").is_err());
        assert!(DeviceTopic::parse("$oc/devices/d1").is_err());
        assert!(DeviceTopic::parse("$oc/devices/d1/other/x").is_err());
    }

    #[test]
    fn filters() {
        let topic = "$oc/devices/d1/sys/commands/request_id=5";
        assert!(filter_matches("$oc/devices/d1/sys/commands/#", topic));
        assert!(filter_matches("$oc/devices/+/sys/commands/+", topic));
        assert!(filter_matches(
            "$oc/devices/d1/sys/commands/request_id=5",
            topic
        ));
        assert!(!filter_matches("#", topic));
        assert!(!filter_matches("+/devices/d1/sys/commands/#", topic));
        assert!(!filter_matches("$oc/devices/d2/sys/commands/#", topic));
        assert!(filter_matches("a/#", "a"));
        assert!(!filter_matches("a/+", "a"));
        assert!(validate_filter("a/+/b/#").is_ok());
        assert_eq!(validate_filter("a/#/b"), Err(FilterError::BadWildcard));
        assert_eq!(validate_filter("a/b+"), Err(FilterError::BadWildcard));
        assert_eq!(validate_filter(""), Err(FilterError::Empty));
    }

    fn sys_topic() -> impl Strategy<Value = SysTopic> {
        let kind = prop_oneof![
            Just(RequestKind::Command),
            Just(RequestKind::PropertiesSet),
            Just(RequestKind::PropertiesGet),
            Just(RequestKind::ShadowGet),
        ];
        let rid = "[^/+#\\x00-\\x1f\\x7f-\\x9f]{1,40}".prop_map(|s| RequestId::new(s).unwrap());
        prop_oneof![
            Just(SysTopic::MessagesUp),
            Just(SysTopic::MessagesDown),
            Just(SysTopic::PropertiesReport),
            Just(SysTopic::GatewayPropertiesReport),
            Just(SysTopic::EventsUp),
            Just(SysTopic::EventsDown),
            (kind.clone(), rid.clone()).prop_map(|(k, r)| SysTopic::Request(k, r)),
            (kind, rid).prop_map(|(k, r)| SysTopic::Response(k, r)),
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            device in "[A-Za-z0-9_-]{1,128}",
            sys in sys_topic(),
            suffix in "[A-Za-z0-9_]{1,20}(/[A-Za-z0-9_]{1,20}){0,2}",
            user in any::<bool>(),
        ) {
            let device_id = DeviceId::new(device).unwrap();
            let kind = if user { DeviceTopicKind::User(suffix) } else { DeviceTopicKind::Sys(sys) };
            let topic = DeviceTopic { device_id, kind };
            let text = topic.to_string();
            prop_assert_eq!(DeviceTopic::parse(&text), Ok(Some(topic)));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = DeviceTopic::parse(&s);
            let _ = DeviceTopic::parse(&format!("$oc/devices/{s}"));
        }

        #[test]
        fn a_topic_matches_itself_as_a_filter(s in "[a-z]{1,5}(/[a-z]{1,5}){0,4}") {
            prop_assert!(validate_filter(&s).is_ok());
            prop_assert!(filter_matches(&s, &s));
        }
    }
}
