//! Device messages (spec/device-protocol.md §8.1), device events (§3.7, §4) with the time-sync
//! answer (§4.4, §4.5), and the device's responses to platform requests (§7.3, §7.4, §8.3).

use fleetgate_model::payload::events::{
    DeviceInfoReport, EventEnvelope, EventKind, ServiceEvent, SystemEvent, TimeSyncRequest,
    TimeSyncResponse,
};
use fleetgate_model::payload::{
    CommandResponse, MessageUp, PropertyGetResponse, PropertySetResponse,
};
use fleetgate_model::time::event_time_or;
use fleetgate_model::topic::{DeviceTopic, RequestKind, SysTopic};
use fleetgate_model::validate::validate_model_event;
use fleetgate_model::{DeviceId, RequestId, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use super::requests::Matched;
use super::{
    DeviceInfoReceived, DeviceResponse, EventOutcome, EventReceived, EventSource, LogReceived,
    MessageReceived, PayloadKind, Platform, PlatformEvent, RequestLabel, ResponseError, to_json,
};
use crate::upstream::Published;
use fleetgate_storage::Durability;

impl Platform {
    /// `messages/up` (§8.1): model-free, never validated; observers get the payload as is.
    pub(super) fn on_message_up(&self, p: &Published) {
        self.metrics.message_up();
        self.emit(PlatformEvent::MessageUp(MessageReceived {
            device_id: p.device_id.clone(),
            product_id: self.known_product(&p.device_id),
            payload: p.payload.clone(),
            message: MessageUp::parse_lenient(&p.payload),
            received_at: p.at,
        }));
    }

    /// `events/up` (§3.7): each service event is dispatched by (`service_id`, `event_type`);
    /// a malformed or unknown one is counted and skipped without affecting the others.
    pub(super) fn on_events_up(&self, p: &Published, tree: &DeviceId) {
        let envelope = match serde_json::from_slice::<EventEnvelope>(&p.payload) {
            Ok(e) => e,
            Err(e) => {
                self.metrics.invalid(PayloadKind::EventsUp);
                self.metrics.event(EventOutcome::Invalid);
                tracing::debug!(device = %p.device_id, error = %e, "malformed event envelope");
                return;
            }
        };
        let subject = envelope.object_device_id.as_ref().unwrap_or(tree);
        if !self.owns(&p.device_id, subject) {
            self.metrics.event(EventOutcome::NotSubDevice);
            return;
        }
        for ev in &envelope.services {
            let outcome = self.on_service_event(p, tree, &envelope, subject, ev);
            self.metrics.event(outcome);
        }
    }

    /// Keeps the versions a device reports on its record (§4.3: SDK, software and firmware),
    /// writing only when one changed. A failure is logged: the report is still emitted.
    fn record_versions(&self, device: &DeviceId, info: &DeviceInfoReport) {
        let stored = match self.storage.get_device(device) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%device, error = %e, "cannot read the device to record its versions");
                return;
            }
        };
        let changed = |new: &Option<String>, old: &Option<String>| new.is_some() && new != old;
        if !changed(&info.device_sdk_version, &stored.device_sdk_version)
            && !changed(&info.sw_version, &stored.sw_version)
            && !changed(&info.fw_version, &stored.fw_version)
        {
            return;
        }
        let result = self
            .storage
            .update_device(device, Durability::Buffered, &mut |d| {
                for (new, old) in [
                    (&info.device_sdk_version, &mut d.device_sdk_version),
                    (&info.sw_version, &mut d.sw_version),
                    (&info.fw_version, &mut d.fw_version),
                ] {
                    if new.is_some() {
                        old.clone_from(new);
                    }
                }
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!(%device, error = %e, "cannot record the device's versions");
        }
    }

    fn on_service_event(
        &self,
        p: &Published,
        tree: &DeviceId,
        envelope: &EventEnvelope,
        subject: &DeviceId,
        ev: &ServiceEvent,
    ) -> EventOutcome {
        let kind = match ev.decode() {
            Ok(k) => k,
            Err(e) => {
                self.metrics.invalid(PayloadKind::EventsUp);
                tracing::debug!(device = %p.device_id, error = %e, "invalid event");
                return EventOutcome::Invalid;
            }
        };
        let source = EventSource {
            device_id: p.device_id.clone(),
            subject: subject.clone(),
            product_id: self.known_product(&p.device_id),
            event_time: event_time_or(ev.event_time.as_deref(), p.at),
            received_at: p.at,
        };
        match kind {
            EventKind::System(SystemEvent::TimeSyncRequest(req)) => {
                self.answer_time_sync(p, tree, envelope, req);
                EventOutcome::TimeSync
            }
            EventKind::System(SystemEvent::DeviceInfoReport(info)) => {
                self.record_versions(&source.subject, &info);
                self.emit(PlatformEvent::DeviceInfo(DeviceInfoReceived {
                    source,
                    info,
                }));
                EventOutcome::DeviceInfo
            }
            EventKind::System(SystemEvent::LogReport(log)) => {
                self.emit(PlatformEvent::LogReport(LogReceived { source, log }));
                EventOutcome::Log
            }
            EventKind::System(system) => {
                let event = ev.clone();
                let system = Some(system);
                self.emit(PlatformEvent::EventUp(EventReceived {
                    source,
                    event,
                    system,
                }));
                EventOutcome::System
            }
            EventKind::Model { .. } => self.on_model_event(source, ev),
            EventKind::UnknownSystem { .. } => {
                tracing::debug!(device = %p.device_id, service = %ev.service_id, event = %ev.event_type, "unknown system event ignored");
                EventOutcome::UnknownSystem
            }
        }
    }

    /// A product-model event (§9): validated against the subject's product model.
    fn on_model_event(&self, source: EventSource, ev: &ServiceEvent) -> EventOutcome {
        let product = self
            .storage
            .get_device(&source.subject)
            .ok()
            .flatten()
            .and_then(|d| self.product(&d.product_id).ok().flatten());
        let valid = product.is_some_and(|product| {
            validate_model_event(&product, &ev.service_id, &ev.event_type, &ev.paras)
                .inspect_err(|e| tracing::debug!(device = %source.subject, error = %e, "invalid model event"))
                .is_ok()
        });
        if !valid {
            self.metrics.invalid(PayloadKind::EventsUp);
            return EventOutcome::Invalid;
        }
        let event = ev.clone();
        self.emit(PlatformEvent::EventUp(EventReceived {
            source,
            event,
            system: None,
        }));
        EventOutcome::Model
    }

    /// Answers a time-sync request on `events/down` (§4.5, §13 item 23): `device_send_time`
    /// echoed, `server_rcv_time` = when the publication was received, `server_send_time` =
    /// now, just before handing the answer over.
    fn answer_time_sync(
        &self,
        p: &Published,
        tree: &DeviceId,
        envelope: &EventEnvelope,
        req: TimeSyncRequest,
    ) {
        let now = Timestamp::now();
        let paras = TimeSyncResponse {
            device_send_time: req.device_send_time,
            server_rcv_time: p.at.as_millis(),
            server_send_time: now.as_millis(),
        };
        let answer = EventEnvelope {
            object_device_id: envelope.object_device_id.clone(),
            services: vec![
                SystemEvent::TimeSyncResponse(paras).to_service_event(Some(now.to_compact()), None),
            ],
        };
        let topic = DeviceTopic::sys(tree.clone(), SysTopic::EventsDown);
        let _ = self.send(&p.device_id, &topic, to_json(&answer));
    }

    /// `{kind}/response/request_id=…`: completes the waiting request (or recognises the
    /// answer to a desired push); an answer nobody waits for is counted and dropped.
    pub(super) fn on_response(&self, p: &Published, kind: RequestKind, id: RequestId) {
        let Some(matched) = self.requests.take(&p.device_id, kind, &id) else {
            if kind == RequestKind::Command && self.async_command_response(p, &id) {
                return;
            }
            self.metrics.unmatched();
            tracing::debug!(device = %p.device_id, request_id = %id, "response without a waiting request");
            return;
        };
        let parsed = parse_response(kind, &p.payload);
        if let Err(e) = &parsed {
            self.metrics.invalid(response_kind(kind));
            tracing::debug!(device = %p.device_id, request_id = %id, error = %e, "malformed response");
        }
        match matched {
            Matched::Push => {
                self.metrics.answered(RequestLabel::DesiredPush);
                if let Ok((_, false)) = parsed {
                    tracing::debug!(device = %p.device_id, "desired values refused by the device");
                }
            }
            Matched::Awaited(tx) => {
                if let Some(l) = RequestLabel::of(kind) {
                    self.metrics.answered(l);
                }
                let outcome = parsed
                    .map(|(body, success)| DeviceResponse {
                        device_id: p.device_id.clone(),
                        kind,
                        request_id: id,
                        body,
                        success,
                        received_at: p.at,
                    })
                    .map_err(ResponseError::Malformed);
                // The caller may have given up meanwhile; then nobody needs it.
                let _ = tx.send(outcome);
            }
        }
    }
}

/// Reads a response as JSON and checks it against its kind's type; returns it with whether
/// it reports success. An empty payload is read as `{}` (no `result_code`: success).
fn parse_response(kind: RequestKind, payload: &[u8]) -> Result<(Value, bool), String> {
    let body: Value = if payload.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(payload).map_err(|e| e.to_string())?
    };
    if !body.is_object() {
        return Err("expected a JSON object".into());
    }
    let success = match kind {
        RequestKind::Command => CommandResponse::deserialize(&body).map(|r| r.is_success()),
        RequestKind::PropertiesSet => {
            PropertySetResponse::deserialize(&body).map(|r| r.is_success())
        }
        RequestKind::PropertiesGet | RequestKind::ShadowGet => {
            PropertyGetResponse::deserialize(&body).map(|_| true)
        }
    }
    .map_err(|e| e.to_string())?;
    Ok((body, success))
}

fn response_kind(kind: RequestKind) -> PayloadKind {
    match kind {
        RequestKind::Command => PayloadKind::CommandResponse,
        RequestKind::PropertiesSet => PayloadKind::PropertiesSetResponse,
        RequestKind::PropertiesGet | RequestKind::ShadowGet => PayloadKind::PropertiesGetResponse,
    }
}

impl Platform {
    /// A command response whose request id is an asynchronous command's id goes to the command
    /// service (the response of a sub-device comes through its gateway: the service checks the
    /// command belongs to the answering tree).
    fn async_command_response(&self, p: &Published, id: &RequestId) -> bool {
        let Some(service) = self.commands.get() else {
            return false;
        };
        let Some(command) = service.claims(id) else {
            return false;
        };
        let (detail, success) = match parse_response(RequestKind::Command, &p.payload) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.invalid(response_kind(RequestKind::Command));
                (Value::String(format!("malformed response: {e}")), false)
            }
        };
        let device = match self.storage.get_command(&command) {
            Ok(Some(c))
                if c.device_id == p.device_id
                    || self.is_sub_device_of(&c.device_id, &p.device_id) =>
            {
                c.device_id
            }
            _ => return false,
        };
        self.metrics.answered(RequestLabel::Command);
        service.result(&device, command, success, detail);
        true
    }

    fn is_sub_device_of(&self, device: &DeviceId, gateway: &DeviceId) -> bool {
        matches!(self.storage.get_device(device), Ok(Some(d)) if &d.gateway_id == gateway)
    }
}
