//! `[engine.lwm2m]`: the CoAP reliability parameters, registration bounds and the awake window
//! of sleeping devices (docs/coap.md). The UDP address is `[engine.coap]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[engine.lwm2m]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lwm2mConfig {
    /// RFC 7252 `ACK_TIMEOUT`, milliseconds (2000).
    pub ack_timeout_ms: u64,
    /// RFC 7252 `ACK_RANDOM_FACTOR` (1.5).
    pub ack_random_factor: f64,
    /// RFC 7252 `MAX_RETRANSMIT` (4).
    pub max_retransmit: u32,
    /// Lifetime when a registration gives none, seconds (86400).
    pub default_lifetime_secs: u32,
    /// Shortest lifetime accepted, seconds.
    pub min_lifetime_secs: u32,
    /// Longest lifetime accepted, seconds.
    pub max_lifetime_secs: u32,
    /// How long a queue-mode device stays reachable after each datagram it sends, seconds
    /// (93, LwM2M's default: CoAP's `MAX_TRANSMIT_WAIT`).
    pub awake_window_secs: u32,
    /// Largest request body (Block1 reassembled), bytes.
    pub max_body_bytes: usize,
    /// Block size fleetgate sends in (16–1024, a power of two).
    pub block_size: usize,
    /// Answers remembered for duplicate confirmable requests (a few hundred bytes each).
    pub dedup_capacity: usize,
}

impl Default for Lwm2mConfig {
    fn default() -> Self {
        Lwm2mConfig {
            ack_timeout_ms: 2000,
            ack_random_factor: 1.5,
            max_retransmit: 4,
            default_lifetime_secs: 86_400,
            min_lifetime_secs: 60,
            max_lifetime_secs: 31_536_000,
            awake_window_secs: 93,
            max_body_bytes: 64 * 1024,
            block_size: 1024,
            dedup_capacity: 65_536,
        }
    }
}

impl Lwm2mConfig {
    /// Every problem, as `key: reason` lines.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(100..=60_000).contains(&self.ack_timeout_ms) {
            p.push("engine.lwm2m.ack_timeout_ms: must be between 100 and 60000".into());
        }
        if !(1.0..=4.0).contains(&self.ack_random_factor) {
            p.push("engine.lwm2m.ack_random_factor: must be between 1.0 and 4.0".into());
        }
        if self.max_retransmit > 10 {
            p.push("engine.lwm2m.max_retransmit: must be at most 10".into());
        }
        if self.min_lifetime_secs == 0 || self.min_lifetime_secs > self.max_lifetime_secs {
            p.push(
                "engine.lwm2m.min_lifetime_secs: must be at least 1 and at most max_lifetime_secs"
                    .into(),
            );
        }
        if !(self.min_lifetime_secs..=self.max_lifetime_secs).contains(&self.default_lifetime_secs)
        {
            p.push(
                "engine.lwm2m.default_lifetime_secs: must be between min_lifetime_secs and max_lifetime_secs"
                    .into(),
            );
        }
        if !(1..=86_400).contains(&self.awake_window_secs) {
            p.push("engine.lwm2m.awake_window_secs: must be between 1 and 86400".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            p.push("engine.lwm2m.max_body_bytes: must be between 1024 and 16777216".into());
        }
        if !(16..=1024).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            p.push("engine.lwm2m.block_size: must be a power of two between 16 and 1024".into());
        }
        if !(16..=1 << 24).contains(&self.dedup_capacity) {
            p.push("engine.lwm2m.dedup_capacity: must be between 16 and 16777216".into());
        }
        p
    }

    /// `ACK_TIMEOUT`.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }
}
