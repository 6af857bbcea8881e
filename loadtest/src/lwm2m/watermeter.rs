//! The `watermeter-v1` frames of docs/coap.md ("Codecs"), written from the table there: the
//! device's side (encode reports and command responses, decode commands) plus the platform's
//! command encoding, which the tests' scripted server uses.

use std::fmt;

/// Report frame tag (device → platform).
const REPORT: u8 = 0x01;
/// `SET_VALVE` command frame tag.
const SET_VALVE: u8 = 0x81;
/// `SET_INTERVAL` command frame tag.
const SET_INTERVAL: u8 = 0x82;
/// Command response frame tag.
const COMMAND_RESPONSE: u8 = 0xA0;

/// A water meter report: `0x01`, battery u8, signal i8, reading u32 BE, valve u8 (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Battery level, percent (0–100).
    pub battery: u8,
    /// Signal strength, dBm (the frame's i8 holds −128–127; the product model allows −140–0).
    pub signal: i8,
    /// Meter reading, litres.
    pub reading: u32,
    /// Whether the valve is open.
    pub valve_open: bool,
}

impl Default for Report {
    /// A full battery, −70 dBm, reading 0, valve open.
    fn default() -> Self {
        Report {
            battery: 100,
            signal: -70,
            reading: 0,
            valve_open: true,
        }
    }
}

impl Report {
    /// The 8-byte frame.
    pub fn encode(&self) -> [u8; 8] {
        let r = self.reading.to_be_bytes();
        [
            REPORT,
            self.battery,
            self.signal as u8,
            r[0],
            r[1],
            r[2],
            r[3],
            u8::from(self.valve_open),
        ]
    }

    /// Parses a report frame (what the server decodes; for tests and peers).
    pub fn decode(frame: &[u8]) -> Result<Report, FrameError> {
        match frame {
            [REPORT, battery, signal, r0, r1, r2, r3, valve] => {
                let valve_open = match valve {
                    0 => false,
                    1 => true,
                    v => return Err(FrameError::OutOfRange("valve", u32::from(*v))),
                };
                if *battery > 100 {
                    return Err(FrameError::OutOfRange("battery", u32::from(*battery)));
                }
                Ok(Report {
                    battery: *battery,
                    signal: *signal as i8,
                    reading: u32::from_be_bytes([*r0, *r1, *r2, *r3]),
                    valve_open,
                })
            }
            [REPORT, ..] => Err(FrameError::Length(frame.len())),
            [tag, ..] => Err(FrameError::UnknownTag(*tag)),
            [] => Err(FrameError::Length(0)),
        }
    }
}

/// A command the platform sends (`POST /19/1/0`, content format 42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `SET_VALVE`: `0x81`, valve u8 (0 closed, 1 open).
    SetValve {
        /// Open (true) or close the valve.
        open: bool,
    },
    /// `SET_INTERVAL`: `0x82`, interval u32 BE, seconds (60–86400).
    SetInterval {
        /// Reporting interval, seconds.
        secs: u32,
    },
}

impl Command {
    /// Decodes a command frame; a short or long frame, another tag or an out-of-range value is
    /// an error, as for the platform's codec.
    pub fn decode(frame: &[u8]) -> Result<Command, FrameError> {
        match frame {
            [SET_VALVE, v] => match v {
                0 => Ok(Command::SetValve { open: false }),
                1 => Ok(Command::SetValve { open: true }),
                v => Err(FrameError::OutOfRange("valve", u32::from(*v))),
            },
            [SET_INTERVAL, a, b, c, d] => {
                let secs = u32::from_be_bytes([*a, *b, *c, *d]);
                if (60..=86_400).contains(&secs) {
                    Ok(Command::SetInterval { secs })
                } else {
                    Err(FrameError::OutOfRange("interval", secs))
                }
            }
            [SET_VALVE | SET_INTERVAL, ..] => Err(FrameError::Length(frame.len())),
            [tag, ..] => Err(FrameError::UnknownTag(*tag)),
            [] => Err(FrameError::Length(0)),
        }
    }

    /// The frame the platform sends (for scripted servers in tests).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Command::SetValve { open } => vec![SET_VALVE, u8::from(*open)],
            Command::SetInterval { secs } => {
                let mut f = vec![SET_INTERVAL];
                f.extend_from_slice(&secs.to_be_bytes());
                f
            }
        }
    }

    /// The command response frame: `0xA0`, result u8 (0 success, else an error code).
    pub fn response(result: u8) -> [u8; 2] {
        [COMMAND_RESPONSE, result]
    }
}

/// Why a frame does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The frame has the wrong length for its tag (or is empty).
    Length(usize),
    /// The first byte is no known frame tag.
    UnknownTag(u8),
    /// A field's value is out of its range.
    OutOfRange(&'static str, u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length(n) => write!(f, "wrong frame length {n}"),
            FrameError::UnknownTag(t) => write!(f, "unknown frame tag 0x{t:02x}"),
            FrameError::OutOfRange(field, v) => write!(f, "{field} {v} out of range"),
        }
    }
}

impl std::error::Error for FrameError {}
