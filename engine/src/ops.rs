//! Administrative operations on live sessions for the application API's EMQX-style
//! integration (spec/app-side.md §10 rows 2, 7, 8, 9, 11): list and inspect online sessions,
//! subscribe and unsubscribe a session on the device's behalf, publish to a topic, and
//! connection statistics. Called by `fleetgate-api` from blocking threads.
//!
//! What a listing shows is read from the shards themselves: each request travels as a
//! [`ShardMsg::Ops`] through the shard's inbox, the shard answers on a one-shot channel without
//! ever blocking, and the caller waits (at most [`OPS_TIMEOUT`]). The only per-session cost is
//! the connect time kept in each connection (8 bytes); everything else a listing shows the
//! session holds anyway. A listing scans every shard's sessions, which is fine for an
//! administrative call and costs nothing while nobody asks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_model::topic::DeviceTopic;
use fleetgate_model::{AppId, DeviceId, ProductId, Timestamp};

use crate::engine::{Engine, Shared};
use crate::metrics::{Counter, PacketKind};
use crate::registry::SessionRef;
use crate::session::Downlink;
use crate::shard::ShardMsg;

/// How long an operation waits for the shards' answers.
pub const OPS_TIMEOUT: Duration = Duration::from_secs(3);

/// A connected session as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The device.
    pub device_id: DeviceId,
    /// Its product.
    pub product_id: ProductId,
    /// The product's resource space.
    pub app_id: AppId,
    /// The MQTT client id.
    pub client_id: String,
    /// The peer address.
    pub peer: SocketAddr,
    /// The MQTT protocol level (4 = 3.1.1, 5 = 5.0).
    pub protocol: u8,
    /// The keep-alive in effect, seconds.
    pub keepalive_secs: u16,
    /// When CONNACK was sent (wall clock).
    pub connected_at: Timestamp,
    /// The shard serving it.
    pub shard: u16,
    /// Explicit subscriptions (the implicit system-topic subscriptions are not counted).
    pub subscriptions: usize,
}

/// Which sessions a listing shows; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Sessions of devices of this resource space.
    pub app_id: Option<AppId>,
    /// Sessions of devices of this product.
    pub product_id: Option<ProductId>,
    /// Client ids containing this text.
    pub client_id: Option<String>,
    /// Peers with this address.
    pub ip: Option<IpAddr>,
}

impl SessionFilter {
    /// Whether `s` is shown.
    pub fn matches(&self, s: &SessionInfo) -> bool {
        self.app_id.as_ref().is_none_or(|a| *a == s.app_id)
            && self.product_id.as_ref().is_none_or(|p| *p == s.product_id)
            && self
                .client_id
                .as_deref()
                .is_none_or(|c| s.client_id.contains(c))
            && self.ip.is_none_or(|ip| ip == s.peer.ip())
    }
}

/// Why an operation on sessions failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// The device has no live connection.
    #[error("the device is offline")]
    Offline,
    /// A shard's inbox is full.
    #[error("the engine is overloaded; try again")]
    Busy,
    /// A shard did not answer in time.
    #[error("the engine did not answer in time")]
    Timeout,
    /// Not a valid topic filter (or a shared subscription, which fleetgate does not offer).
    #[error("invalid topic filter")]
    InvalidFilter,
    /// The ACL does not let the device subscribe to the filter.
    #[error("the ACL does not allow the device to subscribe to this filter")]
    NotAuthorized,
}

/// A subscription made on a device's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOutcome {
    /// The QoS granted (system topics are capped at 1).
    pub granted: QoS,
    /// Whether it replaced a subscription to the same filter.
    pub replaced: bool,
}

/// Connection statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections: all sockets for the whole engine; established sessions when counted
    /// for one resource space (a socket belongs to none until it authenticates).
    pub connections: u64,
    /// Devices with an established session.
    pub online_devices: u64,
    /// Explicit subscriptions of those sessions.
    pub subscriptions: u64,
    /// PUBLISH packets received (all devices).
    pub messages_received: u64,
    /// PUBLISH packets sent (all devices).
    pub messages_sent: u64,
    /// Bytes read from device connections (all devices).
    pub bytes_received: u64,
    /// Bytes written to device connections (all devices).
    pub bytes_sent: u64,
    /// Online devices by product.
    pub per_product: BTreeMap<ProductId, u64>,
}

/// One shard's share of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardCounts {
    /// Established sessions.
    pub online: u64,
    /// Their explicit subscriptions.
    pub subscriptions: u64,
    /// Established sessions by product.
    pub per_product: BTreeMap<ProductId, u64>,
}

/// A request to a shard (inside [`ShardMsg::Ops`]); each carries the channel of its answer.
#[derive(Debug)]
pub enum OpsRequest {
    /// The established sessions that match, after `after` in device-id order, at most `limit`.
    List {
        /// Which sessions.
        filter: SessionFilter,
        /// Device ids after this one.
        after: Option<DeviceId>,
        /// Most sessions.
        limit: usize,
        /// The answer.
        reply: Sender<Vec<SessionInfo>>,
    },
    /// One session.
    Inspect {
        /// The session.
        target: SessionRef,
        /// The answer (`None` when it is not an established session).
        reply: Sender<Option<SessionInfo>>,
    },
    /// Subscribe (`qos` given) or unsubscribe the session to `filter`, the ACL applying.
    Subscribe {
        /// The session.
        target: SessionRef,
        /// The filter.
        filter: ByteString,
        /// The QoS asked for; `None` unsubscribes.
        qos: Option<QoS>,
        /// The answer: the outcome, for an unsubscription whether the filter was there.
        reply: Sender<Result<Option<SubscribeOutcome>, OpsError>>,
    },
    /// Deliver `msg` to the session if the device receives the topic and is of `app`.
    Publish {
        /// The session.
        target: SessionRef,
        /// The publishing application: only its devices receive.
        app: AppId,
        /// The message.
        msg: Downlink,
        /// The answer: whether the session took it (sent, in flight or queued).
        reply: Sender<bool>,
    },
    /// Counts of established sessions (of `app`, or all).
    Count {
        /// The resource space.
        app: Option<AppId>,
        /// The answer.
        reply: Sender<ShardCounts>,
    },
}

/// What one publication reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Sessions that took the message.
    pub deliveries: usize,
}

fn send(shared: &Shared, shard: u16, req: OpsRequest) -> Result<(), OpsError> {
    let h = shared.shard(shard).ok_or(OpsError::Offline)?;
    h.send(ShardMsg::Ops(Box::new(req)))
        .map_err(|_| OpsError::Busy)
}

fn wait<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, OpsError> {
    rx.recv_deadline(deadline).map_err(|_| OpsError::Timeout)
}

fn live(shared: &Shared, device: &DeviceId) -> Result<SessionRef, OpsError> {
    shared
        .registry
        .get(device)
        .filter(|r| r.live)
        .ok_or(OpsError::Offline)
}

impl Engine {
    fn shard_ids(&self) -> impl Iterator<Item = u16> {
        (0..self.shared().metrics.len()).map(|i| i as u16)
    }

    /// The established sessions that match `filter`, in device-id order after `after`, at most
    /// `limit`; the flag says whether more follow.
    pub fn sessions(
        &self,
        filter: &SessionFilter,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<(Vec<SessionInfo>, bool), OpsError> {
        let deadline = Instant::now() + OPS_TIMEOUT;
        let mut waiting = Vec::new();
        for shard in self.shard_ids() {
            let (reply, rx) = crossbeam_channel::bounded(1);
            send(
                self.shared(),
                shard,
                OpsRequest::List {
                    filter: filter.clone(),
                    after: after.cloned(),
                    limit: limit.saturating_add(1),
                    reply,
                },
            )?;
            waiting.push(rx);
        }
        let mut all = Vec::new();
        for rx in waiting {
            all.extend(wait(&rx, deadline)?);
        }
        all.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        let more = all.len() > limit;
        all.truncate(limit);
        Ok((all, more))
    }

    /// The established session of `device`, if any.
    pub fn session(&self, device: &DeviceId) -> Result<Option<SessionInfo>, OpsError> {
        let Ok(target) = live(self.shared(), device) else {
            return Ok(None);
        };
        let (reply, rx) = crossbeam_channel::bounded(1);
        match send(
            self.shared(),
            target.shard,
            OpsRequest::Inspect { target, reply },
        ) {
            Ok(()) => {}
            Err(OpsError::Offline) => return Ok(None),
            Err(e) => return Err(e),
        }
        wait(&rx, Instant::now() + OPS_TIMEOUT)
    }

    /// Subscribes the device's live session to `filter` as if the device had sent SUBSCRIBE;
    /// the ACL applies. Lasts as long as the session.
    pub fn subscribe(
        &self,
        device: &DeviceId,
        filter: &str,
        qos: QoS,
    ) -> Result<SubscribeOutcome, OpsError> {
        self.change_subscription(device, filter, Some(qos))?
            .ok_or(OpsError::Offline)
    }

    /// Removes a subscription of the device's live session; returns whether it existed.
    pub fn unsubscribe(&self, device: &DeviceId, filter: &str) -> Result<bool, OpsError> {
        Ok(self.change_subscription(device, filter, None)?.is_some())
    }

    fn change_subscription(
        &self,
        device: &DeviceId,
        filter: &str,
        qos: Option<QoS>,
    ) -> Result<Option<SubscribeOutcome>, OpsError> {
        let target = live(self.shared(), device)?;
        let (reply, rx) = crossbeam_channel::bounded(1);
        send(
            self.shared(),
            target.shard,
            OpsRequest::Subscribe {
                target,
                filter: ByteString::from(filter),
                qos,
                reply,
            },
        )?;
        wait(&rx, Instant::now() + OPS_TIMEOUT)?
    }

    /// Publishes on `topic` for application `app`: to the device the topic names (a
    /// `$oc/devices/{id}/...` topic) and to the sessions whose ACL-granted subscriptions match
    /// (the router), only devices of `app` receiving. A session takes the message when it is
    /// subscribed to the topic (explicitly or implicitly); a detached persistent session queues
    /// QoS 1 and 2 messages.
    pub fn publish(
        &self,
        app: &AppId,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<PublishReport, OpsError> {
        let shared = self.shared();
        let named = match DeviceTopic::parse(topic) {
            Ok(Some(t)) => Some(t.device_id),
            _ => None,
        };
        let mut targets: Vec<(DeviceId, QoS)> = Vec::new();
        if let Some(d) = &named {
            targets.push((d.clone(), QoS::ExactlyOnce));
        }
        // The named device is reached directly; the router adds the others.
        targets.extend(shared.router.subscribers(topic, app, named.as_ref()));
        let msg = Downlink {
            topic: ByteString::from(topic),
            payload: Bytes::from(payload),
            qos,
        };
        let deadline = Instant::now() + OPS_TIMEOUT;
        let mut waiting = Vec::new();
        for (device, granted) in targets {
            let Some(target) = shared.registry.get(&device) else {
                continue;
            };
            let (reply, rx) = crossbeam_channel::bounded(1);
            let req = OpsRequest::Publish {
                target,
                app: app.clone(),
                msg: Downlink {
                    qos: qos.less_value(granted),
                    ..msg.clone()
                },
                reply,
            };
            if send(shared, target.shard, req).is_ok() {
                waiting.push(rx);
            }
        }
        let mut report = PublishReport::default();
        for rx in waiting {
            if wait(&rx, deadline)? {
                report.deliveries += 1;
            }
        }
        Ok(report)
    }

    /// Statistics: session counts for `app` (all when `None`) and the engine-wide message and
    /// byte counters.
    pub fn stats(&self, app: Option<&AppId>) -> Result<Stats, OpsError> {
        let deadline = Instant::now() + OPS_TIMEOUT;
        let mut waiting = Vec::new();
        for shard in self.shard_ids() {
            let (reply, rx) = crossbeam_channel::bounded(1);
            send(
                self.shared(),
                shard,
                OpsRequest::Count {
                    app: app.cloned(),
                    reply,
                },
            )?;
            waiting.push(rx);
        }
        let mut stats = Stats::default();
        for rx in waiting {
            let c = wait(&rx, deadline)?;
            stats.online_devices += c.online;
            stats.subscriptions += c.subscriptions;
            for (p, n) in c.per_product {
                *stats.per_product.entry(p).or_default() += n;
            }
        }
        for m in &self.shared().metrics {
            stats.messages_received += m.packets_in_of(PacketKind::Publish);
            stats.messages_sent += m.packets_out_of(PacketKind::Publish);
            stats.bytes_received += m.get(Counter::BytesIn);
            stats.bytes_sent += m.get(Counter::BytesOut);
        }
        stats.connections = match app {
            Some(_) => stats.online_devices,
            None => self
                .shared()
                .connections
                .load(std::sync::atomic::Ordering::Relaxed) as u64,
        };
        Ok(stats)
    }
}
