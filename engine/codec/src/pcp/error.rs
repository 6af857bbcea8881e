//! Errors of the PCP codec.
//!
//! Every way a PCP frame, message, version field or chunk plan can be wrong has its own variant,
//! and each variant cites the clause of `spec/device-management.md` it enforces. Callers on the
//! uplink path rarely look inside: `recognize_uplink` turns any error into "business data". The
//! variants exist so that logs, metrics and tests can say exactly which rule a frame broke.

use std::fmt;

use super::code::{MessageCode, MessageKind};

/// Shorthand for results whose error is the PCP codec [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while decoding, encoding or planning PCP traffic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input holds fewer bytes than the fixed 8-byte header (`spec/device-management.md §15.2`).
    #[error("PCP frame is {len} bytes long, shorter than the 8-byte header")]
    TooShort {
        /// Number of bytes received.
        len: usize,
    },

    /// The first two bytes are not the start marker `0xFFFE` (`spec/device-management.md §15.2`,
    /// recognition step 3 of §15.9).
    #[error("PCP start marker is {found:#06x}, expected 0xfffe")]
    BadMarker {
        /// The big-endian value of the first two bytes.
        found: u16,
    },

    /// The low nibble of the version byte is not protocol version 1
    /// (`spec/device-management.md §15.2`, recognition step 4 of §15.9).
    #[error("PCP version byte {found:#04x} does not carry protocol version 1 in its low nibble")]
    BadVersion {
        /// The version byte as received.
        found: u8,
    },

    /// The message code lies outside 19..=24 (`spec/device-management.md §15.3`, recognition
    /// step 5 of §15.9).
    #[error("PCP message code {code} is not defined; only 19..=24 are")]
    UnknownCode {
        /// The message code as received.
        code: u8,
    },

    /// The CRC carried in the frame differs from the one computed over the frame
    /// (`spec/device-management.md §15.4`, recognition step 6 of §15.9).
    #[error("PCP checksum mismatch: frame carries {actual:#06x}, computed {expected:#06x}")]
    ChecksumMismatch {
        /// The checksum computed over the received bytes with the checksum field zeroed.
        expected: u16,
        /// The checksum carried in bytes 4..6 of the frame.
        actual: u16,
    },

    /// The data-length field disagrees with the number of bytes after the header
    /// (`spec/device-management.md §15.2`, recognition step 7 of §15.9).
    #[error("PCP data length field says {declared} bytes but {actual} bytes follow the header")]
    LengthMismatch {
        /// The value of the data-length field.
        declared: u16,
        /// The number of bytes actually present after the header.
        actual: usize,
    },

    /// The frame is well formed but its data area has the wrong size for its message code and
    /// kind (`spec/device-management.md §15.3`).
    #[error("PCP {kind} for code {code} carries {actual} data bytes, expected {expected}")]
    WrongDataLength {
        /// The message code of the frame.
        code: MessageCode,
        /// Whether the frame was read as a request or as a response.
        kind: MessageKind,
        /// The size the message requires.
        expected: ExpectedLen,
        /// The size received.
        actual: usize,
    },

    /// A chunk response with a non-zero result carries chunk data, which
    /// `spec/device-management.md §15.3` (message 21) and §24 item 21 forbid.
    #[error(
        "PCP chunk response with result {result:#04x} carries {len} data bytes; refusals carry none"
    )]
    DataOnRefusedChunk {
        /// The non-zero result code.
        result: u8,
        /// The number of chunk-data bytes present.
        len: usize,
    },

    /// A data area would not fit the 16-bit data-length field (`spec/device-management.md §15.2`).
    #[error("PCP data area of {len} bytes exceeds the {max}-byte limit of its length field")]
    DataTooLong {
        /// The size that was asked for.
        len: usize,
        /// The largest size allowed in that place.
        max: usize,
    },

    /// A version string is longer than the 16-byte version field
    /// (`spec/device-management.md §15.3`, "Version fields").
    #[error("version string is {len} bytes long; PCP version fields hold at most 16")]
    VersionTooLong {
        /// The length of the rejected string in bytes.
        len: usize,
    },

    /// A version string or version field contains a byte outside 7-bit ASCII
    /// (`spec/device-management.md §15.3`, "Version fields").
    #[error("version contains the non-ASCII byte {byte:#04x}; PCP versions are ASCII")]
    VersionNotAscii {
        /// The first offending byte.
        byte: u8,
    },

    /// A version string contains a NUL byte, or a version field has a non-NUL byte after its NUL
    /// padding began (`spec/device-management.md §15.3`, "Version fields").
    #[error(
        "version has a NUL byte at offset {offset} followed by text; only trailing NUL padding is allowed"
    )]
    VersionInteriorNul {
        /// The offset of the first NUL byte.
        offset: usize,
    },

    /// A package of zero bytes cannot be split into chunks (`spec/device-management.md §15.5`).
    #[error("PCP package is empty; it must hold at least one byte")]
    EmptyPackage,

    /// The chunk size lies outside 32..=500 bytes (`spec/device-management.md §15.3`, message 20,
    /// and §24 item 25).
    #[error("PCP chunk size {size} is outside 32..=500 bytes")]
    ChunkSizeOutOfRange {
        /// The rejected chunk size.
        size: u32,
    },

    /// The package needs more chunks than the 16-bit chunk-count field can carry
    /// (`spec/device-management.md §15.5`).
    #[error(
        "PCP package of {package_size} bytes needs {count} chunks of {chunk_size} bytes; at most 65535 are allowed"
    )]
    TooManyChunks {
        /// The package size in bytes.
        package_size: u64,
        /// The chunk size in bytes.
        chunk_size: u16,
        /// The number of chunks the package would need.
        count: u64,
    },

    /// A chunk index is not below the chunk count (`spec/device-management.md §15.3`, message 21:
    /// the platform answers `0x81`).
    #[error("PCP chunk index {index} does not exist; the package has {count} chunks")]
    ChunkIndexOutOfRange {
        /// The requested index.
        index: u16,
        /// The number of chunks in the package.
        count: u16,
    },

    /// The package bytes handed to a chunk plan differ in size from the size the plan was made for.
    #[error("PCP package holds {actual} bytes but the chunk plan was made for {expected}")]
    PackageSizeMismatch {
        /// The size the plan was made for.
        expected: u64,
        /// The size of the bytes supplied.
        actual: usize,
    },
}

/// The data-area size a message requires, as reported by [`Error::WrongDataLength`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedLen {
    /// Exactly this many bytes.
    Exactly(usize),
    /// This many bytes or more.
    AtLeast(usize),
}

impl fmt::Display for ExpectedLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exactly(n) => write!(f, "exactly {n}"),
            Self::AtLeast(n) => write!(f, "at least {n}"),
        }
    }
}
