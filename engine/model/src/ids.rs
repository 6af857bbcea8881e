//! Identifier newtypes, parsed once at the edge (API path, MQTT topic, storage key) and carried
//! typed everywhere else. Every id type states its length and character rules; the rules come
//! from spec/device-management.md §4.1 and §23 and spec/device-protocol.md §10.1.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    /// Which identifier kind was being parsed (`device_id`, `product_id`, ...).
    pub kind: &'static str,
    /// The rule that was broken.
    pub reason: &'static str,
    /// The offending value, shortened to 64 characters for messages and logs.
    pub value: String,
}

impl IdError {
    pub(crate) fn new(kind: &'static str, reason: &'static str, value: &str) -> Self {
        let value = value.chars().take(64).collect();
        Self {
            kind,
            reason,
            value,
        }
    }
}

/// The character classes identifiers may be restricted to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Charset {
    /// `[A-Za-z0-9_-]`, the rule for device ids, product ids and node ids.
    Word,
    /// Any character except control characters and the MQTT topic specials `/`, `+`, `#`.
    TopicLevel,
    /// Any character except control characters.
    Printable,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        match self {
            Charset::Word => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            Charset::TopicLevel => !c.is_control() && !matches!(c, '/' | '+' | '#'),
            Charset::Printable => !c.is_control(),
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Charset::Word => "only letters, digits, '_' and '-' are allowed",
            Charset::TopicLevel => "control characters, '/', '+' and '#' are not allowed",
            Charset::Printable => "control characters are not allowed",
        }
    }
}

pub(crate) fn check_id(
    kind: &'static str,
    value: &str,
    min: usize,
    max: usize,
    charset: Charset,
) -> Result<(), IdError> {
    let len = value.chars().count();
    if len < min {
        return Err(IdError::new(kind, "too short", value));
    }
    if len > max {
        return Err(IdError::new(kind, "too long", value));
    }
    if !value.chars().all(|c| charset.allows(c)) {
        return Err(IdError::new(kind, charset.reason(), value));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $min:literal..=$max:literal, $charset:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier kind as it appears in error messages and API field names.
            pub const KIND: &'static str = $kind;
            /// Shortest accepted length, in characters.
            pub const MIN_LEN: usize = $min;
            /// Longest accepted length, in characters.
            pub const MAX_LEN: usize = $max;

            /// Parses and validates an identifier.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_id($kind, &value, $min, $max, $charset)?;
                Ok(Self(value))
            }

            /// Wraps a value the crate knows to be valid (a literal of the protocol, or a value
            /// composed from valid parts). Checked in debug builds.
            #[allow(dead_code)]
            pub(crate) fn trusted(value: impl Into<String>) -> Self {
                let value = value.into();
                debug_assert!(check_id($kind, &value, $min, $max, $charset).is_ok(), "{value}");
                Self(value)
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the identifier and returns its string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// A device's platform identity (spec/device-management.md §4.1): 1–128 characters of
    /// `[A-Za-z0-9_-]`, by default `{product_id}_{node_id}`.
    DeviceId, "device_id", 1..=128, Charset::Word
);
string_id!(
    /// A product identity: 1–64 characters of `[A-Za-z0-9_-]`. Kept to 64 so that a derived
    /// `{product_id}_{node_id}` device id stays within 128.
    ProductId, "product_id", 1..=64, Charset::Word
);
string_id!(
    /// A device's physical identity (IMEI, MAC, serial number): 1–63 characters of
    /// `[A-Za-z0-9_-]`; MAC addresses are written with `-` rather than `:`.
    NodeId, "node_id", 1..=63, Charset::Word
);
string_id!(
    /// A resource space (shown as `app_id` in notifications): 1–36 characters of `[A-Za-z0-9_-]`.
    AppId, "app_id", 1..=36, Charset::Word
);
string_id!(
    /// A device group.
    GroupId, "group_id", 1..=64, Charset::Word
);
string_id!(
    /// An OTA package (firmware or software).
    PackageId, "package_id", 1..=64, Charset::Word
);
string_id!(
    /// An OTA upgrade task.
    TaskId, "task_id", 1..=64, Charset::Word
);
string_id!(
    /// A data-forwarding rule (the trigger half of a subscription, spec/app-side.md §1.8).
    RuleId, "rule_id", 1..=64, Charset::Word
);
string_id!(
    /// A rule action: where a rule's matching events are pushed (spec/app-side.md §1.8).
    ActionId, "action_id", 1..=64, Charset::Word
);
string_id!(
    /// A publish/subscribe ACL rule (spec/app-side.md §10, row 6).
    AclRuleId, "acl_rule_id", 1..=64, Charset::Word
);
string_id!(
    /// A service of a product model; system services start with `$` (`$ota`, `$log`, ...).
    ServiceId, "service_id", 1..=64, Charset::TopicLevel
);
string_id!(
    /// The correlation token of a request (spec/device-protocol.md §3.4). It sits inside one
    /// topic level after `request_id=`, so it may not contain `/`, `+` or `#`.
    RequestId, "request_id", 1..=128, Charset::TopicLevel
);
string_id!(
    /// A command's name within a service of the product model.
    CommandName, "command_name", 1..=128, Charset::Printable
);

macro_rules! generated_id {
    ($name:ident) => {
        impl $name {
            /// A fresh random identifier (a hyphen-less UUID v4, 32 hex digits).
            pub fn generate() -> Self {
                Self(uuid::Uuid::new_v4().simple().to_string())
            }
        }
    };
}
generated_id!(GroupId);
generated_id!(PackageId);
generated_id!(TaskId);
generated_id!(RuleId);
generated_id!(ActionId);
generated_id!(AclRuleId);
generated_id!(ProductId);

impl RequestId {
    /// A fresh request id for a platform-originated request (a hyphenated UUID v4).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl DeviceId {
    /// Composes the default device id `{product_id}_{node_id}` (spec/device-management.md §4.1).
    pub fn derive(product: &ProductId, node: &NodeId) -> Self {
        // Both parts are word characters, at most 64 + 1 + 63 = 128 characters.
        Self(format!("{product}_{node}"))
    }
}

/// A command's identity: a UUID (spec/device-management.md §22.4).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(uuid::Uuid);

impl CommandId {
    /// A fresh random command id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id's 16 bytes, used in storage keys.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from the 16 bytes of a storage key.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
}

impl FromStr for CommandId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::new("command_id", "not a UUID", s))
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({})", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_rules() {
        assert!(DeviceId::new("5f111a5a29c62ac7edc88828_test0001").is_ok());
        assert!(DeviceId::new("").is_err());
        assert!(DeviceId::new("a".repeat(128)).is_ok());
        assert!(DeviceId::new("a".repeat(129)).is_err());
        assert!(DeviceId::new("dev/1").is_err());
        assert!(DeviceId::new("dev 1").is_err());
        assert!(DeviceId::new("dév").is_err());
    }

    #[test]
    fn derived_device_id_is_valid_at_maximum_lengths() {
        let product = ProductId::new("p".repeat(64)).unwrap();
        let node = NodeId::new("n".repeat(63)).unwrap();
        let id = DeviceId::derive(&product, &node);
        assert_eq!(DeviceId::new(id.as_str()), Ok(id));
    }

    #[test]
    fn request_id_may_not_break_the_topic_level() {
        assert!(RequestId::new("42").is_ok());
        assert!(RequestId::new("a/b").is_err());
        assert!(RequestId::new("a+").is_err());
        assert!(RequestId::new("#").is_err());
        assert!(RequestId::new("a\0").is_err());
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: Result<DeviceId, _> = serde_json::from_str("\"abc_1\"");
        assert!(ok.is_ok());
        let bad: Result<DeviceId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn command_id_round_trips_through_text_and_bytes() {
        let id = CommandId::generate();
        assert_eq!(id.to_string().parse::<CommandId>(), Ok(id));
        assert_eq!(CommandId::from_bytes(*id.as_bytes()), id);
        assert!("nope".parse::<CommandId>().is_err());
    }
}
