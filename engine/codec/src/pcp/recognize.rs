//! Telling PCP frames apart from business data on the uplink (`spec/device-management.md §15.9`).
//!
//! PCP shares its channel with codec-encoded business data (§15.8), so the engine's CoAP and MQTT
//! uplink paths run every payload from a PCP-capable device through [`recognize_uplink`] before
//! the codec plugin sees it (§24 item 18). Steps 1 and 2 of §15.9 (does the device's profile
//! declare software upgrade, and is its protocol PCP?) need the device profile and stay with the
//! caller; this module performs steps 3–8 on the bytes alone.

use super::message::Message;

/// The outcome of uplink recognition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recognized {
    /// The payload is a valid PCP message from the device.
    Pcp(Message),
    /// The payload is business data: the caller hands the original bytes, unchanged, to the
    /// codec plugin. It is never dropped.
    Business,
}

impl Recognized {
    /// Whether the payload was recognised as PCP.
    #[must_use]
    pub const fn is_pcp(&self) -> bool {
        matches!(self, Self::Pcp(_))
    }
}

/// Classifies an uplink payload as PCP or business data, following steps 3–8 of
/// `spec/device-management.md §15.9`.
///
/// The payload is PCP only if it starts with `0xFFFE`, its version byte's low nibble is 1, its
/// code is 19..=24, its checksum is right and its length field matches; the first check that fails
/// makes it business data. In addition, a frame that passes all five but cannot be read as the
/// uplink message its code names (for example a 24 request with two data bytes, or a version field
/// with non-ASCII text) is also returned as business data, since it is not a usable PCP message
/// and must not be lost. Never panics, whatever the input.
///
/// Callers that need to know why a payload was not PCP can call
/// [`Message::decode_uplink`] instead, whose error names the failed check.
#[must_use]
pub fn recognize_uplink(payload: &[u8]) -> Recognized {
    match Message::decode_uplink(payload) {
        Ok(message) => Recognized::Pcp(message),
        Err(_) => Recognized::Business,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcp::crc;
    use crate::pcp::{ChunkRequest, DownloadStatus, Version};

    fn bytes(hex_str: &str) -> Vec<u8> {
        hex::decode(hex_str).expect("test literal is valid hex")
    }

    /// Rewrites the checksum so that only the deliberate defect remains.
    fn fix_checksum(mut frame: Vec<u8>) -> Vec<u8> {
        let crc = crc::frame_checksum(&frame).to_be_bytes();
        frame[4..6].copy_from_slice(&crc);
        frame
    }

    #[test]
    fn uplink_vectors_are_pcp() {
        let chunk_request = bytes("FFFE01155618001256312E300000000000000000000000000000");
        assert_eq!(
            recognize_uplink(&chunk_request),
            Recognized::Pcp(Message::ChunkRequest(ChunkRequest {
                version: Version::new("V1.0").expect("valid"),
                index: 0,
            }))
        );
        assert_eq!(
            recognize_uplink(&bytes("FFFE0116850E000100")),
            Recognized::Pcp(Message::DownloadResultRequest(DownloadStatus::Success))
        );
        for uplink in [
            "FFFE01138DE300110056302E39000000000000000000000000",
            "FFFE0114D768000100",
            "FFFE0117B725000100",
            "FFFE0118C7D200110056312E30000000000000000000000000",
        ] {
            assert!(recognize_uplink(&bytes(uplink)).is_pcp(), "{uplink}");
        }
    }

    #[test]
    fn ordinary_business_payloads() {
        for payload in [&b""[..], b"\xFF", b"\xFF\xFE", b"{\"temp\":21}", &[0u8; 64]] {
            assert_eq!(recognize_uplink(payload), Recognized::Business);
        }
    }

    #[test]
    fn marker_with_bad_checksum_is_business() {
        let mut frame = bytes("FFFE0116850E000100");
        frame[5] ^= 0x01;
        assert_eq!(recognize_uplink(&frame), Recognized::Business);
    }

    #[test]
    fn marker_with_bad_length_is_business() {
        // Length field 2 but one data byte, checksum valid.
        let frame = fix_checksum(bytes("FFFE01160000000200"));
        assert_eq!(frame.len(), 9);
        assert_eq!(recognize_uplink(&frame), Recognized::Business);
        // Trailing byte after a valid frame, checksum recomputed over everything.
        let frame = fix_checksum(bytes("FFFE0116000000010000"));
        assert_eq!(recognize_uplink(&frame), Recognized::Business);
    }

    #[test]
    fn marker_with_bad_version_is_business() {
        for version in ["00", "02", "10", "FF"] {
            let frame = fix_checksum(bytes(&format!("FFFE{version}160000000100")));
            assert_eq!(recognize_uplink(&frame), Recognized::Business, "{version}");
        }
    }

    #[test]
    fn reserved_version_bits_still_pcp() {
        let frame = fix_checksum(bytes("FFFE21160000000100"));
        assert!(recognize_uplink(&frame).is_pcp());
    }

    #[test]
    fn marker_with_bad_code_is_business() {
        for code in [0x00u8, 0x12, 0x19, 0x7F, 0x80, 0xFF] {
            let frame = fix_checksum(bytes(&format!("FFFE01{code:02X}0000000100")));
            assert_eq!(recognize_uplink(&frame), Recognized::Business, "{code}");
        }
    }

    #[test]
    fn short_payload_with_marker_is_business() {
        for len in 0..8 {
            let frame = &bytes("FFFE01134C9A0000")[..len];
            assert_eq!(recognize_uplink(frame), Recognized::Business);
        }
    }

    #[test]
    fn valid_frame_with_unusable_body_is_business() {
        // A 24 upgrade report with two data bytes instead of 17.
        let frame = fix_checksum(bytes("FFFE011800000002000A"));
        assert_eq!(recognize_uplink(&frame), Recognized::Business);
        // A 21 chunk request whose version is not ASCII.
        let frame = fix_checksum(bytes(
            "FFFE0115000000125631FF300000000000000000000000000000",
        ));
        assert_eq!(recognize_uplink(&frame), Recognized::Business);
    }

    #[test]
    fn downlink_only_shapes_are_not_taken_for_uplink() {
        // The 19 request (no data) is a downlink; on the uplink a 19 frame is a response.
        assert_eq!(
            recognize_uplink(&bytes("FFFE01134C9A0000")),
            Recognized::Business
        );
        // The refused chunk response is a downlink; as an uplink 21 it is a malformed request.
        assert_eq!(
            recognize_uplink(&bytes("FFFE0115586C0003810005")),
            Recognized::Business
        );
    }
}
