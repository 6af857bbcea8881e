//! The PCP checksum: the guide's hybrid CRC-16 (`spec/device-management.md §15.4`).
//!
//! The reference implementation behind every worked example pairs a table built MSB-first for the
//! polynomial `0x1021` with the LSB-first (right-shifting) table update, starts from `0x0000`, and
//! applies no reflection and no final XOR. The result matches neither CRC-16/XMODEM nor
//! CRC-16/KERMIT; its check value over `b"123456789"` is `0xB955` (§24 item 19). The table is
//! generated at compile time rather than copied, because the printed tables contain errors.
//!
//! The frame codec in `frame.rs` and `message.rs` is the only caller inside the crate; [`crc16`] is
//! public so that tools and tests can reproduce checksums by hand.

/// The generator polynomial `x^16 + x^12 + x^5 + 1`.
const POLY: u16 = 0x1021;

/// Lookup table, generated MSB-first for [`POLY`].
pub(crate) const TABLE: [u16; 256] = make_table();

/// Builds the lookup table: entry `i` is `i << 8` shifted left eight times, XOR-ing the polynomial
/// in whenever the top bit falls out.
const fn make_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            v = if v & 0x8000 != 0 {
                (v << 1) ^ POLY
            } else {
                v << 1
            };
            bit += 1;
        }
        table[i] = v;
        i += 1;
    }
    table
}

/// Feeds `bytes` into a running checksum `crc` and returns the new value.
///
/// Starting from `0` and feeding a whole buffer gives the same value as [`crc16`]; feeding it in
/// pieces lets the frame codec skip over the checksum field without copying the frame.
pub(crate) fn update(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc = (crc >> 8) ^ TABLE[usize::from((crc ^ u16::from(b)) & 0xFF)];
    }
    crc
}

/// Computes the PCP checksum of `bytes` (`spec/device-management.md §15.4`).
///
/// For a frame, the caller passes the whole frame with bytes 4..6 set to zero; the frame codec
/// does this itself, so most callers never need this function.
///
/// ```
/// assert_eq!(fleetgate_codec::pcp::crc16(b"123456789"), 0xB955);
/// ```
#[must_use]
pub fn crc16(bytes: &[u8]) -> u16 {
    update(0, bytes)
}

/// Computes the checksum of a complete frame as if its checksum field (bytes 4..6) were zero.
///
/// Buffers shorter than the 8-byte header are hashed as they are; the frame decoder rejects them
/// before calling this.
pub(crate) fn frame_checksum(frame: &[u8]) -> u16 {
    match (frame.get(..4), frame.get(6..)) {
        (Some(head), Some(tail)) => update(update(update(0, head), &[0, 0]), tail),
        _ => crc16(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_over_123456789() {
        assert_eq!(crc16(b"123456789"), 0xB955);
    }

    #[test]
    fn differs_from_xmodem_and_kermit() {
        // CRC-16/XMODEM is 0x31C3 and CRC-16/KERMIT is 0x2189 over the same input.
        assert_ne!(crc16(b"123456789"), 0x31C3);
        assert_ne!(crc16(b"123456789"), 0x2189);
    }

    #[test]
    fn table_entries_named_in_the_spec() {
        assert_eq!(TABLE[0], 0x0000);
        assert_eq!(TABLE[1], 0x1021);
        assert_eq!(TABLE[0x80], 0x9188);
        assert_eq!(TABLE[0xFF], 0x1EF0);
    }

    #[test]
    fn empty_input_is_zero() {
        assert_eq!(crc16(&[]), 0);
    }

    #[test]
    fn incremental_update_matches_one_shot() {
        let data = b"The quick brown fox jumps over the lazy dog";
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            assert_eq!(update(update(0, a), b), crc16(data));
        }
    }

    #[test]
    fn frame_checksum_ignores_checksum_field() {
        let mut frame = [0xFF, 0xFE, 0x01, 0x13, 0x00, 0x00, 0x00, 0x00];
        let zeroed = crc16(&frame);
        frame[4] = 0xAB;
        frame[5] = 0xCD;
        assert_eq!(frame_checksum(&frame), zeroed);
        assert_eq!(zeroed, 0x4C9A);
    }

    #[test]
    fn frame_checksum_of_short_input_does_not_panic() {
        for len in 0..8 {
            let _ = frame_checksum(&[0xFF; 8][..len]);
        }
    }
}
