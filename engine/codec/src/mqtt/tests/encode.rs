//! Encoding every server packet for MQTT 3.1, 3.1.1 and 5.0, checked byte for byte.

use super::*;

use v5::ConnectAckReason as C;

fn connack(reason: C, session_present: bool) -> v5::Packet {
    v5::ConnectAck {
        session_present,
        reason_code: reason,
        ..v5::ConnectAck::default()
    }
    .into()
}

// ---- CONNACK -----------------------------------------------------------------------------

#[test]
fn connack_v3_code_maps_every_reason() {
    // 3.1.1 §3.2.2.3, Table 3.1, from 5.0 §3.2.2.2.
    let table = [
        (C::Success, 0x00),
        (C::UnsupportedProtocolVersion, 0x01),
        (C::ClientIdentifierNotValid, 0x02),
        (C::ServerUnavailable, 0x03),
        (C::ServerBusy, 0x03),
        (C::QuotaExceeded, 0x03),
        (C::ConnectionRateExceeded, 0x03),
        (C::UnspecifiedError, 0x03),
        (C::MalformedPacket, 0x03),
        (C::ProtocolError, 0x03),
        (C::ImplementationSpecificError, 0x03),
        (C::BadAuthenticationMethod, 0x03),
        (C::TopicNameInvalid, 0x03),
        (C::PacketTooLarge, 0x03),
        (C::PayloadFormatInvalid, 0x03),
        (C::RetainNotSupported, 0x03),
        (C::QosNotSupported, 0x03),
        (C::UseAnotherServer, 0x03),
        (C::ServerMoved, 0x03),
        (C::BadUserNameOrPassword, 0x04),
        (C::NotAuthorized, 0x05),
        (C::Banned, 0x05),
    ];
    for (reason, code) in table {
        assert_eq!(connack_v3_code(reason), code, "{reason:?}");
    }
}

#[test]
fn encodes_v3_connack_for_every_return_code() {
    // 3.1.1 §3.2: 0x20, Remaining Length 2, flags, return code.
    for version in V3 {
        assert_eq!(
            enc(&connack(C::Success, false), version),
            b"\x20\x02\x00\x00"
        );
        assert_eq!(
            enc(&connack(C::Success, true), version),
            b"\x20\x02\x01\x00"
        );
        for (reason, code) in [
            (C::UnsupportedProtocolVersion, 0x01),
            (C::ClientIdentifierNotValid, 0x02),
            (C::ServerUnavailable, 0x03),
            (C::ServerBusy, 0x03),
            (C::QuotaExceeded, 0x03),
            (C::ConnectionRateExceeded, 0x03),
            (C::BadUserNameOrPassword, 0x04),
            (C::NotAuthorized, 0x05),
            (C::Banned, 0x05),
        ] {
            // [MQTT-3.2.2-4]: a refusal has Session Present 0, whatever the packet says.
            assert_eq!(
                enc(&connack(reason, true), version),
                [0x20, 0x02, 0x00, code]
            );
        }
    }
}

#[test]
fn encodes_v5_connack_with_properties() {
    // 5.0 §3.2: flags, reason code, properties: Receive Maximum 20 (0x21), Maximum QoS 1 (0x24),
    // Maximum Packet Size 4096 (0x27), Topic Alias Maximum 10 (0x22), Server Keep Alive 30
    // (0x13).
    let packet = v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
        receive_max: pid(20),
        max_qos: QoS::AtLeastOnce,
        max_packet_size: Some(4096),
        topic_alias_max: 10,
        server_keepalive_sec: Some(30),
        ..v5::ConnectAck::default()
    }));
    let expected = b"\x20\x13\x00\x00\x10\
        \x21\x00\x14\
        \x24\x01\
        \x27\x00\x00\x10\x00\
        \x22\x00\x0A\
        \x13\x00\x1E";
    assert_eq!(enc(&packet, Version::V5), expected);
    assert_eq!(dec(expected, Version::V5), packet);

    // Assigned Client Identifier (0x12) and Session Expiry Interval (0x11).
    let packet = v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
        session_present: true,
        session_expiry_interval_secs: Some(3600),
        assigned_client_id: Some(s("auto-1")),
        ..v5::ConnectAck::default()
    }));
    let expected = b"\x20\x11\x01\x00\x0E\
        \x11\x00\x00\x0E\x10\
        \x12\x00\x06auto-1";
    assert_eq!(enc(&packet, Version::V5), expected);
    // The same CONNACK to a 3.1.1 client keeps only the flags and return code.
    assert_eq!(enc(&packet, Version::V311), b"\x20\x02\x01\x00");

    // A refusal without properties: 0x87 Not authorized, empty property block.
    assert_eq!(
        enc(&connack(C::NotAuthorized, false), Version::V5),
        b"\x20\x03\x00\x87\x00"
    );
}

// ---- SUBACK, UNSUBACK --------------------------------------------------------------------

#[test]
fn encodes_suback_with_mixed_grants_and_a_failure() {
    let packet = v5::Packet::SubscribeAck(v5::SubscribeAck {
        packet_id: pid(1),
        properties: Vec::new(),
        reason_string: None,
        status: vec![
            v5::SubscribeAckReason::GrantedQos0,
            v5::SubscribeAckReason::GrantedQos1,
            v5::SubscribeAckReason::GrantedQos2,
            v5::SubscribeAckReason::NotAuthorized,
            v5::SubscribeAckReason::TopicFilterInvalid,
        ],
    });
    // 3.1.1 §3.9.3: refusals become 0x80 Failure.
    for version in V3 {
        assert_eq!(
            enc(&packet, version),
            b"\x90\x07\x00\x01\x00\x01\x02\x80\x80"
        );
    }
    // 5.0 §3.9.3: reason codes as they are, after an empty property block.
    assert_eq!(
        enc(&packet, Version::V5),
        b"\x90\x08\x00\x01\x00\x00\x01\x02\x87\x8F"
    );
}

#[test]
fn encodes_unsuback() {
    let packet = v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
        packet_id: pid(2),
        properties: Vec::new(),
        reason_string: None,
        status: vec![
            v5::UnsubscribeAckReason::Success,
            v5::UnsubscribeAckReason::NoSubscriptionExisted,
        ],
    });
    // 3.1.1 §3.11: Packet Identifier only.
    for version in V3 {
        assert_eq!(enc(&packet, version), b"\xB0\x02\x00\x02");
    }
    // 5.0 §3.11: property block and one reason code per filter.
    assert_eq!(enc(&packet, Version::V5), b"\xB0\x05\x00\x02\x00\x00\x11");
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP -----------------------------------------------------

#[test]
fn encodes_v5_acknowledgements_in_their_shortest_form() {
    use v5::{PublishAck2Reason as R2, PublishAckReason as R};
    // 5.0 §3.4.2.1: Success without properties is the 2-byte form.
    let ok = v5::Packet::PublishAck(puback(10, R::Success));
    assert_eq!(enc(&ok, Version::V5), b"\x40\x02\x00\x0A");
    // Another reason code without properties omits the Property Length (5.0 §3.4.2.2).
    let refused = v5::Packet::PublishAck(puback(10, R::NotAuthorized));
    assert_eq!(enc(&refused, Version::V5), b"\x40\x03\x00\x0A\x87");
    // With a Reason String the property block is written.
    let explained = v5::Packet::PublishAck(v5::PublishAck {
        reason_string: Some(s("acl")),
        ..puback(10, R::NotAuthorized)
    });
    assert_eq!(
        enc(&explained, Version::V5),
        b"\x40\x0A\x00\x0A\x87\x06\x1F\x00\x03acl"
    );
    // 5.0 §3.5–§3.7.
    let cases = [
        (
            v5::Packet::PublishReceived(puback(10, R::Success)),
            &b"\x50\x02\x00\x0A"[..],
        ),
        (
            v5::Packet::PublishReceived(puback(10, R::QuotaExceeded)),
            b"\x50\x03\x00\x0A\x97",
        ),
        (
            v5::Packet::PublishRelease(puback2(10, R2::Success)),
            b"\x62\x02\x00\x0A",
        ),
        (
            v5::Packet::PublishComplete(puback2(10, R2::Success)),
            b"\x70\x02\x00\x0A",
        ),
        (
            v5::Packet::PublishComplete(puback2(10, R2::PacketIdNotFound)),
            b"\x70\x03\x00\x0A\x92",
        ),
    ];
    for (packet, expected) in cases {
        assert_eq!(enc(&packet, Version::V5), expected, "{packet:?}");
    }
}

#[test]
fn encodes_v3_acknowledgements_with_the_packet_id_only() {
    use v5::{PublishAck2Reason as R2, PublishAckReason as R};
    // 3.1.1 §3.4–§3.7; [MQTT-3.3.5-2]: a refused PUBLISH is still acknowledged positively.
    let cases = [
        (
            v5::Packet::PublishAck(puback(10, R::Success)),
            &b"\x40\x02\x00\x0A"[..],
        ),
        (
            v5::Packet::PublishAck(puback(10, R::NotAuthorized)),
            b"\x40\x02\x00\x0A",
        ),
        (
            v5::Packet::PublishReceived(puback(10, R::Success)),
            b"\x50\x02\x00\x0A",
        ),
        (
            v5::Packet::PublishRelease(puback2(10, R2::Success)),
            b"\x62\x02\x00\x0A",
        ),
        (
            v5::Packet::PublishComplete(puback2(10, R2::PacketIdNotFound)),
            b"\x70\x02\x00\x0A",
        ),
    ];
    for version in V3 {
        for (packet, expected) in &cases {
            assert_eq!(&enc(packet, version), expected, "{packet:?}");
        }
    }
}

// ---- PUBLISH -----------------------------------------------------------------------------

#[test]
fn encodes_publish_qos0_and_qos1() {
    let qos0 = v5::Packet::from(publish(QoS::AtMostOnce, None, false, false));
    let qos1 = v5::Packet::from(Publish {
        properties: Some(v5::PublishProperties {
            message_expiry_interval: Some(nz32(60)),
            ..v5::PublishProperties::default()
        }),
        ..publish(QoS::AtLeastOnce, Some(10), false, true)
    });
    // 3.1.1 §3.3: the 5.0 properties are dropped.
    for version in V3 {
        assert_eq!(enc(&qos0, version), b"\x30\x07\x00\x03t/1on");
        assert_eq!(enc(&qos1, version), b"\x33\x09\x00\x03t/1\x00\x0Aon");
    }
    // 5.0 §3.3: property block after the Packet Identifier; Message Expiry Interval (0x02).
    assert_eq!(enc(&qos0, Version::V5), b"\x30\x08\x00\x03t/1\x00on");
    assert_eq!(
        enc(&qos1, Version::V5),
        b"\x33\x0F\x00\x03t/1\x00\x0A\x05\x02\x00\x00\x00\x3Con"
    );
}

// ---- PINGRESP, DISCONNECT, CONNECT -------------------------------------------------------

#[test]
fn encodes_pingresp() {
    for version in ALL {
        assert_eq!(enc(&v5::Packet::PingResponse, version), b"\xD0\x00");
        assert_eq!(enc(&v5::Packet::PingRequest, version), b"\xC0\x00");
    }
}

#[test]
fn encodes_disconnect() {
    use v5::DisconnectReasonCode as D;
    // 5.0 §3.14.2.1: 0x8E Session taken over, without properties.
    let taken_over = v5::Packet::Disconnect(v5::Disconnect::new(D::SessionTakenOver));
    assert_eq!(enc(&taken_over, Version::V5), b"\xE0\x01\x8E");
    // Normal disconnection without properties is the 0-byte form.
    let normal = v5::Packet::Disconnect(v5::Disconnect::default());
    assert_eq!(enc(&normal, Version::V5), b"\xE0\x00");
    // With a Reason String (0x1F).
    let explained = v5::Packet::Disconnect(v5::Disconnect {
        reason_string: Some(s("dup")),
        ..v5::Disconnect::new(D::SessionTakenOver)
    });
    assert_eq!(
        enc(&explained, Version::V5),
        b"\xE0\x08\x8E\x06\x1F\x00\x03dup"
    );
    // 3.1.1 §3.14: no reason code.
    for version in V3 {
        assert_eq!(enc(&taken_over, version), b"\xE0\x00");
        assert_eq!(enc(&explained, version), b"\xE0\x00");
    }
}

#[test]
fn encodes_auth_only_in_v5() {
    assert_eq!(
        enc(&v5::Packet::Auth(v5::Auth::default()), Version::V5),
        b"\xF0\x00"
    );
    let continue_auth = v5::Packet::Auth(v5::Auth {
        reason_code: v5::AuthReasonCode::ContinueAuth,
        auth_method: Some(s("SCRAM")),
        ..v5::Auth::default()
    });
    assert_eq!(
        enc(&continue_auth, Version::V5),
        b"\xF0\x0A\x18\x08\x15\x00\x05SCRAM"
    );
    for version in V3 {
        let mut out = BytesMut::from(&b"kept"[..]);
        let e = encode(&continue_auth, version, &mut out).expect_err("no AUTH in 3.x");
        assert!(matches!(e, Error::NotInV3 { packet_type: 15 }), "{e:?}");
        assert_eq!(&out[..], b"kept");
    }
}

#[test]
fn encodes_connect_for_every_version() {
    let connect = v5::Packet::from(v5::Connect {
        clean_start: true,
        keep_alive: 60,
        last_will: Some(will(QoS::AtLeastOnce, true)),
        client_id: s("dev1"),
        username: Some(s("alice")),
        password: Some(b(b"secret")),
        ..v5::Connect::default()
    });
    // The frames the decode tests start from (3.1.1 §3.1), and its 3.1 twin with level 3.
    let v311 = enc(&connect, Version::V311);
    assert_eq!(v311[..], *b"\x10\x33\x00\x04MQTT\x04\xEE\x00\x3C\x00\x04dev1\x00\x09dev1/gone\x00\x07offline\x00\x05alice\x00\x06secret");
    let v31 = enc(&connect, Version::V31);
    assert_eq!(v31[..], *b"\x10\x35\x00\x06MQIsdp\x03\xEE\x00\x3C\x00\x04dev1\x00\x09dev1/gone\x00\x07offline\x00\x05alice\x00\x06secret");
    assert_eq!(connect_version(&v31).ok(), Some(Version::V31));
    // 5.0 §3.1: empty property blocks for the CONNECT and the Will.
    let v5 = enc(&connect, Version::V5);
    assert_eq!(v5[..], *b"\x10\x35\x00\x04MQTT\x05\xEE\x00\x3C\x00\x00\x04dev1\x00\x00\x09dev1/gone\x00\x07offline\x00\x05alice\x00\x06secret");
}
