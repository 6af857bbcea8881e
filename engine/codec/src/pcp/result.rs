//! Result and status codes carried by PCP messages (`spec/device-management.md §15.3`).
//!
//! Each message has its own closed list of codes in the spec, but devices may send any byte, so
//! every enum here ends in an `Other(u8)` variant that keeps unlisted codes as received. Decoding
//! never fails because of a result code. [`from_u8`](NewVersionResult::from_u8) maps listed codes
//! to their named variants, so a value built from the wire is always in that canonical form; a
//! hand-built `Other` holding a listed code encodes to the same byte but compares unequal to the
//! named variant.
//!
//! The OTA scheduler reads these to decide whether to continue, retry or fail a device, and uses
//! `ota_result_code` to map device-reported codes onto the MQTT `result_code` values of
//! `spec/device-management.md §13`.

use std::fmt;

/// Defines one result-code enum with its conversions and descriptions.
macro_rules! result_code {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code the spec does not list for this message, kept as received.
            Other(u8),
        }

        impl $name {
            /// Maps a wire byte to its named variant, or to `Other` when the spec does not list it.
            #[must_use]
            pub const fn from_u8(code: u8) -> Self {
                match code {
                    $( $code => Self::$variant, )+
                    other => Self::Other(other),
                }
            }

            /// The byte sent on the wire.
            #[must_use]
            pub const fn as_u8(self) -> u8 {
                match self {
                    $( Self::$variant => $code, )+
                    Self::Other(code) => code,
                }
            }

            /// Whether the code is `0x00`, the only success value.
            #[must_use]
            pub const fn is_success(self) -> bool {
                self.as_u8() == 0
            }

            /// A short English description, for logs.
            #[must_use]
            pub const fn description(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(_) => "unlisted code",
                }
            }
        }

        impl From<u8> for $name {
            fn from(code: u8) -> Self {
                Self::from_u8(code)
            }
        }

        impl From<$name> for u8 {
            fn from(result: $name) -> Self {
                result.as_u8()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#04x} ({})", self.as_u8(), self.description())
            }
        }
    };
}

/// Adds the mapping onto the MQTT OTA result codes to codes that devices report.
macro_rules! ota_result_code {
    ($($name:ident),+) => {$(
        impl $name {
            /// The matching `upgrade_progress_report.result_code` of
            /// `spec/device-management.md §13`: the same number, except that PCP's `0x7F`
            /// (internal error) becomes 255. Unlisted codes pass through unchanged.
            #[must_use]
            pub const fn ota_result_code(self) -> u8 {
                match self.as_u8() {
                    0x7F => 255,
                    code => code,
                }
            }
        }
    )+};
}

result_code! {
    /// Result of a version query, in the response to message 19 (device to platform).
    QueryVersionResult {
        /// `0x00`: handled successfully, the only code the spec defines.
        Success = 0x00 => "handled successfully",
    }
}

result_code! {
    /// The device's answer to a new-version notification, in the response to message 20. Any
    /// non-zero answer is a refusal that aborts the upgrade (§24 item 20).
    NewVersionResult {
        /// `0x00`: the upgrade is allowed.
        Allowed = 0x00 => "upgrade allowed",
        /// `0x01`: the device is in use.
        DeviceInUse = 0x01 => "device in use",
        /// `0x02`: the signal quality is poor.
        PoorSignal = 0x02 => "poor signal quality",
        /// `0x03`: the device already runs the latest version.
        AlreadyLatest = 0x03 => "already the latest version",
        /// `0x04`: the battery is low.
        LowBattery = 0x04 => "low battery",
        /// `0x05`: not enough free space.
        NotEnoughSpace = 0x05 => "not enough free space",
        /// `0x09`: out of memory.
        OutOfMemory = 0x09 => "out of memory",
        /// `0x7F`: internal error.
        InternalError = 0x7F => "internal error",
    }
}

result_code! {
    /// The platform's answer to a chunk request, in the response to message 21 (§24 item 21).
    ChunkResult {
        /// `0x00`: the chunk data follows.
        Success = 0x00 => "success",
        /// `0x80`: no upgrade task exists for the device, or it targets another version.
        TaskNotFound = 0x80 => "upgrade task does not exist",
        /// `0x81`: the chunk index is not below the chunk count.
        NoSuchChunk = 0x81 => "requested chunk does not exist",
    }
}

result_code! {
    /// The download outcome a device reports in message 22.
    DownloadStatus {
        /// `0x00`: the package downloaded successfully.
        Success = 0x00 => "downloaded successfully",
        /// `0x05`: not enough free space.
        NotEnoughSpace = 0x05 => "not enough free space",
        /// `0x06`: the download timed out.
        DownloadTimeout = 0x06 => "download timeout",
        /// `0x07`: the package failed verification.
        VerificationFailed = 0x07 => "package verification failed",
        /// `0x08`: the package type is not supported.
        UnsupportedPackageType = 0x08 => "package type not supported",
    }
}

result_code! {
    /// The platform's answer to a download report (message 22) or an upgrade report
    /// (message 24); both messages share this list (§24 item 21).
    ReportAck {
        /// `0x00`: handled successfully.
        Success = 0x00 => "handled successfully",
        /// `0x80`: no upgrade task exists for the device.
        TaskNotFound = 0x80 => "upgrade task does not exist",
    }
}

result_code! {
    /// The device's answer to the execute command, in the response to message 23.
    ExecuteResult {
        /// `0x00`: accepted, handled successfully.
        Accepted = 0x00 => "accepted",
        /// `0x01`: the device is in use.
        DeviceInUse = 0x01 => "device in use",
        /// `0x04`: the battery is low.
        LowBattery = 0x04 => "low battery",
        /// `0x05`: not enough free space.
        NotEnoughSpace = 0x05 => "not enough free space",
        /// `0x09`: out of memory.
        OutOfMemory = 0x09 => "out of memory",
    }
}

result_code! {
    /// The upgrade outcome a device reports in message 24. Success also needs the reported
    /// version to equal the package version (§24 item 13); that comparison belongs to the caller.
    UpgradeResult {
        /// `0x00`: the upgrade succeeded.
        Success = 0x00 => "upgrade succeeded",
        /// `0x01`: the device is in use.
        DeviceInUse = 0x01 => "device in use",
        /// `0x04`: the battery is low.
        LowBattery = 0x04 => "low battery",
        /// `0x05`: not enough free space.
        NotEnoughSpace = 0x05 => "not enough free space",
        /// `0x09`: out of memory.
        OutOfMemory = 0x09 => "out of memory",
        /// `0x0A`: installing the package failed.
        InstallFailed = 0x0A => "installing the package failed",
        /// `0x7F`: internal error.
        InternalError = 0x7F => "internal error",
    }
}

ota_result_code!(
    QueryVersionResult,
    NewVersionResult,
    DownloadStatus,
    ExecuteResult,
    UpgradeResult
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=u8::MAX {
            assert_eq!(QueryVersionResult::from_u8(b).as_u8(), b);
            assert_eq!(NewVersionResult::from_u8(b).as_u8(), b);
            assert_eq!(ChunkResult::from_u8(b).as_u8(), b);
            assert_eq!(DownloadStatus::from_u8(b).as_u8(), b);
            assert_eq!(ReportAck::from_u8(b).as_u8(), b);
            assert_eq!(ExecuteResult::from_u8(b).as_u8(), b);
            assert_eq!(u8::from(UpgradeResult::from(b)), b);
        }
    }

    #[test]
    fn listed_codes_get_named_variants() {
        assert_eq!(
            NewVersionResult::from_u8(0x7F),
            NewVersionResult::InternalError
        );
        assert_eq!(
            NewVersionResult::from_u8(0x06),
            NewVersionResult::Other(0x06)
        );
        assert_eq!(ChunkResult::from_u8(0x81), ChunkResult::NoSuchChunk);
        assert_eq!(ReportAck::from_u8(0x81), ReportAck::Other(0x81));
        assert_eq!(
            DownloadStatus::from_u8(0x07),
            DownloadStatus::VerificationFailed
        );
        assert_eq!(ExecuteResult::from_u8(0x02), ExecuteResult::Other(0x02));
        assert_eq!(UpgradeResult::from_u8(0x0A), UpgradeResult::InstallFailed);
    }

    #[test]
    fn success_is_zero_only() {
        assert!(UpgradeResult::Success.is_success());
        assert!(UpgradeResult::Other(0).is_success());
        assert!(!UpgradeResult::InstallFailed.is_success());
        assert!(!ChunkResult::TaskNotFound.is_success());
    }

    #[test]
    fn ota_result_codes_follow_section_13() {
        assert_eq!(UpgradeResult::InternalError.ota_result_code(), 255);
        assert_eq!(NewVersionResult::InternalError.ota_result_code(), 255);
        assert_eq!(NewVersionResult::PoorSignal.ota_result_code(), 2);
        assert_eq!(DownloadStatus::DownloadTimeout.ota_result_code(), 6);
        assert_eq!(UpgradeResult::InstallFailed.ota_result_code(), 10);
        assert_eq!(ExecuteResult::Other(0x33).ota_result_code(), 0x33);
    }

    #[test]
    fn display_shows_code_and_meaning() {
        assert_eq!(
            ChunkResult::NoSuchChunk.to_string(),
            "0x81 (requested chunk does not exist)"
        );
        assert_eq!(ReportAck::Other(0x42).to_string(), "0x42 (unlisted code)");
    }
}
