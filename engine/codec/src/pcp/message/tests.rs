//! Tests of the message codec against the verified vectors of `spec/device-management.md §15.4`.

use super::*;
use crate::pcp::ChunkPlan;
use crate::pcp::Direction::{DeviceToPlatform, PlatformToDevice};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn bytes(hex_str: &str) -> Vec<u8> {
    hex::decode(hex_str).expect("test literal is valid hex")
}

fn v(text: &str) -> Version {
    Version::new(text).expect("test version is valid")
}

/// Every frame of the test-vector table, with the direction it travels and its typed form.
fn vectors() -> Vec<(&'static str, &'static str, Direction, Message)> {
    vec![
        (
            "19 request",
            "FFFE01134C9A0000",
            PlatformToDevice,
            Message::QueryVersionRequest,
        ),
        (
            "19 response, result 00, version V0.9",
            "FFFE01138DE300110056302E39000000000000000000000000",
            DeviceToPlatform,
            Message::QueryVersionResponse(QueryVersionResponse {
                result: QueryVersionResult::Success,
                version: v("V0.9"),
            }),
        ),
        (
            "20 request, V1.0, chunk 500, count 1, check 0",
            "FFFE01143AE6001656312E3000000000000000000000000001F400010000",
            PlatformToDevice,
            Message::NewVersionRequest(NewVersionRequest {
                version: v("V1.0"),
                chunk_size: 500,
                chunk_count: 1,
                check_code: 0,
            }),
        ),
        (
            "20 response, allowed",
            "FFFE0114D768000100",
            DeviceToPlatform,
            Message::NewVersionResponse(NewVersionResult::Allowed),
        ),
        (
            "21 request, V1.0, index 0",
            "FFFE01155618001256312E300000000000000000000000000000",
            DeviceToPlatform,
            Message::ChunkRequest(ChunkRequest {
                version: v("V1.0"),
                index: 0,
            }),
        ),
        (
            "21 response, index 0, data",
            "FFFE0115E107001300000048454C4C4F2C20496F5420534F544121",
            PlatformToDevice,
            Message::ChunkResponse(
                ChunkResponse::chunk(0, *b"HELLO, IoT SOTA!").expect("small chunk"),
            ),
        ),
        (
            "21 response, 0x81, index 5",
            "FFFE0115586C0003810005",
            PlatformToDevice,
            Message::ChunkResponse(ChunkResponse::refused(5, ChunkResult::NoSuchChunk)),
        ),
        (
            "22 request, success",
            "FFFE0116850E000100",
            DeviceToPlatform,
            Message::DownloadResultRequest(DownloadStatus::Success),
        ),
        (
            "22 response, success",
            "FFFE0116850E000100",
            PlatformToDevice,
            Message::DownloadResultResponse(ReportAck::Success),
        ),
        (
            "23 request",
            "FFFE0117CF900000",
            PlatformToDevice,
            Message::ExecuteUpgradeRequest,
        ),
        (
            "23 response, success",
            "FFFE0117B725000100",
            DeviceToPlatform,
            Message::ExecuteUpgradeResponse(ExecuteResult::Accepted),
        ),
        (
            "24 request, success, V1.0",
            "FFFE0118C7D200110056312E30000000000000000000000000",
            DeviceToPlatform,
            Message::UpgradeResultRequest(UpgradeResultRequest {
                result: UpgradeResult::Success,
                version: v("V1.0"),
            }),
        ),
        (
            "24 response, success",
            "FFFE0118AFA1000100",
            PlatformToDevice,
            Message::UpgradeResultResponse(ReportAck::Success),
        ),
    ]
}

#[test]
fn every_vector_decodes_to_its_typed_message() -> TestResult {
    for (name, hex_str, travel, expected) in vectors() {
        let decoded = Message::decode(&bytes(hex_str), travel)?;
        assert_eq!(decoded, expected, "{name}");
        assert_eq!(decoded.direction(), travel, "{name}");
    }
    Ok(())
}

#[test]
fn every_vector_encodes_to_its_exact_bytes() {
    for (name, hex_str, _, message) in vectors() {
        let expected = bytes(hex_str);
        assert_eq!(message.encode(), expected, "{name}");
        assert_eq!(message.encoded_len(), expected.len(), "{name}");
    }
}

#[test]
fn uplink_and_downlink_helpers_pick_the_direction() -> TestResult {
    let frame = bytes("FFFE0116850E000100");
    assert_eq!(
        Message::decode_uplink(&frame)?,
        Message::DownloadResultRequest(DownloadStatus::Success)
    );
    assert_eq!(
        Message::decode_downlink(&frame)?,
        Message::DownloadResultResponse(ReportAck::Success)
    );
    Ok(())
}

#[test]
fn kind_code_and_direction_of_every_variant() {
    for (name, _, travel, message) in vectors() {
        assert_eq!(
            message.kind(),
            message.code().kind_when_travelling(travel),
            "{name}"
        );
    }
}

#[test]
fn encode_into_appends_after_existing_bytes() {
    let mut out = bytes("0102");
    Message::ExecuteUpgradeRequest.encode_into(&mut out);
    Message::UpgradeResultResponse(ReportAck::Success).encode_into(&mut out);
    assert_eq!(out, bytes("0102FFFE0117CF900000FFFE0118AFA1000100"));
}

#[test]
fn wrong_data_length_for_the_code() {
    // A well-formed 19 frame with one data byte: fine as a frame, wrong as a 19 request.
    let frame = Frame::new(MessageCode::QueryVersion, &[0]).map(|f| f.encode());
    let frame = frame.expect("small frame");
    assert_eq!(
        Message::decode(&frame, PlatformToDevice),
        Err(Error::WrongDataLength {
            code: MessageCode::QueryVersion,
            kind: MessageKind::Request,
            expected: ExpectedLen::Exactly(0),
            actual: 1,
        })
    );
    // Read as an uplink it is a response, which needs 17 bytes.
    assert_eq!(
        Message::decode(&frame, DeviceToPlatform),
        Err(Error::WrongDataLength {
            code: MessageCode::QueryVersion,
            kind: MessageKind::Response,
            expected: ExpectedLen::Exactly(17),
            actual: 1,
        })
    );
}

#[test]
fn chunk_response_needs_three_bytes() {
    let frame = Frame::new(MessageCode::Chunk, &[0, 0])
        .map(|f| f.encode())
        .expect("small frame");
    assert_eq!(
        Message::decode_downlink(&frame),
        Err(Error::WrongDataLength {
            code: MessageCode::Chunk,
            kind: MessageKind::Response,
            expected: ExpectedLen::AtLeast(3),
            actual: 2,
        })
    );
}

#[test]
fn refused_chunk_with_data_is_rejected() {
    let frame = Frame::new(MessageCode::Chunk, &[0x80, 0, 1, 0xAA])
        .map(|f| f.encode())
        .expect("small frame");
    assert_eq!(
        Message::decode_downlink(&frame),
        Err(Error::DataOnRefusedChunk {
            result: 0x80,
            len: 1
        })
    );
    assert_eq!(
        ChunkResponse::new(ChunkResult::TaskNotFound, 1, vec![0xAA]),
        Err(Error::DataOnRefusedChunk {
            result: 0x80,
            len: 1
        })
    );
}

#[test]
fn refused_chunk_frame_is_three_data_bytes() {
    let message = Message::ChunkResponse(ChunkResponse::refused(7, ChunkResult::TaskNotFound));
    let encoded = message.encode();
    assert_eq!(encoded.len(), HEADER_LEN + 3);
    assert_eq!(&encoded[6..], [0x00, 0x03, 0x80, 0x00, 0x07]);
}

#[test]
fn chunk_data_limit() -> TestResult {
    let max = ChunkResponse::chunk(1, vec![0x5A; ChunkResponse::MAX_DATA_LEN])?;
    let encoded = Message::from(max.clone()).encode();
    assert_eq!(&encoded[6..8], [0xFF, 0xFF]);
    assert_eq!(
        Message::decode_downlink(&encoded)?,
        Message::ChunkResponse(max)
    );
    assert_eq!(
        ChunkResponse::chunk(1, vec![0; ChunkResponse::MAX_DATA_LEN + 1]),
        Err(Error::DataTooLong {
            len: ChunkResponse::MAX_DATA_LEN + 1,
            max: ChunkResponse::MAX_DATA_LEN
        })
    );
    Ok(())
}

#[test]
fn unlisted_result_codes_are_kept() -> TestResult {
    let frame = Frame::new(MessageCode::NewVersion, &[0x42])?.encode();
    assert_eq!(
        Message::decode_uplink(&frame)?,
        Message::NewVersionResponse(NewVersionResult::Other(0x42))
    );
    let mut data = vec![0x7F];
    data.extend_from_slice(v("V2.0").field());
    let frame = Frame::new(MessageCode::UpgradeResult, &data)?.encode();
    assert_eq!(
        Message::decode_uplink(&frame)?,
        Message::UpgradeResultRequest(UpgradeResultRequest {
            result: UpgradeResult::InternalError,
            version: v("V2.0"),
        })
    );
    Ok(())
}

#[test]
fn bad_version_field_is_rejected() -> TestResult {
    let mut data = vec![0x00];
    data.extend_from_slice(b"V1.0\0\0\0\0\0\0\0\0\0\0\0\xFF");
    let frame = Frame::new(MessageCode::UpgradeResult, &data)?.encode();
    assert_eq!(
        Message::decode_uplink(&frame),
        Err(Error::VersionInteriorNul { offset: 4 })
    );
    let mut data = vec![0u8; 18];
    data[..5].copy_from_slice(b"V\xE91.0");
    let frame = Frame::new(MessageCode::Chunk, &data)?.encode();
    assert_eq!(
        Message::decode_uplink(&frame),
        Err(Error::VersionNotAscii { byte: 0xE9 })
    );
    Ok(())
}

#[test]
fn new_version_request_from_plan() -> TestResult {
    let plan = ChunkPlan::new(1001, 500)?;
    let request = NewVersionRequest::new(v("V1.0"), &plan);
    assert_eq!(request.chunk_size, 500);
    assert_eq!(request.chunk_count, 3);
    assert_eq!(request.check_code, 0);
    Ok(())
}
