//! The PCP frame: an 8-byte header followed by the data area (`spec/device-management.md §15.2`).
//!
//! [`Frame`] is the untyped layer: it checks the header, checksum and length, and hands out the
//! data area as a borrowed slice without interpreting it. `message.rs` builds typed messages on
//! top of it, and `recognize.rs` relies on its check order, which follows recognition steps 3–7 of
//! §15.9 so that the error names the first check that failed.

use super::code::MessageCode;
use super::crc;
use super::error::{Error, Result};

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// The start marker every PCP frame begins with (`spec/device-management.md §15.1`).
pub const START_MARKER: u16 = 0xFFFE;

/// The protocol version carried in the low nibble of byte 2. Frames are sent with the reserved
/// high nibble set to zero, so the whole byte is `0x01`.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest data area the 16-bit length field can describe.
pub const MAX_DATA_LEN: usize = u16::MAX as usize;

/// A checked PCP frame whose data area borrows from the buffer it was decoded from.
///
/// A `Frame` always has a defined message code and a data area that fits the length field, so
/// encoding it cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame<'a> {
    code: MessageCode,
    data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Builds a frame from a code and a data area, failing with [`Error::DataTooLong`] if the data
    /// exceeds 65535 bytes.
    pub fn new(code: MessageCode, data: &'a [u8]) -> Result<Self> {
        if data.len() > MAX_DATA_LEN {
            return Err(Error::DataTooLong {
                len: data.len(),
                max: MAX_DATA_LEN,
            });
        }
        Ok(Self { code, data })
    }

    /// Checks a received buffer and splits it into code and data area.
    ///
    /// The buffer must hold exactly one frame. Checks run in the order of
    /// `spec/device-management.md §15.9` steps 3–7, after a length check for the header itself:
    /// [`Error::TooShort`], [`Error::BadMarker`], [`Error::BadVersion`], [`Error::UnknownCode`],
    /// [`Error::ChecksumMismatch`], [`Error::LengthMismatch`]. The reserved high nibble of the
    /// version byte is not checked, because step 4 looks at the low nibble only. The checksum
    /// covers every byte of the buffer, so trailing bytes fail the checksum or the length check.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let Some((header, data)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(Error::TooShort { len: bytes.len() });
        };
        let [m0, m1, version, code, c0, c1, l0, l1] = *header;
        let marker = u16::from_be_bytes([m0, m1]);
        if marker != START_MARKER {
            return Err(Error::BadMarker { found: marker });
        }
        if version & 0x0F != PROTOCOL_VERSION {
            return Err(Error::BadVersion { found: version });
        }
        let code = MessageCode::from_u8(code)?;
        let carried = u16::from_be_bytes([c0, c1]);
        let computed = crc::frame_checksum(bytes);
        if carried != computed {
            return Err(Error::ChecksumMismatch {
                expected: computed,
                actual: carried,
            });
        }
        let declared = u16::from_be_bytes([l0, l1]);
        if usize::from(declared) != data.len() {
            return Err(Error::LengthMismatch {
                declared,
                actual: data.len(),
            });
        }
        Ok(Self { code, data })
    }

    /// The message code.
    #[must_use]
    pub const fn code(&self) -> MessageCode {
        self.code
    }

    /// The data area, possibly empty.
    #[must_use]
    pub const fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The size of the encoded frame: header plus data area.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Encodes the frame into a new buffer.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded frame to `out`, leaving earlier contents alone.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = begin(out, self.code);
        out.extend_from_slice(self.data);
        finish(out, start);
    }
}

/// Appends a header with zeroed checksum and length to `out` and returns where the frame starts.
///
/// The caller appends the data area and then calls [`finish`].
pub(crate) fn begin(out: &mut Vec<u8>, code: MessageCode) -> usize {
    let start = out.len();
    let [m0, m1] = START_MARKER.to_be_bytes();
    out.extend_from_slice(&[m0, m1, PROTOCOL_VERSION, code.as_u8(), 0, 0, 0, 0]);
    start
}

/// Fills in the length and checksum of the frame that [`begin`] started at `start`.
///
/// Callers guarantee that the data area fits the length field; [`Frame::new`] and the message
/// types enforce it. Should that ever be violated the length saturates, producing a frame that
/// receivers reject, rather than a panic.
pub(crate) fn finish(out: &mut [u8], start: usize) {
    let Some(frame) = out.get_mut(start..) else {
        return;
    };
    let data_len = frame.len().saturating_sub(HEADER_LEN);
    let len = u16::try_from(data_len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(field) = frame.get_mut(6..8) {
        field.copy_from_slice(&len);
    }
    let checksum = crc::frame_checksum(frame).to_be_bytes();
    if let Some(field) = frame.get_mut(4..6) {
        field.copy_from_slice(&checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex_str: &str) -> Vec<u8> {
        hex::decode(hex_str).expect("test literal is valid hex")
    }

    #[test]
    fn decodes_empty_and_non_empty_frames() -> Result<()> {
        let query = bytes("FFFE01134C9A0000");
        let frame = Frame::decode(&query)?;
        assert_eq!(frame.code(), MessageCode::QueryVersion);
        assert!(frame.data().is_empty());

        let chunk = bytes("FFFE0115586C0003810005");
        let frame = Frame::decode(&chunk)?;
        assert_eq!(frame.code(), MessageCode::Chunk);
        assert_eq!(frame.data(), [0x81, 0x00, 0x05]);
        assert_eq!(frame.encode(), chunk);
        Ok(())
    }

    #[test]
    fn encode_into_appends() -> Result<()> {
        let mut out = vec![0xAA];
        Frame::new(MessageCode::ExecuteUpgrade, &[])?.encode_into(&mut out);
        assert_eq!(out, bytes("AAFFFE0117CF900000"));
        Ok(())
    }

    #[test]
    fn checks_run_in_recognition_order() {
        assert_eq!(
            Frame::decode(&bytes("FFFE01134C9A00")),
            Err(Error::TooShort { len: 7 })
        );
        assert_eq!(
            Frame::decode(&bytes("FFFF01134C9A0000")),
            Err(Error::BadMarker { found: 0xFFFF })
        );
        // Bad version beats bad code and bad checksum.
        assert_eq!(
            Frame::decode(&bytes("FFFE02FF00000000")),
            Err(Error::BadVersion { found: 0x02 })
        );
        assert_eq!(
            Frame::decode(&bytes("FFFE01124C9A0000")),
            Err(Error::UnknownCode { code: 0x12 })
        );
        assert_eq!(
            Frame::decode(&bytes("FFFE01130000FFFF")),
            Err(Error::ChecksumMismatch {
                expected: crc::frame_checksum(&bytes("FFFE01130000FFFF")),
                actual: 0
            })
        );
    }

    #[test]
    fn length_field_must_match_remaining_bytes() {
        // Declared length 1, no data; checksum computed so that only the length check fails.
        let mut frame = bytes("FFFE011300000001");
        let crc = crc::frame_checksum(&frame).to_be_bytes();
        frame[4..6].copy_from_slice(&crc);
        assert_eq!(
            Frame::decode(&frame),
            Err(Error::LengthMismatch {
                declared: 1,
                actual: 0
            })
        );
    }

    #[test]
    fn reserved_version_bits_are_tolerated() -> Result<()> {
        let mut frame = bytes("FFFE01134C9A0000");
        frame[2] = 0xF1;
        let crc = crc::frame_checksum(&frame).to_be_bytes();
        frame[4..6].copy_from_slice(&crc);
        assert_eq!(Frame::decode(&frame)?.code(), MessageCode::QueryVersion);
        Ok(())
    }

    #[test]
    fn data_area_limit() -> Result<()> {
        let max = vec![0u8; MAX_DATA_LEN];
        let frame = Frame::new(MessageCode::Chunk, &max)?;
        let encoded = frame.encode();
        assert_eq!(encoded.len(), HEADER_LEN + MAX_DATA_LEN);
        assert_eq!(&encoded[6..8], [0xFF, 0xFF]);
        assert_eq!(Frame::decode(&encoded)?, frame);

        let over = vec![0u8; MAX_DATA_LEN + 1];
        assert_eq!(
            Frame::new(MessageCode::Chunk, &over),
            Err(Error::DataTooLong {
                len: MAX_DATA_LEN + 1,
                max: MAX_DATA_LEN
            })
        );
        Ok(())
    }
}
