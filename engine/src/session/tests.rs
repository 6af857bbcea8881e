//! `SessionState` driven by byte-literal packets and virtual time: the session is fed frames
//! exactly as they come off the wire, its output bytes are compared with literals or decoded,
//! and its actions are answered the way a shard would answer them.

use std::sync::Arc;

use fleetgate_codec::mqtt::bytes::{Bytes, BytesMut};
use fleetgate_codec::mqtt::{self, QoS, Version, v5};
use fleetgate_model::auth::password;
use fleetgate_model::device::DeviceSecret;
use fleetgate_model::product::{CustomTopic, TopicPermission};
use fleetgate_model::{DeviceId, Timestamp, testing};

use super::*;
use crate::acl::{AclRules, DeviceInfo, ProductPolicy};
use crate::auth::AuthError;
use crate::config::SessionConfig;
use crate::flow::Rate;
use crate::metrics::{CloseReason, ShardMetrics};
use crate::time::Millis;

const DEVICE: &str = "p_d1";
const TS: &str = "2019120219";

struct Harness {
    s: SessionState,
    now: Millis,
    config: SessionConfig,
    acl: AclRules,
    metrics: ShardMetrics,
    out: BytesMut,
    actions: Vec<Action>,
    info: Arc<DeviceInfo>,
}

fn info(messages: Rate, bytes: Rate) -> Arc<DeviceInfo> {
    Arc::new(DeviceInfo {
        device_id: DeviceId::new(DEVICE).unwrap(),
        product: Arc::new(ProductPolicy {
            product_id: testing::product_id("p"),
            app_id: testing::app(),
            custom_topics: vec![CustomTopic {
                suffix: "cfg".into(),
                permission: TopicPermission::Subscribe,
                description: String::new(),
            }],
            messages,
            bytes,
            max_throttle_ms: 10_000,
        }),
        sub_devices: None,
    })
}

/// Builds a CONNECT by hand, field by field (MQTT 3.1.1 §3.1, MQTT 5.0 §3.1).
fn connect(
    level: u8,
    client_id: &str,
    user: Option<&str>,
    pass: Option<&str>,
    keepalive: u16,
    clean: bool,
    will: Option<(&str, &str, u8)>,
) -> Vec<u8> {
    let s = |v: &str| {
        let mut b = (v.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(v.as_bytes());
        b
    };
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if let Some((_, _, q)) = will {
        flags |= 0x04 | (q << 3);
    }
    if user.is_some() {
        flags |= 0x80;
    }
    if pass.is_some() {
        flags |= 0x40;
    }
    let mut body = s("MQTT");
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keepalive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend(s(client_id));
    if let Some((t, m, _)) = will {
        if level == 5 {
            body.push(0); // no will properties
        }
        body.extend(s(t));
        body.extend(s(m));
    }
    if let Some(u) = user {
        body.extend(s(u));
    }
    if let Some(p) = pass {
        body.extend(s(p));
    }
    let mut frame = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        frame.push(byte);
        if len == 0 {
            break;
        }
    }
    frame.extend(body);
    frame
}

fn secret() -> DeviceSecret {
    DeviceSecret::new("s3cret-value").unwrap()
}

fn good_connect(level: u8, keepalive: u16, clean: bool) -> Vec<u8> {
    connect(
        level,
        &format!("{DEVICE}_0_0_{TS}"),
        Some(DEVICE),
        Some(&password(&secret(), TS)),
        keepalive,
        clean,
        None,
    )
}

impl Harness {
    fn new() -> Self {
        Self::with(
            SessionConfig::default(),
            info(Rate::UNLIMITED, Rate::UNLIMITED),
        )
    }

    fn with(config: SessionConfig, info: Arc<DeviceInfo>) -> Self {
        Harness {
            s: SessionState::new(Millis(0)),
            now: Millis(0),
            config,
            acl: AclRules::default(),
            metrics: ShardMetrics::default(),
            out: BytesMut::new(),
            actions: Vec::new(),
            info,
        }
    }

    fn env(&mut self) -> (&mut SessionState, Env<'_>) {
        let env = Env {
            now: self.now,
            wall: Timestamp::from_millis(1_600_000_000_000),
            config: &self.config,
            acl: &self.acl,
            metrics: &self.metrics,
            out: &mut self.out,
            actions: &mut self.actions,
        };
        (&mut self.s, env)
    }

    /// Feeds bytes as they would arrive, frame by frame.
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Ok(Some(n)) = mqtt::frame_len(bytes, self.config.max_packet_size) {
            let (frame, rest) = bytes.split_at(n);
            let (s, mut env) = self.env();
            s.on_frame(frame, &mut env);
            bytes = rest;
        }
        assert!(bytes.is_empty(), "test input must be whole frames");
    }

    fn out(&mut self) -> Vec<u8> {
        self.out.split().to_vec()
    }

    /// Output decoded as packets (server packets, in the session's version).
    fn packets(&mut self) -> Vec<v5::Packet> {
        let bytes = self.out();
        let mut rest = &bytes[..];
        let mut v = Vec::new();
        while let Ok(Some(n)) = mqtt::frame_len(rest, 0) {
            v.push(mqtt::decode(&rest[..n], self.s.version(), 0).unwrap());
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        v
    }

    fn actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Answers the authentication and registration actions as a shard would.
    fn answer(
        &mut self,
        auth: Result<(), AuthError>,
        previous: Option<Box<Persistent>>,
    ) -> Vec<Action> {
        let actions = self.actions();
        assert!(
            matches!(actions.as_slice(), [Action::Authenticate(_)]),
            "{actions:?}"
        );
        let outcome = auth.map(|()| Arc::clone(&self.info));
        let (s, mut env) = self.env();
        s.on_auth(outcome, &mut env);
        let actions = self.actions();
        if let [Action::Register { .. }] = actions.as_slice() {
            let (s, mut env) = self.env();
            s.on_registered(previous, &mut env);
            return self.actions();
        }
        actions
    }

    fn connected(level: u8) -> Self {
        let mut h = Harness::new();
        h.connect_with(level, None);
        h
    }

    fn connect_with(&mut self, level: u8, previous: Option<Box<Persistent>>) {
        let clean = previous.is_none();
        self.feed(&good_connect(level, 60, clean));
        let actions = self.answer(Ok(()), previous);
        assert!(
            matches!(actions.as_slice(), [Action::Established { .. }]),
            "{actions:?}"
        );
        assert_eq!(self.s.phase(), Phase::Connected);
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
        let (s, mut env) = self.env();
        s.on_tick(&mut env);
    }

    fn deliver(&mut self, topic: &str, qos: QoS) {
        let msg = Downlink {
            topic: topic.into(),
            payload: Bytes::from_static(b"{}"),
            qos,
        };
        let (s, mut env) = self.env();
        s.on_deliver(msg, &mut env);
    }

    fn close(&mut self, resumed: bool) -> Detached {
        let (s, mut env) = self.env();
        s.on_closed(resumed, &mut env)
    }
}

fn closed_with(actions: &[Action]) -> Option<CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close(r) => Some(*r),
        _ => None,
    })
}

fn disconnect_code(p: &v5::Packet) -> Option<u8> {
    match p {
        v5::Packet::Disconnect(d) => Some(u8::from(d.reason_code)),
        _ => None,
    }
}

#[test]
fn v311_connect_is_accepted_with_connack_0() {
    let mut h = Harness::new();
    h.feed(&good_connect(4, 60, true));
    let auth = h.actions();
    let [Action::Authenticate(req)] = auth.as_slice() else {
        panic!("{auth:?}")
    };
    assert_eq!(req.device_id.as_str(), DEVICE);
    assert_eq!(req.timestamp, TS);
    h.actions.extend(auth);
    let actions = h.answer(Ok(()), None);
    assert_eq!(
        actions,
        vec![Action::Established {
            session_present: false
        }]
    );
    // CONNACK: session present 0, return code 0 (MQTT 3.1.1 §3.2).
    assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(h.s.keepalive_secs(), 60);
    assert_eq!(h.s.client_id(), format!("{DEVICE}_0_0_{TS}"));
}

#[test]
fn malformed_client_ids_get_0x02() {
    for id in [
        "p_d1",
        "p_d1_1_0_2019120219",
        "p_d1_0_7_2019120219",
        "p_d1_0_0_20191202",
    ] {
        let mut h = Harness::new();
        h.feed(&connect(4, id, Some(DEVICE), Some("x"), 60, true, None));
        assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x02], "client id {id}");
        assert_eq!(closed_with(&h.actions()), Some(CloseReason::AuthFailed));
    }
}

#[test]
fn username_must_be_the_device_id() {
    let mut h = Harness::new();
    h.feed(&connect(
        4,
        &format!("{DEVICE}_0_0_{TS}"),
        Some("someone_else"),
        Some("x"),
        60,
        true,
        None,
    ));
    assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x04]);
    let mut h = Harness::new();
    h.feed(&connect(
        4,
        &format!("{DEVICE}_0_0_{TS}"),
        None,
        None,
        60,
        true,
        None,
    ));
    assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x04]);
}

#[test]
fn credential_outcomes_map_to_connack_codes() {
    for (outcome, v3, v5code) in [
        (AuthError::BadCredentials, 0x04, 0x86),
        (AuthError::NotAuthorized, 0x05, 0x87),
        (AuthError::Unavailable, 0x03, 0x88),
    ] {
        let mut h = Harness::new();
        h.feed(&good_connect(4, 60, true));
        let actions = h.answer(Err(outcome), None);
        assert_eq!(closed_with(&actions), Some(CloseReason::AuthFailed));
        assert_eq!(h.out(), [0x20, 0x02, 0x00, v3], "{outcome:?}");

        let mut h = Harness::new();
        h.feed(&good_connect(5, 60, true));
        h.answer(Err(outcome), None);
        match h.packets().as_slice() {
            [v5::Packet::ConnectAck(ack)] => assert_eq!(u8::from(ack.reason_code), v5code),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn keepalive_out_of_range() {
    // 3.1.1: refused with 0x02 (spec/device-protocol.md §3.6).
    let mut h = Harness::new();
    h.feed(&good_connect(4, 5, true));
    assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x02]);
    // 5.0: accepted, and CONNACK carries the Server Keep Alive.
    let mut h = Harness::new();
    h.feed(&good_connect(5, 0, true));
    h.answer(Ok(()), None);
    match h.packets().as_slice() {
        [v5::Packet::ConnectAck(ack)] => {
            assert_eq!(ack.reason_code, v5::ConnectAckReason::Success);
            assert_eq!(ack.server_keepalive_sec, Some(h.config.keepalive_max_secs));
            assert_eq!(ack.topic_alias_max, h.config.topic_alias_maximum);
            assert!(!ack.retain_available);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_protocol_level_gets_0x01() {
    let mut h = Harness::new();
    h.feed(&connect(6, "x_0_0_2019120219", None, None, 60, true, None));
    assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x01]);
}

#[test]
fn a_first_packet_that_is_not_connect_closes_silently() {
    let mut h = Harness::new();
    h.feed(&[0xc0, 0x00]); // PINGREQ
    assert!(h.out().is_empty());
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ProtocolError));
}

#[test]
fn keepalive_expires_after_one_and_a_half_periods() {
    let mut h = Harness::connected(5);
    h.out();
    h.advance(60_000);
    h.feed(&[0xc0, 0x00]);
    assert_eq!(h.out(), [0xd0, 0x00], "PINGRESP");
    h.advance(89_999);
    assert!(h.actions().is_empty());
    h.advance(1);
    assert_eq!(
        closed_with(&h.actions()),
        Some(CloseReason::KeepaliveTimeout)
    );
    assert_eq!(
        h.packets()
            .iter()
            .filter_map(disconnect_code)
            .collect::<Vec<_>>(),
        [0x8d]
    );
}

#[test]
fn connect_timeout() {
    let mut h = Harness::new();
    h.advance(u64::from(h.config.connect_timeout_secs) * 1000);
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ConnectTimeout));
}

#[test]
fn qos1_publish_on_own_topic_is_acknowledged_and_goes_upstream() {
    let mut h = Harness::connected(4);
    h.out();
    let topic = format!("$oc/devices/{DEVICE}/sys/properties/report");
    let mut p = vec![0x32, 0]; // PUBLISH QoS 1
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p.extend([0x00, 0x07]); // packet id 7
    p.extend(b"{\"a\":1}");
    p[1] = (p.len() - 2) as u8;
    h.feed(&p);
    assert_eq!(h.out(), [0x40, 0x02, 0x00, 0x07], "PUBACK 7");
    let actions = h.actions();
    let [Action::Upstream(pubd)] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(&pubd.topic[..], topic);
    assert_eq!(&pubd.payload[..], b"{\"a\":1}");
    assert_eq!(pubd.qos, 1);
}

fn publish_frame(topic: &str, qos: u8, id: u16, payload: &[u8], v5: bool) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic.as_bytes());
    if qos > 0 {
        body.extend(id.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend(payload);
    let mut f = vec![0x30 | (qos << 1), body.len() as u8];
    f.extend(body);
    f
}

#[test]
fn publishing_on_another_devices_topic_is_refused() {
    // 3.1.1 cannot say no: the publication is acknowledged and dropped.
    let mut h = Harness::connected(4);
    h.out();
    h.feed(&publish_frame(
        "$oc/devices/p_d2/sys/properties/report",
        1,
        3,
        b"{}",
        false,
    ));
    assert_eq!(h.out(), [0x40, 0x02, 0x00, 0x03]);
    assert!(h.actions().is_empty(), "nothing goes upstream");
    // MQTT 5 answers 0x87 Not authorized.
    let mut h = Harness::connected(5);
    h.out();
    h.feed(&publish_frame(
        "$oc/devices/p_d2/sys/properties/report",
        1,
        3,
        b"{}",
        true,
    ));
    match h.packets().as_slice() {
        [v5::Packet::PublishAck(a)] => {
            assert_eq!(a.reason_code, v5::PublishAckReason::NotAuthorized)
        }
        other => panic!("{other:?}"),
    }
    assert!(h.actions().is_empty());
}

fn subscribe_frame(id: u16, filters: &[(&str, u8)], v5: bool) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for (f, q) in filters {
        body.extend((f.len() as u16).to_be_bytes());
        body.extend(f.as_bytes());
        body.push(*q);
    }
    let mut frame = vec![0x82, body.len() as u8];
    frame.extend(body);
    frame
}

#[test]
fn system_topics_are_implicitly_subscribed_at_qos0_and_raised_by_subscribe() {
    let mut h = Harness::connected(4);
    h.out();
    let cmd = format!("$oc/devices/{DEVICE}/sys/commands/request_id=9");
    h.deliver(&cmd, QoS::AtLeastOnce);
    match h.packets().as_slice() {
        [v5::Packet::Publish(p)] => {
            assert_eq!(p.qos, QoS::AtMostOnce);
            assert_eq!(&p.topic[..], cmd);
        }
        other => panic!("{other:?}"),
    }
    h.feed(&subscribe_frame(
        1,
        &[
            (&format!("$oc/devices/{DEVICE}/sys/commands/#"), 1),
            ("$oc/devices/p_d2/sys/commands/#", 1),
        ],
        false,
    ));
    // Granted QoS 1 for its own tree; 0x80 for another device's (MQTT 3.1.1 §3.9.3).
    assert_eq!(h.out(), [0x90, 0x04, 0x00, 0x01, 0x01, 0x80]);
    h.deliver(&cmd, QoS::AtLeastOnce);
    match h.packets().as_slice() {
        [v5::Packet::Publish(p)] => {
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert!(p.packet_id.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.s.inflight(), 1);
    h.feed(&[0x40, 0x02, 0x00, 0x01]);
    assert_eq!(h.s.inflight(), 0);
    // A custom topic needs an explicit subscription, which its permission must allow.
    h.deliver(&format!("$oc/devices/{DEVICE}/user/cfg"), QoS::AtMostOnce);
    assert!(h.out().is_empty());
    h.feed(&subscribe_frame(
        2,
        &[(&format!("$oc/devices/{DEVICE}/user/cfg"), 2)],
        false,
    ));
    assert_eq!(h.out(), [0x90, 0x03, 0x00, 0x02, 0x02]);
}

#[test]
fn mqtt5_suback_reasons() {
    let mut h = Harness::connected(5);
    h.out();
    h.feed(&subscribe_frame(
        1,
        &[("#", 0), ("$share/g/x", 0), ("a/#/b", 0)],
        true,
    ));
    match h.packets().as_slice() {
        [v5::Packet::SubscribeAck(a)] => assert_eq!(
            a.status,
            [
                v5::SubscribeAckReason::NotAuthorized,
                v5::SubscribeAckReason::SharedSubscriptionNotSupported,
                v5::SubscribeAckReason::TopicFilterInvalid
            ]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_inflight_window_queues_the_rest() {
    let config = SessionConfig {
        receive_maximum: 2,
        ..Default::default()
    };
    let mut h = Harness::with(config, info(Rate::UNLIMITED, Rate::UNLIMITED));
    h.connect_with(4, None);
    h.feed(&subscribe_frame(
        1,
        &[(&format!("$oc/devices/{DEVICE}/sys/messages/down"), 1)],
        false,
    ));
    h.out();
    let topic = format!("$oc/devices/{DEVICE}/sys/messages/down");
    for _ in 0..3 {
        h.deliver(&topic, QoS::AtLeastOnce);
    }
    assert_eq!(h.packets().len(), 2, "two in flight, one queued");
    h.feed(&[0x40, 0x02, 0x00, 0x01]);
    match h.packets().as_slice() {
        [v5::Packet::Publish(p)] => assert_eq!(p.packet_id.map(u16::from), Some(3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_persistent_session_redelivers_with_dup_after_reconnect() {
    let mut h = Harness::new();
    h.feed(&good_connect(4, 60, false));
    h.answer(Ok(()), None);
    h.out();
    h.feed(&subscribe_frame(
        1,
        &[(&format!("$oc/devices/{DEVICE}/sys/commands/#"), 1)],
        false,
    ));
    h.out();
    h.deliver(
        &format!("$oc/devices/{DEVICE}/sys/commands/request_id=1"),
        QoS::AtLeastOnce,
    );
    assert_eq!(h.packets().len(), 1);
    // The connection drops before PUBACK.
    let detached = h.close(false);
    let state = detached
        .persistent
        .expect("a 3.1.1 session without clean session persists");
    assert_eq!(state.outbox.inflight_len(), 1);
    assert_eq!(state.expiry_secs, h.config.max_session_expiry_secs);

    let mut h2 = Harness::new();
    h2.connect_with(4, Some(state));
    let packets = h2.packets();
    assert!(
        matches!(&packets[0], v5::Packet::ConnectAck(a) if a.session_present),
        "{packets:?}"
    );
    match &packets[1] {
        v5::Packet::Publish(p) => {
            assert!(p.dup, "redelivered with DUP");
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert_eq!(p.packet_id.map(u16::from), Some(1));
        }
        other => panic!("{other:?}"),
    }
    // The subscription survived too: new commands still go out at QoS 1.
    h2.deliver(
        &format!("$oc/devices/{DEVICE}/sys/commands/request_id=2"),
        QoS::AtLeastOnce,
    );
    assert!(
        matches!(h2.packets().as_slice(), [v5::Packet::Publish(p)] if p.qos == QoS::AtLeastOnce)
    );
}

#[test]
fn a_clean_session_leaves_nothing_behind() {
    let mut h = Harness::connected(4);
    h.feed(&subscribe_frame(
        1,
        &[(&format!("$oc/devices/{DEVICE}/sys/commands/#"), 1)],
        false,
    ));
    assert!(h.close(false).persistent.is_none());
}

#[test]
fn wills_are_published_on_abnormal_close_only() {
    let will_topic = format!("$oc/devices/{DEVICE}/sys/messages/up");
    let client = format!("{DEVICE}_0_0_{TS}");
    let pw = password(&secret(), TS);
    let mut h = Harness::new();
    h.feed(&connect(
        4,
        &client,
        Some(DEVICE),
        Some(&pw),
        60,
        true,
        Some((&will_topic, "gone", 1)),
    ));
    h.answer(Ok(()), None);
    h.close(false);
    let actions = h.actions();
    let [Action::Upstream(w)] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(w.will);
    assert_eq!(&w.payload[..], b"gone");
    assert_eq!(w.qos, 1);

    let mut h = Harness::new();
    h.feed(&connect(
        4,
        &client,
        Some(DEVICE),
        Some(&pw),
        60,
        true,
        Some((&will_topic, "gone", 0)),
    ));
    h.answer(Ok(()), None);
    h.feed(&[0xe0, 0x00]);
    assert_eq!(
        closed_with(&h.actions()),
        Some(CloseReason::ClientDisconnect)
    );
    h.close(false);
    assert!(
        h.actions().is_empty(),
        "a normal DISCONNECT discards the will"
    );

    // A will on a topic the device may not publish on is refused at CONNECT.
    let mut h = Harness::new();
    h.feed(&connect(
        4,
        &client,
        Some(DEVICE),
        Some(&pw),
        60,
        true,
        Some(("$oc/devices/p_d2/sys/messages/up", "x", 0)),
    ));
    h.answer(Ok(()), None);
    assert_eq!(h.out(), [0x20, 0x02, 0x00, 0x05]);
}

#[test]
fn mqtt5_topic_aliases() {
    let mut h = Harness::connected(5);
    h.out();
    let topic = format!("$oc/devices/{DEVICE}/sys/messages/up");
    // PUBLISH QoS 0 with property Topic Alias (0x23) = 1.
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic.as_bytes());
    body.extend([3, 0x23, 0, 1]);
    body.extend(b"one");
    let mut f = vec![0x30, body.len() as u8];
    f.extend(body);
    h.feed(&f);
    // Then the alias alone, with an empty topic.
    h.feed(&[
        0x30, 0x09, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b't', b'w', b'o',
    ]);
    let topics: Vec<String> = h
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Upstream(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, [topic.clone(), topic]);
    // An alias above the maximum ends the connection with 0x94.
    h.feed(&[0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x63, b'x', b'y']);
    assert_eq!(
        h.packets()
            .iter()
            .filter_map(disconnect_code)
            .collect::<Vec<_>>(),
        [0x94]
    );
}

#[test]
fn qos2_inbound_is_delivered_once() {
    let mut h = Harness::connected(4);
    h.out();
    let f = publish_frame(
        &format!("$oc/devices/{DEVICE}/sys/messages/up"),
        2,
        5,
        b"x",
        false,
    );
    h.feed(&f);
    assert_eq!(h.out(), [0x50, 0x02, 0x00, 0x05], "PUBREC");
    let mut dup = f.clone();
    dup[0] |= 0x08;
    h.feed(&dup);
    assert_eq!(h.out(), [0x50, 0x02, 0x00, 0x05], "PUBREC again");
    let upstream = h
        .actions()
        .iter()
        .filter(|a| matches!(a, Action::Upstream(_)))
        .count();
    assert_eq!(upstream, 1, "delivered once");
    h.feed(&[0x62, 0x02, 0x00, 0x05]);
    assert_eq!(h.out(), [0x70, 0x02, 0x00, 0x05], "PUBCOMP");
}

#[test]
fn flow_control_pauses_then_refuses() {
    let one_per_sec = Rate {
        per_sec: 1,
        burst: 1,
    };
    let up = publish_frame(
        &format!("$oc/devices/{DEVICE}/sys/messages/up"),
        0,
        0,
        b"x",
        true,
    );
    let paused_until = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::PauseReads(at) => Some(*at),
            _ => None,
        })
    };

    // A device that honours every pause (as it does when its socket is not read) but keeps
    // sending faster than its rate is slowed down for `max_throttle_ms`, then refused.
    let mut h = Harness::with(SessionConfig::default(), info(one_per_sec, Rate::UNLIMITED));
    h.connect_with(5, None);
    h.out();
    h.feed(&up);
    assert!(matches!(h.actions().as_slice(), [Action::Upstream(_)]));
    let mut refused_at = None;
    for _ in 0..20 {
        h.feed(&up);
        let actions = h.actions();
        if let Some(reason) = closed_with(&actions) {
            assert_eq!(reason, CloseReason::Throttled);
            refused_at = Some(h.now);
            break;
        }
        assert!(actions.iter().any(|a| matches!(a, Action::Upstream(_))));
        let until = paused_until(&actions).expect("paused");
        h.advance(until.since(h.now));
    }
    // Throttled from t = 0 (the second message); refused at the first message read 10 s on.
    assert_eq!(refused_at, Some(Millis(10_000)));
    assert_eq!(
        h.packets()
            .iter()
            .filter_map(disconnect_code)
            .collect::<Vec<_>>(),
        [0x96]
    );

    // One that slows down to its rate in time starts afresh.
    let mut h = Harness::with(SessionConfig::default(), info(one_per_sec, Rate::UNLIMITED));
    h.connect_with(5, None);
    h.feed(&up);
    for _ in 0..9 {
        h.feed(&up);
        let until = paused_until(&h.actions()).expect("paused");
        h.advance(until.since(h.now));
    }
    h.advance(2_000);
    h.feed(&up);
    assert_eq!(paused_until(&h.actions()), None, "within budget again");
    for _ in 0..5 {
        h.feed(&up);
        let actions = h.actions();
        assert_eq!(closed_with(&actions), None);
        h.advance(paused_until(&actions).expect("paused").since(h.now));
    }

    // Input that arrives faster than the pauses allow (already buffered) and goes deeper in
    // debt than the burst is refused at once.
    let mut h = Harness::with(SessionConfig::default(), info(one_per_sec, Rate::UNLIMITED));
    h.connect_with(5, None);
    h.out();
    h.feed(&up);
    h.feed(&up);
    assert_eq!(paused_until(&h.actions()), Some(Millis(1000)));
    h.feed(&up);
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::Throttled));

    // Over the byte quota at QoS 1 on MQTT 5: PUBACK 0x97.
    let small = Rate {
        per_sec: 10,
        burst: 10,
    };
    let mut h = Harness::with(SessionConfig::default(), info(Rate::UNLIMITED, small));
    h.connect_with(5, None);
    h.out();
    h.feed(&publish_frame(
        &format!("$oc/devices/{DEVICE}/sys/messages/up"),
        1,
        1,
        &[0u8; 64],
        true,
    ));
    match h.packets().as_slice() {
        [v5::Packet::PublishAck(a)] => {
            assert_eq!(a.reason_code, v5::PublishAckReason::QuotaExceeded)
        }
        other => panic!("{other:?}"),
    }
    // On 3.1.1 the same ends the connection.
    let mut h = Harness::with(SessionConfig::default(), info(Rate::UNLIMITED, small));
    h.connect_with(4, None);
    h.feed(&publish_frame(
        &format!("$oc/devices/{DEVICE}/sys/messages/up"),
        1,
        1,
        &[0u8; 64],
        false,
    ));
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::Throttled));
}

#[test]
fn protocol_violations_close_with_the_right_reason() {
    // Retain is not offered on MQTT 5.
    let mut h = Harness::connected(5);
    h.out();
    let mut f = publish_frame(
        &format!("$oc/devices/{DEVICE}/sys/messages/up"),
        0,
        0,
        b"x",
        true,
    );
    f[0] |= 0x01;
    h.feed(&f);
    assert_eq!(
        h.packets()
            .iter()
            .filter_map(disconnect_code)
            .collect::<Vec<_>>(),
        [0x9a]
    );
    // A second CONNECT.
    let mut h = Harness::connected(5);
    h.out();
    h.feed(&good_connect(5, 60, true));
    assert_eq!(
        h.packets()
            .iter()
            .filter_map(disconnect_code)
            .collect::<Vec<_>>(),
        [0x82]
    );
    // A wildcard in a topic name.
    let mut h = Harness::connected(5);
    h.out();
    h.feed(&publish_frame("a/+/b", 0, 0, b"x", true));
    assert_eq!(
        h.packets()
            .iter()
            .filter_map(disconnect_code)
            .collect::<Vec<_>>(),
        [0x90]
    );
    // Garbage after CONNECT: malformed.
    let mut h = Harness::connected(5);
    h.out();
    h.feed(&[0x30, 0x01, 0x00]);
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ProtocolError));
    // 3.1.1 sessions close without a DISCONNECT.
    let mut h = Harness::connected(4);
    h.out();
    h.feed(&publish_frame("a/+/b", 0, 0, b"x", false));
    assert!(h.out().is_empty());
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ProtocolError));
}

#[test]
fn versions_share_one_vocabulary() {
    assert!(Version::V5.is_v5());
    assert!(!Version::V311.is_v5());
}
