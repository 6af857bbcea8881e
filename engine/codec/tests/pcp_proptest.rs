//! Property tests of the PCP codec (`spec/device-management.md §15`): every message kind survives
//! an encode/decode round trip, and no input makes a decoder panic.

use fleetgate_codec::pcp::{
    ChunkPlan, ChunkRequest, ChunkResponse, ChunkResult, Direction, DownloadStatus, ExecuteResult,
    Frame, Message, MessageCode, MessageKind, NewVersionRequest, NewVersionResult,
    QueryVersionResponse, QueryVersionResult, Recognized, ReportAck, UpgradeResult,
    UpgradeResultRequest, Version, recognize_uplink,
};
use proptest::prelude::*;

fn version() -> impl Strategy<Value = Version> {
    proptest::collection::vec(1u8..=0x7F, 0..=Version::LEN).prop_map(|bytes| {
        let text: String = bytes.into_iter().map(char::from).collect();
        Version::new(&text).unwrap_or_default()
    })
}

fn chunk_response() -> impl Strategy<Value = ChunkResponse> {
    prop_oneof![
        (
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=600)
        )
            .prop_map(|(index, data)| {
                ChunkResponse::chunk(index, data)
                    .unwrap_or_else(|_| ChunkResponse::refused(index, ChunkResult::Success))
            }),
        (any::<u16>(), any::<u8>())
            .prop_map(|(index, r)| ChunkResponse::refused(index, ChunkResult::from_u8(r))),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::QueryVersionRequest),
        (any::<u8>(), version()).prop_map(|(r, version)| {
            Message::QueryVersionResponse(QueryVersionResponse {
                result: QueryVersionResult::from_u8(r),
                version,
            })
        }),
        (version(), any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
            |(version, chunk_size, chunk_count, check_code)| {
                Message::NewVersionRequest(NewVersionRequest {
                    version,
                    chunk_size,
                    chunk_count,
                    check_code,
                })
            }
        ),
        any::<u8>().prop_map(|r| Message::NewVersionResponse(NewVersionResult::from_u8(r))),
        (version(), any::<u16>())
            .prop_map(|(version, index)| Message::ChunkRequest(ChunkRequest { version, index })),
        chunk_response().prop_map(Message::ChunkResponse),
        any::<u8>().prop_map(|r| Message::DownloadResultRequest(DownloadStatus::from_u8(r))),
        any::<u8>().prop_map(|r| Message::DownloadResultResponse(ReportAck::from_u8(r))),
        Just(Message::ExecuteUpgradeRequest),
        any::<u8>().prop_map(|r| Message::ExecuteUpgradeResponse(ExecuteResult::from_u8(r))),
        (any::<u8>(), version()).prop_map(|(r, version)| {
            Message::UpgradeResultRequest(UpgradeResultRequest {
                result: UpgradeResult::from_u8(r),
                version,
            })
        }),
        any::<u8>().prop_map(|r| Message::UpgradeResultResponse(ReportAck::from_u8(r))),
    ]
}

fn decode_everything(bytes: &[u8]) {
    let _ = Frame::decode(bytes);
    let _ = Message::decode_uplink(bytes);
    let _ = Message::decode_downlink(bytes);
    let _ = recognize_uplink(bytes);
}

proptest! {
    #[test]
    fn message_round_trip(message in message()) {
        let encoded = message.encode();
        prop_assert_eq!(encoded.len(), message.encoded_len());
        let decoded = Message::decode(&encoded, message.direction());
        prop_assert_eq!(decoded.as_ref(), Ok(&message));

        let mut appended = vec![0xAB; 3];
        message.encode_into(&mut appended);
        prop_assert_eq!(&appended[3..], &encoded[..]);

        let frame = Frame::decode(&encoded);
        prop_assert_eq!(frame.map(|f| f.code()), Ok(message.code()));
        prop_assert_eq!(
            message.code().kind_when_travelling(message.direction()),
            message.kind()
        );
        if message.direction() == Direction::DeviceToPlatform {
            prop_assert_eq!(recognize_uplink(&encoded), Recognized::Pcp(message.clone()));
        }
    }

    #[test]
    fn requests_and_responses_travel_opposite_ways(message in message()) {
        let request_way = message.code().request_direction();
        match message.kind() {
            MessageKind::Request => prop_assert_eq!(message.direction(), request_way),
            MessageKind::Response => prop_assert_eq!(message.direction(), request_way.reverse()),
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        decode_everything(&bytes);
    }

    #[test]
    fn decode_never_panics_behind_a_valid_header(
        code in 19u8..=24,
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let code = MessageCode::from_u8(code).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let frame = Frame::new(code, &data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let encoded = frame.encode();
        prop_assert_eq!(Frame::decode(&encoded), Ok(frame));
        decode_everything(&encoded);
    }

    #[test]
    fn decode_never_panics_on_mutated_frames(
        message in message(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = message.encode();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        decode_everything(&bytes);
        bytes.truncate(cut % (bytes.len() + 1));
        decode_everything(&bytes);
    }

    #[test]
    fn version_text_round_trips(text in "[\\x01-\\x7F]{0,16}") {
        let version = Version::new(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(version.as_str(), text.as_str());
        prop_assert_eq!(Version::from_field(version.field()), Ok(version));
    }

    #[test]
    fn chunk_plan_covers_the_package(size in 1u64..=40_000_000, chunk_size in 0u32..=600) {
        match ChunkPlan::new(size, chunk_size) {
            Ok(plan) => {
                prop_assert!((32..=500).contains(&chunk_size));
                let s = u64::from(plan.chunk_size());
                let count = plan.chunk_count();
                prop_assert_eq!(u64::from(count), size.div_ceil(s));
                prop_assert!(count >= 1);
                let first = plan.range(0).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let last = plan.range(count - 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(first.start, 0);
                prop_assert_eq!(last.end, size);
                prop_assert!(last.end > last.start && last.end - last.start <= s);
                if count > 1 {
                    let before = plan.range(count - 2).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(before.end, last.start);
                    prop_assert_eq!(before.end - before.start, s);
                }
                prop_assert!(plan.range(count).is_err() || count == u16::MAX);
            }
            Err(_) => prop_assert!(
                !(32..=500).contains(&chunk_size) || size.div_ceil(u64::from(chunk_size)) > 65_535
            ),
        }
    }
}
