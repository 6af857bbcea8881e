//! The little of MQTT 3.1.1 the load test speaks, written from the OASIS standard rather than
//! taken from fleetgate: CONNECT encoding, CONNACK and one-filter SUBACK decoding (the
//! SUBSCRIBE itself is [`crate::conn::subscribe`]), PINGREQ/DISCONNECT, and a packet scanner that counts what the server sends without buffering it, so that an idle connection
//! costs the generator no read buffer. Sans-I/O; the scenario workers do the socket work.

/// PINGREQ (MQTT 3.1.1 §3.12).
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// DISCONNECT (MQTT 3.1.1 §3.14).
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
/// Length of a CONNACK (MQTT 3.1.1 §3.2).
pub const CONNACK_LEN: usize = 4;
/// Length of the SUBACK to a SUBSCRIBE of one filter (MQTT 3.1.1 §3.9): fixed header (2),
/// packet id (2), one return code.
pub const SUBACK_LEN: usize = 5;

/// Control packet types (the upper nibble of the first byte).
pub mod packet_type {
    /// CONNACK.
    pub const CONNACK: u8 = 2;
    /// PUBLISH.
    pub const PUBLISH: u8 = 3;
    /// PINGRESP.
    pub const PINGRESP: u8 = 13;
    /// DISCONNECT (MQTT 5 servers send it; 3.1.1 servers just close).
    pub const DISCONNECT: u8 = 14;
}

/// The fields of a CONNECT the load test sends: clean session, username and password, no will.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// User name.
    pub username: &'a str,
    /// Password.
    pub password: &'a str,
    /// Keep-alive, seconds.
    pub keepalive_secs: u16,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths above u16::MAX cannot be encoded; the callers' strings are at most a few hundred
    // bytes (spec/device-protocol.md §3.5: 256 characters per field).
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Appends the variable-length "remaining length" of MQTT 3.1.1 §2.2.3.
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

impl Connect<'_> {
    /// The packet's bytes (MQTT 3.1.1 §3.1): protocol "MQTT" level 4, flags user name, password
    /// and clean session (0xC2); with an empty user name, clean session only (0x02) and neither
    /// field (an anonymous client).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(
            16 + self.client_id.len() + self.username.len() + self.password.len(),
        );
        put_str(&mut body, "MQTT");
        body.push(4); // protocol level 3.1.1
        let anonymous = self.username.is_empty();
        body.push(if anonymous { 0x02 } else { 0x80 | 0x40 | 0x02 }); // user name, password, clean session
        body.extend_from_slice(&self.keepalive_secs.to_be_bytes());
        put_str(&mut body, self.client_id);
        if !anonymous {
            put_str(&mut body, self.username);
            put_str(&mut body, self.password);
        }
        let mut out = Vec::with_capacity(body.len() + 5);
        out.push(0x10);
        put_remaining_length(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }
}

/// What a server answered to CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAck {
    /// Return code 0: accepted.
    Accepted {
        /// The session-present flag.
        session_present: bool,
    },
    /// A non-zero return code (1 protocol version, 2 identifier rejected, 3 server
    /// unavailable, 4 bad user name or password, 5 not authorized).
    Refused(u8),
}

/// Why the first bytes from the server are not a CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAckError {
    /// Another packet type or a wrong remaining length.
    NotConnAck([u8; CONNACK_LEN]),
}

impl std::fmt::Display for ConnAckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnAckError::NotConnAck(b) => write!(f, "expected CONNACK, got {}", hex::encode(b)),
        }
    }
}

impl ConnAck {
    /// Decodes the four bytes of a CONNACK (MQTT 3.1.1 §3.2).
    pub fn decode(bytes: [u8; CONNACK_LEN]) -> Result<ConnAck, ConnAckError> {
        if bytes[0] != 0x20 || bytes[1] != 0x02 {
            return Err(ConnAckError::NotConnAck(bytes));
        }
        Ok(match bytes[3] {
            0 => ConnAck::Accepted {
                session_present: bytes[2] & 1 == 1,
            },
            code => ConnAck::Refused(code),
        })
    }
}

/// What a server answered to a SUBSCRIBE of one filter (MQTT 3.1.1 §3.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubAck {
    /// Return code 0x00, 0x01 or 0x02: the maximum QoS granted.
    Granted(u8),
    /// Return code 0x80: the subscription failed.
    Failure,
}

/// Why the bytes read after a SUBSCRIBE of one filter are not its SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubAckError {
    /// Another packet type or a remaining length other than 3 (one return code).
    NotSubAck([u8; SUBACK_LEN]),
    /// A SUBACK for another packet id [MQTT-3.8.4-2].
    PacketId {
        /// The SUBSCRIBE's packet id.
        expected: u16,
        /// The SUBACK's.
        got: u16,
    },
    /// A reserved return code (anything but 0x00, 0x01, 0x02, 0x80) [MQTT-3.9.3-2].
    ReturnCode(u8),
}

impl std::fmt::Display for SubAckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubAckError::NotSubAck(b) => write!(f, "expected SUBACK, got {}", hex::encode(b)),
            SubAckError::PacketId { expected, got } => {
                write!(f, "SUBACK for packet id {got}, expected {expected}")
            }
            SubAckError::ReturnCode(c) => write!(f, "SUBACK with reserved return code 0x{c:02x}"),
        }
    }
}

impl SubAck {
    /// Decodes the SUBACK of a SUBSCRIBE of one filter sent with `packet_id` (MQTT 3.1.1
    /// §3.9).
    pub fn decode(bytes: [u8; SUBACK_LEN], packet_id: u16) -> Result<SubAck, SubAckError> {
        if bytes[0] != 0x90 || bytes[1] != 0x03 {
            return Err(SubAckError::NotSubAck(bytes));
        }
        let got = u16::from_be_bytes([bytes[2], bytes[3]]);
        if got != packet_id {
            return Err(SubAckError::PacketId {
                expected: packet_id,
                got,
            });
        }
        match bytes[4] {
            code @ 0..=2 => Ok(SubAck::Granted(code)),
            0x80 => Ok(SubAck::Failure),
            code => Err(SubAckError::ReturnCode(code)),
        }
    }
}

/// A packet-boundary scanner over the bytes a server sends: it reads fixed headers, skips
/// bodies and counts packets by type, holding only a few bytes of state.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    state: ScanState,
    /// Packets seen, by type (index = type 0..=15).
    pub counts: [u32; 16],
}

#[derive(Debug, Clone, Copy, Default)]
enum ScanState {
    /// Expecting the first byte of a fixed header.
    #[default]
    Header,
    /// Reading the remaining length.
    Length { kind: u8, value: usize, shift: u32 },
    /// Skipping `left` bytes of a body.
    Body { left: usize },
    /// The stream is not MQTT (a remaining length longer than four bytes).
    Broken,
}

impl Scanner {
    /// Consumes `bytes`; returns false once the stream is not valid MQTT framing.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self.state {
                ScanState::Broken => return false,
                ScanState::Header => {
                    self.state = ScanState::Length {
                        kind: bytes[0] >> 4,
                        value: 0,
                        shift: 0,
                    };
                    bytes = &bytes[1..];
                }
                ScanState::Length { kind, value, shift } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    let value = value | (usize::from(b & 0x7F) << shift);
                    if b & 0x80 != 0 {
                        self.state = if shift >= 21 {
                            ScanState::Broken
                        } else {
                            ScanState::Length {
                                kind,
                                value,
                                shift: shift + 7,
                            }
                        };
                    } else {
                        self.counts[usize::from(kind)] += 1;
                        self.state = if value == 0 {
                            ScanState::Header
                        } else {
                            ScanState::Body { left: value }
                        };
                    }
                }
                ScanState::Body { left } => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.state = if n == left {
                        ScanState::Header
                    } else {
                        ScanState::Body { left: left - n }
                    };
                }
            }
        }
        !matches!(self.state, ScanState::Broken)
    }

    /// Packets of `kind` seen so far (complete headers; bodies may still be arriving).
    pub fn count(&self, kind: u8) -> u32 {
        self.counts[usize::from(kind & 0x0F)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_is_encoded_byte_for_byte() {
        let c = Connect {
            client_id: "lt_n000001_0_0_2019120219",
            username: "lt_n000001",
            password: "338ce4d607e62fdca760488716216fbe0a19771874db10ce30360e5c777c3e3c",
            keepalive_secs: 300,
        };
        let mut expected: Vec<u8> = vec![
            0x10, 115, // CONNECT, remaining length 10 + 27 + 12 + 66
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x04, // level 4 = 3.1.1
            0xC2, // user name, password, clean session
            0x01, 0x2C, // keep-alive 300
            0x00, 25,
        ];
        expected.extend_from_slice(b"lt_n000001_0_0_2019120219");
        expected.extend_from_slice(&[0x00, 10]);
        expected.extend_from_slice(b"lt_n000001");
        expected.extend_from_slice(&[0x00, 64]);
        expected
            .extend_from_slice(b"338ce4d607e62fdca760488716216fbe0a19771874db10ce30360e5c777c3e3c");
        assert_eq!(expected.len(), 2 + 115);
        assert_eq!(c.encode(), expected);
    }

    #[test]
    fn an_empty_user_name_is_an_anonymous_connect() {
        let c = Connect {
            client_id: "lt_n000001",
            username: "",
            password: "",
            keepalive_secs: 60,
        };
        let mut expected: Vec<u8> = vec![
            0x10, 22, // CONNECT, remaining length 10 + 12
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, //
            0x02, // clean session only
            0x00, 60, 0x00, 10,
        ];
        expected.extend_from_slice(b"lt_n000001");
        assert_eq!(c.encode(), expected);
    }

    #[test]
    fn long_connects_use_a_two_byte_remaining_length() {
        let id = "x".repeat(200);
        let c = Connect {
            client_id: &id,
            username: "u",
            password: "p",
            keepalive_secs: 10,
        };
        let bytes = c.encode();
        // 10 + (2 + 200) + (2 + 1) + (2 + 1) = 218 = 0xDA → 0xDA & 0x7F | 0x80, 1
        assert_eq!(&bytes[..3], &[0x10, 0xDA, 0x01]);
        assert_eq!(bytes.len(), 3 + 218);
    }

    #[test]
    fn remaining_length_examples_of_the_standard() {
        // MQTT 3.1.1 §2.2.3 table 2.4 boundaries.
        for (len, enc) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (268_435_455, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, len);
            assert_eq!(out, enc, "{len}");
        }
    }

    #[test]
    fn connack_codes_are_decoded() {
        assert_eq!(
            ConnAck::decode([0x20, 0x02, 0x00, 0x00]),
            Ok(ConnAck::Accepted {
                session_present: false
            })
        );
        assert_eq!(
            ConnAck::decode([0x20, 0x02, 0x01, 0x00]),
            Ok(ConnAck::Accepted {
                session_present: true
            })
        );
        assert_eq!(
            ConnAck::decode([0x20, 0x02, 0x00, 0x04]),
            Ok(ConnAck::Refused(4))
        );
        assert_eq!(
            ConnAck::decode([0x20, 0x02, 0x00, 0x05]),
            Ok(ConnAck::Refused(5))
        );
        assert!(ConnAck::decode([0xD0, 0x00, 0x20, 0x02]).is_err());
        assert!(ConnAck::decode([0x20, 0x03, 0x00, 0x00]).is_err());
    }

    #[test]
    fn suback_codes_are_decoded() {
        assert_eq!(
            SubAck::decode([0x90, 0x03, 0x00, 0x01, 0x01], 1),
            Ok(SubAck::Granted(1))
        );
        assert_eq!(
            SubAck::decode([0x90, 0x03, 0x00, 0x01, 0x00], 1),
            Ok(SubAck::Granted(0))
        );
        assert_eq!(
            SubAck::decode([0x90, 0x03, 0x01, 0x02, 0x02], 0x0102),
            Ok(SubAck::Granted(2))
        );
        assert_eq!(
            SubAck::decode([0x90, 0x03, 0x00, 0x01, 0x80], 1),
            Ok(SubAck::Failure)
        );
        assert_eq!(
            SubAck::decode([0x90, 0x03, 0x00, 0x02, 0x01], 1),
            Err(SubAckError::PacketId {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            SubAck::decode([0x90, 0x03, 0x00, 0x01, 0x03], 1),
            Err(SubAckError::ReturnCode(3))
        );
        // A PUBLISH, and a SUBACK of two filters.
        let e = SubAck::decode([0x30, 0x03, 0x00, 0x01, b'a'], 1).unwrap_err();
        assert_eq!(e.to_string(), "expected SUBACK, got 3003000161");
        assert!(SubAck::decode([0x90, 0x04, 0x00, 0x01, 0x01], 1).is_err());
    }

    #[test]
    fn suback_answers_the_subscribe_of_conn() {
        // The SUBSCRIBE the idle connections send (crate::conn::subscribe), byte for byte.
        let filter = "$oc/devices/lt_n000001/sys/commands/#";
        let mut expected = vec![0x82, 2 + 2 + 37 + 1, 0x00, 0x01, 0x00, 37];
        expected.extend_from_slice(filter.as_bytes());
        expected.push(0x01);
        assert_eq!(crate::conn::subscribe(1, filter, 1), expected);
    }

    #[test]
    fn scanner_counts_packets_across_splits() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0xD0, 0x00]); // PINGRESP
        stream.extend_from_slice(&[0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']); // PUBLISH
        stream.extend_from_slice(&[0xD0, 0x00]); // PINGRESP
        let mut body = vec![0x30, 0x80, 0x01]; // PUBLISH, 128-byte body
        body.extend(std::iter::repeat_n(0u8, 128));
        stream.extend_from_slice(&body);
        for chunk in 1..=stream.len() {
            let mut s = Scanner::default();
            for piece in stream.chunks(chunk) {
                assert!(s.feed(piece));
            }
            assert_eq!(s.count(packet_type::PINGRESP), 2, "chunk {chunk}");
            assert_eq!(s.count(packet_type::PUBLISH), 2, "chunk {chunk}");
        }
    }

    #[test]
    fn scanner_rejects_overlong_lengths() {
        let mut s = Scanner::default();
        assert!(!s.feed(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]));
        assert!(!s.feed(&[0xD0, 0x00]));
    }

    #[test]
    fn fixed_packets() {
        assert_eq!(PINGREQ, [0xC0, 0x00]);
        assert_eq!(DISCONNECT, [0xE0, 0x00]);
    }
}
