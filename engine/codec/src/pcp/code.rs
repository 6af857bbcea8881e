//! PCP message codes, and which way each message travels (`spec/device-management.md §15.3`,
//! §15.7).
//!
//! A PCP frame does not say whether it is a request or a response: a response repeats its
//! request's code. The kind of a frame therefore follows from the code together with the direction
//! the frame travelled, which is what [`MessageCode::kind_when_travelling`] works out. The frame
//! and message codecs use these types; the engine uses [`Direction`] to say which way it read a
//! frame.

use std::fmt;

use super::error::{Error, Result};

/// The six defined PCP message codes, 19..=24 (`spec/device-management.md §15.3`).
///
/// Codes 0..=18 and 25..=127 are reserved, and 128..=255 are not defined at all; decoding any of
/// them fails with [`Error::UnknownCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageCode {
    /// 19 (`0x13`): the platform asks for the device's current version.
    QueryVersion = 19,
    /// 20 (`0x14`): the platform announces a new version and its chunking.
    NewVersion = 20,
    /// 21 (`0x15`): the device asks for one package chunk.
    Chunk = 21,
    /// 22 (`0x16`): the device reports the outcome of the download.
    DownloadResult = 22,
    /// 23 (`0x17`): the platform tells the device to install the package.
    ExecuteUpgrade = 23,
    /// 24 (`0x18`): the device reports the outcome of the upgrade.
    UpgradeResult = 24,
}

impl MessageCode {
    /// All defined codes, in numeric order.
    pub const ALL: [Self; 6] = [
        Self::QueryVersion,
        Self::NewVersion,
        Self::Chunk,
        Self::DownloadResult,
        Self::ExecuteUpgrade,
        Self::UpgradeResult,
    ];

    /// Maps a wire byte to a code, failing with [`Error::UnknownCode`] outside 19..=24.
    pub const fn from_u8(code: u8) -> Result<Self> {
        Ok(match code {
            19 => Self::QueryVersion,
            20 => Self::NewVersion,
            21 => Self::Chunk,
            22 => Self::DownloadResult,
            23 => Self::ExecuteUpgrade,
            24 => Self::UpgradeResult,
            _ => return Err(Error::UnknownCode { code }),
        })
    }

    /// The byte sent on the wire.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The direction in which the request with this code travels (`spec/device-management.md
    /// §15.7`): platform to device for 19, 20 and 23, device to platform for 21, 22 and 24.
    /// Responses travel the other way.
    #[must_use]
    pub const fn request_direction(self) -> Direction {
        match self {
            Self::QueryVersion | Self::NewVersion | Self::ExecuteUpgrade => {
                Direction::PlatformToDevice
            }
            Self::Chunk | Self::DownloadResult | Self::UpgradeResult => Direction::DeviceToPlatform,
        }
    }

    /// Whether a frame with this code is a request or a response, given the direction it
    /// travelled.
    #[must_use]
    pub const fn kind_when_travelling(self, travel: Direction) -> MessageKind {
        if self.request_direction() as u8 == travel as u8 {
            MessageKind::Request
        } else {
            MessageKind::Response
        }
    }

    /// A short English name, for logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::QueryVersion => "query device version",
            Self::NewVersion => "new-version notification",
            Self::Chunk => "request package chunk",
            Self::DownloadResult => "report download result",
            Self::ExecuteUpgrade => "execute upgrade",
            Self::UpgradeResult => "report upgrade result",
        }
    }
}

impl TryFrom<u8> for MessageCode {
    type Error = Error;

    fn try_from(code: u8) -> Result<Self> {
        Self::from_u8(code)
    }
}

impl From<MessageCode> for u8 {
    fn from(code: MessageCode) -> Self {
        code.as_u8()
    }
}

impl fmt::Display for MessageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_u8(), self.name())
    }
}

/// The direction a PCP frame travels (`spec/device-management.md §15.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Downlink: from the platform to the device.
    PlatformToDevice,
    /// Uplink: from the device to the platform.
    DeviceToPlatform,
}

impl Direction {
    /// The opposite direction, in which the answer to a frame travels.
    #[must_use]
    pub const fn reverse(self) -> Self {
        match self {
            Self::PlatformToDevice => Self::DeviceToPlatform,
            Self::DeviceToPlatform => Self::PlatformToDevice,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PlatformToDevice => "platform to device",
            Self::DeviceToPlatform => "device to platform",
        })
    }
}

/// Whether a message opens an exchange or answers one (`spec/device-management.md §15.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// The first half of an exchange.
    Request,
    /// The answer, carrying the same message code as its request.
    Response,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::Response => "response",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_reject_reserved() {
        for code in MessageCode::ALL {
            assert_eq!(MessageCode::from_u8(code.as_u8()), Ok(code));
        }
        for byte in (0..=18).chain(25..=255) {
            assert_eq!(
                MessageCode::try_from(byte),
                Err(Error::UnknownCode { code: byte })
            );
        }
    }

    #[test]
    fn directions_follow_the_summary_table() {
        use Direction::*;
        let down: Vec<u8> = MessageCode::ALL
            .iter()
            .filter(|c| c.request_direction() == PlatformToDevice)
            .map(|c| c.as_u8())
            .collect();
        assert_eq!(down, [19, 20, 23]);
        assert_eq!(
            MessageCode::Chunk.kind_when_travelling(DeviceToPlatform),
            MessageKind::Request
        );
        assert_eq!(
            MessageCode::Chunk.kind_when_travelling(PlatformToDevice),
            MessageKind::Response
        );
        assert_eq!(
            MessageCode::QueryVersion.kind_when_travelling(DeviceToPlatform),
            MessageKind::Response
        );
        assert_eq!(PlatformToDevice.reverse(), DeviceToPlatform);
    }

    #[test]
    fn display_names_the_code() {
        assert_eq!(
            MessageCode::NewVersion.to_string(),
            "20 (new-version notification)"
        );
    }
}
