//! encode → decode round trips for every packet kind in every version.

use super::*;

use v5::{PublishAck2Reason as R2, PublishAckReason as R};

/// Packets that MQTT 3.x can carry without loss: default properties, success reason codes, and
/// a Session Expiry Interval that says what CleanSession says.
fn v3_packets() -> Vec<v5::Packet> {
    vec![
        v5::Connect {
            clean_start: true,
            keep_alive: 60,
            last_will: Some(will(QoS::ExactlyOnce, true)),
            client_id: s("dev1"),
            username: Some(s("alice")),
            password: Some(b(b"secret")),
            ..v5::Connect::default()
        }
        .into(),
        v5::Connect {
            clean_start: false,
            session_expiry_interval_secs: u32::MAX,
            client_id: s("dev2"),
            username: Some(s("bob")),
            ..v5::Connect::default()
        }
        .into(),
        v5::ConnectAck::default().into(),
        v5::ConnectAck {
            session_present: true,
            ..v5::ConnectAck::default()
        }
        .into(),
        v5::ConnectAck {
            reason_code: v5::ConnectAckReason::NotAuthorized,
            ..v5::ConnectAck::default()
        }
        .into(),
        publish(QoS::AtMostOnce, None, false, false).into(),
        publish(QoS::AtMostOnce, None, false, true).into(),
        publish(QoS::AtLeastOnce, Some(1), true, false).into(),
        publish(QoS::ExactlyOnce, Some(u16::MAX), true, true).into(),
        Publish {
            payload: Bytes::new(),
            ..publish(QoS::AtLeastOnce, Some(7), false, false)
        }
        .into(),
        v5::Packet::PublishAck(puback(1, R::Success)),
        v5::Packet::PublishReceived(puback(2, R::Success)),
        v5::Packet::PublishRelease(puback2(3, R2::Success)),
        v5::Packet::PublishComplete(puback2(4, R2::Success)),
        v5::Subscribe {
            packet_id: pid(5),
            id: None,
            user_properties: Vec::new(),
            topic_filters: vec![
                (s("a/b"), options(QoS::AtMostOnce)),
                (s("c/#"), options(QoS::AtLeastOnce)),
                (s("+/d"), options(QoS::ExactlyOnce)),
            ],
        }
        .into(),
        v5::SubscribeAck {
            packet_id: pid(5),
            properties: Vec::new(),
            reason_string: None,
            status: vec![
                v5::SubscribeAckReason::GrantedQos0,
                v5::SubscribeAckReason::UnspecifiedError,
                v5::SubscribeAckReason::GrantedQos2,
            ],
        }
        .into(),
        v5::Unsubscribe {
            packet_id: pid(6),
            user_properties: Vec::new(),
            topic_filters: vec![s("a/b"), s("c/#")],
        }
        .into(),
        v5::UnsubscribeAck {
            packet_id: pid(6),
            properties: Vec::new(),
            reason_string: None,
            status: Vec::new(),
        }
        .into(),
        v5::Packet::PingRequest,
        v5::Packet::PingResponse,
        v5::Packet::Disconnect(v5::Disconnect::default()),
    ]
}

/// Packets that use what MQTT 5.0 adds: properties, reason codes, subscription options, AUTH.
fn v5_only_packets() -> Vec<v5::Packet> {
    vec![
        v5::Connect {
            clean_start: false,
            keep_alive: 0,
            session_expiry_interval_secs: 86_400,
            auth_method: Some(s("SCRAM-SHA-256")),
            auth_data: Some(b(b"\x00\x01\x02")),
            request_problem_info: false,
            request_response_info: true,
            receive_max: Some(pid(10)),
            topic_alias_max: 5,
            user_properties: vec![(s("site"), s("plant-3"))],
            max_packet_size: Some(nz32(65_536)),
            last_will: Some(v5::LastWill {
                will_delay_interval_sec: Some(30),
                correlation_data: Some(b(b"cid")),
                message_expiry_interval: Some(nz32(600)),
                content_type: Some(s("application/json")),
                user_properties: vec![(s("k"), s("v"))],
                is_utf8_payload: Some(true),
                response_topic: Some(s("r/1")),
                ..will(QoS::AtMostOnce, false)
            }),
            client_id: s(""),
            username: None,
            password: Some(b(b"token")),
            cert: None,
        }
        .into(),
        v5::ConnectAck {
            session_present: true,
            session_expiry_interval_secs: Some(3600),
            receive_max: pid(100),
            max_qos: QoS::AtLeastOnce,
            max_packet_size: Some(1 << 20),
            assigned_client_id: Some(s("auto-7")),
            topic_alias_max: 16,
            retain_available: false,
            wildcard_subscription_available: false,
            subscription_identifiers_available: false,
            shared_subscription_available: false,
            server_keepalive_sec: Some(120),
            response_info: Some(s("resp/")),
            server_reference: Some(s("other:1883")),
            auth_method: Some(s("SCRAM-SHA-256")),
            auth_data: Some(b(b"srv")),
            reason_string: Some(s("welcome")),
            user_properties: vec![(s("a"), s("b"))],
            ..v5::ConnectAck::default()
        }
        .into(),
        v5::ConnectAck {
            reason_code: v5::ConnectAckReason::QuotaExceeded,
            ..v5::ConnectAck::default()
        }
        .into(),
        Publish {
            properties: Some(v5::PublishProperties {
                topic_alias: Some(pid(2)),
                correlation_data: Some(b(b"corr")),
                message_expiry_interval: Some(nz32(60)),
                content_type: Some(s("text/plain")),
                user_properties: vec![(s("x"), s("1")), (s("x"), s("2"))],
                is_utf8_payload: true,
                response_topic: Some(s("reply/1")),
                subscription_ids: vec![nz32(1), nz32(268_435_455)],
            }),
            ..publish(QoS::ExactlyOnce, Some(9), false, true)
        }
        .into(),
        v5::Packet::PublishAck(puback(1, R::NoMatchingSubscribers)),
        v5::Packet::PublishAck(v5::PublishAck {
            properties: vec![(s("why"), s("acl"))],
            reason_string: Some(s("denied")),
            ..puback(1, R::NotAuthorized)
        }),
        v5::Packet::PublishReceived(puback(2, R::PayloadFormatInvalid)),
        v5::Packet::PublishRelease(puback2(3, R2::PacketIdNotFound)),
        v5::Packet::PublishComplete(v5::PublishAck2 {
            reason_string: Some(s("late")),
            ..puback2(4, R2::Success)
        }),
        v5::Subscribe {
            packet_id: pid(5),
            id: Some(nz32(300)),
            user_properties: vec![(s("u"), s("p"))],
            topic_filters: vec![
                (
                    s("$share/g/a/#"),
                    v5::SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: v5::RetainHandling::NoAtSubscribe,
                    },
                ),
                (
                    s("b"),
                    v5::SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: false,
                        retain_handling: v5::RetainHandling::AtSubscribeNew,
                    },
                ),
            ],
        }
        .into(),
        v5::SubscribeAck {
            packet_id: pid(5),
            properties: vec![(s("k"), s("v"))],
            reason_string: Some(s("partial")),
            status: vec![
                v5::SubscribeAckReason::GrantedQos1,
                v5::SubscribeAckReason::SharedSubscriptionNotSupported,
            ],
        }
        .into(),
        v5::Unsubscribe {
            packet_id: pid(6),
            user_properties: vec![(s("k"), s("v"))],
            topic_filters: vec![s("a/b")],
        }
        .into(),
        v5::UnsubscribeAck {
            packet_id: pid(6),
            properties: Vec::new(),
            reason_string: None,
            status: vec![v5::UnsubscribeAckReason::NoSubscriptionExisted],
        }
        .into(),
        v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::ServerShuttingDown,
        )),
        v5::Packet::Disconnect(v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::UseAnotherServer,
            session_expiry_interval_secs: Some(0),
            server_reference: Some(s("other:1883")),
            reason_string: Some(s("move")),
            user_properties: vec![(s("k"), s("v"))],
        }),
        v5::Packet::Auth(v5::Auth::default()),
        v5::Packet::Auth(v5::Auth {
            reason_code: v5::AuthReasonCode::ReAuth,
            auth_method: Some(s("SCRAM-SHA-256")),
            auth_data: Some(b(b"\xFF\x00")),
            reason_string: Some(s("again")),
            user_properties: vec![(s("k"), s("v"))],
        }),
    ]
}

/// Encodes, checks the result is exactly one frame, decodes, and returns the decoded packet.
#[track_caller]
fn round_trip(packet: &v5::Packet, version: Version) -> v5::Packet {
    let bytes = enc(packet, version);
    assert_eq!(
        frame_len(&bytes, 0).ok(),
        Some(Some(bytes.len())),
        "{packet:?} as {version}: {bytes:02x?}"
    );
    dec(&bytes, version)
}

#[test]
fn every_v3_packet_kind_round_trips_in_every_version() {
    for packet in v3_packets() {
        for version in ALL {
            assert_eq!(round_trip(&packet, version), packet, "MQTT {version}");
        }
    }
}

#[test]
fn every_v5_packet_kind_round_trips_in_v5() {
    for packet in v5_only_packets() {
        assert_eq!(round_trip(&packet, Version::V5), packet);
    }
}

#[test]
fn v5_packets_lose_only_what_v3_cannot_carry() {
    for packet in v5_only_packets() {
        for version in V3 {
            let mut out = BytesMut::new();
            match encode(&packet, version, &mut out) {
                Ok(()) => {
                    // What 3.x keeps survives a second trip unchanged.
                    let once = dec(&out, version);
                    assert_eq!(round_trip(&once, version), once, "MQTT {version}");
                    assert_eq!(once.packet_type(), packet.packet_type());
                }
                Err(e) => assert!(
                    matches!(
                        (&packet, &e),
                        (v5::Packet::Auth(_), Error::NotInV3 { .. })
                            | (v5::Packet::Connect(_), Error::PasswordWithoutUsername)
                    ),
                    "{packet:?} as {version}: {e:?}"
                ),
            }
        }
    }
}
