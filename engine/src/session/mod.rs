//! The MQTT session actor as a pure state machine ([`SessionState`]): complete frames,
//! authentication results, messages for the device and timer ticks go in; encoded packets (into
//! the connection's output buffer) and [`Action`]s for the shard come out. It never does I/O and
//! takes `now` as an argument, so it is driven the same way by the io_uring and epoll drivers,
//! by the in-memory transport of the tests, and by simulations.
//!
//! Both protocol versions share this code: frames are decoded into MQTT 5 packets and encoded
//! back for the connection's version by `fleetgate_codec::mqtt`; only the few places where the
//! versions answer differently (no DISCONNECT from a 3.1.1 server, no reason codes on its acks)
//! look at the version.

mod connect;
mod inbound;
pub mod outbox;
pub mod subscriptions;

use std::num::NonZeroU16;
use std::sync::Arc;

use fleetgate_codec::mqtt::bytes::BytesMut;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_codec::mqtt::{self, QoS, Version, v5};
use fleetgate_model::{DeviceId, Timestamp};

pub use self::connect::{Detached, Will};
pub use self::outbox::{Downlink, Outbox, Pushed};
pub use self::subscriptions::SubscriptionSet;
use crate::acl::{AclRules, DeviceInfo};
use crate::auth::AuthRequest;
use crate::config::SessionConfig;
use crate::flow::TokenBucket;
use crate::metrics::{CloseReason, Counter, PacketKind, ShardMetrics};
use crate::time::Millis;
use crate::upstream::Published;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, waiting for CONNECT.
    AwaitConnect,
    /// CONNECT received, credentials being checked.
    Authenticating,
    /// Authenticated, the registry being updated (takeover of an older session).
    Registering,
    /// CONNACK sent.
    Connected,
    /// Closing; further input is ignored.
    Closing,
}

/// What the shard must do for a session, besides writing its output buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Verify these credentials and call [`SessionState::on_auth`].
    Authenticate(AuthRequest),
    /// Claim the device in the registry, taking over any older session, then call
    /// [`SessionState::on_registered`] with its persistent state when `clean_start` is false.
    Register {
        /// The device.
        device_id: DeviceId,
        /// Whether the client asked for a new session.
        clean_start: bool,
    },
    /// The session is established (CONNACK 0 sent).
    Established {
        /// Whether a persistent session was resumed.
        session_present: bool,
    },
    /// Hand this publication upstream.
    Upstream(Published),
    /// Stop reading from the connection until this time (flow control).
    PauseReads(Millis),
    /// Route publications of other devices matching `filter` to this session (a subscription
    /// outside its own tree, granted by a stored ACL rule).
    Route {
        /// The filter.
        filter: ByteString,
        /// Its QoS; `None` removes the route.
        qos: Option<QoS>,
    },
    /// Close the connection once the output buffer is written.
    Close(CloseReason),
}

/// Everything a session handler may touch besides the session.
#[derive(Debug)]
pub struct Env<'a> {
    /// The engine clock.
    pub now: Millis,
    /// The wall clock, for event timestamps.
    pub wall: Timestamp,
    /// Session limits.
    pub config: &'a SessionConfig,
    /// Stored ACL rules.
    pub acl: &'a AclRules,
    /// The shard's counters.
    pub metrics: &'a ShardMetrics,
    /// The connection's output buffer.
    pub out: &'a mut BytesMut,
    /// Actions for the shard.
    pub actions: &'a mut Vec<Action>,
}

/// Session state that outlives a connection when the session is persistent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persistent {
    /// Seconds the session is kept after a disconnect (0: it ends with the connection).
    pub expiry_secs: u32,
    /// Explicit subscriptions.
    pub subscriptions: SubscriptionSet,
    /// Messages in flight and queued.
    pub outbox: Outbox,
    /// QoS 2 publications received and not yet released by PUBREL.
    pub inbound_qos2: Vec<NonZeroU16>,
}

/// Per-connection state allocated only when a client needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Live {
    /// The client's Receive Maximum (MQTT 5), 0 for none given.
    client_receive_max: u16,
    /// The client's Maximum Packet Size (MQTT 5), 0 for none given.
    client_max_packet: u32,
    /// Topic aliases the client set up (MQTT 5), index = alias - 1.
    aliases: Vec<Option<ByteString>>,
    /// The will message.
    will: Option<Will>,
    /// Since when the device has been over its flow-control budget without a break.
    throttled_since: Option<Millis>,
}

/// One connection's MQTT session.
#[derive(Debug)]
pub struct SessionState {
    phase: Phase,
    connected_once: bool,
    version: Version,
    keepalive_secs: u16,
    last_rx: Millis,
    started: Millis,
    device: Option<Arc<DeviceInfo>>,
    client_id: Option<Box<str>>,
    messages: TokenBucket,
    bytes: TokenBucket,
    pending: Option<Box<connect::PendingConnect>>,
    persistent: Option<Box<Persistent>>,
    live: Option<Box<Live>>,
}

fn kind_of(p: &v5::Packet) -> PacketKind {
    use v5::Packet as P;
    match p {
        P::Connect(_) => PacketKind::Connect,
        P::ConnectAck(_) => PacketKind::ConnAck,
        P::Publish(_) => PacketKind::Publish,
        P::PublishAck(_) => PacketKind::PubAck,
        P::PublishReceived(_) => PacketKind::PubRec,
        P::PublishRelease(_) => PacketKind::PubRel,
        P::PublishComplete(_) => PacketKind::PubComp,
        P::Subscribe(_) => PacketKind::Subscribe,
        P::SubscribeAck(_) => PacketKind::SubAck,
        P::Unsubscribe(_) => PacketKind::Unsubscribe,
        P::UnsubscribeAck(_) => PacketKind::UnsubAck,
        P::PingRequest => PacketKind::PingReq,
        P::PingResponse => PacketKind::PingResp,
        P::Disconnect(_) => PacketKind::Disconnect,
        P::Auth(_) => PacketKind::Auth,
    }
}

impl SessionState {
    /// A session for a connection accepted at `now`.
    pub fn new(now: Millis) -> Self {
        let empty = TokenBucket::full(crate::flow::Rate::UNLIMITED, now);
        SessionState {
            phase: Phase::AwaitConnect,
            connected_once: false,
            version: Version::V311,
            keepalive_secs: 0,
            last_rx: now,
            started: now,
            device: None,
            client_id: None,
            messages: empty,
            bytes: empty,
            pending: None,
            persistent: None,
            live: None,
        }
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the session got as far as CONNACK 0.
    pub fn connected_once(&self) -> bool {
        self.connected_once
    }

    /// The protocol version (3.1.1 until CONNECT says otherwise).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The authenticated device.
    pub fn device(&self) -> Option<&Arc<DeviceInfo>> {
        self.device.as_ref()
    }

    /// The MQTT client id, once CONNECT was read.
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or("")
    }

    /// The keep-alive in effect, seconds.
    pub fn keepalive_secs(&self) -> u16 {
        self.keepalive_secs
    }

    /// Number of explicit subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.persistent
            .as_ref()
            .map_or(0, |p| p.subscriptions.len())
    }

    /// Whether the established session receives `topic` (implicitly or explicitly subscribed).
    pub fn receives(&self, topic: &str) -> bool {
        let Some(device) = self.device.as_ref() else {
            return false;
        };
        self.phase == Phase::Connected
            && self
                .persistent
                .as_ref()
                .map_or_else(
                    || SubscriptionSet::default().qos_for(device, topic),
                    |p| p.subscriptions.qos_for(device, topic),
                )
                .is_some()
    }

    /// Whether frames may be handed in now (not while authenticating or registering: MQTT
    /// lets a client send before CONNACK, and those packets wait in the read buffer).
    pub fn accepts_frames(&self) -> bool {
        matches!(self.phase, Phase::AwaitConnect | Phase::Connected)
    }

    /// Messages in flight to the device.
    pub fn inflight(&self) -> usize {
        self.persistent
            .as_ref()
            .map_or(0, |p| p.outbox.inflight_len())
    }

    /// The largest packet the client accepts.
    fn client_max_packet(&self, env: &Env<'_>) -> usize {
        match self.live.as_ref().map_or(0, |l| l.client_max_packet) {
            0 => env.config.max_packet_size as usize,
            n => n as usize,
        }
    }

    fn window(&self, env: &Env<'_>) -> usize {
        let ours = usize::from(env.config.receive_maximum);
        match self.live.as_ref().map_or(0, |l| l.client_receive_max) {
            0 => ours,
            theirs => ours.min(usize::from(theirs)),
        }
    }

    fn live_mut(&mut self) -> &mut Live {
        self.live.get_or_insert_with(Default::default)
    }

    fn persistent_mut(&mut self) -> &mut Persistent {
        self.persistent.get_or_insert_with(Default::default)
    }

    /// Encodes a packet into the output buffer. PUBLISH packets larger than the client accepts
    /// are dropped ([MQTT-3.1.2-25]); returns whether the packet was written.
    fn send(&self, packet: v5::Packet, env: &mut Env<'_>) -> bool {
        let kind = kind_of(&packet);
        let before = env.out.len();
        match mqtt::encode(&packet, self.version, env.out) {
            Ok(()) => {
                if kind == PacketKind::Publish
                    && env.out.len() - before > self.client_max_packet(env)
                {
                    env.out.truncate(before);
                    env.metrics.add(Counter::Undeliverable, 1);
                    return false;
                }
                env.metrics.packet_out(kind);
                true
            }
            Err(e) => {
                env.out.truncate(before);
                tracing::debug!(error = %e, ?kind, "packet not encodable for this protocol version");
                false
            }
        }
    }

    /// Ends the session: an MQTT 5 client is told why first (never before CONNACK).
    fn close(
        &mut self,
        reason: CloseReason,
        code: Option<v5::DisconnectReasonCode>,
        env: &mut Env<'_>,
    ) {
        if self.phase == Phase::Closing {
            return;
        }
        if let Some(code) = code
            && self.version.is_v5()
            && self.phase == Phase::Connected
        {
            let d = v5::Disconnect {
                reason_code: code,
                ..Default::default()
            };
            self.send(v5::Packet::Disconnect(d), env);
        }
        self.phase = Phase::Closing;
        env.actions.push(Action::Close(reason));
    }

    /// A complete frame arrived.
    pub fn on_frame(&mut self, frame: &[u8], env: &mut Env<'_>) {
        self.last_rx = env.now;
        match self.phase {
            Phase::AwaitConnect => self.on_first_frame(frame, env),
            Phase::Connected => {
                let packet = match mqtt::decode(frame, self.version, env.config.max_packet_size) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(device = ?self.device.as_ref().map(|d| &d.device_id), error = %e, "malformed packet");
                        self.close(CloseReason::ProtocolError, Some(e.disconnect_reason()), env);
                        return;
                    }
                };
                env.metrics.packet_in(kind_of(&packet));
                self.on_packet(packet, env);
            }
            // The shard holds frames back while authenticating; anything else is ignored.
            Phase::Authenticating | Phase::Registering | Phase::Closing => {}
        }
    }

    fn on_packet(&mut self, packet: v5::Packet, env: &mut Env<'_>) {
        use v5::Packet as P;
        match packet {
            P::Publish(p) => self.on_publish(*p, env),
            P::PublishAck(a) => self.on_puback(a, env),
            P::PublishReceived(a) => self.on_pubrec(a, env),
            P::PublishRelease(a) => self.on_pubrel(a, env),
            P::PublishComplete(a) => self.on_pubcomp(a, env),
            P::Subscribe(s) => self.on_subscribe(s, env),
            P::Unsubscribe(u) => self.on_unsubscribe(u, env),
            P::PingRequest => {
                self.send(P::PingResponse, env);
            }
            P::Disconnect(d) => self.on_disconnect(d, env),
            // A second CONNECT is a protocol violation ([MQTT-3.1.0-2]); so is AUTH without an
            // authentication method in CONNECT, and any packet only a server sends.
            _ => self.close(
                CloseReason::ProtocolError,
                Some(v5::DisconnectReasonCode::ProtocolError),
                env,
            ),
        }
    }

    /// A message for the device: delivered at the QoS its subscriptions allow, queued behind
    /// the in-flight window, or dropped (and counted) when the device does not receive it.
    pub fn on_deliver(&mut self, msg: Downlink, env: &mut Env<'_>) {
        if self.phase == Phase::Registering
            && let Some(pending) = self.pending.as_mut()
        {
            if pending.held.len() < env.config.max_queued_messages as usize {
                pending.held.push(msg);
            } else {
                env.metrics.add(Counter::QueueDropped, 1);
            }
            return;
        }
        if self.phase != Phase::Connected {
            env.metrics.add(Counter::Undeliverable, 1);
            return;
        }
        let Some(device) = self.device.clone() else {
            return;
        };
        let granted = self.persistent.as_ref().map_or_else(
            || SubscriptionSet::default().qos_for(&device, &msg.topic),
            |p| p.subscriptions.qos_for(&device, &msg.topic),
        );
        let Some(granted) = granted else {
            env.metrics.add(Counter::Undeliverable, 1);
            return;
        };
        let qos = msg.qos.less_value(granted);
        if qos == QoS::AtMostOnce {
            self.send_publish(&msg, QoS::AtMostOnce, None, false, env);
            return;
        }
        let window = self.window(env);
        let max_queue = env.config.max_queued_messages as usize;
        let msg = Downlink { qos, ..msg };
        match self.persistent_mut().outbox.push(msg, window, max_queue) {
            Pushed::Inflight(id) => {
                env.metrics.inflight(1);
                self.send_inflight(id, false, env);
            }
            Pushed::Queued => {}
            Pushed::DroppedOldest | Pushed::Dropped => env.metrics.add(Counter::QueueDropped, 1),
        }
    }

    fn send_publish(
        &self,
        msg: &Downlink,
        qos: QoS,
        id: Option<NonZeroU16>,
        dup: bool,
        env: &mut Env<'_>,
    ) {
        let p = mqtt::Publish {
            dup,
            retain: false,
            qos,
            topic: msg.topic.clone(),
            packet_id: id,
            payload: msg.payload.clone(),
            properties: None,
        };
        self.send(v5::Packet::Publish(Box::new(p)), env);
    }

    /// Sends (or re-sends, with DUP) the in-flight message `id` at its stage.
    fn send_inflight(&self, id: NonZeroU16, dup: bool, env: &mut Env<'_>) {
        let Some(m) = self.persistent.as_ref().and_then(|p| p.outbox.get(id)) else {
            return;
        };
        match m.stage {
            outbox::Stage::AwaitAck | outbox::Stage::AwaitRec => {
                self.send_publish(&m.msg, m.msg.qos, Some(id), dup, env);
            }
            outbox::Stage::AwaitComp => {
                let rel = v5::PublishAck2 {
                    packet_id: id,
                    ..Default::default()
                };
                self.send(v5::Packet::PublishRelease(rel), env);
            }
        }
    }

    fn refill(&mut self, env: &mut Env<'_>) {
        let window = self.window(env);
        let started = match self.persistent.as_mut() {
            Some(p) => p.outbox.refill(window),
            None => return,
        };
        env.metrics.inflight(started.len() as i64);
        for id in started {
            self.send_inflight(id, false, env);
        }
    }

    fn on_puback(&mut self, ack: v5::PublishAck, env: &mut Env<'_>) {
        let done = self
            .persistent
            .as_mut()
            .is_some_and(|p| p.outbox.puback(ack.packet_id));
        if done {
            env.metrics.inflight(-1);
            self.refill(env);
        }
    }

    fn on_pubrec(&mut self, ack: v5::PublishAck, env: &mut Env<'_>) {
        let id = ack.packet_id;
        if u8::from(ack.reason_code) >= 0x80 {
            // The device refused the message: it is over ([MQTT-4.3.3-4] no PUBREL follows).
            if self
                .persistent
                .as_mut()
                .is_some_and(|p| p.outbox.abandon(id))
            {
                env.metrics.inflight(-1);
                self.refill(env);
            }
            return;
        }
        let known = self
            .persistent
            .as_mut()
            .is_some_and(|p| p.outbox.pubrec(id));
        let reason = if known {
            v5::PublishAck2Reason::Success
        } else {
            v5::PublishAck2Reason::PacketIdNotFound
        };
        let rel = v5::PublishAck2 {
            packet_id: id,
            reason_code: reason,
            ..Default::default()
        };
        self.send(v5::Packet::PublishRelease(rel), env);
    }

    fn on_pubcomp(&mut self, ack: v5::PublishAck2, env: &mut Env<'_>) {
        if self
            .persistent
            .as_mut()
            .is_some_and(|p| p.outbox.pubcomp(ack.packet_id))
        {
            env.metrics.inflight(-1);
            self.refill(env);
        }
    }

    /// The next time [`SessionState::on_tick`] has something to check.
    pub fn next_deadline(&self, config: &SessionConfig) -> Option<Millis> {
        match self.phase {
            Phase::AwaitConnect | Phase::Authenticating | Phase::Registering => Some(
                self.started
                    .plus(u64::from(config.connect_timeout_secs) * 1000),
            ),
            Phase::Connected if self.keepalive_secs > 0 => {
                // [MQTT-3.1.2-24]: one and a half keep-alive periods without a packet.
                Some(self.last_rx.plus(u64::from(self.keepalive_secs) * 1500))
            }
            _ => None,
        }
    }

    /// Checks the timeouts.
    pub fn on_tick(&mut self, env: &mut Env<'_>) {
        match self.next_deadline(env.config) {
            Some(deadline) if env.now >= deadline => {
                if self.phase == Phase::Connected {
                    self.close(
                        CloseReason::KeepaliveTimeout,
                        Some(v5::DisconnectReasonCode::KeepAliveTimeout),
                        env,
                    );
                } else {
                    self.close(CloseReason::ConnectTimeout, None, env);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
