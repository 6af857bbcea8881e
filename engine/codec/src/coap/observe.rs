//! The Observe option (RFC 7641): its value in requests (0 register, 1 deregister) and in
//! notifications (a 24-bit sequence number), and the rule that tells a fresh notification from
//! a reordered old one (§3.4).
//!
//! fleetgate observes `/19/0/0` on each device (`docs/coap.md`); every notification carries a
//! report, and [`is_newer`] decides whether it is newer than the latest one seen on that
//! observation. Reports are stored either way; the freshness rule only decides which one is the
//! device's latest state.

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet};

use super::message::{set_option, uint_bytes};

/// Observe value of a request that registers an observation.
pub const REGISTER: u32 = 0;

/// Observe value of a request that cancels an observation.
pub const DEREGISTER: u32 = 1;

/// Observe values are 24-bit (RFC 7641 §2).
pub const MAX_VALUE: u32 = 0x00FF_FFFF;

/// After this long, a notification is newer whatever its sequence number (RFC 7641 §3.4).
pub const FRESHNESS_WINDOW: Duration = Duration::from_secs(128);

/// An Observe option value longer than 3 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Observe option value of {len} bytes; at most 3")]
pub struct ObserveError {
    /// The value's length.
    pub len: usize,
}

/// Reads an Observe option value (0–3 bytes, leading zero bytes accepted).
pub fn decode(bytes: &[u8]) -> Result<u32, ObserveError> {
    if bytes.len() > 3 {
        return Err(ObserveError { len: bytes.len() });
    }
    Ok(bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// The shortest option value for `value` modulo 2^24 (sequence numbers wrap at 24 bits).
#[must_use]
pub fn encode(value: u32) -> Vec<u8> {
    uint_bytes(value & MAX_VALUE)
}

/// The Observe option of a packet, if present.
pub fn get(packet: &Packet) -> Result<Option<u32>, ObserveError> {
    packet
        .get_first_option(CoapOption::Observe)
        .map(|value| decode(value))
        .transpose()
}

/// Sets the Observe option (modulo 2^24), replacing any previous value.
pub fn set(packet: &mut Packet, value: u32) {
    set_option(packet, CoapOption::Observe, encode(value));
}

/// Whether a notification with sequence number `v2` received at `t2` is newer than the latest
/// one, `v1` received at `t1` (RFC 7641 §3.4): `v2` is ahead of `v1` by less than 2^23 in
/// 24-bit serial arithmetic, or more than 128 seconds have passed since `t1`. Values are taken
/// modulo 2^24.
#[must_use]
pub fn is_newer(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    let (v1, v2) = (v1 & MAX_VALUE, v2 & MAX_VALUE);
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2
            .checked_duration_since(t1)
            .is_some_and(|elapsed| elapsed > FRESHNESS_WINDOW)
}
