//! Decoding every client packet in MQTT 3.1, 3.1.1 and 5.0 into the unified MQTT 5.0 packets.

use super::*;

// ---- CONNECT ----------------------------------------------------------------------------

/// 3.1.1 §3.1 (Figure 3.2 onwards): CONNECT with a retained QoS 1 Will, user name and password.
const CONNECT_V311_FULL: &[u8] = b"\x10\x33\
    \x00\x04MQTT\x04\
    \xEE\
    \x00\x3C\
    \x00\x04dev1\
    \x00\x09dev1/gone\
    \x00\x07offline\
    \x00\x05alice\
    \x00\x06secret";

#[test]
fn decodes_a_v311_connect_with_will_user_name_and_password() {
    // Flags 0xEE: user name, password, Will Retain, Will QoS 1, Will Flag, CleanSession
    // (3.1.1 §3.1.2.3, Figure 3.4); Remaining Length 51.
    let expected = v5::Connect {
        clean_start: true,
        keep_alive: 60,
        session_expiry_interval_secs: 0,
        last_will: Some(will(QoS::AtLeastOnce, true)),
        client_id: s("dev1"),
        username: Some(s("alice")),
        password: Some(b(b"secret")),
        ..v5::Connect::default()
    };
    assert_eq!(dec(CONNECT_V311_FULL, Version::V311), expected.into());
}

#[test]
fn a_persistent_v311_session_never_expires() {
    // 3.1.1 §3.1.2.4: CleanSession 0 keeps the session after the connection closes, with no
    // time limit: MQTT 5.0's Session Expiry Interval 0xFFFFFFFF (5.0 §3.1.2.11.2).
    let frame = b"\x10\x10\x00\x04MQTT\x04\x00\x00\x3C\x00\x04dev1";
    let v5::Packet::Connect(connect) = dec(frame, Version::V311) else {
        panic!("not a CONNECT");
    };
    assert!(!connect.clean_start);
    assert_eq!(connect.session_expiry_interval_secs, u32::MAX);
    assert_eq!(connect.last_will, None);
    assert_eq!(connect.username, None);
}

#[test]
fn decodes_a_v31_connect() {
    // MQTT V3.1: protocol name "MQIsdp", level 3; otherwise laid out as 3.1.1 §3.1.
    let frame = b"\x10\x35\
        \x00\x06MQIsdp\x03\
        \xCE\
        \x00\x0A\
        \x00\x04dev1\
        \x00\x09dev1/gone\
        \x00\x07offline\
        \x00\x05alice\
        \x00\x06secret";
    // Flags 0xCE: user name, password, Will QoS 1, Will Flag, CleanSession.
    let expected = v5::Connect {
        clean_start: true,
        keep_alive: 10,
        last_will: Some(will(QoS::AtLeastOnce, false)),
        client_id: s("dev1"),
        username: Some(s("alice")),
        password: Some(b(b"secret")),
        ..v5::Connect::default()
    };
    assert_eq!(dec(frame, Version::V31), expected.into());
}

/// 5.0 §3.1: CONNECT with properties, a Will with Will properties, user name and password.
const CONNECT_V5_FULL: &[u8] = b"\x10\x57\
    \x00\x04MQTT\x05\
    \xEE\
    \x00\x3C\
    \x10\
        \x11\x00\x00\x0E\x10\
        \x21\x00\x14\
        \x22\x00\x0A\
        \x27\x00\x00\x10\x00\
    \x00\x04dev1\
    \x12\
        \x18\x00\x00\x00\x05\
        \x03\x00\x0Atext/plain\
    \x00\x09dev1/gone\
    \x00\x07offline\
    \x00\x05alice\
    \x00\x06secret";

#[test]
fn decodes_a_v5_connect_with_properties_will_user_name_and_password() {
    // Properties (5.0 §3.1.2.11): Session Expiry Interval 3600, Receive Maximum 20, Topic Alias
    // Maximum 10, Maximum Packet Size 4096. Will properties (5.0 §3.1.3.2): Will Delay Interval
    // 5, Content Type "text/plain". Remaining Length 87.
    let expected = v5::Connect {
        clean_start: true,
        keep_alive: 60,
        session_expiry_interval_secs: 3600,
        receive_max: Some(pid(20)),
        topic_alias_max: 10,
        max_packet_size: Some(nz32(4096)),
        last_will: Some(v5::LastWill {
            will_delay_interval_sec: Some(5),
            content_type: Some(s("text/plain")),
            ..will(QoS::AtLeastOnce, true)
        }),
        client_id: s("dev1"),
        username: Some(s("alice")),
        password: Some(b(b"secret")),
        ..v5::Connect::default()
    };
    assert_eq!(dec(CONNECT_V5_FULL, Version::V5), expected.into());
}

#[test]
fn a_v5_connect_may_have_an_empty_client_id_without_clean_start() {
    // 5.0 [MQTT-3.1.3-6]: the server assigns a Client Identifier; unlike 3.1.1 [MQTT-3.1.3-7]
    // Clean Start may be 0. rmqtt-codec 0.3 rejects this; the glue works around it.
    let frame = b"\x10\x0D\x00\x04MQTT\x05\x00\x00\x3C\x00\x00\x00";
    let v5::Packet::Connect(connect) = dec(frame, Version::V5) else {
        panic!("not a CONNECT");
    };
    assert!(!connect.clean_start);
    assert!(connect.client_id.is_empty());
    // 5.0 also allows a password without a user name (5.0 §3.1.2.9).
    let frame = b"\x10\x15\x00\x04MQTT\x05\x42\x00\x3C\x00\x00\x04dev1\x00\x02pw";
    let v5::Packet::Connect(connect) = dec(frame, Version::V5) else {
        panic!("not a CONNECT");
    };
    assert!(connect.clean_start);
    assert_eq!(connect.username, None);
    assert_eq!(connect.password, Some(b(b"pw")));
}

// ---- PUBLISH ----------------------------------------------------------------------------

#[test]
fn decodes_v3_publish_at_every_qos() {
    // 3.1.1 §3.3: first byte 0x30 | DUP << 3 | QoS << 1 | RETAIN.
    let cases: [(&[u8], Publish); 4] = [
        (
            b"\x30\x07\x00\x03t/1on",
            publish(QoS::AtMostOnce, None, false, false),
        ),
        (
            b"\x31\x07\x00\x03t/1on",
            publish(QoS::AtMostOnce, None, false, true),
        ),
        (
            b"\x3B\x09\x00\x03t/1\x00\x0Aon",
            publish(QoS::AtLeastOnce, Some(10), true, true),
        ),
        (
            b"\x34\x09\x00\x03t/1\x12\x34on",
            publish(QoS::ExactlyOnce, Some(0x1234), false, false),
        ),
    ];
    for version in V3 {
        for (frame, expected) in &cases {
            assert_eq!(dec(frame, version), expected.clone().into(), "{frame:02x?}");
        }
    }
}

#[test]
fn decodes_v5_publish_at_every_qos() {
    // 5.0 §3.3: as 3.1.1 plus a property block after the Packet Identifier.
    let with_properties = Publish {
        properties: Some(v5::PublishProperties {
            message_expiry_interval: Some(nz32(60)),
            topic_alias: Some(pid(1)),
            ..v5::PublishProperties::default()
        }),
        ..publish(QoS::AtLeastOnce, Some(10), true, true)
    };
    let cases: [(&[u8], Publish); 4] = [
        (
            b"\x30\x08\x00\x03t/1\x00on",
            publish(QoS::AtMostOnce, None, false, false),
        ),
        (
            // Message Expiry Interval 60 (0x02), Topic Alias 1 (0x23).
            b"\x3B\x12\x00\x03t/1\x00\x0A\x08\x02\x00\x00\x00\x3C\x23\x00\x01on",
            with_properties,
        ),
        (
            b"\x34\x0A\x00\x03t/1\x12\x34\x00on",
            publish(QoS::ExactlyOnce, Some(0x1234), false, false),
        ),
        (
            b"\x3C\x0A\x00\x03t/1\x12\x34\x00on",
            publish(QoS::ExactlyOnce, Some(0x1234), true, false),
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(dec(frame, Version::V5), expected.into(), "{frame:02x?}");
    }
    // 5.0 §3.3.2.1: an empty topic name is allowed together with a Topic Alias.
    let frame = b"\x30\x08\x00\x00\x03\x23\x00\x01on";
    let v5::Packet::Publish(p) = dec(frame, Version::V5) else {
        panic!("not a PUBLISH");
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.properties.and_then(|p| p.topic_alias), Some(pid(1)));
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------------------------

#[test]
fn decodes_v3_acknowledgements() {
    // 3.1.1 §3.4–§3.7: two bytes of Packet Identifier; PUBREL has flags 0b0010.
    use v5::{PublishAck2Reason as R2, PublishAckReason as R};
    for version in V3 {
        assert_eq!(
            dec(b"\x40\x02\x00\x0A", version),
            v5::Packet::PublishAck(puback(10, R::Success))
        );
        assert_eq!(
            dec(b"\x50\x02\x00\x0A", version),
            v5::Packet::PublishReceived(puback(10, R::Success))
        );
        assert_eq!(
            dec(b"\x62\x02\x00\x0A", version),
            v5::Packet::PublishRelease(puback2(10, R2::Success))
        );
        assert_eq!(
            dec(b"\x70\x02\x00\x0A", version),
            v5::Packet::PublishComplete(puback2(10, R2::Success))
        );
    }
}

#[test]
fn decodes_v5_acknowledgements_in_every_form() {
    use v5::{PublishAck2Reason as R2, PublishAckReason as R};
    // 5.0 §3.4.2.1: Remaining Length 2 means Success; 3 means a reason code and no properties.
    assert_eq!(
        dec(b"\x40\x02\x00\x0A", Version::V5),
        v5::Packet::PublishAck(puback(10, R::Success))
    );
    assert_eq!(
        dec(b"\x40\x03\x00\x0A\x10", Version::V5),
        v5::Packet::PublishAck(puback(10, R::NoMatchingSubscribers))
    );
    assert_eq!(
        dec(b"\x40\x04\x00\x0A\x87\x00", Version::V5),
        v5::Packet::PublishAck(puback(10, R::NotAuthorized))
    );
    // With a Reason String property (0x1F).
    assert_eq!(
        dec(b"\x40\x0A\x00\x0A\x87\x06\x1F\x00\x03acl", Version::V5),
        v5::Packet::PublishAck(v5::PublishAck {
            reason_string: Some(s("acl")),
            ..puback(10, R::NotAuthorized)
        })
    );
    // 5.0 §3.5: PUBREC.
    assert_eq!(
        dec(b"\x50\x03\x00\x0A\x80", Version::V5),
        v5::Packet::PublishReceived(puback(10, R::UnspecifiedError))
    );
    // 5.0 §3.6: PUBREL, 0x92 Packet Identifier not found.
    assert_eq!(
        dec(b"\x62\x02\x00\x0A", Version::V5),
        v5::Packet::PublishRelease(puback2(10, R2::Success))
    );
    assert_eq!(
        dec(b"\x62\x03\x00\x0A\x92", Version::V5),
        v5::Packet::PublishRelease(puback2(10, R2::PacketIdNotFound))
    );
    // 5.0 §3.7: PUBCOMP with an empty property block.
    assert_eq!(
        dec(b"\x70\x04\x00\x0A\x00\x00", Version::V5),
        v5::Packet::PublishComplete(puback2(10, R2::Success))
    );
}

// ---- SUBSCRIBE, UNSUBSCRIBE --------------------------------------------------------------

#[test]
fn decodes_a_v3_subscribe_with_several_filters() {
    // 3.1.1 §3.8: Packet Identifier 1, then (filter, requested QoS) pairs.
    let frame = b"\x82\x14\x00\x01\
        \x00\x03a/b\x00\
        \x00\x03c/#\x01\
        \x00\x03d/+\x02";
    let expected = v5::Subscribe {
        packet_id: pid(1),
        id: None,
        user_properties: Vec::new(),
        topic_filters: vec![
            (s("a/b"), options(QoS::AtMostOnce)),
            (s("c/#"), options(QoS::AtLeastOnce)),
            (s("d/+"), options(QoS::ExactlyOnce)),
        ],
    };
    for version in V3 {
        assert_eq!(dec(frame, version), expected.clone().into());
    }
}

#[test]
fn decodes_a_v5_subscribe_with_several_filters_and_options() {
    // 5.0 §3.8: Subscription Identifier 7 (0x0B), then (filter, Subscription Options) pairs;
    // options 0x2D = QoS 1 | No Local | Retain As Published | Retain Handling 2, options 0x12 =
    // QoS 2 | Retain Handling 1 (5.0 §3.8.3.1).
    let frame = b"\x82\x17\x00\x01\
        \x02\x0B\x07\
        \x00\x03a/b\x00\
        \x00\x03c/#\x2D\
        \x00\x03d/+\x12";
    let expected = v5::Subscribe {
        packet_id: pid(1),
        id: Some(nz32(7)),
        user_properties: Vec::new(),
        topic_filters: vec![
            (s("a/b"), options(QoS::AtMostOnce)),
            (
                s("c/#"),
                v5::SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: v5::RetainHandling::NoAtSubscribe,
                },
            ),
            (
                s("d/+"),
                v5::SubscriptionOptions {
                    retain_handling: v5::RetainHandling::AtSubscribeNew,
                    ..options(QoS::ExactlyOnce)
                },
            ),
        ],
    };
    assert_eq!(dec(frame, Version::V5), expected.into());
}

#[test]
fn decodes_unsubscribe() {
    let expected = v5::Unsubscribe {
        packet_id: pid(2),
        user_properties: Vec::new(),
        topic_filters: vec![s("a/b"), s("c/#")],
    };
    // 3.1.1 §3.10.
    for version in V3 {
        let frame = b"\xA2\x0C\x00\x02\x00\x03a/b\x00\x03c/#";
        assert_eq!(dec(frame, version), expected.clone().into());
    }
    // 5.0 §3.10: with an empty property block.
    let frame = b"\xA2\x0D\x00\x02\x00\x00\x03a/b\x00\x03c/#";
    assert_eq!(dec(frame, Version::V5), expected.into());
}

// ---- PINGREQ, DISCONNECT, AUTH -----------------------------------------------------------

#[test]
fn decodes_pingreq_and_disconnect() {
    for version in ALL {
        // 3.1.1 §3.12, 5.0 §3.12.
        assert_eq!(dec(b"\xC0\x00", version), v5::Packet::PingRequest);
        // 3.1.1 §3.14; 5.0 §3.14.2.1: Remaining Length 0 means Normal disconnection.
        assert_eq!(
            dec(b"\xE0\x00", version),
            v5::Packet::Disconnect(v5::Disconnect::default())
        );
    }
    // 5.0 §3.14: Disconnect with Will Message (0x04), short and with an empty property block.
    let with_will = v5::Packet::Disconnect(v5::Disconnect::new(
        v5::DisconnectReasonCode::DisconnectWithWillMessage,
    ));
    assert_eq!(dec(b"\xE0\x01\x04", Version::V5), with_will);
    assert_eq!(dec(b"\xE0\x02\x04\x00", Version::V5), with_will);
    // With Session Expiry Interval 0 (0x11), 5.0 §3.14.2.2.1.
    assert_eq!(
        dec(b"\xE0\x07\x00\x05\x11\x00\x00\x00\x00", Version::V5),
        v5::Packet::Disconnect(v5::Disconnect {
            session_expiry_interval_secs: Some(0),
            ..v5::Disconnect::default()
        })
    );
}

#[test]
fn decodes_v5_auth() {
    // 5.0 §3.15.2.1: Remaining Length 0 means Success and no properties.
    assert_eq!(
        dec(b"\xF0\x00", Version::V5),
        v5::Packet::Auth(v5::Auth::default())
    );
    // Continue authentication (0x18) with Authentication Method "SCRAM" (0x15).
    assert_eq!(
        dec(b"\xF0\x0A\x18\x08\x15\x00\x05SCRAM", Version::V5),
        v5::Packet::Auth(v5::Auth {
            reason_code: v5::AuthReasonCode::ContinueAuth,
            auth_method: Some(s("SCRAM")),
            ..v5::Auth::default()
        })
    );
}

// ---- Server packets (for tests and client simulators) ------------------------------------

#[test]
fn decodes_server_packets() {
    for version in V3 {
        // 3.1.1 §3.2: Session Present with return code 0x00, then return code 0x04.
        assert_eq!(
            dec(b"\x20\x02\x01\x00", version),
            v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                session_present: true,
                ..v5::ConnectAck::default()
            }))
        );
        assert_eq!(
            dec(b"\x20\x02\x00\x04", version),
            v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                reason_code: v5::ConnectAckReason::BadUserNameOrPassword,
                ..v5::ConnectAck::default()
            }))
        );
        // 3.1.1 §3.9: granted QoS 0, 1, 2 and 0x80 Failure.
        assert_eq!(
            dec(b"\x90\x06\x00\x01\x00\x01\x02\x80", version),
            v5::Packet::SubscribeAck(v5::SubscribeAck {
                packet_id: pid(1),
                properties: Vec::new(),
                reason_string: None,
                status: vec![
                    v5::SubscribeAckReason::GrantedQos0,
                    v5::SubscribeAckReason::GrantedQos1,
                    v5::SubscribeAckReason::GrantedQos2,
                    v5::SubscribeAckReason::UnspecifiedError,
                ],
            })
        );
        // 3.1.1 §3.11.
        assert_eq!(
            dec(b"\xB0\x02\x00\x02", version),
            v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
                packet_id: pid(2),
                properties: Vec::new(),
                reason_string: None,
                status: Vec::new(),
            })
        );
    }
    for version in ALL {
        // 3.1.1 §3.13, 5.0 §3.13.
        assert_eq!(dec(b"\xD0\x00", version), v5::Packet::PingResponse);
    }
}
