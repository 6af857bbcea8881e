//! Fuzzes the MQTT session state machine: arbitrary byte streams (framed as a connection would
//! frame them), authentication and registration answers, messages for the device, timer ticks
//! and connection loss, in any order and in either protocol version. The session must never
//! panic, never write an unframeable packet, and stop producing output once it closes.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use fleetgate_codec::mqtt::bytes::{Bytes, BytesMut};
use fleetgate_codec::mqtt::{QoS, frame_len};
use fleetgate_engine::acl::{AclRules, DeviceInfo, ProductPolicy};
use fleetgate_engine::auth::AuthError;
use fleetgate_engine::config::SessionConfig;
use fleetgate_engine::flow::Rate;
use fleetgate_engine::metrics::ShardMetrics;
use fleetgate_engine::session::{Action, Downlink, Env, Phase, SessionState};
use fleetgate_engine::time::Millis;
use fleetgate_model::{DeviceId, Timestamp, testing};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    /// Bytes off the wire (split into frames; a trailing partial frame is dropped).
    Bytes(Vec<u8>),
    /// A well-formed CONNECT of the given level (4 or 5), so that sessions get past CONNECT.
    Connect { v5: bool, clean: bool, keepalive: u8 },
    /// The answer to an Authenticate action.
    Auth(bool),
    /// The answer to a Register action, with or without a previous session.
    Registered(bool),
    /// A message for the device: topic choice and QoS.
    Deliver { topic: u8, qos: u8 },
    /// Time passes.
    Tick(u16),
    /// The connection is lost.
    Lost,
}

const TOPICS: [&str; 5] = [
    "$oc/devices/p_d1/sys/commands/request_id=1",
    "$oc/devices/p_d1/sys/messages/down",
    "$oc/devices/p_d1/user/cfg",
    "$oc/devices/p_d2/sys/messages/down",
    "other/topic",
];

fn connect(v5: bool, clean: bool, keepalive: u8) -> Vec<u8> {
    let s = |v: &str| {
        let mut b = (v.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(v.as_bytes());
        b
    };
    let mut body = s("MQTT");
    body.push(if v5 { 5 } else { 4 });
    body.push(0xC0 | if clean { 2 } else { 0 });
    body.extend_from_slice(&u16::from(keepalive).to_be_bytes());
    if v5 {
        body.push(0);
    }
    body.extend(s("p_d1_0_0_2019120219"));
    body.extend(s("p_d1"));
    body.extend(s(&"0".repeat(64)));
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend(body);
    frame
}

fuzz_target!(|steps: Vec<Step>| {
    let config = SessionConfig { keepalive_min_secs: 1, receive_maximum: 4, max_queued_messages: 4, ..Default::default() };
    let acl = AclRules::default();
    let metrics = ShardMetrics::default();
    let info = Arc::new(DeviceInfo {
        device_id: DeviceId::new("p_d1").unwrap_or_else(|_| unreachable!()),
        product: Arc::new(ProductPolicy {
            product_id: testing::product_id("p"),
            app_id: testing::app(),
            custom_topics: Vec::new(),
            messages: Rate { per_sec: 5, burst: 5 },
            bytes: Rate { per_sec: 1000, burst: 1000 },
            max_throttle_ms: 2_000,
        }),
        sub_devices: None,
    });
    let mut s = SessionState::new(Millis(0));
    let mut now = Millis(0);
    let mut out = BytesMut::new();
    let mut actions = Vec::new();
    let mut closed = false;
    for step in steps.into_iter().take(64) {
        let before = out.len();
        {
            let mut env = Env { now, wall: Timestamp::EPOCH, config: &config, acl: &acl, metrics: &metrics, out: &mut out, actions: &mut actions };
            match step {
                Step::Bytes(bytes) => {
                    let mut rest = &bytes[..];
                    while let Ok(Some(n)) = frame_len(rest, config.max_packet_size) {
                        if !s.accepts_frames() {
                            break;
                        }
                        s.on_frame(&rest[..n], &mut env);
                        rest = &rest[n..];
                    }
                }
                Step::Connect { v5, clean, keepalive } => {
                    if s.accepts_frames() {
                        s.on_frame(&connect(v5, clean, keepalive), &mut env);
                    }
                }
                Step::Auth(ok) => s.on_auth(if ok { Ok(Arc::clone(&info)) } else { Err(AuthError::BadCredentials) }, &mut env),
                Step::Registered(previous) => {
                    let state = previous.then(Default::default);
                    s.on_registered(state, &mut env);
                }
                Step::Deliver { topic, qos } => {
                    let msg = Downlink {
                        topic: TOPICS[usize::from(topic) % TOPICS.len()].into(),
                        payload: Bytes::from_static(b"{}"),
                        qos: QoS::try_from(qos % 3).unwrap_or(QoS::AtMostOnce),
                    };
                    s.on_deliver(msg, &mut env);
                }
                Step::Tick(ms) => {
                    now = now.plus(u64::from(ms) * 50);
                    env.now = now;
                    s.on_tick(&mut env);
                }
                Step::Lost => {
                    let _ = s.on_closed(false, &mut env);
                }
            }
        }
        if closed {
            assert_eq!(out.len(), before, "a closed session wrote more output");
        }
        // Every packet written frames cleanly.
        let written = &out[before..];
        let mut rest = written;
        while !rest.is_empty() {
            match frame_len(rest, 0) {
                Ok(Some(n)) => rest = &rest[n..],
                other => panic!("unframeable output {written:?}: {other:?}"),
            }
        }
        if actions.iter().any(|a| matches!(a, Action::Close(_))) || s.phase() == Phase::Closing {
            closed = true;
        }
        actions.clear();
    }
});
