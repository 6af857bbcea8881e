//! Serde types for every system payload of the `$oc/devices/{device_id}/sys/...` topics
//! (spec/device-protocol.md §4–§8). Field names are exactly the wire names. Device-supplied
//! times stay text here; [`crate::time::event_time_or`] turns them into timestamps.
//!
//! The events envelope and its typed system events live in [`events`].

pub mod events;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{DeviceId, ServiceId};

/// One service's properties in a report, a property set or a query answer (§7.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceProperties {
    /// The service of the product model.
    pub service_id: ServiceId,
    /// Property name → value.
    pub properties: Map<String, Value>,
    /// Collection time in any accepted form; absent or malformed means the receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
}

/// `properties/report` (§7.1, device → platform).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyReport {
    /// The reported services.
    pub services: Vec<ServiceProperties>,
}

/// One sub-device's entry in a gateway batch report (§7.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProperties {
    /// The (sub-)device the properties belong to.
    pub device_id: DeviceId,
    /// Its services.
    pub services: Vec<ServiceProperties>,
}

/// `gateway/sub_devices/properties/report` (§7.2, gateway → platform); at most
/// [`GatewayPropertyReport::MAX_DEVICES`] devices per message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPropertyReport {
    /// Per-device data.
    pub devices: Vec<DeviceProperties>,
}

impl GatewayPropertyReport {
    /// The MQTT limit of sub-devices per batch (the HTTPS one is 50).
    pub const MAX_DEVICES: usize = 100;
}

/// `properties/set/request_id=…` (§7.3, platform → device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertySetRequest {
    /// The target (sub-)device when it is not the topic's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// The properties to set.
    pub services: Vec<ServiceProperties>,
}

/// `properties/set/response/request_id=…` (§7.3, device → platform).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PropertySetResponse {
    /// `0` success, anything else failure; absent means success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_code: Option<i64>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_desc: Option<String>,
}

impl PropertySetResponse {
    /// Whether the device reported success (an absent code is success, §13 item 10).
    pub fn is_success(&self) -> bool {
        self.result_code.unwrap_or(0) == 0
    }
}

/// `properties/get/request_id=…` (§7.4, platform → device).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PropertyGetRequest {
    /// The target (sub-)device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// The service to read; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<ServiceId>,
}

/// `properties/get/response/request_id=…` (§7.4, device → platform). It never changes the
/// stored properties or the shadow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PropertyGetResponse {
    /// The device's current values.
    #[serde(default)]
    pub services: Vec<ServiceProperties>,
}

/// `shadow/get/request_id=…` (§7.5, device → platform).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShadowGetRequest {
    /// The device whose shadow is wanted (a gateway may ask for a sub-device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// One service; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<ServiceId>,
}

/// The `desired` or `reported` half of a service shadow on the wire (§7.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesData {
    /// Property name → value.
    pub properties: Map<String, Value>,
    /// `yyyyMMdd'T'HHmmss'Z'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
}

/// One service of a shadow on the wire (§7.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowData {
    /// The service.
    pub service_id: ServiceId,
    /// What the application wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<PropertiesData>,
    /// What the device last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<PropertiesData>,
    /// The service shadow's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `shadow/get/response/request_id=…` (§7.5, platform → device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowGetResponse {
    /// The device the shadow belongs to.
    pub object_device_id: DeviceId,
    /// Per-service shadows.
    #[serde(default)]
    pub shadow: Vec<ShadowData>,
}

/// `messages/up` (§8.1). The platform never validates it: only this suggested layout is
/// recognised, and [`MessageUp::parse_lenient`] keeps any other content as-is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageUp {
    /// The final target device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// Message name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The content.
    pub content: Value,
}

impl MessageUp {
    /// Reads the suggested layout if the payload follows it; otherwise returns `None` and the
    /// caller forwards the raw bytes (messages are opaque, §13 item 13).
    pub fn parse_lenient(payload: &[u8]) -> Option<MessageUp> {
        serde_json::from_slice(payload).ok()
    }
}

/// `messages/down` (§8.2, platform → device). No response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDown {
    /// The final target device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// Message name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The content (a string in the spec; any JSON is passed through).
    pub content: Value,
}

/// `commands/request_id=…` (§8.3, platform → device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The target (sub-)device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// The service of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<ServiceId>,
    /// The command's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_name: Option<String>,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub paras: Value,
}

/// `commands/response/request_id=…` (§8.3, device → platform).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CommandResponse {
    /// `0` success, anything else failure; absent means success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_code: Option<i64>,
    /// The response's name from the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_name: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub paras: Value,
}

impl CommandResponse {
    /// Whether the device reported success (an absent code is success, §13 item 10).
    pub fn is_success(&self) -> bool {
        self.result_code.unwrap_or(0) == 0
    }
}

#[cfg(test)]
mod tests;
