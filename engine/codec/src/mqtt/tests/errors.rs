//! Malformed frames and protocol violations, and the reason codes they map to (MQTT 5.0 §4.13,
//! "Handling errors"; §1.2 defines Malformed Packet and Protocol Error).

use super::*;

use v5::DisconnectReasonCode as D;

/// Decodes `frame` as `version`, checks the error with `check` and its reason code.
#[track_caller]
fn rejects(frame: &[u8], version: Version, reason: D, check: impl Fn(&Error) -> bool) {
    let e = dec_err(frame, version);
    assert!(
        check(&e),
        "{frame:02x?} as {version}: unexpected error {e:?}"
    );
    assert_eq!(
        e.disconnect_reason(),
        reason,
        "{frame:02x?} as {version}: {e}"
    );
    // Every error has a message.
    assert!(!e.to_string().is_empty());
}

#[test]
fn reserved_packet_types_are_malformed() {
    // 3.1.1 §2.2.1 and 5.0 §2.1.2: type 0 is forbidden; 3.1.1 reserves type 15.
    for version in ALL {
        rejects(b"\x00\x00", version, D::MalformedPacket, |e| {
            matches!(e, Error::ReservedPacketType { packet_type: 0 })
        });
    }
    for version in V3 {
        rejects(b"\xF0\x00", version, D::MalformedPacket, |e| {
            matches!(e, Error::ReservedPacketType { packet_type: 15 })
        });
    }
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    // 3.1.1 [MQTT-2.2.2-1], 5.0 [MQTT-2.1.3-1]: "If invalid flags are received it is a Malformed
    // Packet."
    let frames: [(&[u8], u8, u8); 7] = [
        (b"\x41\x02\x00\x0A", 4, 0b0001),
        (b"\x60\x02\x00\x0A", 6, 0b0000),
        (b"\x80\x08\x00\x01\x00\x03a/b\x00", 8, 0b0000),
        (b"\xA3\x07\x00\x01\x00\x03a/b", 10, 0b0011),
        (b"\xC8\x00", 12, 0b1000),
        (b"\xE2\x00", 14, 0b0010),
        (b"\x12\x0C\x00\x04MQTT\x04\x02\x00\x3C\x00\x00", 1, 0b0010),
    ];
    for version in ALL {
        for (frame, packet_type, flags) in frames {
            rejects(
                frame,
                version,
                D::MalformedPacket,
                |e| matches!(e, Error::ReservedFlags { packet_type: t, flags: f } if *t == packet_type && *f == flags),
            );
        }
    }
}

#[test]
fn publish_with_qos_3_is_malformed() {
    // [MQTT-3.3.1-4]; 5.0 §3.3.1.2: "it is a Malformed Packet".
    for version in ALL {
        rejects(
            b"\x36\x09\x00\x03t/1\x00\x0Aon",
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::InvalidQos),
        );
    }
}

#[test]
fn dup_on_qos_0_is_a_protocol_error() {
    // [MQTT-3.3.1-2]: the DUP flag MUST be 0 for QoS 0.
    for version in ALL {
        rejects(b"\x38\x07\x00\x03t/1on", version, D::ProtocolError, |e| {
            matches!(e, Error::DupOnQos0)
        });
    }
    let mut out = BytesMut::new();
    let packet = publish(QoS::AtMostOnce, None, true, false).into();
    for version in ALL {
        assert!(matches!(
            encode(&packet, version, &mut out),
            Err(Error::DupOnQos0)
        ));
        assert!(out.is_empty());
    }
}

#[test]
fn packet_identifier_0_is_a_protocol_error() {
    // 3.1.1 [MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3].
    let v3_frames: [(&[u8], u8); 6] = [
        (b"\x32\x09\x00\x03t/1\x00\x00on", 3),
        (b"\x40\x02\x00\x00", 4),
        (b"\x62\x02\x00\x00", 6),
        (b"\x82\x08\x00\x00\x00\x03a/b\x00", 8),
        (b"\xA2\x07\x00\x00\x00\x03a/b", 10),
        (b"\xB0\x02\x00\x00", 11),
    ];
    for version in V3 {
        for (frame, packet_type) in v3_frames {
            rejects(
                frame,
                version,
                D::ProtocolError,
                |e| matches!(e, Error::ZeroPacketId { packet_type: t } if *t == packet_type),
            );
        }
    }
    let v5_frames: [(&[u8], u8); 4] = [
        (b"\x34\x0A\x00\x03t/1\x00\x00\x00on", 3),
        (b"\x40\x03\x00\x00\x10", 4),
        (b"\x82\x09\x00\x00\x00\x00\x03a/b\x00", 8),
        (b"\xA2\x08\x00\x00\x00\x00\x03a/b", 10),
    ];
    for (frame, packet_type) in v5_frames {
        rejects(
            frame,
            Version::V5,
            D::ProtocolError,
            |e| matches!(e, Error::ZeroPacketId { packet_type: t } if *t == packet_type),
        );
    }
}

#[test]
fn fixed_size_packets_with_another_length_are_malformed() {
    // 3.1.1 §3.12.1, 5.0 §3.12.1: PINGREQ has no body.
    for version in ALL {
        rejects(b"\xC0\x01\x00", version, D::MalformedPacket, |e| {
            matches!(
                e,
                Error::RemainingLength {
                    packet_type: 12,
                    expected: 0,
                    actual: 1
                }
            )
        });
    }
    // 3.1.1 §3.4.1 and §3.14.1: a PUBACK is 2 bytes long and a DISCONNECT empty.
    for version in V3 {
        rejects(b"\x40\x03\x00\x0A\x00", version, D::MalformedPacket, |e| {
            matches!(
                e,
                Error::RemainingLength {
                    packet_type: 4,
                    expected: 2,
                    actual: 3
                }
            )
        });
        rejects(b"\xE0\x01\x00", version, D::MalformedPacket, |e| {
            matches!(
                e,
                Error::RemainingLength {
                    packet_type: 14,
                    ..
                }
            )
        });
        rejects(b"\x20\x03\x00\x00\x00", version, D::MalformedPacket, |e| {
            matches!(e, Error::RemainingLength { packet_type: 2, .. })
        });
    }
}

#[test]
fn oversized_and_misframed_input_is_rejected() {
    // 5.0 §3.1.2.11.4 and §3.2.2.3.6: the Maximum Packet Size counts the whole packet.
    let v3_frame: &[u8] = b"\x30\x07\x00\x03t/1on";
    let v5_frame: &[u8] = b"\x30\x08\x00\x03t/1\x00on";
    for (version, frame) in [
        (Version::V31, v3_frame),
        (Version::V311, v3_frame),
        (Version::V5, v5_frame),
    ] {
        let len = frame.len();
        let max = u32::try_from(len).expect("short frame");
        let e = decode(frame, version, max - 1).expect_err("too large");
        assert!(
            matches!(e, Error::PacketTooLarge { size, max: m } if size == len && m == max - 1),
            "{e:?}"
        );
        assert_eq!(e.disconnect_reason(), D::PacketTooLarge);
        assert!(decode(frame, version, max).is_ok());
        // The slice must be exactly one frame.
        let two = [frame, b"\xC0\x00"].concat();
        rejects(
            &two,
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::FrameLength { expected, actual } if *expected == len && *actual == len + 2),
        );
        rejects(
            &frame[..len - 1],
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::FrameLength { expected, actual } if *expected == len && *actual == len - 1),
        );
        rejects(b"\x30", version, D::MalformedPacket, |e| {
            matches!(e, Error::Truncated { packet_type: 3 })
        });
        rejects(b"", version, D::MalformedPacket, |e| {
            matches!(e, Error::Truncated { .. })
        });
        rejects(
            b"\x30\xFF\xFF\xFF\xFF\x7F",
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::MalformedRemainingLength),
        );
    }
}

#[test]
fn bodies_rmqtt_codec_rejects_are_malformed() {
    for version in ALL {
        // The topic length runs past the end of the packet.
        rejects(b"\x30\x03\x00\x05t", version, D::MalformedPacket, |e| {
            matches!(e, Error::Decode { packet_type: 3, .. })
        });
        // Ill-formed UTF-8 in the topic name: [MQTT-1.5.4-1] (5.0), [MQTT-1.5.3-1] (3.1.1).
        rejects(
            b"\x30\x06\x00\x02\xC3\x28on",
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::Decode { packet_type: 3, .. }),
        );
    }
    // 5.0 §2.2.2.2: an unknown property identifier (0x7F) in a PUBLISH.
    rejects(
        b"\x30\x0A\x00\x03t/1\x02\x7F\x00on",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::Decode { packet_type: 3, .. }),
    );
    // A property block longer than the packet.
    rejects(
        b"\x30\x08\x00\x03t/1\x09on",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::Decode { .. }),
    );
    // 5.0 §3.4.2.1: an unknown PUBACK reason code.
    rejects(
        b"\x40\x03\x00\x0A\x01",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::Decode { packet_type: 4, .. }),
    );
    // 3.1.1 [MQTT-4.7.3-1]: a topic name is at least one character long.
    for version in V3 {
        rejects(b"\x30\x04\x00\x00on", version, D::TopicNameInvalid, |e| {
            matches!(e, Error::Decode { packet_type: 3, .. })
        });
    }
}

#[test]
fn broken_connect_packets_are_rejected() {
    // Decoded on a connection of another version.
    let v5_connect = b"\x10\x0D\x00\x04MQTT\x05\x02\x00\x3C\x00\x00\x00";
    rejects(v5_connect, Version::V311, D::ProtocolError, |e| {
        matches!(
            e,
            Error::VersionMismatch {
                connection: Version::V311,
                packet: Version::V5
            }
        )
    });
    let e = dec_err(v5_connect, Version::V31);
    assert_eq!(
        e.connack_reason(),
        Some(v5::ConnectAckReason::UnsupportedProtocolVersion)
    );
    let v311_connect = b"\x10\x0C\x00\x04MQTT\x04\x02\x00\x3C\x00\x00";
    rejects(v311_connect, Version::V5, D::ProtocolError, |e| {
        matches!(e, Error::VersionMismatch { .. })
    });
    rejects(v311_connect, Version::V31, D::ProtocolError, |e| {
        matches!(e, Error::VersionMismatch { .. })
    });

    // [MQTT-3.1.2-3]: reserved flag (bit 0) set; a Malformed Packet in 5.0.
    rejects(
        b"\x10\x0C\x00\x04MQTT\x04\x03\x00\x3C\x00\x00",
        Version::V311,
        D::MalformedPacket,
        |e| matches!(e, Error::ConnectReservedFlag),
    );
    rejects(
        b"\x10\x0D\x00\x04MQTT\x05\x03\x00\x3C\x00\x00\x00",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::ConnectReservedFlag),
    );
    // 3.1.1 [MQTT-3.1.2-13], 5.0 [MQTT-3.1.2-11]: Will QoS 1 (0x08) without the Will Flag.
    rejects(
        b"\x10\x0C\x00\x04MQTT\x04\x0A\x00\x3C\x00\x00",
        Version::V311,
        D::ProtocolError,
        |e| matches!(e, Error::InvalidWillFlags),
    );
    // 5.0 [MQTT-3.1.2-13]: Will Retain (0x20) without the Will Flag.
    rejects(
        b"\x10\x0D\x00\x04MQTT\x05\x22\x00\x3C\x00\x00\x00",
        Version::V5,
        D::ProtocolError,
        |e| matches!(e, Error::InvalidWillFlags),
    );
    // 5.0 [MQTT-3.1.2-12]: Will QoS 3 (0x18) is a Malformed Packet.
    rejects(
        b"\x10\x14\x00\x04MQTT\x05\x1E\x00\x3C\x00\x00\x00\x00\x00\x01w\x00\x01m",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::InvalidWillQos),
    );
    // 3.1.1 [MQTT-3.1.2-22]: a password without a user name.
    rejects(
        b"\x10\x10\x00\x04MQTT\x04\x42\x00\x3C\x00\x00\x00\x02pw",
        Version::V311,
        D::ProtocolError,
        |e| matches!(e, Error::PasswordWithoutUsername),
    );
    // 3.1.1 §3.1.3: the payload ends with the last field its flags announce.
    rejects(
        b"\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x00\x00\x00",
        Version::V311,
        D::MalformedPacket,
        |e| {
            matches!(
                e,
                Error::TrailingBytes {
                    packet_type: 1,
                    extra: 2
                }
            )
        },
    );
    // The user name the flags announce is missing.
    rejects(
        b"\x10\x0C\x00\x04MQTT\x04\x82\x00\x3C\x00\x00",
        Version::V311,
        D::MalformedPacket,
        |e| matches!(e, Error::Truncated { packet_type: 1 }),
    );
    // 3.1.1 [MQTT-3.1.3-8]: an empty Client Identifier with CleanSession 0 is answered with
    // return code 0x02.
    let e = dec_err(
        b"\x10\x0C\x00\x04MQTT\x04\x00\x00\x3C\x00\x00",
        Version::V311,
    );
    assert!(matches!(e, Error::Decode { packet_type: 1, .. }), "{e:?}");
    assert_eq!(
        e.connack_reason(),
        Some(v5::ConnectAckReason::ClientIdentifierNotValid)
    );
    assert_eq!(e.connack_reason().map(connack_v3_code), Some(0x02));
}

#[test]
fn bad_subscribe_and_unsubscribe_packets_are_rejected() {
    // 3.1.1 [MQTT-3.8.3-4]: reserved bits of the requested QoS byte are malformed, and so is 3.
    for version in V3 {
        rejects(
            b"\x82\x08\x00\x01\x00\x03a/b\x04",
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::ReservedSubscriptionBits { options: 0x04 }),
        );
        rejects(
            b"\x82\x08\x00\x01\x00\x03a/b\x03",
            version,
            D::ProtocolError,
            |e| matches!(e, Error::InvalidRequestedQos { options: 0x03 }),
        );
        // 3.1.1 [MQTT-3.8.3-3], [MQTT-3.10.3-2]: at least one topic filter.
        rejects(b"\x82\x02\x00\x01", version, D::ProtocolError, |e| {
            matches!(e, Error::NoTopicFilters { packet_type: 8 })
        });
        rejects(b"\xA2\x02\x00\x01", version, D::ProtocolError, |e| {
            matches!(e, Error::NoTopicFilters { packet_type: 10 })
        });
        // A filter without its QoS byte.
        rejects(
            b"\x82\x07\x00\x01\x00\x03a/b",
            version,
            D::MalformedPacket,
            |e| matches!(e, Error::Truncated { packet_type: 8 }),
        );
    }
    // 5.0 [MQTT-3.8.3-5]: reserved bits 6 and 7 of the Subscription Options are malformed.
    rejects(
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x40",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::ReservedSubscriptionBits { options: 0x40 }),
    );
    // 5.0 §3.8.3.1: QoS 3 and Retain Handling 3 are Protocol Errors.
    rejects(
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x03",
        Version::V5,
        D::ProtocolError,
        |e| matches!(e, Error::InvalidRequestedQos { options: 0x03 }),
    );
    rejects(
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x30",
        Version::V5,
        D::ProtocolError,
        |e| matches!(e, Error::InvalidRetainHandling { options: 0x30 }),
    );
    // 5.0 [MQTT-3.8.3-2], [MQTT-3.10.3-2]: at least one topic filter.
    rejects(
        b"\x82\x03\x00\x01\x00",
        Version::V5,
        D::ProtocolError,
        |e| matches!(e, Error::NoTopicFilters { packet_type: 8 }),
    );
    rejects(
        b"\xA2\x03\x00\x01\x00",
        Version::V5,
        D::ProtocolError,
        |e| matches!(e, Error::NoTopicFilters { packet_type: 10 }),
    );
    // A 5-byte Property Length and a 5-byte Subscription Identifier (5.0 §1.5.5).
    rejects(
        b"\x82\x0D\x00\x01\x80\x80\x80\x80\x01\x00\x03a/b\x00",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::MalformedVariableInteger { packet_type: 8 }),
    );
    rejects(
        b"\x82\x0F\x00\x01\x06\x0B\x80\x80\x80\x80\x01\x00\x03a/b\x00",
        Version::V5,
        D::MalformedPacket,
        |e| matches!(e, Error::Decode { packet_type: 8, .. }),
    );
}

#[test]
fn a_reserved_v3_connack_code_is_malformed() {
    // 3.1.1 §3.2.2.3: return codes 6..=255 are reserved.
    for version in V3 {
        rejects(b"\x20\x02\x00\x06", version, D::MalformedPacket, |e| {
            matches!(e, Error::ReservedConnackCode { code: 6 })
        });
        rejects(b"\x20\x02\x00\x07", version, D::MalformedPacket, |e| {
            matches!(e, Error::Decode { packet_type: 2, .. })
        });
    }
}

#[test]
fn the_session_layer_can_report_an_unexpected_packet() {
    // [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error; so is a server packet from a client.
    let e = Error::unexpected_packet(&v5::Packet::PingResponse);
    assert!(matches!(e, Error::UnexpectedPacket { packet_type: 13 }));
    assert_eq!(e.disconnect_reason(), D::ProtocolError);
    assert_eq!(e.to_string(), "unexpected MQTT PINGRESP packet");
    let e = Error::unexpected_packet(&v5::Packet::PublishRelease(puback2(
        1,
        v5::PublishAck2Reason::Success,
    )));
    assert!(matches!(e, Error::UnexpectedPacket { packet_type: 6 }));
}

#[test]
fn encoding_errors_leave_the_buffer_alone() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    // [MQTT-4.7.3-1]: a 3.x PUBLISH needs a topic name; 5.0 allows none with a Topic Alias.
    let aliased = v5::Packet::from(Publish {
        topic: s(""),
        properties: Some(v5::PublishProperties {
            topic_alias: Some(pid(3)),
            ..v5::PublishProperties::default()
        }),
        ..publish(QoS::AtMostOnce, None, false, false)
    });
    for version in V3 {
        let e = encode(&aliased, version, &mut out).expect_err("no topic");
        assert!(matches!(e, Error::EmptyTopicName), "{e:?}");
    }
    assert_eq!(
        enc(&aliased, Version::V5),
        b"\x30\x08\x00\x00\x03\x23\x00\x03on"
    );
    // [MQTT-3.1.2-22] on the client side.
    let connect = v5::Packet::from(v5::Connect {
        clean_start: true,
        client_id: s("c"),
        password: Some(b(b"pw")),
        ..v5::Connect::default()
    });
    for version in V3 {
        let e = encode(&connect, version, &mut out).expect_err("password without user name");
        assert!(matches!(e, Error::PasswordWithoutUsername), "{e:?}");
    }
    // rmqtt-codec fails half way through a topic name longer than 65,535 bytes.
    let long_topic = v5::Packet::from(Publish {
        topic: ByteString::from("t".repeat(70_000)),
        ..publish(QoS::AtMostOnce, None, false, false)
    });
    for version in ALL {
        let e = encode(&long_topic, version, &mut out).expect_err("topic too long");
        assert!(matches!(e, Error::Encode { packet_type: 3, .. }), "{e:?}");
        assert_eq!(e.disconnect_reason(), D::ImplementationSpecificError);
    }
    // A QoS 1 PUBLISH needs a Packet Identifier.
    let no_id = v5::Packet::from(publish(QoS::AtLeastOnce, None, false, false));
    for version in ALL {
        assert!(matches!(
            encode(&no_id, version, &mut out),
            Err(Error::Encode { packet_type: 3, .. })
        ));
    }
    assert_eq!(&out[..], b"prefix");
}

#[test]
fn oversized_packets_are_refused_before_rmqtt_codec_panics() {
    // 3.1.1 §2.2.3: the Remaining Length cannot exceed 268,435,455; rmqtt-codec's 3.x encoder
    // panics beyond it. The zeroed payload is allocated lazily and never written.
    let payload = Bytes::from(vec![0u8; 268_435_455]);
    let huge = v5::Packet::from(Publish {
        payload,
        ..publish(QoS::AtMostOnce, None, false, false)
    });
    let mut out = BytesMut::new();
    for version in ALL {
        let e = encode(&huge, version, &mut out).expect_err("too large");
        assert_eq!(e.disconnect_reason(), D::PacketTooLarge, "{version}: {e:?}");
        assert!(out.is_empty());
    }
}
