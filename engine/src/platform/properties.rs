//! Properties and the shadow (spec/device-protocol.md §7, spec/device-management.md §7):
//! property reports validated against the product model and written into the shadow's
//! `reported` part, gateway batch reports, the device's own shadow get, and the push of the
//! desired delta.
//!
//! Desired push (device-management §7.2 rules 2–4, §7.4): the delta — desired values that
//! reported does not match — goes to MQTT devices as a property set
//! (`sys/properties/set/request_id=…`, §7.3) when the device connects, after each property
//! report that leaves a delta, and when the API changes desired values
//! ([`Platform::push_desired`]); it is re-sent on those occasions until reported matches.
//! Desired values stay stored. A sub-device's delta goes to its gateway with
//! `object_device_id`. §7.4 also names "the device reports any data"; messages and events do
//! not show whether the configuration was applied, and checking the shadow on each would cost
//! a storage read per uplink, so only property reports (and connects) trigger a push.

use fleetgate_model::device::Device;
use fleetgate_model::payload::{
    GatewayPropertyReport, PropertyReport, PropertySetRequest, ServiceProperties, ShadowGetRequest,
};
use fleetgate_model::shadow::Shadow;
use fleetgate_model::time::event_time_or;
use fleetgate_model::topic::{DeviceTopic, RequestKind, SysTopic};
use fleetgate_model::validate::{PropertyUse, validate_properties};
use fleetgate_model::{DeviceId, RequestId, Timestamp};
use fleetgate_storage::{Durability, StorageError};

use super::{
    PayloadKind, Platform, PlatformEvent, PropertiesReported, PushOutcome, ReportOutcome,
    ReportedService, RequestError, RequestLabel, ShadowGetOutcome, to_json,
};
use crate::upstream::Published;

/// One device's part of a report: whose properties, sent by whom, when.
struct Report<'a> {
    /// The connected device that published (a gateway for its sub-devices).
    publisher: &'a DeviceId,
    /// The device the properties belong to.
    subject: &'a DeviceId,
    services: &'a [ServiceProperties],
    received_at: Timestamp,
    kind: PayloadKind,
}

impl Platform {
    /// `properties/report` (§7.1): all or nothing — one invalid service and nothing is stored.
    pub(super) fn on_property_report(&self, p: &Published, tree: &DeviceId) {
        let services = match serde_json::from_slice::<PropertyReport>(&p.payload) {
            Ok(r) => r.services,
            Err(e) => {
                self.metrics.invalid(PayloadKind::PropertiesReport);
                self.metrics.report(ReportOutcome::Invalid);
                tracing::debug!(device = %p.device_id, error = %e, "malformed property report");
                return;
            }
        };
        self.apply_report(&Report {
            publisher: &p.device_id,
            subject: tree,
            services: &services,
            received_at: p.at,
            kind: PayloadKind::PropertiesReport,
        });
    }

    /// `gateway/sub_devices/properties/report` (§7.2). More than 100 devices refuses the
    /// batch (§11). Otherwise each entry stands alone: an entry for a device that is not the
    /// gateway or one of its sub-devices, or with invalid properties, is refused and counted,
    /// and the other entries are applied. The HTTPS twin (§10.4) refuses the whole request
    /// with IOTDA.021104, which tells the gateway; MQTT has no error channel, so refusing the
    /// batch would silently lose every other sub-device's data.
    pub(super) fn on_gateway_report(&self, p: &Published) {
        let report = match serde_json::from_slice::<GatewayPropertyReport>(&p.payload) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.invalid(PayloadKind::GatewayReport);
                self.metrics.report(ReportOutcome::Invalid);
                tracing::debug!(device = %p.device_id, error = %e, "malformed gateway report");
                return;
            }
        };
        if report.devices.len() > GatewayPropertyReport::MAX_DEVICES {
            self.metrics.report(ReportOutcome::BatchTooLarge);
            tracing::debug!(device = %p.device_id, devices = report.devices.len(), "gateway batch too large");
            return;
        }
        for entry in &report.devices {
            self.apply_report(&Report {
                publisher: &p.device_id,
                subject: &entry.device_id,
                services: &entry.services,
                received_at: p.at,
                kind: PayloadKind::GatewayReport,
            });
        }
    }

    /// Validates one device's report, writes it into the shadow, tells observers, and pushes
    /// the delta when one remains.
    fn apply_report(&self, r: &Report<'_>) {
        let outcome = self.try_apply_report(r);
        self.metrics.report(outcome);
    }

    fn try_apply_report(&self, r: &Report<'_>) -> ReportOutcome {
        let device = match self.owned_device(r.publisher, r.subject) {
            Ok(d) => d,
            Err(outcome) => return outcome,
        };
        let product = match self.product(&device.product_id) {
            Ok(Some(p)) => p,
            Ok(None) => return ReportOutcome::UnknownProduct,
            Err(e) => return storage_failed(r.subject, &e),
        };
        if let Err(e) = validate_properties(&product, r.services, PropertyUse::Report) {
            self.metrics.invalid(r.kind);
            tracing::debug!(device = %r.subject, error = %e, "property report refused");
            return ReportOutcome::Invalid;
        }
        let shadow = match self.write_reported(r) {
            Ok(s) => s,
            Err(e) => return storage_failed(r.subject, &e),
        };
        self.emit(PlatformEvent::PropertiesReported(reported_event(
            r, &device, &shadow,
        )));
        if shadow.has_delta() {
            // The publisher is online: it just published.
            let _ = self.push_delta(r.publisher, r.subject, &shadow);
        }
        ReportOutcome::Accepted
    }

    /// The subject's record, when it is the publisher or one of its sub-devices.
    fn owned_device(
        &self,
        publisher: &DeviceId,
        subject: &DeviceId,
    ) -> Result<Device, ReportOutcome> {
        let device = match self.storage.get_device(subject) {
            Ok(Some(d)) => d,
            Ok(None) => return Err(ReportOutcome::UnknownDevice),
            Err(e) => return Err(storage_failed(subject, &e)),
        };
        if subject != publisher && device.gateway_id != *publisher {
            tracing::debug!(gateway = %publisher, device = %subject, "not a sub-device of the publisher");
            return Err(ReportOutcome::NotSubDevice);
        }
        self.device_products
            .insert(subject.clone(), device.product_id.clone());
        Ok(device)
    }

    /// Whether `subject` is `publisher` or one of its sub-devices.
    pub(super) fn owns(&self, publisher: &DeviceId, subject: &DeviceId) -> bool {
        subject == publisher || self.owned_device(publisher, subject).is_ok()
    }

    fn write_reported(&self, r: &Report<'_>) -> Result<Shadow, StorageError> {
        self.storage
            .update_shadow(r.subject, Durability::Buffered, &mut |shadow| {
                for svc in r.services {
                    let at = event_time_or(svc.event_time.as_deref(), r.received_at);
                    shadow.report(&svc.service_id, &svc.properties, at);
                }
                Ok(())
            })
    }

    /// Sends a shadow's delta as a property set to `session` about `subject`.
    fn push_delta(
        &self,
        session: &DeviceId,
        subject: &DeviceId,
        shadow: &Shadow,
    ) -> Result<PushOutcome, RequestError> {
        let services: Vec<ServiceProperties> = shadow
            .delta()
            .into_iter()
            .map(|(service_id, properties)| ServiceProperties {
                service_id,
                properties,
                event_time: None,
            })
            .collect();
        if services.is_empty() {
            return Ok(PushOutcome::NothingPending);
        }
        let body = PropertySetRequest {
            object_device_id: (subject != session).then(|| subject.clone()),
            services,
        };
        let id = self.requests.register_push(session);
        let topic = DeviceTopic::sys(
            session.clone(),
            SysTopic::Request(RequestKind::PropertiesSet, id.clone()),
        );
        if let Err(e) = self.send(session, &topic, to_json(&body)) {
            self.requests.remove(session, &id);
            return Err(e.into());
        }
        self.metrics.sent(RequestLabel::DesiredPush);
        Ok(PushOutcome::Sent)
    }

    /// Pushes a device's pending desired values now (the API's "desired changed"; also done
    /// on connect and after reports). A sub-device's delta goes through its gateway.
    pub fn push_desired(&self, device: &DeviceId) -> Result<PushOutcome, RequestError> {
        let record = self
            .storage
            .get_device(device)
            .map_err(|e| RequestError::Storage(e.to_string()))?
            .ok_or(RequestError::UnknownDevice)?;
        self.device_products
            .insert(device.clone(), record.product_id.clone());
        let session = &record.gateway_id;
        if !self.sessions.is_online(session) {
            return Ok(PushOutcome::Offline);
        }
        let shadow = self
            .storage
            .get_shadow(device)
            .map_err(|e| RequestError::Storage(e.to_string()))?;
        match self.push_delta(session, device, &shadow) {
            Err(RequestError::Offline) => Ok(PushOutcome::Offline),
            other => other,
        }
    }

    /// A device connected: push what desired still differs from reported (§7.2 rule 3). A
    /// device that connects is its own session (sub-devices reach the platform through their
    /// gateway's), so this reads only the shadow, past the block cache: most devices have no
    /// delta, and an idle connection should cost no cached storage.
    pub(super) fn on_connected(&self, device: &DeviceId) {
        let shadow = match self.storage.peek_shadow(device) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%device, error = %e, "cannot read the shadow at connect");
                return;
            }
        };
        if !shadow.has_delta() {
            return;
        }
        match self.push_delta(device, device, &shadow) {
            Ok(_) | Err(RequestError::Offline) => {}
            Err(e) => tracing::debug!(%device, error = %e, "desired values not pushed"),
        }
    }

    /// `shadow/get/request_id=…` (§7.5): answers with the stored shadow of the device (or of
    /// the sub-device named by `object_device_id`), all services or the one asked for, on
    /// `shadow/get/response/request_id=…` with the device's request id.
    pub(super) fn on_shadow_get(&self, p: &Published, tree: &DeviceId, id: RequestId) {
        let outcome = self.answer_shadow_get(p, tree, id);
        self.metrics.shadow_get(outcome);
    }

    fn answer_shadow_get(&self, p: &Published, tree: &DeviceId, id: RequestId) -> ShadowGetOutcome {
        // An empty payload asks for everything about the topic's device.
        let req = if p.payload.is_empty() {
            Ok(ShadowGetRequest::default())
        } else {
            serde_json::from_slice::<ShadowGetRequest>(&p.payload)
        };
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                self.metrics.invalid(PayloadKind::ShadowGet);
                tracing::debug!(device = %p.device_id, error = %e, "malformed shadow get");
                return ShadowGetOutcome::Invalid;
            }
        };
        let subject = req.object_device_id.as_ref().unwrap_or(tree);
        if !self.owns(&p.device_id, subject) {
            return ShadowGetOutcome::NotSubDevice;
        }
        let shadow = match self.storage.get_shadow(subject) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(device = %subject, error = %e, "cannot read the shadow");
                return ShadowGetOutcome::StorageError;
            }
        };
        let body = shadow.response(subject, req.service_id.as_ref());
        let topic = DeviceTopic::sys(tree.clone(), SysTopic::Response(RequestKind::ShadowGet, id));
        match self.send(&p.device_id, &topic, to_json(&body)) {
            Ok(()) => ShadowGetOutcome::Answered,
            Err(_) => ShadowGetOutcome::Undeliverable,
        }
    }
}

fn storage_failed(device: &DeviceId, e: &StorageError) -> ReportOutcome {
    match e {
        StorageError::NotFound { .. } => ReportOutcome::UnknownDevice,
        _ => {
            tracing::warn!(%device, error = %e, "cannot store reported properties");
            ReportOutcome::StorageError
        }
    }
}

fn reported_event(r: &Report<'_>, device: &Device, shadow: &Shadow) -> PropertiesReported {
    let services = r
        .services
        .iter()
        .map(|svc| ReportedService {
            service_id: svc.service_id.clone(),
            properties: svc.properties.clone(),
            event_time: event_time_or(svc.event_time.as_deref(), r.received_at),
            shadow_version: shadow
                .services
                .get(&svc.service_id)
                .map_or(0, |s| s.version),
        })
        .collect();
    PropertiesReported {
        device_id: r.subject.clone(),
        product_id: device.product_id.clone(),
        gateway_id: (r.subject != r.publisher).then(|| r.publisher.clone()),
        services,
        received_at: r.received_at,
    }
}
