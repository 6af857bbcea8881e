//! The 16-byte version field of PCP messages 19, 20, 21 and 24
//! (`spec/device-management.md §15.3`, "Version fields").
//!
//! On the wire a version is ASCII text right-padded with NUL bytes to exactly 16 bytes. [`Version`]
//! holds such a field in canonical form, so two versions compare equal exactly when their text
//! does, which is the comparison the OTA rules need (§24 item 13). The OTA scheduler builds
//! versions from package metadata with [`Version::new`]; the message decoder builds them from
//! frames with [`Version::from_field`].

use std::fmt;
use std::str::FromStr;

use super::error::{Error, Result};

/// A PCP version: at most 16 ASCII characters, without NUL bytes.
///
/// Stored NUL-padded, as sent on the wire. [`Version::as_str`] returns the text without the
/// padding. The default value is the empty version (sixteen NUL bytes). Versions are compared
/// for equality only; the spec defines no ordering between them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Version {
    field: [u8; Version::LEN],
}

impl Version {
    /// The size of a version field on the wire.
    pub const LEN: usize = 16;

    /// Builds a version from its text.
    ///
    /// Fails with [`Error::VersionTooLong`] past 16 bytes, [`Error::VersionNotAscii`] for any
    /// byte above `0x7F`, and [`Error::VersionInteriorNul`] for a NUL byte, which the padding
    /// could not tell apart from the end of the text. Checks run in that order. The spec asks for
    /// over-long versions to be refused when a package is uploaded for a PCP product
    /// (`spec/device-management.md §15.3`); this constructor is that check.
    pub fn new(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        if bytes.len() > Self::LEN {
            return Err(Error::VersionTooLong { len: bytes.len() });
        }
        if let Some(&byte) = bytes.iter().find(|b| !b.is_ascii()) {
            return Err(Error::VersionNotAscii { byte });
        }
        if let Some(offset) = bytes.iter().position(|&b| b == 0) {
            return Err(Error::VersionInteriorNul { offset });
        }
        let mut field = [0u8; Self::LEN];
        field[..bytes.len()].copy_from_slice(bytes);
        Ok(Self { field })
    }

    /// Reads a version field as received.
    ///
    /// The field must be ASCII text followed only by NUL padding; a non-ASCII byte fails with
    /// [`Error::VersionNotAscii`] and a non-NUL byte after the first NUL with
    /// [`Error::VersionInteriorNul`]. An all-NUL field is the empty version.
    pub fn from_field(field: &[u8; Self::LEN]) -> Result<Self> {
        let text_len = field.iter().position(|&b| b == 0).unwrap_or(Self::LEN);
        let (text, padding) = field.split_at(text_len);
        if let Some(&byte) = text.iter().find(|b| !b.is_ascii()) {
            return Err(Error::VersionNotAscii { byte });
        }
        if padding.iter().any(|&b| b != 0) {
            return Err(Error::VersionInteriorNul { offset: text_len });
        }
        Ok(Self { field: *field })
    }

    /// The 16 bytes sent on the wire, padding included.
    #[must_use]
    pub const fn field(&self) -> &[u8; Self::LEN] {
        &self.field
    }

    /// The text without its NUL padding, as bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.field.iter().position(|&b| b == 0).unwrap_or(Self::LEN);
        &self.field[..len]
    }

    /// The text without its NUL padding.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Both constructors admit only ASCII, so the conversion always succeeds; the fallback
        // keeps this free of panics regardless.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Whether the version is empty (all sixteen bytes NUL).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.field[0] == 0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Version").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::new(text)
    }
}

impl TryFrom<&str> for Version {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self> {
        Self::new(text)
    }
}

impl TryFrom<&[u8; Version::LEN]> for Version {
    type Error = Error;

    fn try_from(field: &[u8; Version::LEN]) -> Result<Self> {
        Self::from_field(field)
    }
}

impl PartialEq<str> for Version {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Version {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &[u8]) -> [u8; 16] {
        let mut f = [0u8; 16];
        f[..text.len()].copy_from_slice(text);
        f
    }

    #[test]
    fn new_pads_with_nul() -> Result<()> {
        let v = Version::new("V1.0")?;
        assert_eq!(v.field(), &field(b"V1.0"));
        assert_eq!(v.as_str(), "V1.0");
        assert_eq!(v, "V1.0");
        assert_eq!(v.to_string(), "V1.0");
        assert_eq!(format!("{v:?}"), "Version(\"V1.0\")");
        Ok(())
    }

    #[test]
    fn sixteen_characters_fit_seventeen_do_not() -> Result<()> {
        let v = Version::new("0123456789abcdef")?;
        assert_eq!(v.as_str(), "0123456789abcdef");
        assert_eq!(v.field(), b"0123456789abcdef");
        assert_eq!(
            Version::new("0123456789abcdefg"),
            Err(Error::VersionTooLong { len: 17 })
        );
        Ok(())
    }

    #[test]
    fn rejects_non_ascii_and_nul() {
        assert_eq!(
            Version::new("v1.0-ä"),
            Err(Error::VersionNotAscii { byte: 0xC3 })
        );
        assert_eq!(
            Version::new("v1\0.0"),
            Err(Error::VersionInteriorNul { offset: 2 })
        );
        assert_eq!(
            Version::new("v1.0\0"),
            Err(Error::VersionInteriorNul { offset: 4 })
        );
    }

    #[test]
    fn empty_version() -> Result<()> {
        let v = Version::new("")?;
        assert!(v.is_empty());
        assert_eq!(v, Version::default());
        assert_eq!(Version::from_field(&[0; 16])?, v);
        Ok(())
    }

    #[test]
    fn from_field_checks_text_and_padding() -> Result<()> {
        assert_eq!(Version::from_field(&field(b"V0.9"))?.as_str(), "V0.9");
        let mut junk_after_nul = field(b"V0.9");
        junk_after_nul[10] = b'x';
        assert_eq!(
            Version::from_field(&junk_after_nul),
            Err(Error::VersionInteriorNul { offset: 4 })
        );
        assert_eq!(
            Version::from_field(&field(b"V\xFF")),
            Err(Error::VersionNotAscii { byte: 0xFF })
        );
        Ok(())
    }

    #[test]
    fn parses_through_std_traits() -> Result<()> {
        let a: Version = "V2".parse()?;
        let b = Version::try_from("V2")?;
        let c = Version::try_from(&field(b"V2"))?;
        assert_eq!(a, b);
        assert_eq!(b, c);
        Ok(())
    }
}
