//! The data of PCP messages that carry more than a single result byte
//! (`spec/device-management.md §15.3`).
//!
//! These structs are the payloads of the [`Message`](super::Message) variants for codes 19, 20,
//! 21 and 24. Most have public fields because any combination of values encodes to a valid
//! frame; [`ChunkResponse`] keeps its fields private so that a refusal can never carry data.

use super::chunk::ChunkPlan;
use super::error::{Error, Result};
use super::frame::MAX_DATA_LEN;
use super::result::{ChunkResult, QueryVersionResult, UpgradeResult};
use super::version::Version;

/// Response to message 19: the device's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryVersionResponse {
    /// Whether the device handled the query.
    pub result: QueryVersionResult,
    /// The version the device runs.
    pub version: Version,
}

/// Request of message 20: the platform announces the target version and how it is chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NewVersionRequest {
    /// The version the device should upgrade to.
    pub version: Version,
    /// Bytes per chunk; 32..=500 for packages the platform plans (`spec/device-management.md
    /// §15.5`). The decoder accepts any value so that it never rejects a well-formed frame.
    pub chunk_size: u16,
    /// Number of chunks in the package.
    pub chunk_count: u16,
    /// Deprecated package check code; the platform always sends `0x0000`.
    pub check_code: u16,
}

impl NewVersionRequest {
    /// Builds the notification for a package split according to `plan`, with the check code set
    /// to zero as `spec/device-management.md §15.3` requires.
    #[must_use]
    pub const fn new(version: Version, plan: &ChunkPlan) -> Self {
        Self {
            version,
            chunk_size: plan.chunk_size(),
            chunk_count: plan.chunk_count(),
            check_code: 0,
        }
    }
}

/// Request of message 21: the device asks for one chunk of the target version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRequest {
    /// The target version, as the device received it in message 20.
    pub version: Version,
    /// The 0-based chunk index.
    pub index: u16,
}

/// Response to message 21: one chunk, or the reason there is none.
///
/// Chunk data accompanies only the result `0x00`; refusals are always exactly three bytes long
/// (`spec/device-management.md §24` item 21). The constructors enforce this and the 65532-byte
/// limit left by the length field, so encoding never fails.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkResponse {
    result: ChunkResult,
    index: u16,
    data: Vec<u8>,
}

impl ChunkResponse {
    /// The largest chunk the frame's length field leaves room for (65535 minus the result byte
    /// and the index).
    pub const MAX_DATA_LEN: usize = MAX_DATA_LEN - 3;

    /// Builds a successful response carrying `data` for chunk `index`.
    ///
    /// Fails with [`Error::DataTooLong`] past [`ChunkResponse::MAX_DATA_LEN`] bytes.
    pub fn chunk(index: u16, data: impl Into<Vec<u8>>) -> Result<Self> {
        Self::new(ChunkResult::Success, index, data)
    }

    /// Builds a response without data, normally a refusal such as [`ChunkResult::NoSuchChunk`].
    /// With [`ChunkResult::Success`] it describes an empty chunk.
    #[must_use]
    pub const fn refused(index: u16, result: ChunkResult) -> Self {
        Self {
            result,
            index,
            data: Vec::new(),
        }
    }

    /// Builds a response from its parts.
    ///
    /// Fails with [`Error::DataOnRefusedChunk`] if a non-zero result comes with data, and with
    /// [`Error::DataTooLong`] past [`ChunkResponse::MAX_DATA_LEN`] bytes.
    pub fn new(result: ChunkResult, index: u16, data: impl Into<Vec<u8>>) -> Result<Self> {
        let data = data.into();
        if !result.is_success() && !data.is_empty() {
            return Err(Error::DataOnRefusedChunk {
                result: result.as_u8(),
                len: data.len(),
            });
        }
        if data.len() > Self::MAX_DATA_LEN {
            return Err(Error::DataTooLong {
                len: data.len(),
                max: Self::MAX_DATA_LEN,
            });
        }
        Ok(Self {
            result,
            index,
            data,
        })
    }

    /// The platform's result code.
    #[must_use]
    pub const fn result(&self) -> ChunkResult {
        self.result
    }

    /// The chunk index, echoing the request.
    #[must_use]
    pub const fn index(&self) -> u16 {
        self.index
    }

    /// The chunk data; empty for refusals.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the chunk data out of the response.
    #[must_use]
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// Request of message 24: the device reports the outcome of the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpgradeResultRequest {
    /// The outcome reported by the device.
    pub result: UpgradeResult,
    /// The version the device runs now.
    pub version: Version,
}
