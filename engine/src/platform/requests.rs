//! Correlation of platform-originated requests with the device's responses by `request_id`
//! (spec/device-protocol.md §3.4, §13 item 8): a table of outstanding requests per device,
//! bounded per device and overall, and the [`PendingResponse`] a caller awaits. Dropping a
//! `PendingResponse` (the caller timed out or went away) removes its entry, so nothing is left
//! behind. Desired-shadow pushes are recorded too, without a waiter, so that the device's
//! answers to them are recognised rather than counted as unmatched.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use dashmap::DashMap;
use fleetgate_model::topic::RequestKind;
use fleetgate_model::{DeviceId, RequestId, Timestamp};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::engine::DeliverError;

/// Why a platform request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The device has no live connection (a synchronous request needs the device online,
    /// spec/device-management.md §22.5).
    #[error("the device is offline")]
    Offline,
    /// The device's shard cannot take more messages now.
    #[error("the device's shard is overloaded")]
    Busy,
    /// Too many requests are waiting for this device, or for all devices.
    #[error("too many requests are waiting for answers")]
    TooMany,
    /// The kind is not one the platform originates (`shadow/get` comes from devices).
    #[error("{0:?} requests are not sent by the platform")]
    NotPlatformOriginated(RequestKind),
    /// The body is not a valid request of its kind.
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// The device does not exist.
    #[error("the device does not exist")]
    UnknownDevice,
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<DeliverError> for RequestError {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::Offline => RequestError::Offline,
            DeliverError::Busy => RequestError::Busy,
        }
    }
}

/// A device's answer to a platform request.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceResponse {
    /// The device that answered.
    pub device_id: DeviceId,
    /// What was asked.
    pub kind: RequestKind,
    /// The correlation id.
    pub request_id: RequestId,
    /// The response as the device sent it (checked against the kind's response type:
    /// `CommandResponse`, `PropertySetResponse` or `PropertyGetResponse`).
    pub body: Value,
    /// Whether the device reported success (`result_code` absent or 0, §13 item 10; a
    /// property-get answer is always a success).
    pub success: bool,
    /// When the platform received it.
    pub received_at: Timestamp,
}

/// Why a pending request ended without a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The device answered with a payload that is not a response of the request's kind.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The platform stopped before an answer came.
    #[error("the platform stopped")]
    Closed,
}

/// What a waiter receives.
pub(super) type Outcome = Result<DeviceResponse, ResponseError>;

/// One device's outstanding requests.
#[derive(Debug, Default)]
struct Outstanding {
    /// Requests a caller awaits.
    awaited: HashMap<RequestId, (RequestKind, oneshot::Sender<Outcome>)>,
    /// Desired pushes (property sets nobody awaits), oldest first.
    pushes: VecDeque<RequestId>,
}

impl Outstanding {
    fn is_empty(&self) -> bool {
        self.awaited.is_empty() && self.pushes.is_empty()
    }
}

/// What a response was matched to.
#[derive(Debug)]
pub(super) enum Matched {
    /// A request a caller awaits.
    Awaited(oneshot::Sender<Outcome>),
    /// A desired push.
    Push,
}

/// Outstanding requests by device and request id.
#[derive(Debug)]
pub(super) struct RequestTable {
    devices: DashMap<DeviceId, Outstanding>,
    awaited: AtomicUsize,
    max_per_device: usize,
    max_total: usize,
    max_pushes: usize,
}

impl RequestTable {
    /// A table allowing `max_per_device` awaited requests per device, `max_total` overall,
    /// and remembering the last `max_pushes` desired pushes per device.
    pub(super) fn new(max_per_device: usize, max_total: usize, max_pushes: usize) -> Self {
        RequestTable {
            devices: DashMap::new(),
            awaited: AtomicUsize::new(0),
            max_per_device,
            max_total,
            max_pushes: max_pushes.max(1),
        }
    }

    /// Requests waiting for an answer.
    pub(super) fn awaited(&self) -> usize {
        self.awaited.load(Ordering::Relaxed)
    }

    /// Devices with an entry (awaited requests or remembered pushes).
    #[cfg(test)]
    pub(super) fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Records a request a caller will await under a fresh request id.
    pub(super) fn register(
        &self,
        device: &DeviceId,
        kind: RequestKind,
    ) -> Result<(RequestId, oneshot::Receiver<Outcome>), RequestError> {
        if self.awaited.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.awaited.fetch_sub(1, Ordering::Relaxed);
            return Err(RequestError::TooMany);
        }
        let mut entry = self.devices.entry(device.clone()).or_default();
        if entry.awaited.len() >= self.max_per_device {
            drop(entry);
            self.awaited.fetch_sub(1, Ordering::Relaxed);
            self.prune(device);
            return Err(RequestError::TooMany);
        }
        let (tx, rx) = oneshot::channel();
        let id = RequestId::generate();
        entry.awaited.insert(id.clone(), (kind, tx));
        Ok((id, rx))
    }

    /// Records a desired push under a fresh request id, forgetting the oldest beyond the
    /// per-device bound.
    pub(super) fn register_push(&self, device: &DeviceId) -> RequestId {
        let id = RequestId::generate();
        let mut entry = self.devices.entry(device.clone()).or_default();
        entry.pushes.push_back(id.clone());
        while entry.pushes.len() > self.max_pushes {
            entry.pushes.pop_front();
        }
        id
    }

    /// Removes a request (its caller gave up, or it was never sent). Returns whether it was
    /// there.
    pub(super) fn remove(&self, device: &DeviceId, id: &RequestId) -> bool {
        let removed = self.devices.get_mut(device).is_some_and(|mut e| {
            let awaited = e.awaited.remove(id).is_some();
            if awaited {
                self.awaited.fetch_sub(1, Ordering::Relaxed);
            }
            let before = e.pushes.len();
            e.pushes.retain(|p| p != id);
            awaited || e.pushes.len() != before
        });
        self.prune(device);
        removed
    }

    /// Takes the request a response on `kind`'s topic answers, if any. A response on another
    /// kind's topic does not match.
    pub(super) fn take(
        &self,
        device: &DeviceId,
        kind: RequestKind,
        id: &RequestId,
    ) -> Option<Matched> {
        let matched = self.devices.get_mut(device).and_then(|mut e| {
            if e.awaited.get(id).is_some_and(|(k, _)| *k == kind) {
                self.awaited.fetch_sub(1, Ordering::Relaxed);
                return e.awaited.remove(id).map(|(_, tx)| Matched::Awaited(tx));
            }
            let pos = e.pushes.iter().position(|p| p == id)?;
            if kind != RequestKind::PropertiesSet {
                return None;
            }
            e.pushes.remove(pos);
            Some(Matched::Push)
        });
        self.prune(device);
        matched
    }

    /// Forgets a device's desired pushes (its connection ended; a push is sent again on the
    /// next connect). Awaited requests stay until their callers give up: a device resuming a
    /// persistent session may still answer them.
    pub(super) fn forget_pushes(&self, device: &DeviceId) {
        if let Some(mut e) = self.devices.get_mut(device) {
            e.pushes.clear();
        }
        self.prune(device);
    }

    fn prune(&self, device: &DeviceId) {
        self.devices.remove_if(device, |_, e| e.is_empty());
    }
}

/// A platform request waiting for the device's response: a future (runtime-agnostic) that
/// resolves with the answer. The caller applies its own timeout (§13 item 9); dropping it
/// removes the request, and a later answer is counted as unmatched.
#[derive(Debug)]
pub struct PendingResponse {
    device: DeviceId,
    request_id: RequestId,
    kind: RequestKind,
    rx: oneshot::Receiver<Outcome>,
    table: Arc<RequestTable>,
}

impl PendingResponse {
    pub(super) fn new(
        device: DeviceId,
        request_id: RequestId,
        kind: RequestKind,
        rx: oneshot::Receiver<Outcome>,
        table: Arc<RequestTable>,
    ) -> Self {
        PendingResponse {
            device,
            request_id,
            kind,
            rx,
            table,
        }
    }

    /// The request id sent to the device.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The device asked.
    pub fn device_id(&self) -> &DeviceId {
        &self.device
    }

    /// What was asked.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// The answer if it has come, without waiting.
    pub fn try_response(&mut self) -> Option<Outcome> {
        match self.rx.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(ResponseError::Closed)),
        }
    }
}

impl Future for PendingResponse {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match Pin::new(&mut self.get_mut().rx).poll(cx) {
            Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
            Poll::Ready(Err(_)) => Poll::Ready(Err(ResponseError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for PendingResponse {
    fn drop(&mut self) {
        self.table.remove(&self.device, &self.request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn bounds_per_device_and_overall() {
        let t = RequestTable::new(2, 3, 1);
        let (a, b) = (dev("a"), dev("b"));
        let _r1 = t.register(&a, RequestKind::Command).unwrap();
        let _r2 = t.register(&a, RequestKind::Command).unwrap();
        assert_eq!(
            t.register(&a, RequestKind::Command).unwrap_err(),
            RequestError::TooMany
        );
        let _r3 = t.register(&b, RequestKind::Command).unwrap();
        assert_eq!(
            t.register(&b, RequestKind::Command).unwrap_err(),
            RequestError::TooMany
        );
        assert_eq!(t.awaited(), 3);
    }

    #[test]
    fn a_response_matches_only_its_kind_and_pushes_are_bounded() {
        let t = RequestTable::new(4, 4, 2);
        let d = dev("d");
        let (id, _rx) = t.register(&d, RequestKind::PropertiesGet).unwrap();
        assert!(t.take(&d, RequestKind::Command, &id).is_none());
        assert!(matches!(
            t.take(&d, RequestKind::PropertiesGet, &id),
            Some(Matched::Awaited(_))
        ));
        let p1 = t.register_push(&d);
        let p2 = t.register_push(&d);
        let p3 = t.register_push(&d);
        assert!(t.take(&d, RequestKind::PropertiesSet, &p1).is_none());
        assert!(matches!(
            t.take(&d, RequestKind::PropertiesSet, &p3),
            Some(Matched::Push)
        ));
        t.forget_pushes(&d);
        assert!(t.take(&d, RequestKind::PropertiesSet, &p2).is_none());
        assert_eq!((t.awaited(), t.devices()), (0, 0));
    }
}
