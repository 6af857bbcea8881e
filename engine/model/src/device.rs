//! Devices (spec/device-management.md §4), their status lifecycle (§5), credentials (§4.2,
//! §4.4), tags and groups (§6).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AppId, DeviceId, GroupId, IdError, NodeId, ProductId};
use crate::time::Timestamp;

/// A device's status (§5.1). `ABNORMAL` and `FROZEN` join the API's `ONLINE`, `OFFLINE` and
/// `INACTIVE` as the spec's design note proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    /// Registered, never connected.
    Inactive,
    /// Connected (MQTT) or reported within 25 h (NB-IoT).
    Online,
    /// Disconnected for a minute (MQTT) or silent for more than 49 h (NB-IoT).
    Offline,
    /// NB-IoT only: silent for more than 25 h.
    Abnormal,
    /// Refused at connect until unfrozen (directly connected devices only).
    Frozen,
}

impl DeviceStatus {
    /// Every status, for metrics and filters.
    pub const ALL: [DeviceStatus; 5] = [
        DeviceStatus::Inactive,
        DeviceStatus::Online,
        DeviceStatus::Offline,
        DeviceStatus::Abnormal,
        DeviceStatus::Frozen,
    ];

    /// The wire spelling (`ONLINE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Inactive => "INACTIVE",
            DeviceStatus::Online => "ONLINE",
            DeviceStatus::Offline => "OFFLINE",
            DeviceStatus::Abnormal => "ABNORMAL",
            DeviceStatus::Frozen => "FROZEN",
        }
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a device, as far as its status is concerned (§5.2 state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusEvent {
    /// A connection was accepted (MQTT CONNACK 0, LwM2M register).
    Connected,
    /// Any uplink data arrived (NB-IoT: resets the 25 h / 49 h clocks).
    Uplink,
    /// MQTT: the connection has been down for the grace period (1 minute).
    ConnectionLost,
    /// NB-IoT: no data for more than 25 hours.
    SilentAbnormal,
    /// NB-IoT: no data for more than 49 hours.
    SilentOffline,
    /// A gateway asserted this sub-device's status (§5.3).
    GatewayReported {
        /// `true` for `ONLINE`, `false` for `OFFLINE`.
        online: bool,
    },
    /// An operator froze the device.
    Freeze,
    /// An operator unfroze the device.
    Unfreeze,
}

/// A status change that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// A frozen device tried to connect or send (§24 item 9: refuse it).
    #[error("the device is frozen")]
    Frozen,
    /// Unfreeze on a device that is not frozen.
    #[error("the device is not frozen")]
    NotFrozen,
}

impl DeviceStatus {
    /// The status after `event`. `activated` tells whether the device ever connected, which
    /// decides where an unfreeze lands (OFFLINE, or INACTIVE if it never connected).
    pub fn next(self, event: StatusEvent, activated: bool) -> Result<DeviceStatus, StatusError> {
        use DeviceStatus as S;
        use StatusEvent as E;
        Ok(match (self, event) {
            (S::Frozen, E::Unfreeze) => {
                if activated {
                    S::Offline
                } else {
                    S::Inactive
                }
            }
            (_, E::Unfreeze) => return Err(StatusError::NotFrozen),
            (S::Frozen, E::Connected | E::Uplink) => return Err(StatusError::Frozen),
            (S::Frozen, _) => S::Frozen,
            (_, E::Freeze) => S::Frozen,
            (_, E::Connected | E::Uplink) => S::Online,
            (_, E::GatewayReported { online: true }) => S::Online,
            (_, E::GatewayReported { online: false }) => S::Offline,
            (S::Online, E::ConnectionLost) => S::Offline,
            (S::Online, E::SilentAbnormal) => S::Abnormal,
            (S::Online | S::Abnormal, E::SilentOffline) => S::Offline,
            (s, _) => s,
        })
    }
}

/// How a device is attached (§4.1 node type; the push body's `node_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeType {
    /// Directly connected device or gateway.
    Gateway,
    /// Sub-device behind a gateway.
    Endpoint,
    /// Not known.
    Unknown,
}

/// How a device authenticates (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthType {
    /// A secret (HMAC-SHA256 password, spec/device-protocol.md §3.5).
    Secret,
    /// An X.509 client certificate (MQTT only).
    Certificates,
}

/// A key/value tag on a device (§6.2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// 1–64 characters, no control characters.
    pub tag_key: String,
    /// 0–128 characters, no control characters.
    #[serde(default)]
    pub tag_value: String,
}

impl Tag {
    /// Builds a tag after checking its lengths and characters.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, IdError> {
        let (tag_key, tag_value) = (key.into(), value.into());
        crate::ids::check_id("tag_key", &tag_key, 1, 64, crate::ids::Charset::Printable)?;
        crate::ids::check_id(
            "tag_value",
            &tag_value,
            0,
            128,
            crate::ids::Charset::Printable,
        )?;
        Ok(Self { tag_key, tag_value })
    }
}

/// A device's connection status and times, kept apart from its record. Connects and
/// disconnects are the most frequent writes of a fleet; they change these few fields only, so
/// storage writes them alone instead of the whole record and its indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// ONLINE, OFFLINE or ABNORMAL.
    pub status: DeviceStatus,
    /// When the device first connected.
    pub first_online_time: Option<Timestamp>,
    /// When it last came online.
    pub last_online_time: Option<Timestamp>,
    /// When it last went offline.
    pub last_offline_time: Option<Timestamp>,
}

/// A registered device (§4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The platform identity.
    pub device_id: DeviceId,
    /// The physical identity.
    pub node_id: NodeId,
    /// The product it belongs to.
    pub product_id: ProductId,
    /// The resource space it belongs to.
    pub app_id: AppId,
    /// Free name.
    #[serde(default)]
    pub device_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The gateway it connects through; its own id when directly connected.
    pub gateway_id: DeviceId,
    /// Direct/gateway or sub-device.
    pub node_type: NodeType,
    /// Secret or certificate.
    pub auth_type: AuthType,
    /// Whether the secret was supplied at registration ("secure device", a label, §25 #5).
    #[serde(default)]
    pub secure: bool,
    /// Current status.
    pub status: DeviceStatus,
    /// When the device first connected; `None` while INACTIVE.
    #[serde(default)]
    pub first_online_time: Option<Timestamp>,
    /// When it last came online.
    #[serde(default)]
    pub last_online_time: Option<Timestamp>,
    /// When it last went offline.
    #[serde(default)]
    pub last_offline_time: Option<Timestamp>,
    /// Firmware version (from version or device-info reports).
    #[serde(default)]
    pub fw_version: Option<String>,
    /// Software version.
    #[serde(default)]
    pub sw_version: Option<String>,
    /// Device SDK version.
    #[serde(default)]
    pub device_sdk_version: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Groups the device belongs to (at most 10, §6.1).
    #[serde(default)]
    pub groups: Vec<GroupId>,
    /// User-defined extension info.
    #[serde(default)]
    pub extension_info: Option<Value>,
    /// Registration time.
    pub create_time: Timestamp,
}

impl Device {
    /// Whether the device is a sub-device behind a gateway.
    pub fn is_sub_device(&self) -> bool {
        self.gateway_id != self.device_id
    }

    /// Checks the fields a user sets: name (at most 256 characters), description (2,048),
    /// tags (key 1–64, value 0–128 printable characters) and extension info (at most 1 KiB of
    /// JSON). Every problem is reported.
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        let mut p = crate::error::Problems::new();
        let printable = |s: &str| !s.chars().any(char::is_control);
        if self.device_name.chars().count() > 256 || !printable(&self.device_name) {
            p.push(
                "device_name",
                "at most 256 characters, no control characters",
            );
        }
        if self.description.chars().count() > 2048 {
            p.push("description", "at most 2048 characters");
        }
        for (i, t) in self.tags.iter().enumerate() {
            if let Err(e) = Tag::new(t.tag_key.clone(), t.tag_value.clone()) {
                p.push(format!("tags[{i}]"), e.to_string());
            }
        }
        if let Some(info) = &self.extension_info
            && info.to_string().len() > 1024
        {
            p.push("extension_info", "at most 1024 bytes of JSON");
        }
        p.finish()
    }

    /// Applies a status event, keeping the online/offline timestamps in step.
    pub fn apply_status(
        &mut self,
        event: StatusEvent,
        now: Timestamp,
    ) -> Result<bool, StatusError> {
        let next = self.status.next(event, self.first_online_time.is_some())?;
        let changed = next != self.status;
        if next == DeviceStatus::Online && (changed || matches!(event, StatusEvent::Connected)) {
            self.first_online_time.get_or_insert(now);
            self.last_online_time = Some(now);
        }
        if changed && next == DeviceStatus::Offline {
            self.last_offline_time = Some(now);
        }
        self.status = next;
        Ok(changed)
    }

    /// Splits the device into the record to store and its [`Presence`]. The record keeps only
    /// the administrative part of the status (FROZEN, else INACTIVE) and no connection times;
    /// the presence keeps the connection status and times. `stored` is the presence stored so
    /// far: its connection status is kept while the device is frozen or not yet activated.
    pub fn split_presence(&self, stored: Option<&Presence>) -> (Device, Option<Presence>) {
        let mut record = self.clone();
        record.status = match self.status {
            DeviceStatus::Frozen => DeviceStatus::Frozen,
            _ => DeviceStatus::Inactive,
        };
        record.first_online_time = None;
        record.last_online_time = None;
        record.last_offline_time = None;
        let status = match self.status {
            s @ (DeviceStatus::Online | DeviceStatus::Offline | DeviceStatus::Abnormal) => Some(s),
            DeviceStatus::Inactive | DeviceStatus::Frozen => stored.map(|p| p.status),
        };
        let presence = match (status, self.first_online_time) {
            (Some(status), first) => Some(Presence {
                status,
                first_online_time: first,
                last_online_time: self.last_online_time,
                last_offline_time: self.last_offline_time,
            }),
            (None, Some(first)) => Some(Presence {
                status: DeviceStatus::Offline,
                first_online_time: Some(first),
                last_online_time: self.last_online_time,
                last_offline_time: self.last_offline_time,
            }),
            (None, None) => None,
        };
        (record, presence)
    }

    /// The device as its stored record and presence describe it together (the inverse of
    /// [`Device::split_presence`]).
    pub fn with_presence(mut self, presence: Option<&Presence>) -> Device {
        if let Some(p) = presence {
            if self.status != DeviceStatus::Frozen {
                self.status = p.status;
            }
            self.first_online_time = p.first_online_time;
            self.last_online_time = p.last_online_time;
            self.last_offline_time = p.last_offline_time;
        }
        self
    }

    /// Finds the value of a tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.tag_key == key)
            .map(|t| t.tag_value.as_str())
    }
}

/// A device secret. Its `Debug` output is redacted; it is shown to the user once at
/// registration or reset (§24 item 10) and kept to verify HMAC passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceSecret(String);

impl DeviceSecret {
    /// Accepts 8–64 printable ASCII characters without spaces.
    pub fn new(secret: impl Into<String>) -> Result<Self, IdError> {
        let secret = secret.into();
        let len = secret.len();
        if !(8..=64).contains(&len) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdError::new(
                "secret",
                "must be 8-64 printable ASCII characters without spaces",
                "<redacted>",
            ));
        }
        Ok(Self(secret))
    }

    /// A fresh random secret: 32 hex digits (122 random bits).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The secret's text, for HMAC computation and the one-time display.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceSecret {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<DeviceSecret> for String {
    fn from(s: DeviceSecret) -> String {
        s.0
    }
}

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecret(<redacted>)")
    }
}

/// The SHA-256 fingerprint of an X.509 device certificate: 64 lower-case hex digits, colons
/// removed (§4.1). Upper case and colon-separated input is normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Parses and normalises a fingerprint.
    pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
        let s = s.as_ref();
        let hex: String = s
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::new("fingerprint", "must be 64 hex digits", s));
        }
        Ok(Self(hex))
    }

    /// The normalised fingerprint.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.0
    }
}

/// What a device authenticates with, kept apart from the device record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    /// Secret-based authentication.
    Secret(DeviceSecret),
    /// Certificate-based authentication.
    Certificate(Fingerprint),
}

impl Credential {
    /// The matching auth type.
    pub fn auth_type(&self) -> AuthType {
        match self {
            Credential::Secret(_) => AuthType::Secret,
            Credential::Certificate(_) => AuthType::Certificates,
        }
    }
}

/// A device group (§6.1). `device_count` is kept by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's id.
    pub group_id: GroupId,
    /// The resource space.
    pub app_id: AppId,
    /// 1–64 characters.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Members, maintained by the store.
    #[serde(default)]
    pub device_count: u32,
    /// Creation time.
    pub create_time: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceStatus as S;
    use StatusEvent as E;

    /// A device split into record and presence and put back together is the same device, along
    /// its whole life; the record alone never carries connection status or times.
    #[test]
    fn record_and_presence_split_and_merge_losslessly() {
        let product = crate::testing::water_meter();
        let mut d = crate::testing::device(&product, "n1");
        let mut stored: Option<Presence> = None;
        let steps = [
            None,
            Some(E::Connected),
            Some(E::ConnectionLost),
            Some(E::Connected),
            Some(E::SilentAbnormal),
            Some(E::Freeze),
            Some(E::Unfreeze),
            Some(E::Uplink),
        ];
        for (i, step) in steps.into_iter().enumerate() {
            if let Some(event) = step {
                d.apply_status(event, Timestamp::from_millis(1000 * i as i64))
                    .unwrap();
            }
            let (record, presence) = d.split_presence(stored.as_ref());
            assert!(
                matches!(record.status, S::Inactive | S::Frozen),
                "{step:?}: {record:?}"
            );
            assert_eq!(record.first_online_time, None);
            assert_eq!(record.last_online_time, None);
            assert_eq!(
                record.clone().with_presence(presence.as_ref()),
                d,
                "{step:?}"
            );
            stored = presence;
        }
        // Frozen while never activated: nothing to keep but the record.
        let mut fresh = crate::testing::device(&product, "n2");
        fresh.apply_status(E::Freeze, Timestamp::EPOCH).unwrap();
        assert_eq!(fresh.split_presence(None), (fresh.clone(), None));
    }

    #[test]
    fn lifecycle_follows_the_spec_diagram() {
        assert_eq!(S::Inactive.next(E::Connected, false), Ok(S::Online));
        assert_eq!(S::Inactive.next(E::ConnectionLost, false), Ok(S::Inactive));
        assert_eq!(S::Online.next(E::ConnectionLost, true), Ok(S::Offline));
        assert_eq!(S::Online.next(E::SilentAbnormal, true), Ok(S::Abnormal));
        assert_eq!(S::Abnormal.next(E::SilentOffline, true), Ok(S::Offline));
        assert_eq!(S::Abnormal.next(E::Uplink, true), Ok(S::Online));
        assert_eq!(S::Offline.next(E::Connected, true), Ok(S::Online));
        assert_eq!(S::Offline.next(E::SilentAbnormal, true), Ok(S::Offline));
        assert_eq!(S::Online.next(E::Freeze, true), Ok(S::Frozen));
        assert_eq!(S::Frozen.next(E::Connected, true), Err(StatusError::Frozen));
        assert_eq!(S::Frozen.next(E::ConnectionLost, true), Ok(S::Frozen));
        assert_eq!(S::Frozen.next(E::Unfreeze, true), Ok(S::Offline));
        assert_eq!(S::Frozen.next(E::Unfreeze, false), Ok(S::Inactive));
        assert_eq!(
            S::Online.next(E::Unfreeze, true),
            Err(StatusError::NotFrozen)
        );
        assert_eq!(
            S::Inactive.next(E::GatewayReported { online: true }, false),
            Ok(S::Online)
        );
        assert_eq!(
            S::Online.next(E::GatewayReported { online: false }, true),
            Ok(S::Offline)
        );
    }

    #[test]
    fn secrets_are_redacted_and_checked() {
        let s = DeviceSecret::new("supersecret").unwrap();
        assert_eq!(format!("{s:?}"), "DeviceSecret(<redacted>)");
        assert!(DeviceSecret::new("short").is_err());
        assert!(DeviceSecret::new("has space in it").is_err());
        assert_eq!(DeviceSecret::generate().expose().len(), 32);
    }

    #[test]
    fn fingerprints_are_normalised() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(Fingerprint::new(&colons).unwrap().as_str(), "ab".repeat(32));
        assert!(Fingerprint::new("abc").is_err());
    }
}
