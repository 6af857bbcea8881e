//! `frame_len` (MQTT 3.1.1 §2.2.3, MQTT 5.0 §1.5.5 and §2.1.4) and `connect_version`
//! (MQTT 3.1.1 §3.1.2.1–§3.1.2.2, MQTT 5.0 §3.1.2.1–§3.1.2.2).

use super::*;

/// 3.1.1 §3.3: PUBLISH QoS 0, topic "t/1", payload "on"; Remaining Length 7.
const PUBLISH_QOS0: &[u8] = b"\x30\x07\x00\x03t/1on";

#[test]
fn frame_len_waits_for_every_byte() {
    for cut in 0..PUBLISH_QOS0.len() {
        assert_eq!(
            frame_len(&PUBLISH_QOS0[..cut], 0).ok(),
            Some(None),
            "prefix of {cut} bytes"
        );
    }
    assert_eq!(frame_len(PUBLISH_QOS0, 0).ok(), Some(Some(9)));
}

#[test]
fn frame_len_stops_at_the_first_frame() {
    // 3.1.1 §3.12: a PINGREQ right behind the PUBLISH, and the start of a third frame.
    let stream = [PUBLISH_QOS0, b"\xC0\x00", b"\x30"].concat();
    assert_eq!(frame_len(&stream, 0).ok(), Some(Some(9)));
    assert_eq!(frame_len(&stream[9..], 0).ok(), Some(Some(2)));
    assert_eq!(frame_len(&stream[11..], 0).ok(), Some(None));
}

#[test]
fn frame_len_reads_each_size_of_remaining_length() {
    // 3.1.1 §2.2.3, Table 2.4: the smallest and largest value of each encoded size.
    let cases: [(&[u8], usize); 8] = [
        (&[0x00], 0),
        (&[0x7F], 127),
        (&[0x80, 0x01], 128),
        (&[0xFF, 0x7F], 16_383),
        (&[0x80, 0x80, 0x01], 16_384),
        (&[0xFF, 0xFF, 0x7F], 2_097_151),
        (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
        (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
    ];
    for (length, value) in cases {
        let header = [&[0x30], length].concat();
        let total = header.len() + value;
        // Only the header has arrived: more bytes are needed, nothing is allocated for them.
        if value > 0 {
            assert_eq!(frame_len(&header, 0).ok(), Some(None), "{length:02x?}");
        }
        // Announced size is checked against the limit before the body arrives.
        match frame_len(&header, u32::try_from(total - 1).expect("small")) {
            Err(Error::PacketTooLarge { size, .. }) => assert_eq!(size, total),
            other => panic!("{length:02x?}: {other:?}"),
        }
    }
    // The 2-byte example of 3.1.1 §2.2.3: 321 = 0xC1 0x02.
    let mut frame = vec![0x30, 0xC1, 0x02];
    frame.extend(std::iter::repeat_n(0u8, 321));
    assert_eq!(frame_len(&frame, 0).ok(), Some(Some(324)));
    assert_eq!(frame_len(&frame, 324).ok(), Some(Some(324)));
}

#[test]
fn frame_len_rejects_a_fifth_length_byte() {
    // 3.1.1 §2.2.3 and 5.0 §1.5.5: at most four bytes.
    for bytes in [
        &b"\x30\xFF\xFF\xFF\xFF\x7F"[..],
        b"\x30\x80\x80\x80\x80",
        b"\x30\x80\x80\x80\x80\x01rest",
    ] {
        assert!(
            matches!(frame_len(bytes, 0), Err(Error::MalformedRemainingLength)),
            "{bytes:02x?}"
        );
    }
    // Three continuation bytes: the fourth may still end the field.
    assert_eq!(frame_len(b"\x30\x80\x80\x80", 0).ok(), Some(None));
    assert_eq!(
        Error::MalformedRemainingLength.disconnect_reason(),
        v5::DisconnectReasonCode::MalformedPacket
    );
}

#[test]
fn frame_len_enforces_the_maximum_packet_size() {
    // 5.0 §3.1.2.11.4: the limit counts the whole packet, fixed header included.
    assert_eq!(frame_len(PUBLISH_QOS0, 9).ok(), Some(Some(9)));
    match frame_len(PUBLISH_QOS0, 8) {
        Err(e @ Error::PacketTooLarge { size: 9, max: 8 }) => {
            assert_eq!(
                e.disconnect_reason(),
                v5::DisconnectReasonCode::PacketTooLarge
            );
        }
        other => panic!("{other:?}"),
    }
    // 0 means no limit.
    assert_eq!(frame_len(PUBLISH_QOS0, 0).ok(), Some(Some(9)));
}

/// 3.1.1 §3.1: a CONNECT with the given protocol name and level, CleanSession 1, keep alive
/// 60 and client "d1" (a 5.0 CONNECT also gets an empty property block, 5.0 §3.1.2.11).
fn connect_frame(name: &[u8], level: u8) -> Vec<u8> {
    let len = u16::try_from(name.len()).expect("short name");
    let mut body = [&len.to_be_bytes()[..], name, &[level, 0x02, 0x00, 0x3C]].concat();
    if level == 5 {
        body.push(0x00);
    }
    body.extend_from_slice(b"\x00\x02d1");
    let rl = u8::try_from(body.len()).expect("short body");
    [&[0x10, rl][..], &body].concat()
}

#[test]
fn connect_version_recognises_every_supported_version() {
    assert_eq!(
        connect_version(&connect_frame(b"MQIsdp", 3)).ok(),
        Some(Version::V31)
    );
    assert_eq!(
        connect_version(&connect_frame(b"MQTT", 4)).ok(),
        Some(Version::V311)
    );
    assert_eq!(
        connect_version(&connect_frame(b"MQTT", 5)).ok(),
        Some(Version::V5)
    );
    for version in ALL {
        let frame = connect_frame(version.protocol_name().as_bytes(), version.level());
        assert_eq!(connect_version(&frame).ok(), Some(version));
        assert_eq!(Version::from_level(version.level()), Some(version));
        // The frames also decode, to a CONNECT of that version.
        assert!(matches!(dec(&frame, version), v5::Packet::Connect(_)));
    }
}

#[test]
fn connect_version_reports_an_unsupported_level() {
    // 3.1.1 [MQTT-3.1.2-2] / 5.0 [MQTT-3.1.2-2]: answer 0x01 / 0x84, then close.
    for (name, level) in [
        (&b"MQTT"[..], 6),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
        (b"MQTT", 0),
    ] {
        match connect_version(&connect_frame(name, level)) {
            Err(e @ Error::UnsupportedProtocolLevel { level: found }) => {
                assert_eq!(found, level);
                let reason = e.connack_reason();
                assert_eq!(
                    reason,
                    Some(v5::ConnectAckReason::UnsupportedProtocolVersion)
                );
                assert_eq!(reason.map(connack_v3_code), Some(0x01));
            }
            other => panic!("{name:?} level {level}: {other:?}"),
        }
    }
}

#[test]
fn connect_version_rejects_a_first_packet_that_is_not_connect() {
    // [MQTT-3.1.0-1]: the first packet from the client MUST be CONNECT.
    for (frame, packet_type) in [
        (&b"\x30\x07\x00\x03t/1on"[..], 3),
        (b"\xC0\x00", 12),
        (b"\x20\x02\x00\x00", 2),
        (b"\x30", 3),
    ] {
        match connect_version(frame) {
            Err(e @ Error::NotConnect { packet_type: found }) => {
                assert_eq!(found, packet_type);
                assert_eq!(e.connack_reason(), None);
                assert_eq!(
                    e.disconnect_reason(),
                    v5::DisconnectReasonCode::ProtocolError
                );
            }
            other => panic!("{frame:02x?}: {other:?}"),
        }
    }
}

#[test]
fn connect_version_rejects_garbage() {
    // An HTTP request: 'G' = 0x47 reads as packet type 4.
    let http = b"GET / HTTP/1.1\r\nHost: fleetgate\r\n\r\n";
    assert!(matches!(
        connect_version(http),
        Err(Error::NotConnect { packet_type: 4 })
    ));
    // A TLS ClientHello on the plain port: 0x16 reads as CONNECT with flags 0b0110.
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    assert!(matches!(
        connect_version(tls),
        Err(Error::ReservedFlags {
            packet_type: 1,
            flags: 0b0110
        })
    ));
    // Wrong protocol name: [MQTT-3.1.2-1].
    for name in [&b"MQTX"[..], b"HTTP", b"", b"MQIsdpX"] {
        let e = connect_version(&connect_frame(name, 4)).expect_err("bad name");
        assert!(matches!(e, Error::BadProtocolName), "{name:?}: {e:?}");
        assert_eq!(e.connack_reason(), None);
    }
    // Too short to hold protocol name and level.
    for frame in [
        &b""[..],
        b"\x10",
        b"\x10\x02\x00\x04",
        b"\x10\x06\x00\x04MQTT",
    ] {
        assert!(
            matches!(
                connect_version(frame),
                Err(Error::Truncated { packet_type: 1 })
            ),
            "{frame:02x?}"
        );
    }
    // A CONNECT whose frame is not complete yet.
    let complete = connect_frame(b"MQTT", 4);
    assert!(connect_version(&complete[..complete.len() - 1]).is_err());
    assert!(matches!(
        connect_version(b"\x10\xFF\xFF\xFF\xFF\x7F"),
        Err(Error::MalformedRemainingLength)
    ));
}
