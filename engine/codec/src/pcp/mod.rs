//! PCP, the binary software-upgrade (SOTA) protocol of `spec/device-management.md §15`.
//!
//! PCP frames share the device's channel with business data and carry the six messages of a
//! software upgrade: version query (19), new-version notification (20), chunk request (21),
//! download report (22), execute (23) and upgrade report (24). This module is sans-I/O: it turns
//! bytes into typed [`Message`]s and back, and plans how a package is split into chunks.
//!
//! Layers, bottom up:
//!
//! - [`crc16`]: the guide's hybrid CRC-16 (§15.4);
//! - [`Frame`]: header, checksum and length checks, data area borrowed (§15.2);
//! - [`Message`]: typed requests and responses with their result codes and [`Version`] fields
//!   (§15.3);
//! - [`recognize_uplink`]: the PCP-or-business decision for uplink payloads (§15.9);
//! - [`ChunkPlan`]: chunk size, count and byte ranges of a package (§15.5).
//!
//! ```
//! use fleetgate_codec::pcp::{recognize_uplink, ChunkPlan, Message, NewVersionRequest, Recognized, Version};
//!
//! // Downlink: announce version V1.0 of a 1200-byte package.
//! let plan = ChunkPlan::with_default_chunk_size(1200)?;
//! let notify = Message::NewVersionRequest(NewVersionRequest::new(Version::new("V1.0")?, &plan));
//! let frame = notify.encode();
//! assert_eq!(&frame[..4], [0xFF, 0xFE, 0x01, 20]);
//!
//! // Uplink: the device asks for chunk 0.
//! let uplink = [
//!     0xFF, 0xFE, 0x01, 0x15, 0x56, 0x18, 0x00, 0x12, b'V', b'1', b'.', b'0',
//!     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00,
//! ];
//! match recognize_uplink(&uplink) {
//!     Recognized::Pcp(Message::ChunkRequest(req)) => assert_eq!(req.index, 0),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), fleetgate_codec::pcp::Error>(())
//! ```

mod chunk;
mod code;
pub(crate) mod crc;
mod error;
mod frame;
mod message;
mod payload;
mod recognize;
mod result;
mod version;

pub use chunk::{ChunkPlan, DEFAULT_CHUNK_SIZE, MAX_CHUNK_COUNT, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use code::{Direction, MessageCode, MessageKind};
pub use crc::crc16;
pub use error::{Error, ExpectedLen, Result};
pub use frame::{Frame, HEADER_LEN, MAX_DATA_LEN, PROTOCOL_VERSION, START_MARKER};
pub use message::Message;
pub use payload::{
    ChunkRequest, ChunkResponse, NewVersionRequest, QueryVersionResponse, UpgradeResultRequest,
};
pub use recognize::{Recognized, recognize_uplink};
pub use result::{
    ChunkResult, DownloadStatus, ExecuteResult, NewVersionResult, QueryVersionResult, ReportAck,
    UpgradeResult,
};
pub use version::Version;
