//! Connecting and leaving: CONNECT with the IoTDA authentication scheme
//! (spec/device-protocol.md §3.5, §3.6), registration and takeover, CONNACK, DISCONNECT, and what
//! a session leaves behind when its connection ends (its persistent state and its will).

use std::sync::Arc;

use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_codec::mqtt::{self, QoS, v5};
use fleetgate_model::auth::ClientId;

use super::{Action, Downlink, Env, Persistent, Phase, SessionState};
use crate::acl::{DeviceInfo, may_publish};
use crate::auth::{AuthError, AuthOutcome, AuthRequest};
use crate::flow::TokenBucket;
use crate::metrics::{AuthFailure, CloseReason, Counter, PacketKind};
use crate::upstream::Published;

/// A will message (MQTT 3.1.2.5, 3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Seconds to wait after the connection is lost (MQTT 5 Will Delay Interval).
    pub delay_secs: u32,
}

/// CONNECT parameters kept until CONNACK.
#[derive(Debug)]
pub(super) struct PendingConnect {
    clean_start: bool,
    session_expiry_secs: u32,
    requested_expiry_secs: u32,
    server_keepalive: bool,
    client_receive_max: u16,
    client_max_packet: u32,
    will: Option<Will>,
    /// Messages that reached the session while it was registering (the registry already
    /// names it, its CONNACK is not out yet), delivered right after the CONNACK.
    pub(super) held: Vec<Downlink>,
}

/// What a session leaves behind when its connection ends.
#[derive(Debug)]
pub struct Detached {
    /// The persistent state to keep for `expiry_secs`, if the session is persistent.
    pub persistent: Option<Box<Persistent>>,
    /// A will to publish after its delay (the session still exists then); wills without delay
    /// were already handed upstream as an action.
    pub delayed_will: Option<(Published, u32)>,
    /// Messages held while the session was registering, never sent: they follow the device
    /// to whichever session has it now.
    pub undelivered: Vec<Downlink>,
}

impl SessionState {
    fn refuse(&mut self, code: v5::ConnectAckReason, failure: AuthFailure, env: &mut Env<'_>) {
        env.metrics.auth_failed(failure);
        let ack = v5::ConnectAck {
            reason_code: code,
            ..Default::default()
        };
        self.send(v5::Packet::ConnectAck(Box::new(ack)), env);
        self.phase = Phase::Closing;
        env.actions.push(Action::Close(CloseReason::AuthFailed));
    }

    pub(super) fn on_first_frame(&mut self, frame: &[u8], env: &mut Env<'_>) {
        match mqtt::connect_version(frame) {
            Ok(v) => self.version = v,
            Err(mqtt::Error::UnsupportedProtocolLevel { .. }) => {
                // [MQTT-3.1.2-2]: answer 0x01 in the 3.1.1 format the client can read, then close.
                env.metrics.packet_in(PacketKind::Connect);
                self.version = mqtt::Version::V311;
                return self.refuse(
                    v5::ConnectAckReason::UnsupportedProtocolVersion,
                    AuthFailure::UnsupportedProtocol,
                    env,
                );
            }
            Err(e) => {
                // Not MQTT at all, or not a CONNECT first ([MQTT-3.1.0-1]): close without a word.
                tracing::debug!(error = %e, "first packet is not an MQTT CONNECT");
                self.phase = Phase::Closing;
                env.actions.push(Action::Close(CloseReason::ProtocolError));
                return;
            }
        }
        let connect = match mqtt::decode(frame, self.version, env.config.max_packet_size) {
            Ok(v5::Packet::Connect(c)) => c,
            Ok(_) => {
                // connect_version already saw a CONNECT; anything else is a broken frame.
                self.phase = Phase::Closing;
                env.actions.push(Action::Close(CloseReason::ProtocolError));
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed CONNECT");
                env.metrics.packet_in(PacketKind::Connect);
                match e.connack_reason() {
                    Some(code) => return self.refuse(code, AuthFailure::BadCredentials, env),
                    None => {
                        self.phase = Phase::Closing;
                        env.actions.push(Action::Close(CloseReason::ProtocolError));
                        return;
                    }
                }
            }
        };
        env.metrics.packet_in(PacketKind::Connect);
        self.on_connect(*connect, env);
    }

    fn on_connect(&mut self, c: v5::Connect, env: &mut Env<'_>) {
        use v5::ConnectAckReason as R;
        let v5 = self.version.is_v5();
        self.client_id = Some(c.client_id.to_string().into_boxed_str());
        // Keep-alive: 3.1.1 clients outside the range are refused with 0x02 (spec §3.6); MQTT 5
        // clients are told the server's keep-alive instead ([MQTT-3.2.2-21]).
        let (min, max) = (env.config.keepalive_min_secs, env.config.keepalive_max_secs);
        let mut server_keepalive = false;
        if c.keep_alive < min || c.keep_alive > max {
            if !v5 {
                return self.refuse(
                    R::ClientIdentifierNotValid,
                    AuthFailure::KeepaliveOutOfRange,
                    env,
                );
            }
            self.keepalive_secs = if c.keep_alive == 0 {
                max
            } else {
                c.keep_alive.clamp(min, max)
            };
            server_keepalive = true;
        } else {
            self.keepalive_secs = c.keep_alive;
        }
        if c.auth_method.is_some() {
            // Enhanced authentication is not offered.
            return self.refuse(R::BadAuthenticationMethod, AuthFailure::BadCredentials, env);
        }
        let client = match ClientId::parse(&c.client_id) {
            Ok(id) => id,
            Err(_) => {
                return self.refuse(
                    R::ClientIdentifierNotValid,
                    AuthFailure::MalformedClientId,
                    env,
                );
            }
        };
        // The user name is the device id and the password the HMAC (spec §3.5).
        let (Some(username), Some(password)) = (c.username.as_ref(), c.password.as_ref()) else {
            return self.refuse(R::BadUserNameOrPassword, AuthFailure::BadCredentials, env);
        };
        if username.as_ref() as &str != client.device_id.as_str() {
            return self.refuse(R::BadUserNameOrPassword, AuthFailure::BadCredentials, env);
        }
        let requested = c.session_expiry_interval_secs;
        let will = c.last_will.map(|w| Will {
            topic: w.topic,
            payload: w.message,
            qos: w.qos,
            delay_secs: w.will_delay_interval_sec.unwrap_or(0),
        });
        self.pending = Some(Box::new(PendingConnect {
            clean_start: c.clean_start,
            session_expiry_secs: requested.min(env.config.max_session_expiry_secs),
            requested_expiry_secs: requested,
            server_keepalive,
            client_receive_max: c.receive_max.map_or(0, u16::from),
            client_max_packet: c.max_packet_size.map_or(0, u32::from),
            will,
            held: Vec::new(),
        }));
        self.phase = Phase::Authenticating;
        env.actions.push(Action::Authenticate(AuthRequest {
            device_id: client.device_id,
            sign_type: client.sign_type,
            timestamp: client.timestamp,
            password: password.to_vec(),
        }));
    }

    /// The result of [`Action::Authenticate`].
    pub fn on_auth(&mut self, outcome: AuthOutcome, env: &mut Env<'_>) {
        if self.phase != Phase::Authenticating {
            return;
        }
        use v5::ConnectAckReason as R;
        let info = match outcome {
            Ok(info) => info,
            Err(AuthError::BadCredentials) => {
                return self.refuse(R::BadUserNameOrPassword, AuthFailure::BadCredentials, env);
            }
            Err(AuthError::NotAuthorized) => {
                return self.refuse(R::NotAuthorized, AuthFailure::NotAuthorized, env);
            }
            Err(AuthError::Unavailable) => {
                return self.refuse(R::ServerUnavailable, AuthFailure::Unavailable, env);
            }
        };
        // The will is published as the device; it must be allowed to publish there.
        if let Some(will) = self.pending.as_ref().and_then(|p| p.will.as_ref())
            && !may_publish(&info, info.device_id.as_str(), &will.topic, env.acl)
        {
            env.metrics.acl_denied(crate::metrics::AclAction::Publish);
            return self.refuse(R::NotAuthorized, AuthFailure::NotAuthorized, env);
        }
        self.messages = TokenBucket::full(info.product.messages, env.now);
        self.bytes = TokenBucket::full(info.product.bytes, env.now);
        let clean_start = self.pending.as_ref().is_none_or(|p| p.clean_start);
        env.actions.push(Action::Register {
            device_id: info.device_id.clone(),
            clean_start,
        });
        self.device = Some(info);
        self.phase = Phase::Registering;
    }

    /// The result of [`Action::Register`]: the previous session's persistent state when the
    /// client resumes one. Sends CONNACK and redelivers what was in flight.
    pub fn on_registered(&mut self, previous: Option<Box<Persistent>>, env: &mut Env<'_>) {
        if self.phase != Phase::Registering {
            return;
        }
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let held = std::mem::take(&mut pending.held);
        let session_present = previous.is_some() && !pending.clean_start;
        self.persistent = if pending.clean_start { None } else { previous };
        if let Some(p) = self.persistent.as_ref() {
            env.metrics.inflight(p.outbox.inflight_len() as i64);
        }
        if pending.session_expiry_secs > 0 {
            self.persistent_mut().expiry_secs = pending.session_expiry_secs;
        } else if let Some(p) = self.persistent.as_mut() {
            p.expiry_secs = 0;
        }
        if pending.client_receive_max > 0 || pending.client_max_packet > 0 || pending.will.is_some()
        {
            let live = self.live_mut();
            live.client_receive_max = pending.client_receive_max;
            live.client_max_packet = pending.client_max_packet;
            live.will = pending.will;
        }
        let ack = if self.version.is_v5() {
            v5::ConnectAck {
                session_present,
                session_expiry_interval_secs: (pending.session_expiry_secs
                    != pending.requested_expiry_secs)
                    .then_some(pending.session_expiry_secs),
                receive_max: std::num::NonZeroU16::new(env.config.receive_maximum)
                    .unwrap_or(std::num::NonZeroU16::MIN),
                max_packet_size: Some(env.config.max_packet_size),
                topic_alias_max: env.config.topic_alias_maximum,
                retain_available: false,
                wildcard_subscription_available: true,
                subscription_identifiers_available: false,
                shared_subscription_available: false,
                server_keepalive_sec: pending.server_keepalive.then_some(self.keepalive_secs),
                ..Default::default()
            }
        } else {
            v5::ConnectAck {
                session_present,
                ..Default::default()
            }
        };
        self.send(v5::Packet::ConnectAck(Box::new(ack)), env);
        self.phase = Phase::Connected;
        self.connected_once = true;
        self.last_rx = env.now;
        if session_present {
            env.metrics.add(Counter::SessionsResumed, 1);
        }
        env.actions.push(Action::Established { session_present });
        // Redeliver what was in flight ([MQTT-4.4.0-1]), then whatever queued meanwhile.
        let ids: Vec<_> = self
            .persistent
            .as_ref()
            .map(|p| p.outbox.inflight().map(|m| m.packet_id).collect())
            .unwrap_or_default();
        for id in ids {
            self.send_inflight(id, true, env);
        }
        self.refill(env);
        // Then what arrived while registering, in order, after what the session already held.
        for msg in held {
            self.on_deliver(msg, env);
        }
    }

    pub(super) fn on_disconnect(&mut self, d: v5::Disconnect, env: &mut Env<'_>) {
        // A normal DISCONNECT discards the will ([MQTT-3.14.4-3]); MQTT 5's 0x04 keeps it.
        if d.reason_code != v5::DisconnectReasonCode::DisconnectWithWillMessage
            && let Some(live) = self.live.as_mut()
        {
            live.will = None;
        }
        if let Some(expiry) = d.session_expiry_interval_secs {
            let current = self.persistent.as_ref().map_or(0, |p| p.expiry_secs);
            if current == 0 && expiry > 0 {
                // [MQTT-3.14.2-2]: a session that was to end with the connection cannot be
                // extended at DISCONNECT.
                return self.close(
                    CloseReason::ProtocolError,
                    Some(v5::DisconnectReasonCode::ProtocolError),
                    env,
                );
            }
            if let Some(p) = self.persistent.as_mut() {
                p.expiry_secs = expiry.min(env.config.max_session_expiry_secs);
            }
        }
        self.phase = Phase::Closing;
        env.actions
            .push(Action::Close(CloseReason::ClientDisconnect));
    }

    /// Closes the session from the server side (takeover, kick, shutdown, flow control):
    /// an MQTT 5 client receives a DISCONNECT with `code` first.
    pub fn close_by_server(
        &mut self,
        reason: CloseReason,
        code: v5::DisconnectReasonCode,
        env: &mut Env<'_>,
    ) {
        self.close(reason, Some(code), env);
    }

    /// The connection is gone (or about to be closed). Returns what survives it; a will without
    /// delay is handed upstream now. `resumed` tells that a takeover continues the session (so a
    /// delayed will is cancelled, [MQTT-3.1.3-9]). A normal DISCONNECT has already dropped the
    /// will ([MQTT-3.14.4-3]).
    pub fn on_closed(&mut self, resumed: bool, env: &mut Env<'_>) -> Detached {
        self.phase = Phase::Closing;
        let will = self.live.as_mut().and_then(|l| l.will.take());
        if let Some(p) = self.persistent.as_ref() {
            env.metrics.inflight(-(p.outbox.inflight_len() as i64));
        }
        let persistent = self
            .persistent
            .take()
            .filter(|p| p.expiry_secs > 0 && self.device.is_some());
        let mut delayed_will = None;
        if let (Some(will), Some(device)) = (will, self.device.as_ref()) {
            // The will waits for its delay only while the session itself lasts ([MQTT-3.1.3-9]);
            // a takeover that resumes the session within the delay cancels it.
            let delay = will
                .delay_secs
                .min(persistent.as_ref().map_or(0, |p| p.expiry_secs));
            if resumed && will.delay_secs > 0 {
                // The new connection continues the session: no will.
            } else if delay > 0 {
                delayed_will = Some((will_publication(device, &will, env), delay));
            } else {
                env.metrics.add(Counter::WillsPublished, 1);
                env.actions
                    .push(Action::Upstream(will_publication(device, &will, env)));
            }
        }
        let undelivered = self.pending.take().map(|p| p.held).unwrap_or_default();
        Detached {
            persistent,
            delayed_will,
            undelivered,
        }
    }
}

fn will_publication(device: &Arc<DeviceInfo>, will: &Will, env: &Env<'_>) -> Published {
    Published {
        device_id: device.device_id.clone(),
        app_id: device.product.app_id.clone(),
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos.value(),
        will: true,
        at: env.wall,
    }
}
