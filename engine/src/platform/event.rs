//! What the platform tells its observers (push, rules, tests): typed events for accepted
//! property reports, device messages and device events, with the device, its product when
//! known, the times and the parsed payloads. Observers run on the upstream dispatcher thread,
//! so they should hand heavy work elsewhere.

use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_model::payload::MessageUp;
use fleetgate_model::payload::events::{DeviceInfoReport, LogReport, ServiceEvent, SystemEvent};
use fleetgate_model::{DeviceId, ProductId, ServiceId, Timestamp};
use serde_json::{Map, Value};

/// A consumer of [`PlatformEvent`]s, attached with
/// [`Platform::observe`](super::Platform::observe).
pub trait PlatformObserver: Send + Sync {
    /// Called once per event, on the upstream dispatcher thread.
    fn on_event(&self, ev: &PlatformEvent);
}

/// One service of an accepted property report, as stored in the shadow.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedService {
    /// The model service.
    pub service_id: ServiceId,
    /// The reported values.
    pub properties: Map<String, Value>,
    /// The collection time, or the receive time when absent or malformed
    /// (spec/device-protocol.md §13 item 12).
    pub event_time: Timestamp,
    /// The service shadow's version after the report.
    pub shadow_version: u64,
}

/// A property report that passed validation and was written into the shadow (§7.1, §7.2).
#[derive(Debug, Clone, PartialEq)]
pub struct PropertiesReported {
    /// The device the properties belong to.
    pub device_id: DeviceId,
    /// Its product.
    pub product_id: ProductId,
    /// The gateway that reported them, when not the device itself.
    pub gateway_id: Option<DeviceId>,
    /// The services, in report order.
    pub services: Vec<ReportedService>,
    /// When the platform received the report.
    pub received_at: Timestamp,
}

/// A device message on `messages/up` (§8.1). Messages are model-free: the payload is kept
/// byte for byte, and `message` holds the suggested layout when the payload follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageReceived {
    /// The publishing device.
    pub device_id: DeviceId,
    /// Its product, when the platform has it at hand.
    pub product_id: Option<ProductId>,
    /// The payload as published.
    pub payload: Bytes,
    /// The suggested layout (`object_device_id`, `name`, `id`, `content`), when it parses.
    pub message: Option<MessageUp>,
    /// When the platform received it.
    pub received_at: Timestamp,
}

/// Where an `events/up` service event came from and what it is about (§3.7).
#[derive(Debug, Clone, PartialEq)]
pub struct EventSource {
    /// The publishing device.
    pub device_id: DeviceId,
    /// The device the event is about: `object_device_id`, else the topic's device.
    pub subject: DeviceId,
    /// The publisher's product, when the platform has it at hand.
    pub product_id: Option<ProductId>,
    /// The event's own time, or the receive time when absent or malformed.
    pub event_time: Timestamp,
    /// When the platform received it.
    pub received_at: Timestamp,
}

/// A device's version report, `$device_info` / `device_info_report` (§4.3).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfoReceived {
    /// Who and when.
    pub source: EventSource,
    /// The versions.
    pub info: DeviceInfoReport,
}

/// A device log line, `$log` / `log_report` (§4.2).
#[derive(Debug, Clone, PartialEq)]
pub struct LogReceived {
    /// Who and when.
    pub source: EventSource,
    /// The log line.
    pub log: LogReport,
}

/// Any other service event of `events/up`: a system event handled elsewhere (OTA, files,
/// sub-device management) or a product-model event that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct EventReceived {
    /// Who and when.
    pub source: EventSource,
    /// The event as sent.
    pub event: ServiceEvent,
    /// The typed system event; `None` for product-model events.
    pub system: Option<SystemEvent>,
}

/// What the platform reports to observers.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformEvent {
    /// Properties were reported and stored.
    PropertiesReported(PropertiesReported),
    /// A device message arrived.
    MessageUp(MessageReceived),
    /// A device reported its versions.
    DeviceInfo(DeviceInfoReceived),
    /// A device reported a log line.
    LogReport(LogReceived),
    /// Any other device event.
    EventUp(EventReceived),
}

impl PlatformEvent {
    /// The device the event is about.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            PlatformEvent::PropertiesReported(e) => &e.device_id,
            PlatformEvent::MessageUp(e) => &e.device_id,
            PlatformEvent::DeviceInfo(e) => &e.source.subject,
            PlatformEvent::LogReport(e) => &e.source.subject,
            PlatformEvent::EventUp(e) => &e.source.subject,
        }
    }
}
