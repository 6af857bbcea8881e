//! The device-side semantics of the platform over MQTT (spec/device-protocol.md §4, §7, §8):
//! [`Platform`] is an upstream handler that reads the `$oc/devices/{id}/sys/...` publications
//! of devices — property reports into the shadow, messages and events out to observers, time
//! sync and shadow gets answered — and the handle through which the API sends commands,
//! property sets and gets, messages, and desired-shadow pushes to devices.
//!
//! It runs on the upstream dispatcher thread (storage reads and writes are fine there) and on
//! API threads (requests). It reaches sessions through the small [`Deliver`] trait, which the
//! engine's [`Shared`] implements and tests replace by a recorder.
//!
//! Downlinks are handed over at QoS 1 and the session delivers each at the lower of that and
//! what the device subscribed with: QoS 0 through the implicit subscription of the system
//! topics, QoS 1 once the device subscribed explicitly with QoS 1 (§3.2, §13 item 7).
//!
//! Sub-devices: the topic's device, or the `object_device_id` of a payload, is the subject;
//! when it is not the publishing device it must be one of its sub-devices (stored
//! `gateway_id`), else the payload is refused and counted (§13 items 6 and 14).

mod event;
mod metrics;
mod properties;
mod requests;
mod uplink;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_model::payload::{
    CommandRequest, MessageDown, PropertyGetRequest, PropertySetRequest,
};
use fleetgate_model::product::Product;
use fleetgate_model::topic::{DeviceTopic, DeviceTopicKind, RequestKind, SysTopic};
use fleetgate_model::{DeviceId, ProductId};
use fleetgate_storage::Storage;
use parking_lot::RwLock;
use quick_cache::sync::Cache;
use serde::Serialize;
use serde_json::Value;

pub use self::event::{
    DeviceInfoReceived, EventReceived, EventSource, LogReceived, MessageReceived, PlatformEvent,
    PlatformObserver, PropertiesReported, ReportedService,
};
pub use self::metrics::{
    DownlinkFailure, EventOutcome, PayloadKind, PlatformMetrics, ReportOutcome, RequestLabel,
    RequestRefusal, ShadowGetOutcome,
};
use self::requests::RequestTable;
pub use self::requests::{DeviceResponse, PendingResponse, RequestError, ResponseError};
use crate::commands::{CommandService, CommandTransport, SendError};
use crate::engine::{DeliverError, Shared};
use crate::metrics::Family;
use crate::session::Downlink;
use crate::upstream::{Published, UpstreamEvent, UpstreamHandler};

/// How the platform reaches device sessions.
pub trait Deliver: Send + Sync {
    /// Hands a message to the device's session.
    fn deliver(&self, device: &DeviceId, msg: Downlink) -> Result<(), DeliverError>;
    /// Whether the device has a live connection.
    fn is_online(&self, device: &DeviceId) -> bool;
}

impl Deliver for Shared {
    fn deliver(&self, device: &DeviceId, msg: Downlink) -> Result<(), DeliverError> {
        Shared::deliver(self, device, msg)
    }

    fn is_online(&self, device: &DeviceId) -> bool {
        self.registry.is_online(device)
    }
}

/// Limits of the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformConfig {
    /// Requests one device may have waiting for answers.
    pub max_pending_per_device: usize,
    /// Requests all devices together may have waiting.
    pub max_pending: usize,
    /// Desired pushes remembered per device (to recognise their answers).
    pub max_pushes_per_device: usize,
    /// How long a product model read from storage is reused.
    pub product_ttl: Duration,
    /// Products (and device → product entries) kept in memory.
    pub cache_capacity: usize,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            max_pending_per_device: 16,
            max_pending: 100_000,
            max_pushes_per_device: 4,
            product_ttl: Duration::from_secs(10),
            cache_capacity: 10_000,
        }
    }
}

/// A message for a device (spec/app-side.md §1.6, spec/device-protocol.md §8.2).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingMessage {
    /// The message id; a UUID is generated when absent.
    pub message_id: Option<String>,
    /// The message name.
    pub name: Option<String>,
    /// The content, a string or any JSON.
    pub content: Value,
    /// The final target (a sub-device of the addressed gateway).
    pub object_device_id: Option<DeviceId>,
    /// A custom topic suffix: the message goes to `$oc/devices/{id}/user/{suffix}` instead of
    /// `sys/messages/down` (the device must have subscribed to it).
    pub topic: Option<String>,
}

/// What [`Platform::push_desired`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The delta went out as a property set.
    Sent,
    /// Desired matches reported: nothing to push.
    NothingPending,
    /// The device (or its gateway) is offline; the delta goes out when it connects or reports
    /// (spec/device-management.md §7.2 rule 3).
    Offline,
}

/// The device-side platform: an upstream handler and the API's way to devices.
pub struct Platform {
    storage: Arc<dyn Storage>,
    sessions: Arc<dyn Deliver>,
    config: PlatformConfig,
    requests: Arc<RequestTable>,
    metrics: PlatformMetrics,
    observers: RwLock<Vec<Arc<dyn PlatformObserver>>>,
    products: Cache<ProductId, (Instant, Arc<Product>)>,
    device_products: Cache<DeviceId, ProductId>,
    commands: std::sync::OnceLock<Arc<CommandService>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("config", &self.config)
            .field("awaited", &self.requests.awaited())
            .field("observers", &self.observers.read().len())
            .finish_non_exhaustive()
    }
}

/// Serializes a payload. The payload types are plain structs and JSON values with string
/// keys, which always serialize.
fn to_json(body: &impl Serialize) -> Bytes {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .unwrap_or_default()
}

impl Platform {
    /// A platform over `storage` reaching sessions through `sessions`.
    pub fn new(
        storage: Arc<dyn Storage>,
        sessions: Arc<dyn Deliver>,
        config: PlatformConfig,
    ) -> Self {
        let cap = config.cache_capacity.max(1);
        Platform {
            storage,
            sessions,
            requests: Arc::new(RequestTable::new(
                config.max_pending_per_device,
                config.max_pending,
                config.max_pushes_per_device,
            )),
            metrics: PlatformMetrics::default(),
            observers: RwLock::new(Vec::new()),
            products: Cache::new(cap),
            device_products: Cache::new(cap),
            commands: std::sync::OnceLock::new(),
            config,
        }
    }

    /// Attaches the asynchronous-command service: MQTT devices get their cached commands when
    /// they connect, and responses to those commands go to it.
    pub fn attach_commands(&self, service: Arc<CommandService>) {
        let _ = self.commands.set(service);
    }

    /// Attaches an observer of [`PlatformEvent`]s.
    pub fn observe(&self, observer: Arc<dyn PlatformObserver>) {
        self.observers.write().push(observer);
    }

    /// The counters.
    pub fn counters(&self) -> &PlatformMetrics {
        &self.metrics
    }

    /// The metric families, for [`Engine::metrics`](crate::Engine::metrics).
    pub fn metrics(&self) -> Vec<Family> {
        self.metrics.families(self.requests.awaited())
    }

    /// Requests waiting for an answer.
    pub fn outstanding(&self) -> usize {
        self.requests.awaited()
    }

    /// Forgets a cached product model (after the API changed it).
    pub fn invalidate_product(&self, product: &ProductId) {
        self.products.remove(product);
    }

    /// Sends a platform-originated request — a command (§8.3), a property set (§7.3) or a
    /// property get (§7.4) — on `$oc/devices/{id}/sys/{kind}/request_id={fresh uuid}`, and
    /// returns the answer to await. `body` must be a request of its kind (a sub-device is
    /// addressed through its gateway with `object_device_id`). The device must be online
    /// (§13 item 9); the caller applies the timeout.
    pub fn request(
        &self,
        device: &DeviceId,
        kind: RequestKind,
        body: Value,
    ) -> Result<PendingResponse, RequestError> {
        let label = RequestLabel::of(kind).ok_or(RequestError::NotPlatformOriginated(kind))?;
        let result = self.send_request(device, kind, &body);
        match &result {
            Ok(_) => self.metrics.sent(label),
            Err(RequestError::Offline) => self.metrics.refused(RequestRefusal::Offline),
            Err(RequestError::Busy) => self.metrics.refused(RequestRefusal::Busy),
            Err(RequestError::TooMany) => self.metrics.refused(RequestRefusal::TooMany),
            Err(_) => self.metrics.refused(RequestRefusal::InvalidBody),
        }
        result
    }

    fn send_request(
        &self,
        device: &DeviceId,
        kind: RequestKind,
        body: &Value,
    ) -> Result<PendingResponse, RequestError> {
        check_request_body(kind, body)?;
        if !self.sessions.is_online(device) {
            return Err(RequestError::Offline);
        }
        let (id, rx) = self.requests.register(device, kind)?;
        // The waiter is registered before the send so that a quick answer finds it; should the
        // send fail, dropping `pending` removes it again.
        let pending = PendingResponse::new(
            device.clone(),
            id.clone(),
            kind,
            rx,
            Arc::clone(&self.requests),
        );
        let topic = DeviceTopic::sys(device.clone(), SysTopic::Request(kind, id));
        self.sessions
            .deliver(device, downlink(&topic, to_json(body)))?;
        Ok(pending)
    }

    /// Sends a message to a device on `sys/messages/down` (§8.2), or on its custom topic
    /// `user/{suffix}` when one is given, with the same JSON layout. Messages have no response.
    /// Returns the message id.
    pub fn send_message(
        &self,
        device: &DeviceId,
        message: OutgoingMessage,
    ) -> Result<String, RequestError> {
        let id = message
            .message_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let topic = match &message.topic {
            None => DeviceTopic::sys(device.clone(), SysTopic::MessagesDown),
            Some(suffix) => user_topic(device, suffix)?,
        };
        let body = MessageDown {
            object_device_id: message.object_device_id,
            name: message.name,
            id: Some(id.clone()),
            content: message.content,
        };
        self.send(device, &topic, to_json(&body))?;
        self.metrics.message_down();
        Ok(id)
    }

    /// Hands a downlink to `session`, counting a failure.
    fn send(
        &self,
        session: &DeviceId,
        topic: &DeviceTopic,
        payload: Bytes,
    ) -> Result<(), DeliverError> {
        let result = self.sessions.deliver(session, downlink(topic, payload));
        if let Err(e) = result {
            self.metrics.downlink_failed(e.into());
            tracing::debug!(device = %session, %topic, error = %e, "downlink not delivered");
        }
        result
    }

    fn emit(&self, ev: PlatformEvent) {
        for o in self.observers.read().iter() {
            o.on_event(&ev);
        }
    }

    /// The product of a device when already known (no storage read).
    fn known_product(&self, device: &DeviceId) -> Option<ProductId> {
        self.device_products.get(device)
    }

    /// A product model, from the cache when read less than `product_ttl` ago.
    fn product(
        &self,
        id: &ProductId,
    ) -> Result<Option<Arc<Product>>, fleetgate_storage::StorageError> {
        if let Some((at, p)) = self.products.get(id)
            && at.elapsed() < self.config.product_ttl
        {
            return Ok(Some(p));
        }
        let Some(p) = self.storage.get_product(id)? else {
            self.products.remove(id);
            return Ok(None);
        };
        let p = Arc::new(p);
        self.products
            .insert(id.clone(), (Instant::now(), Arc::clone(&p)));
        Ok(Some(p))
    }

    fn on_published(&self, p: &Published) {
        // Custom topics are not the platform's; malformed `$oc/` topics were refused by the ACL.
        let Ok(Some(topic)) = DeviceTopic::parse(&p.topic) else {
            return;
        };
        let DeviceTopicKind::Sys(sys) = topic.kind else {
            return;
        };
        let tree = &topic.device_id;
        match sys {
            SysTopic::PropertiesReport => self.on_property_report(p, tree),
            SysTopic::GatewayPropertiesReport => self.on_gateway_report(p),
            SysTopic::MessagesUp => self.on_message_up(p),
            SysTopic::EventsUp => self.on_events_up(p, tree),
            SysTopic::Request(RequestKind::ShadowGet, id) => self.on_shadow_get(p, tree, id),
            SysTopic::Response(kind, id) if RequestLabel::of(kind).is_some() => {
                self.on_response(p, kind, id)
            }
            // Downlink topics: only the platform publishes there.
            _ => {}
        }
    }
}

impl UpstreamHandler for Platform {
    fn handle(&self, event: &UpstreamEvent) {
        match event {
            UpstreamEvent::Connected(c) => {
                self.on_connected(&c.device_id);
                if let Some(s) = self.commands.get() {
                    s.wake(&c.device_id);
                }
            }
            // A CoAP device's desired values cannot go out as MQTT property sets: reading its
            // shadow on every notification would be work for nothing.
            UpstreamEvent::Woke(_) | UpstreamEvent::CommandStatus(_) => {}
            UpstreamEvent::Disconnected(d) => self.requests.forget_pushes(&d.device_id),
            UpstreamEvent::Published(p) => self.on_published(p),
        }
    }
}

/// A downlink at QoS 1, which the session lowers to what the device subscribed with.
fn downlink(topic: &DeviceTopic, payload: Bytes) -> Downlink {
    Downlink {
        topic: topic.to_string().into(),
        payload,
        qos: QoS::AtLeastOnce,
    }
}

/// `$oc/devices/{device}/user/{suffix}`, with the suffix checked by the topic grammar.
fn user_topic(device: &DeviceId, suffix: &str) -> Result<DeviceTopic, RequestError> {
    let topic = DeviceTopic {
        device_id: device.clone(),
        kind: DeviceTopicKind::User(suffix.to_owned()),
    };
    match DeviceTopic::parse(&topic.to_string()) {
        Ok(Some(t)) if t == topic => Ok(topic),
        Ok(_) => Err(RequestError::InvalidBody(format!(
            "invalid topic suffix {suffix:?}"
        ))),
        Err(e) => Err(RequestError::InvalidBody(e.to_string())),
    }
}

/// Checks that `body` is a request of `kind` (§7.3, §7.4, §8.3): a JSON object of the
/// kind's request type.
fn check_request_body(kind: RequestKind, body: &Value) -> Result<(), RequestError> {
    use serde::Deserialize;
    if !body.is_object() {
        return Err(RequestError::InvalidBody("expected a JSON object".into()));
    }
    match kind {
        RequestKind::Command => CommandRequest::deserialize(body).map(drop),
        RequestKind::PropertiesSet => PropertySetRequest::deserialize(body).map(drop),
        RequestKind::PropertiesGet => PropertyGetRequest::deserialize(body).map(drop),
        RequestKind::ShadowGet => return Err(RequestError::NotPlatformOriginated(kind)),
    }
    .map_err(|e| RequestError::InvalidBody(e.to_string()))
}

/// MQTT as a transport of asynchronous commands: the command goes to the device's session (a
/// sub-device's through its gateway, with `object_device_id`) on
/// `sys/commands/request_id={command id}`; the response comes back on the usual response topic.
impl CommandTransport for Platform {
    fn reachable(&self, device: &DeviceId) -> bool {
        match self.storage.get_device(device) {
            Ok(Some(d)) => self.sessions.is_online(&d.gateway_id),
            _ => false,
        }
    }

    fn send(&self, command: &fleetgate_model::command::Command) -> Result<(), SendError> {
        let device = match self.storage.get_device(&command.device_id) {
            Ok(Some(d)) => d,
            _ => return Err(SendError::Unreachable),
        };
        let body = CommandRequest {
            object_device_id: device.is_sub_device().then(|| device.device_id.clone()),
            service_id: command.service_id.clone(),
            command_name: Some(command.command_name.to_string()),
            paras: command.paras.clone(),
        };
        let id = crate::commands::request_id_of(&command.command_id);
        let topic = DeviceTopic::sys(
            device.gateway_id.clone(),
            SysTopic::Request(RequestKind::Command, id),
        );
        match Platform::send(self, &device.gateway_id, &topic, to_json(&body)) {
            Ok(()) => {
                self.metrics.sent(RequestLabel::Command);
                Ok(())
            }
            Err(DeliverError::Offline) => Err(SendError::Unreachable),
            Err(DeliverError::Busy) => Err(SendError::Busy),
        }
    }

    fn check(&self, _command: &fleetgate_model::command::Command) -> Result<(), SendError> {
        Ok(())
    }
}
