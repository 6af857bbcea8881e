//! Property tests of the MQTT glue: PUBLISH and SUBSCRIBE survive encode/decode round trips in
//! every protocol version, a stream of frames splits back into its frames, and no input makes
//! `frame_len`, `connect_version`, `decode` or `encode` panic.

use std::num::{NonZeroU16, NonZeroU32};

use fleetgate_codec::mqtt::bytes::{Bytes, BytesMut};
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_codec::mqtt::{
    Publish, QoS, Version, connect_version, decode, encode, frame_len, v5,
};
use proptest::prelude::*;

const ALL: [Version; 3] = [Version::V31, Version::V311, Version::V5];

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V31), Just(Version::V311), Just(Version::V5)]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn text(max: usize) -> impl Strategy<Value = ByteString> {
    proptest::string::string_regex(&format!("\\PC{{0,{max}}}"))
        .expect("valid regex")
        .prop_map(ByteString::from)
}

fn non_empty_text(max: usize) -> impl Strategy<Value = ByteString> {
    proptest::string::string_regex(&format!("\\PC{{1,{max}}}"))
        .expect("valid regex")
        .prop_map(ByteString::from)
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|id| NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN))
}

fn user_properties() -> impl Strategy<Value = v5::UserProperties> {
    proptest::collection::vec((text(8), text(8)), 0..3)
}

fn publish_properties() -> impl Strategy<Value = v5::PublishProperties> {
    (
        proptest::option::of(packet_id()),
        proptest::option::of(binary(8)),
        proptest::option::of(
            (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)),
        ),
        proptest::option::of(text(12)),
        user_properties(),
        any::<bool>(),
        proptest::option::of(non_empty_text(12)),
        proptest::collection::vec(
            (1..=268_435_455u32).prop_map(|v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)),
            0..3,
        ),
    )
        .prop_map(
            |(
                topic_alias,
                correlation_data,
                message_expiry_interval,
                content_type,
                user_properties,
                is_utf8_payload,
                response_topic,
                subscription_ids,
            )| v5::PublishProperties {
                topic_alias,
                correlation_data,
                message_expiry_interval,
                content_type,
                user_properties,
                is_utf8_payload,
                response_topic,
                subscription_ids,
            },
        )
}

/// An arbitrary valid PUBLISH: a packet identifier exactly when QoS > 0, DUP only with QoS > 0
/// ([MQTT-3.3.1-2]), a non-empty topic (3.x needs one), any payload and MQTT 5.0 properties.
fn publish() -> impl Strategy<Value = Publish> {
    (
        qos(),
        packet_id(),
        any::<bool>(),
        any::<bool>(),
        non_empty_text(24),
        binary(300),
        publish_properties(),
    )
        .prop_map(|(qos, id, dup, retain, topic, payload, properties)| {
            let acknowledged = qos != QoS::AtMostOnce;
            Publish {
                dup: dup && acknowledged,
                retain,
                qos,
                topic,
                packet_id: acknowledged.then_some(id),
                payload,
                properties: Some(properties),
            }
        })
}

fn subscription_options() -> impl Strategy<Value = v5::SubscriptionOptions> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(v5::RetainHandling::AtSubscribe),
            Just(v5::RetainHandling::AtSubscribeNew),
            Just(v5::RetainHandling::NoAtSubscribe)
        ],
    )
        .prop_map(|(qos, no_local, retain_as_published, retain_handling)| {
            v5::SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            }
        })
}

/// An arbitrary MQTT 5.0 SUBSCRIBE with at least one filter ([MQTT-3.8.3-2]).
fn subscribe_v5() -> impl Strategy<Value = v5::Subscribe> {
    (
        packet_id(),
        proptest::option::of(
            (1..=268_435_455u32).prop_map(|v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)),
        ),
        user_properties(),
        proptest::collection::vec((non_empty_text(16), subscription_options()), 1..6),
    )
        .prop_map(
            |(packet_id, id, user_properties, topic_filters)| v5::Subscribe {
                packet_id,
                id,
                user_properties,
                topic_filters,
            },
        )
}

/// An arbitrary SUBSCRIBE that MQTT 3.x can carry: only a requested QoS per filter.
fn subscribe_v3() -> impl Strategy<Value = v5::Subscribe> {
    (
        packet_id(),
        proptest::collection::vec((non_empty_text(16), qos()), 1..6),
    )
        .prop_map(|(packet_id, filters)| v5::Subscribe {
            packet_id,
            id: None,
            user_properties: Vec::new(),
            topic_filters: filters
                .into_iter()
                .map(|(filter, qos)| {
                    let options = v5::SubscriptionOptions {
                        qos,
                        ..v5::SubscriptionOptions::default()
                    };
                    (filter, options)
                })
                .collect(),
        })
}

fn encoded(packet: &v5::Packet, version: Version) -> Result<Vec<u8>, TestCaseError> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out)
        .map_err(|e| TestCaseError::fail(format!("encoding as {version}: {e}")))?;
    Ok(out.to_vec())
}

fn decoded(frame: &[u8], version: Version) -> Result<v5::Packet, TestCaseError> {
    decode(frame, version, 0)
        .map_err(|e| TestCaseError::fail(format!("decoding as {version}: {e}")))
}

/// Runs everything that reads untrusted bytes; none of it may panic. Whatever decodes must
/// encode in its own version to exactly one frame that decodes to the same packet.
fn read_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    let _ = frame_len(bytes, 0);
    let _ = frame_len(bytes, 64);
    let _ = connect_version(bytes);
    let first = match frame_len(bytes, 0) {
        Ok(Some(len)) => bytes.get(..len),
        _ => None,
    };
    for frame in std::iter::once(bytes).chain(first) {
        for version in ALL {
            let _ = decode(frame, version, 64);
            if let Ok(packet) = decode(frame, version, 0) {
                for target in ALL {
                    let mut out = BytesMut::new();
                    let _ = encode(&packet, target, &mut out);
                }
                let again = encoded(&packet, version)?;
                prop_assert_eq!(frame_len(&again, 0).ok(), Some(Some(again.len())));
                prop_assert_eq!(decoded(&again, version)?, packet);
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn publish_round_trips_in_v5(publish in publish()) {
        let packet = v5::Packet::from(publish);
        let bytes = encoded(&packet, Version::V5)?;
        prop_assert_eq!(frame_len(&bytes, 0).ok(), Some(Some(bytes.len())));
        prop_assert_eq!(decoded(&bytes, Version::V5)?, packet);
    }

    #[test]
    fn publish_round_trips_in_v3_without_its_properties(
        publish in publish(),
        version in prop_oneof![Just(Version::V31), Just(Version::V311)],
    ) {
        let packet = v5::Packet::from(publish.clone());
        let bytes = encoded(&packet, version)?;
        prop_assert_eq!(frame_len(&bytes, 0).ok(), Some(Some(bytes.len())));
        let expected = Publish {
            properties: Some(v5::PublishProperties::default()),
            ..publish
        };
        prop_assert_eq!(decoded(&bytes, version)?, v5::Packet::from(expected));
    }

    #[test]
    fn subscribe_round_trips(subscribe in subscribe_v5(), v3 in subscribe_v3()) {
        let packet = v5::Packet::from(subscribe);
        prop_assert_eq!(decoded(&encoded(&packet, Version::V5)?, Version::V5)?, packet);
        let packet = v5::Packet::from(v3);
        for version in ALL {
            prop_assert_eq!(decoded(&encoded(&packet, version)?, version)?, packet.clone());
        }
    }

    #[test]
    fn a_stream_of_frames_splits_back_into_its_frames(
        publishes in proptest::collection::vec(publish(), 1..6),
        version in version(),
        chunk in 1usize..64,
    ) {
        let packets: Vec<v5::Packet> = publishes.into_iter().map(v5::Packet::from).collect();
        let mut stream = Vec::new();
        for packet in &packets {
            stream.extend(encoded(packet, version)?);
        }
        // Feed the stream in chunks, as a socket would, and cut frames as they complete.
        let mut buffer = Vec::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some(len) = frame_len(&buffer, 0).map_err(|e| TestCaseError::fail(e.to_string()))? {
                frames.push(buffer.drain(..len).collect::<Vec<u8>>());
            }
        }
        prop_assert!(buffer.is_empty());
        prop_assert_eq!(frames.len(), packets.len());
        for (frame, packet) in frames.iter().zip(&packets) {
            let back = decoded(frame, version)?;
            if version.is_v5() {
                prop_assert_eq!(&back, packet);
            } else {
                prop_assert_eq!(back.packet_type(), packet.packet_type());
            }
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        read_everything(&bytes)?;
    }

    #[test]
    fn nothing_panics_behind_a_valid_fixed_header(
        first_byte in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let len = u8::try_from(body.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let frame = [&[first_byte, len][..], &body].concat();
        prop_assert_eq!(frame_len(&frame, 0).ok(), Some(Some(frame.len())));
        read_everything(&frame)?;
    }

    #[test]
    fn nothing_panics_on_mutated_frames(
        publish in publish(),
        subscribe in subscribe_v5(),
        version in version(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        for packet in [v5::Packet::from(publish), v5::Packet::from(subscribe)] {
            let mut bytes = encoded(&packet, version)?;
            for (at, value) in &edits {
                let at = at % bytes.len();
                bytes[at] = *value;
            }
            read_everything(&bytes)?;
            bytes.truncate(cut % (bytes.len() + 1));
            read_everything(&bytes)?;
        }
    }
}
