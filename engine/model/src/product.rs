//! Products and product models (spec/device-management.md §2–§3, §19): the template a device
//! belongs to, its services with properties, commands and events, and its custom topics.
//! [`Product::validate`] checks a definition before it is stored; payloads are checked against
//! it by [`crate::validate`].

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Number;

use crate::error::{Problems, ValidationError};
use crate::ids::{AppId, CommandName, ProductId, ServiceId};
use crate::time::Timestamp;

/// Most services, properties, commands or events one list may hold (spec/device-management.md §3.2).
pub const MAX_MODEL_ITEMS: usize = 500;
/// Most custom topics one product may declare (spec/device-management.md §19).
pub const MAX_CUSTOM_TOPICS: usize = 10;

/// How a product's devices connect (spec/device-management.md §2.2); the API values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProtocolType {
    /// MQTT/MQTTs devices, JSON or binary payloads.
    #[serde(rename = "MQTT")]
    Mqtt,
    /// LwM2M over CoAP (NB-IoT); always binary through a codec.
    #[serde(rename = "CoAP")]
    Coap,
    /// HTTP devices.
    #[serde(rename = "HTTP")]
    Http,
    /// HTTPS devices.
    #[serde(rename = "HTTPS")]
    Https,
    /// Modbus through an edge node.
    #[serde(rename = "Modbus")]
    Modbus,
    /// ONVIF through an edge node.
    #[serde(rename = "ONVIF")]
    Onvif,
    /// OPC-UA through an edge node.
    #[serde(rename = "OPC-UA")]
    OpcUa,
    /// OPC-DA through an edge node.
    #[serde(rename = "OPC-DA")]
    OpcDa,
    /// Anything else.
    #[serde(rename = "Other")]
    Other,
}

/// Whether devices exchange JSON directly or raw bytes through a codec (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// JSON payloads, no codec.
    Json,
    /// Raw bytes converted by the product's codec.
    Binary,
}

/// A product: the template for a class of devices (spec/device-management.md §2.1, §3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The product's id, user-supplied or generated.
    pub product_id: ProductId,
    /// The resource space the product belongs to.
    pub app_id: AppId,
    /// Unique name: letters, digits, `_` and `-`.
    pub name: String,
    /// Free text, e.g. `WaterMeter`.
    #[serde(default)]
    pub device_type: String,
    /// How its devices connect.
    pub protocol_type: ProtocolType,
    /// JSON or binary payloads.
    pub data_format: DataFormat,
    /// Manufacturer name.
    #[serde(default)]
    pub manufacturer_name: String,
    /// Free text.
    #[serde(default)]
    pub industry: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The product model: its services.
    #[serde(default)]
    pub service_capabilities: Vec<ServiceCapability>,
    /// Custom topics under `$oc/devices/{device_id}/user/` (MQTT products only, §19).
    #[serde(default)]
    pub custom_topics: Vec<CustomTopic>,
    /// Upgrade capabilities read by OTA and PCP recognition (§3.2, §15.9).
    #[serde(default)]
    pub om_capability: OmCapability,
    /// The codec that turns the devices' binary payloads into product-model JSON and back
    /// (§21; docs/coap.md names the built-in ones). Needed by binary products.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Per-device uplink limits of this product; the engine's defaults apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<FlowLimits>,
    /// When the product was created (now, when a definition leaves it out).
    #[serde(default = "Timestamp::now")]
    pub create_time: Timestamp,
}

/// One service of a product model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceCapability {
    /// Unique within the product.
    pub service_id: ServiceId,
    /// Free label, at most 64 characters.
    #[serde(default)]
    pub service_type: String,
    /// At most 128 characters.
    #[serde(default)]
    pub description: String,
    /// A label only.
    #[serde(default)]
    pub option: ServiceOption,
    /// The service's properties.
    #[serde(default)]
    pub properties: Vec<PropertyDef>,
    /// The commands the service understands.
    #[serde(default)]
    pub commands: Vec<CommandDef>,
    /// The events the service reports.
    #[serde(default)]
    pub events: Vec<EventDef>,
}

/// `Master`, `Mandatory` or `Optional` (a label without behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceOption {
    /// The main service.
    Master,
    /// Always present.
    Mandatory,
    /// May be absent.
    #[default]
    Optional,
}

/// The data type of a property or parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// 32-bit signed integer.
    #[serde(rename = "int")]
    Int,
    /// 64-bit signed integer.
    #[serde(rename = "long")]
    Long,
    /// Decimal number.
    #[serde(rename = "decimal")]
    Decimal,
    /// Text.
    #[serde(rename = "string")]
    String,
    /// A time in one of the event-time forms.
    #[serde(rename = "DateTime")]
    DateTime,
    /// A JSON object.
    #[serde(rename = "jsonObject")]
    JsonObject,
    /// One value of `enum_list`.
    #[serde(rename = "enum")]
    Enum,
    /// `true` or `false`.
    #[serde(rename = "boolean")]
    Boolean,
    /// An array of strings.
    #[serde(rename = "string list")]
    StringList,
}

impl DataType {
    /// Whether `min`/`max` bound the value numerically.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::Int | DataType::Long | DataType::Decimal)
    }
}

/// Access mode letters: `R` readable, `W` writable, `E` observable (e.g. `"RWE"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessMode {
    /// `R`: the property can be read (reported, queried).
    pub read: bool,
    /// `W`: the property can be set by the platform.
    pub write: bool,
    /// `E`: the property can be observed.
    pub observe: bool,
}

impl AccessMode {
    /// Parses the letters; any other letter is an error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut m = AccessMode::default();
        for c in s.chars() {
            match c.to_ascii_uppercase() {
                'R' => m.read = true,
                'W' => m.write = true,
                'E' => m.observe = true,
                other => return Err(format!("unknown access mode letter {other:?}")),
            }
        }
        Ok(m)
    }
}

impl std::fmt::Display for AccessMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (on, c) in [(self.read, 'R'), (self.write, 'W'), (self.observe, 'E')] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for AccessMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccessMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccessMode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The constraints shared by properties and command/event parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSpec {
    /// The value's type.
    pub data_type: DataType,
    /// Whether a command/event must carry it (for properties: a label).
    #[serde(default)]
    pub required: bool,
    /// Lower bound for numeric types. Accepts a JSON number or a numeric string.
    #[serde(
        default,
        deserialize_with = "number_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub min: Option<Number>,
    /// Upper bound for numeric types. Accepts a JSON number or a numeric string.
    #[serde(
        default,
        deserialize_with = "number_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub max: Option<Number>,
    /// Step (a hint for user interfaces; not enforced).
    #[serde(
        default,
        deserialize_with = "number_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub step: Option<Number>,
    /// Longest string (or string-list item), in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Unit label.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Allowed values for `enum` (and optionally for `string`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enum_list: Vec<String>,
    /// Default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<serde_json::Value>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(Number),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(n)),
        Some(Raw::S(s)) if s.trim().is_empty() => Ok(None),
        Some(Raw::S(s)) => s
            .trim()
            .parse::<Number>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number"))),
    }
}

/// A property of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyDef {
    /// Unique within the service; it is a key of the shadow document, so it may not contain
    /// `.`, `$` or NUL (§7.2 rule 6).
    pub property_name: String,
    /// Type and constraints.
    #[serde(flatten)]
    pub spec: ValueSpec,
    /// Access mode letters.
    #[serde(default = "read_only")]
    pub method: AccessMode,
}

fn read_only() -> AccessMode {
    AccessMode {
        read: true,
        write: false,
        observe: false,
    }
}

/// A parameter of a command, command response or event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParaDef {
    /// Unique within its list.
    pub para_name: String,
    /// Type and constraints.
    #[serde(flatten)]
    pub spec: ValueSpec,
}

/// A command a service understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDef {
    /// Unique within the service.
    pub command_name: CommandName,
    /// Its parameters.
    #[serde(default)]
    pub paras: Vec<ParaDef>,
    /// The responses a device may give.
    #[serde(default)]
    pub responses: Vec<CommandResponseDef>,
}

/// A response a device may give to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResponseDef {
    /// The response's name.
    pub response_name: String,
    /// Its parameters.
    #[serde(default)]
    pub paras: Vec<ParaDef>,
}

/// An event a service reports on `events/up` (a non-`$` service id, spec/device-protocol.md §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDef {
    /// Unique within the service.
    pub event_type: String,
    /// Its parameters.
    #[serde(default)]
    pub paras: Vec<ParaDef>,
}

/// Per-device uplink limits (token-bucket rates; 0 means unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLimits {
    /// Messages per second each device may publish.
    pub messages_per_sec: u32,
    /// Payload bytes per second each device may publish.
    pub bytes_per_sec: u32,
}

/// Upgrade capabilities (spec/device-management.md §3.2 design note).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OmCapability {
    /// Software upgrade (SOTA).
    #[serde(default)]
    pub upgrade: UpgradeCapability,
    /// Firmware upgrade (FOTA).
    #[serde(default)]
    pub fw_upgrade: UpgradeCapability,
}

/// Whether an upgrade kind is supported and by which protocol (`PCP`, `LWM2M`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpgradeCapability {
    /// Whether the product supports it.
    #[serde(default)]
    pub supported: bool,
    /// The protocol, e.g. `PCP` for LwM2M software upgrades.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

/// What a device may do on a custom topic (spec/device-management.md §19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicPermission {
    /// The device may publish.
    Publish,
    /// The device may subscribe.
    Subscribe,
    /// Both.
    PublishSubscribe,
}

impl TopicPermission {
    /// Whether devices may publish on the topic.
    pub fn may_publish(self) -> bool {
        matches!(
            self,
            TopicPermission::Publish | TopicPermission::PublishSubscribe
        )
    }

    /// Whether devices may subscribe to the topic.
    pub fn may_subscribe(self) -> bool {
        matches!(
            self,
            TopicPermission::Subscribe | TopicPermission::PublishSubscribe
        )
    }
}

/// A custom topic `$oc/devices/{device_id}/user/{suffix}` of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomTopic {
    /// The part after `user/`: 1–64 of `[0-9A-Za-z_/]`, no `//`, no leading or trailing `/`.
    pub suffix: String,
    /// Direction(s) devices may use it in.
    pub permission: TopicPermission,
    /// At most 1000 characters.
    #[serde(default)]
    pub description: String,
}

/// Checks a custom topic suffix (spec/device-management.md §19).
pub fn check_custom_topic_suffix(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 64 {
        return Err("must be 1-64 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/')
    {
        return Err("only letters, digits, '_' and '/' are allowed");
    }
    if s.contains("//") || s.starts_with('/') || s.ends_with('/') {
        return Err("levels may not be empty");
    }
    Ok(())
}

/// Checks a property or shadow key: non-empty, at most 64 characters, without `.`, `$` or NUL.
pub fn check_property_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.chars().count() > 64 {
        return Err("must be 1-64 characters");
    }
    if s.contains(['.', '$', '\0']) {
        return Err("may not contain '.', '$' or NUL");
    }
    Ok(())
}

impl Product {
    /// Finds a service of the model.
    pub fn service(&self, id: &str) -> Option<&ServiceCapability> {
        self.service_capabilities
            .iter()
            .find(|s| s.service_id.as_str() == id)
    }

    /// Whether the product has a model at all. Products without one accept any property
    /// names (the data is kept raw, spec/device-management.md §20).
    pub fn has_model(&self) -> bool {
        !self.service_capabilities.is_empty()
    }

    /// Finds the custom topic with this suffix.
    pub fn custom_topic(&self, suffix: &str) -> Option<&CustomTopic> {
        self.custom_topics.iter().find(|t| t.suffix == suffix)
    }

    /// Checks the definition and reports every problem at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        if self.name.is_empty()
            || self.name.chars().count() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            p.push("name", "must be 1-64 letters, digits, '_' or '-'");
        }
        for (field, value, max) in [
            ("device_type", &self.device_type, 64),
            ("manufacturer_name", &self.manufacturer_name, 64),
            ("industry", &self.industry, 64),
            ("description", &self.description, 1024),
        ] {
            if value.chars().count() > max {
                p.push(field, format!("at most {max} characters"));
            }
        }
        if self.service_capabilities.len() > MAX_MODEL_ITEMS {
            p.push(
                "service_capabilities",
                format!("at most {MAX_MODEL_ITEMS} services"),
            );
        }
        for (i, svc) in self.service_capabilities.iter().enumerate() {
            let path = format!("service_capabilities[{i}]");
            if self.service_capabilities[..i]
                .iter()
                .any(|s| s.service_id == svc.service_id)
            {
                p.push(format!("{path}.service_id"), "duplicate service_id");
            }
            if svc.service_id.as_str().starts_with('$') {
                p.push(
                    format!("{path}.service_id"),
                    "'$' is reserved for system services",
                );
            }
            svc.validate(&path, &mut p);
        }
        if self.custom_topics.len() > MAX_CUSTOM_TOPICS {
            p.push(
                "custom_topics",
                format!("at most {MAX_CUSTOM_TOPICS} custom topics"),
            );
        }
        if !self.custom_topics.is_empty() && self.protocol_type != ProtocolType::Mqtt {
            p.push("custom_topics", "only MQTT products have custom topics");
        }
        for (i, t) in self.custom_topics.iter().enumerate() {
            if let Err(reason) = check_custom_topic_suffix(&t.suffix) {
                p.push(format!("custom_topics[{i}].suffix"), reason);
            }
            if self.custom_topics[..i].iter().any(|o| o.suffix == t.suffix) {
                p.push(format!("custom_topics[{i}].suffix"), "duplicate topic");
            }
            if t.description.chars().count() > 1000 {
                p.push(
                    format!("custom_topics[{i}].description"),
                    "at most 1000 characters",
                );
            }
        }
        p.finish()
    }
}

impl ServiceCapability {
    fn validate(&self, path: &str, p: &mut Problems) {
        if self.service_type.chars().count() > 64 {
            p.push(format!("{path}.service_type"), "at most 64 characters");
        }
        if self.description.chars().count() > 128 {
            p.push(format!("{path}.description"), "at most 128 characters");
        }
        for (what, len) in [
            ("properties", self.properties.len()),
            ("commands", self.commands.len()),
            ("events", self.events.len()),
        ] {
            if len > MAX_MODEL_ITEMS {
                p.push(
                    format!("{path}.{what}"),
                    format!("at most {MAX_MODEL_ITEMS} {what}"),
                );
            }
        }
        for (i, prop) in self.properties.iter().enumerate() {
            let ppath = format!("{path}.properties[{i}]");
            if let Err(reason) = check_property_name(&prop.property_name) {
                p.push(format!("{ppath}.property_name"), reason);
            }
            if self.properties[..i]
                .iter()
                .any(|o| o.property_name == prop.property_name)
            {
                p.push(format!("{ppath}.property_name"), "duplicate property_name");
            }
            prop.spec.validate(&ppath, p);
        }
        for (i, cmd) in self.commands.iter().enumerate() {
            let cpath = format!("{path}.commands[{i}]");
            if self.commands[..i]
                .iter()
                .any(|o| o.command_name == cmd.command_name)
            {
                p.push(format!("{cpath}.command_name"), "duplicate command_name");
            }
            validate_paras(&cmd.paras, &format!("{cpath}.paras"), p);
            for (j, resp) in cmd.responses.iter().enumerate() {
                validate_paras(&resp.paras, &format!("{cpath}.responses[{j}].paras"), p);
            }
        }
        for (i, ev) in self.events.iter().enumerate() {
            let epath = format!("{path}.events[{i}]");
            if ev.event_type.is_empty() || ev.event_type.starts_with('$') {
                p.push(
                    format!("{epath}.event_type"),
                    "must be non-empty and not start with '$'",
                );
            }
            if self.events[..i]
                .iter()
                .any(|o| o.event_type == ev.event_type)
            {
                p.push(format!("{epath}.event_type"), "duplicate event_type");
            }
            validate_paras(&ev.paras, &format!("{epath}.paras"), p);
        }
    }
}

fn validate_paras(paras: &[ParaDef], path: &str, p: &mut Problems) {
    for (i, para) in paras.iter().enumerate() {
        let ppath = format!("{path}[{i}]");
        if let Err(reason) = check_property_name(&para.para_name) {
            p.push(format!("{ppath}.para_name"), reason);
        }
        if paras[..i].iter().any(|o| o.para_name == para.para_name) {
            p.push(format!("{ppath}.para_name"), "duplicate para_name");
        }
        para.spec.validate(&ppath, p);
    }
}

impl ValueSpec {
    fn validate(&self, path: &str, p: &mut Problems) {
        let (min, max) = (
            self.min.as_ref().and_then(Number::as_f64),
            self.max.as_ref().and_then(Number::as_f64),
        );
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            p.push(format!("{path}.min"), "min is greater than max");
        }
        if self.data_type == DataType::Enum && self.enum_list.is_empty() {
            p.push(
                format!("{path}.enum_list"),
                "an enum needs at least one value",
            );
        }
        if self.max_length == Some(0) {
            p.push(format!("{path}.max_length"), "must be at least 1");
        }
        if let Some(default) = &self.default_value
            && let Err(reason) = crate::validate::check_value(self, default)
        {
            p.push(format!("{path}.default_value"), reason);
        }
    }
}
