//! Property tests of the CoAP module: message, block and Observe values survive encode/decode
//! round trips, block slicing and reassembly agree, and no input makes a decoder or parser
//! panic.

use std::time::Instant;

use fleetgate_codec::coap::block::{
    self, Block1Assembler, Block1Progress, BlockValue, MAX_NUM, block_of,
};
use fleetgate_codec::coap::link::{self, lwm2m_objects, render};
use fleetgate_codec::coap::lwm2m::{Lwm2mVersion, parse_register, parse_update};
use fleetgate_codec::coap::message::{self, decode, encode};
use fleetgate_codec::coap::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType, observe,
};
use proptest::prelude::*;

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Confirmable),
        Just(MessageType::NonConfirmable),
        Just(MessageType::Acknowledgement),
        Just(MessageType::Reset),
    ]
}

fn code() -> impl Strategy<Value = MessageClass> {
    prop_oneof![
        Just(MessageClass::Request(RequestType::Get)),
        Just(MessageClass::Request(RequestType::Post)),
        Just(MessageClass::Request(RequestType::Delete)),
        Just(MessageClass::Response(ResponseType::Created)),
        Just(MessageClass::Response(ResponseType::Content)),
        Just(MessageClass::Response(ResponseType::Continue)),
        Just(MessageClass::Response(ResponseType::BadOption)),
        Just(MessageClass::Response(ResponseType::ServiceUnavailable)),
        Just(MessageClass::Reserved(0x08)),
        Just(MessageClass::Reserved(0x46)),
    ]
}

/// Options with values of legal length: (number, value length range, repeatable).
const OPTIONS: [(u16, usize, bool); 10] = [
    (2, 20, true),      // unknown elective
    (6, 3, false),      // Observe
    (8, 40, true),      // Location-Path
    (11, 300, true),    // Uri-Path (up to 255)
    (12, 2, false),     // Content-Format
    (14, 4, false),     // Max-Age
    (15, 30, true),     // Uri-Query
    (23, 3, false),     // Block2
    (60, 4, false),     // Size1
    (2_000, 600, true), // unknown elective, extended delta and length
];

fn options() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    proptest::collection::vec(
        (
            0..OPTIONS.len(),
            proptest::collection::vec(any::<u8>(), 0..=600),
        ),
        0..6,
    )
    .prop_map(|picks| {
        let mut out: Vec<(u16, Vec<u8>)> = Vec::new();
        for (index, mut value) in picks {
            let (number, max, repeatable) = OPTIONS[index];
            value.truncate(if number == 11 { 255 } else { max });
            if !repeatable && out.iter().any(|(n, _)| *n == number) {
                continue;
            }
            out.push((number, value));
        }
        out
    })
}

fn type_and_code() -> impl Strategy<Value = (MessageType, MessageClass)> {
    (message_type(), code()).prop_filter("the type can carry the code", |(kind, code)| match kind {
        MessageType::Confirmable | MessageType::NonConfirmable => true,
        MessageType::Acknowledgement => !matches!(
            code,
            MessageClass::Request(_) | MessageClass::Reserved(0x01..=0x1F)
        ),
        MessageType::Reset => false,
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        type_and_code(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
        options(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|((kind, code), mid, token, options, payload)| {
            let mut packet = Packet::new();
            packet.header.set_type(kind);
            packet.header.code = code;
            packet.header.message_id = mid;
            packet.set_token(token);
            for (number, value) in options {
                packet.add_option(CoapOption::from(number), value);
            }
            packet.payload = payload;
            packet
        })
}

fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok(packet) => {
            let encoded = encode(&packet).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode(&encoded), Ok(packet));
        }
        Err(err) => {
            prop_assert!(
                [
                    "short",
                    "version",
                    "token_length",
                    "empty_with_data",
                    "format",
                    "bad_option"
                ]
                .contains(&err.reason())
            );
            if let Some(reset) = err.reset() {
                prop_assert_eq!(reset.len(), 4);
                prop_assert_eq!(reset[0], 0x70);
                prop_assert_eq!(&reset[2..], &bytes[2..4]);
                prop_assert_eq!(bytes[0] & 0xF0, 0x40);
            }
            if let Some(answer) = err.answer() {
                prop_assert!(decode(&answer).is_ok());
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn packets_round_trip(packet in packet()) {
        let bytes = encode(&packet).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode(&bytes), Ok(packet));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_decode(&bytes)?;
    }

    #[test]
    fn decode_never_panics_on_mutated_messages(
        packet in packet(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = encode(&packet).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        check_decode(&bytes)?;
        bytes.truncate(cut % (bytes.len() + 1));
        check_decode(&bytes)?;
    }

    #[test]
    fn block_values_round_trip(num in 0..=MAX_NUM, more in any::<bool>(), szx in 0u8..=6) {
        let value = BlockValue::new(num, more, szx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = value.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(bytes.len() <= 3);
        prop_assert!(bytes.first() != Some(&0));
        prop_assert_eq!(BlockValue::decode(&bytes), Ok(value));
    }

    #[test]
    fn block_value_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..5)) {
        match BlockValue::decode(&bytes) {
            Ok(value) => {
                let again = value.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(BlockValue::decode(&again), Ok(value));
            }
            Err(_) => prop_assert!(bytes.len() > 3 || bytes.last().is_some_and(|b| b & 7 == 7)),
        }
    }

    #[test]
    fn block_slices_reassemble_into_the_body(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        szx in 0u8..=6,
    ) {
        let mut assembler = Block1Assembler::new(4096);
        let mut joined = Vec::new();
        let mut num = 0;
        loop {
            let (slice, more) = block_of(&body, num, szx).ok_or_else(|| TestCaseError::fail("block missing"))?;
            joined.extend_from_slice(slice);
            let value = BlockValue::new(num, more, szx).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let progress = assembler.push(value, slice).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if !more {
                prop_assert_eq!(progress, Block1Progress::Complete(body.clone()));
                break;
            }
            prop_assert_eq!(progress, Block1Progress::Continue);
            num += 1;
        }
        prop_assert_eq!(&joined, &body);
        prop_assert_eq!(block_of(&body, num + 1, szx), None);
    }

    #[test]
    fn block_options_survive_a_packet(num in 0..=MAX_NUM, more in any::<bool>(), szx in 0u8..=6) {
        let value = BlockValue { num, more, szx };
        let mut packet = message::empty_ack(1);
        packet.header.code = MessageClass::Response(ResponseType::Continue);
        block::set_block1(&mut packet, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = encode(&packet).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(block::block1(&back), Ok(Some(value)));
    }

    #[test]
    fn observe_values_round_trip(value in 0..=observe::MAX_VALUE) {
        let bytes = observe::encode(value);
        prop_assert!(bytes.len() <= 3);
        prop_assert_eq!(observe::decode(&bytes), Ok(value));
    }

    #[test]
    fn freshness_is_antisymmetric(v1 in 0..=observe::MAX_VALUE, v2 in 0..=observe::MAX_VALUE) {
        let t = Instant::now();
        let forward = observe::is_newer(v1, t, v2, t);
        let backward = observe::is_newer(v2, t, v1, t);
        let distance = v1.abs_diff(v2);
        if v1 == v2 || distance == 1 << 23 {
            prop_assert!(!forward && !backward);
        } else {
            prop_assert!(forward != backward);
        }
    }

    #[test]
    fn link_parser_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = link::parse(&text, 16, 256);
    }

    #[test]
    fn link_parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(links) = link::parse_bytes(&bytes, 16, 256) {
            let _ = lwm2m_objects(&links);
        }
    }

    #[test]
    fn parsed_links_render_and_parse_back(text in r#"[</>;,="a-z0-9 \\.\t]{0,120}"#) {
        if let Ok(links) = link::parse(&text, 64, 1024) {
            let rendered = render(&links);
            prop_assert_eq!(link::parse(&rendered, 64, 1024), Ok(links.clone()));
            let _ = lwm2m_objects(&links);
        }
    }

    #[test]
    fn lwm2m_objects_are_read_from_rendered_paths(
        objects in proptest::collection::vec((0u16..=65_534, proptest::option::of(0u16..=65_534)), 0..20),
        prefix in prop_oneof![Just(""), Just("/lwm2m")],
    ) {
        let mut text = format!("<{}/>;rt=\"oma.lwm2m\"", prefix);
        for (object, instance) in &objects {
            match instance {
                Some(i) => text.push_str(&format!(",<{prefix}/{object}/{i}>")),
                None => text.push_str(&format!(",<{prefix}/{object}>")),
            }
        }
        let links = link::parse(&text, 64, 4096).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let found: Vec<(u16, Option<u16>)> =
            lwm2m_objects(&links).into_iter().map(|o| (o.object, o.instance)).collect();
        prop_assert_eq!(found, objects);
    }

    #[test]
    fn lwm2m_query_parsers_never_panic(params in proptest::collection::vec("\\PC{0,20}", 0..8)) {
        let query: Vec<&str> = params.iter().map(String::as_str).collect();
        let _ = parse_register(&query, &(60..=86_400));
        let _ = parse_update(&query, Lwm2mVersion::V1_1, &(60..=86_400));
    }
}
