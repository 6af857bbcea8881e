//! Typed PCP messages: the requests and responses of codes 19..=24
//! (`spec/device-management.md §15.3`).
//!
//! [`Message`] has one variant per (code, request/response) pair. Because a response repeats its
//! request's code and some pairs even share a data size (message 22's request and response are
//! both one byte), decoding needs the direction the frame travelled: see [`Message::decode`]. The
//! engine's uplink path decodes with [`Direction::DeviceToPlatform`] (usually through
//! `recognize_uplink`), and the OTA scheduler builds messages and encodes them for the downlink.

use super::code::{Direction, MessageCode, MessageKind};
use super::error::{Error, ExpectedLen, Result};
use super::frame::{self, Frame, HEADER_LEN};
use super::payload::{
    ChunkRequest, ChunkResponse, NewVersionRequest, QueryVersionResponse, UpgradeResultRequest,
};
use super::result::{
    ChunkResult, DownloadStatus, ExecuteResult, NewVersionResult, QueryVersionResult, ReportAck,
    UpgradeResult,
};
use super::version::Version;

/// A typed PCP message (`spec/device-management.md §15.3`).
///
/// Variant names pair the message with its half of the exchange; the comment on each gives the
/// code and the direction it travels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// 19 request, platform to device: no data.
    QueryVersionRequest,
    /// 19 response, device to platform: result and current version.
    QueryVersionResponse(QueryVersionResponse),
    /// 20 request, platform to device: target version and chunking.
    NewVersionRequest(NewVersionRequest),
    /// 20 response, device to platform: whether the upgrade is allowed.
    NewVersionResponse(NewVersionResult),
    /// 21 request, device to platform: which chunk to send.
    ChunkRequest(ChunkRequest),
    /// 21 response, platform to device: the chunk or a refusal.
    ChunkResponse(ChunkResponse),
    /// 22 request, device to platform: the download status.
    DownloadResultRequest(DownloadStatus),
    /// 22 response, platform to device.
    DownloadResultResponse(ReportAck),
    /// 23 request, platform to device: no data.
    ExecuteUpgradeRequest,
    /// 23 response, device to platform: whether the device starts installing.
    ExecuteUpgradeResponse(ExecuteResult),
    /// 24 request, device to platform: the upgrade outcome and current version.
    UpgradeResultRequest(UpgradeResultRequest),
    /// 24 response, platform to device.
    UpgradeResultResponse(ReportAck),
}

impl Message {
    /// The message code on the wire.
    #[must_use]
    pub const fn code(&self) -> MessageCode {
        match self {
            Self::QueryVersionRequest | Self::QueryVersionResponse(_) => MessageCode::QueryVersion,
            Self::NewVersionRequest(_) | Self::NewVersionResponse(_) => MessageCode::NewVersion,
            Self::ChunkRequest(_) | Self::ChunkResponse(_) => MessageCode::Chunk,
            Self::DownloadResultRequest(_) | Self::DownloadResultResponse(_) => {
                MessageCode::DownloadResult
            }
            Self::ExecuteUpgradeRequest | Self::ExecuteUpgradeResponse(_) => {
                MessageCode::ExecuteUpgrade
            }
            Self::UpgradeResultRequest(_) | Self::UpgradeResultResponse(_) => {
                MessageCode::UpgradeResult
            }
        }
    }

    /// Whether this is a request or a response.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        match self {
            Self::QueryVersionRequest
            | Self::NewVersionRequest(_)
            | Self::ChunkRequest(_)
            | Self::DownloadResultRequest(_)
            | Self::ExecuteUpgradeRequest
            | Self::UpgradeResultRequest(_) => MessageKind::Request,
            Self::QueryVersionResponse(_)
            | Self::NewVersionResponse(_)
            | Self::ChunkResponse(_)
            | Self::DownloadResultResponse(_)
            | Self::ExecuteUpgradeResponse(_)
            | Self::UpgradeResultResponse(_) => MessageKind::Response,
        }
    }

    /// The direction this message travels (`spec/device-management.md §15.7`).
    #[must_use]
    pub const fn direction(&self) -> Direction {
        let request = self.code().request_direction();
        match self.kind() {
            MessageKind::Request => request,
            MessageKind::Response => request.reverse(),
        }
    }

    /// The size of the data area this message encodes to.
    #[must_use]
    pub fn data_len(&self) -> usize {
        match self {
            Self::QueryVersionRequest | Self::ExecuteUpgradeRequest => 0,
            Self::NewVersionResponse(_)
            | Self::DownloadResultRequest(_)
            | Self::DownloadResultResponse(_)
            | Self::ExecuteUpgradeResponse(_)
            | Self::UpgradeResultResponse(_) => 1,
            Self::QueryVersionResponse(_) | Self::UpgradeResultRequest(_) => 1 + Version::LEN,
            Self::ChunkRequest(_) => Version::LEN + 2,
            Self::NewVersionRequest(_) => Version::LEN + 6,
            Self::ChunkResponse(r) => 3 + r.data().len(),
        }
    }

    /// The size of the whole encoded frame.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data_len()
    }

    /// Encodes the message as a complete frame in a new buffer.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the message, as a complete frame, to `out`, leaving earlier contents alone.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let start = frame::begin(out, self.code());
        match self {
            Self::QueryVersionRequest | Self::ExecuteUpgradeRequest => {}
            Self::QueryVersionResponse(QueryVersionResponse { result, version }) => {
                out.push(result.as_u8());
                out.extend_from_slice(version.field());
            }
            Self::UpgradeResultRequest(UpgradeResultRequest { result, version }) => {
                out.push(result.as_u8());
                out.extend_from_slice(version.field());
            }
            Self::NewVersionRequest(n) => {
                out.extend_from_slice(n.version.field());
                out.extend_from_slice(&n.chunk_size.to_be_bytes());
                out.extend_from_slice(&n.chunk_count.to_be_bytes());
                out.extend_from_slice(&n.check_code.to_be_bytes());
            }
            Self::NewVersionResponse(result) => out.push(result.as_u8()),
            Self::ChunkRequest(ChunkRequest { version, index }) => {
                out.extend_from_slice(version.field());
                out.extend_from_slice(&index.to_be_bytes());
            }
            Self::ChunkResponse(r) => {
                out.push(r.result().as_u8());
                out.extend_from_slice(&r.index().to_be_bytes());
                out.extend_from_slice(r.data());
            }
            Self::DownloadResultRequest(status) => out.push(status.as_u8()),
            Self::DownloadResultResponse(ack) | Self::UpgradeResultResponse(ack) => {
                out.push(ack.as_u8());
            }
            Self::ExecuteUpgradeResponse(result) => out.push(result.as_u8()),
        }
        frame::finish(out, start);
    }

    /// Decodes one complete frame that travelled in direction `travel`.
    ///
    /// The direction decides whether the frame is read as a request or a response (see
    /// [`MessageCode::kind_when_travelling`]). Frame errors come first, in the order of
    /// `spec/device-management.md §15.9`; then the data area must have the size the message
    /// requires ([`Error::WrongDataLength`]), version fields must be valid ([`Version::from_field`])
    /// and a refused chunk must carry no data ([`Error::DataOnRefusedChunk`]). Unlisted result
    /// codes are kept, not rejected.
    pub fn decode(bytes: &[u8], travel: Direction) -> Result<Self> {
        Self::from_frame(&Frame::decode(bytes)?, travel)
    }

    /// Decodes a frame received from a device: [`Message::decode`] with
    /// [`Direction::DeviceToPlatform`].
    pub fn decode_uplink(bytes: &[u8]) -> Result<Self> {
        Self::decode(bytes, Direction::DeviceToPlatform)
    }

    /// Decodes a frame sent to a device: [`Message::decode`] with
    /// [`Direction::PlatformToDevice`]. Device simulators and tests use it.
    pub fn decode_downlink(bytes: &[u8]) -> Result<Self> {
        Self::decode(bytes, Direction::PlatformToDevice)
    }

    /// Interprets the data area of an already checked frame that travelled in direction `travel`.
    pub fn from_frame(frame: &Frame<'_>, travel: Direction) -> Result<Self> {
        let code = frame.code();
        let kind = code.kind_when_travelling(travel);
        let data = frame.data();
        let body = Body { code, kind, data };
        Ok(match (code, kind) {
            (MessageCode::QueryVersion, MessageKind::Request) => {
                body.fixed::<0>()?;
                Self::QueryVersionRequest
            }
            (MessageCode::QueryVersion, MessageKind::Response) => {
                let [result, version @ ..] = body.fixed::<17>()?;
                Self::QueryVersionResponse(QueryVersionResponse {
                    result: QueryVersionResult::from_u8(result),
                    version: Version::from_field(&version)?,
                })
            }
            (MessageCode::NewVersion, MessageKind::Request) => {
                let [version @ .., s0, s1, n0, n1, k0, k1] = body.fixed::<22>()?;
                Self::NewVersionRequest(NewVersionRequest {
                    version: Version::from_field(&version)?,
                    chunk_size: u16::from_be_bytes([s0, s1]),
                    chunk_count: u16::from_be_bytes([n0, n1]),
                    check_code: u16::from_be_bytes([k0, k1]),
                })
            }
            (MessageCode::NewVersion, MessageKind::Response) => {
                let [result] = body.fixed::<1>()?;
                Self::NewVersionResponse(NewVersionResult::from_u8(result))
            }
            (MessageCode::Chunk, MessageKind::Request) => {
                let [version @ .., i0, i1] = body.fixed::<18>()?;
                Self::ChunkRequest(ChunkRequest {
                    version: Version::from_field(&version)?,
                    index: u16::from_be_bytes([i0, i1]),
                })
            }
            (MessageCode::Chunk, MessageKind::Response) => {
                let Some(([result, i0, i1], chunk)) = data.split_first_chunk::<3>() else {
                    return Err(body.wrong_len(ExpectedLen::AtLeast(3)));
                };
                let result = ChunkResult::from_u8(*result);
                let index = u16::from_be_bytes([*i0, *i1]);
                Self::ChunkResponse(ChunkResponse::new(result, index, chunk)?)
            }
            (MessageCode::DownloadResult, MessageKind::Request) => {
                let [status] = body.fixed::<1>()?;
                Self::DownloadResultRequest(DownloadStatus::from_u8(status))
            }
            (MessageCode::DownloadResult, MessageKind::Response) => {
                let [ack] = body.fixed::<1>()?;
                Self::DownloadResultResponse(ReportAck::from_u8(ack))
            }
            (MessageCode::ExecuteUpgrade, MessageKind::Request) => {
                body.fixed::<0>()?;
                Self::ExecuteUpgradeRequest
            }
            (MessageCode::ExecuteUpgrade, MessageKind::Response) => {
                let [result] = body.fixed::<1>()?;
                Self::ExecuteUpgradeResponse(ExecuteResult::from_u8(result))
            }
            (MessageCode::UpgradeResult, MessageKind::Request) => {
                let [result, version @ ..] = body.fixed::<17>()?;
                Self::UpgradeResultRequest(UpgradeResultRequest {
                    result: UpgradeResult::from_u8(result),
                    version: Version::from_field(&version)?,
                })
            }
            (MessageCode::UpgradeResult, MessageKind::Response) => {
                let [ack] = body.fixed::<1>()?;
                Self::UpgradeResultResponse(ReportAck::from_u8(ack))
            }
        })
    }
}

impl From<QueryVersionResponse> for Message {
    fn from(m: QueryVersionResponse) -> Self {
        Self::QueryVersionResponse(m)
    }
}

impl From<NewVersionRequest> for Message {
    fn from(m: NewVersionRequest) -> Self {
        Self::NewVersionRequest(m)
    }
}

impl From<ChunkRequest> for Message {
    fn from(m: ChunkRequest) -> Self {
        Self::ChunkRequest(m)
    }
}

impl From<ChunkResponse> for Message {
    fn from(m: ChunkResponse) -> Self {
        Self::ChunkResponse(m)
    }
}

impl From<UpgradeResultRequest> for Message {
    fn from(m: UpgradeResultRequest) -> Self {
        Self::UpgradeResultRequest(m)
    }
}

/// The data area of a frame being decoded, with what is needed to report a size error.
#[derive(Debug)]
struct Body<'a> {
    code: MessageCode,
    kind: MessageKind,
    data: &'a [u8],
}

impl Body<'_> {
    /// Returns the data area as an array, failing unless it is exactly `N` bytes long.
    fn fixed<const N: usize>(&self) -> Result<[u8; N]> {
        <[u8; N]>::try_from(self.data).map_err(|_| self.wrong_len(ExpectedLen::Exactly(N)))
    }

    fn wrong_len(&self, expected: ExpectedLen) -> Error {
        Error::WrongDataLength {
            code: self.code,
            kind: self.kind,
            expected,
            actual: self.data.len(),
        }
    }
}

#[cfg(test)]
mod tests;
