//! Frame boundaries: the fixed header and its Remaining Length (MQTT 3.1.1 §2.2, MQTT 5.0 §2.1).
//!
//! Both protocol versions share the fixed header: one byte of packet type and flags, then the
//! Remaining Length as a variable byte integer of one to four bytes. [`frame_len`] is what the
//! connection code calls on its read buffer to find where the next packet ends; the rest of the
//! glue uses [`FixedHeader`] and [`Reader`] to look at a frame without allocating.

use super::error::{Error, Result};

/// The 4-bit packet types of the fixed header (MQTT 3.1.1 §2.2.1, MQTT 5.0 §2.1.2).
pub(crate) mod packet_type {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const UNSUBACK: u8 = 11;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const PINGRESP: u8 = 13;
    pub(crate) const DISCONNECT: u8 = 14;
    pub(crate) const AUTH: u8 = 15;
}

/// The largest Remaining Length a four-byte variable byte integer can carry (MQTT 3.1.1 §2.2.3,
/// MQTT 5.0 §1.5.5).
pub(crate) const MAX_REMAINING_LENGTH: u32 = 268_435_455;

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// The first byte: packet type in the high nibble, flags in the low one.
    pub(crate) first_byte: u8,
    /// The size of the fixed header: 1 byte plus the 1..=4 bytes of the Remaining Length.
    pub(crate) header_len: usize,
    /// The Remaining Length: the size of the variable header and payload.
    pub(crate) remaining_length: u32,
}

impl FixedHeader {
    /// Reads the fixed header at the start of `buf`; `Ok(None)` if `buf` ends inside it.
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<Self>> {
        let Some((&first_byte, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let mut value: u32 = 0;
        for (i, &byte) in rest.iter().take(4).enumerate() {
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(Some(Self {
                    first_byte,
                    header_len: 2 + i,
                    remaining_length: value,
                }));
            }
        }
        if rest.len() >= 4 {
            Err(Error::MalformedRemainingLength)
        } else {
            Ok(None)
        }
    }

    /// The 4-bit packet type.
    pub(crate) const fn packet_type(&self) -> u8 {
        self.first_byte >> 4
    }

    /// The 4 flag bits.
    pub(crate) const fn flags(&self) -> u8 {
        self.first_byte & 0x0F
    }

    /// The size of the whole frame: fixed header plus Remaining Length.
    pub(crate) fn frame_len(&self) -> usize {
        // A u32 below 2^28 fits a usize on every 32- and 64-bit target.
        let remaining = usize::try_from(self.remaining_length).unwrap_or(usize::MAX);
        self.header_len.saturating_add(remaining)
    }
}

/// Fails with [`Error::PacketTooLarge`] if a frame of `size` bytes exceeds `max` (0 = no limit).
pub(crate) fn check_size(size: usize, max: u32) -> Result<()> {
    let too_large = match usize::try_from(max) {
        Ok(0) => false,
        Ok(max) => size > max,
        Err(_) => false,
    };
    if too_large {
        Err(Error::PacketTooLarge { size, max })
    } else {
        Ok(())
    }
}

/// The length of the first complete MQTT frame at the start of `buf`: fixed header plus
/// Remaining Length (MQTT 3.1.1 §2.2.3, MQTT 5.0 §2.1.4).
///
/// Returns `Ok(None)` while more bytes are needed, whether the fixed header itself or the rest
/// of the frame is missing. Fails with [`Error::MalformedRemainingLength`] when the Remaining
/// Length runs past four bytes, and with [`Error::PacketTooLarge`] as soon as the fixed header
/// announces a frame larger than `max_packet_size` (the whole frame, fixed header included, as
/// MQTT 5.0 §3.1.2.11.4 counts it; 0 means no limit), so that the caller can refuse an oversized
/// packet before buffering it. The frame's type and flags are not looked at: that is
/// [`decode`](super::decode)'s job.
///
/// Never allocates and never panics.
///
/// ```
/// use fleetgate_codec::mqtt::frame_len;
///
/// let pingreq = [0xC0, 0x00];
/// assert_eq!(frame_len(&pingreq[..1], 0)?, None);
/// assert_eq!(frame_len(&pingreq, 0)?, Some(2));
/// # Ok::<(), fleetgate_codec::mqtt::Error>(())
/// ```
pub fn frame_len(buf: &[u8], max_packet_size: u32) -> Result<Option<usize>> {
    let Some(header) = FixedHeader::parse(buf)? else {
        return Ok(None);
    };
    let total = header.frame_len();
    check_size(total, max_packet_size)?;
    Ok((buf.len() >= total).then_some(total))
}

/// A bounds-checked cursor over the body of one packet; every read that would run past the end
/// fails with [`Error::Truncated`] for that packet type.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    packet_type: u8,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8], packet_type: u8) -> Self {
        Self {
            buf,
            pos: 0,
            packet_type,
        }
    }

    /// The number of bytes read so far.
    pub(crate) const fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read.
    pub(crate) const fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The number of bytes not yet read.
    pub(crate) const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn truncated(&self) -> Error {
        Error::Truncated {
            packet_type: self.packet_type,
        }
    }

    /// Reads `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(bytes)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    /// Reads a big-endian Two Byte Integer (MQTT 5.0 §1.5.2).
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.truncated())
    }

    /// Reads a length-prefixed string or binary field (MQTT 3.1.1 §1.5.3, MQTT 5.0 §1.5.4 and
    /// §1.5.6) and returns its content.
    pub(crate) fn prefixed(&mut self) -> Result<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Reads a Variable Byte Integer (MQTT 5.0 §1.5.5); more than four bytes is malformed.
    pub(crate) fn varint(&mut self) -> Result<u32> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::MalformedVariableInteger {
            packet_type: self.packet_type,
        })
    }

    /// Skips an MQTT 5.0 property block: its Variable Byte Integer length and that many bytes
    /// (MQTT 5.0 §2.2.2). The properties themselves are left to rmqtt-codec.
    pub(crate) fn skip_properties(&mut self) -> Result<()> {
        let len = self.varint()?;
        self.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        Ok(())
    }
}
