//! The `coap-sleepers` scenario file: TOML read through serde (unknown keys refused), then
//! every range and address checked, all problems reported at once.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::scenario::Problems;

/// Most UDP sockets of the one generator process (the hard open-file limit here is 20,000).
pub const MAX_SOCKETS: u32 = 16_000;
/// Most devices woken (and sent commands) in one run.
pub const MAX_WAKE: u32 = 10_000;

/// The `coap-sleepers` scenario: register `devices` LwM2M devices at `register_rate`, let the
/// server hibernate them, sample its memory, then queue delayed commands for `wake` of them,
/// wake those and time the commands' arrival.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepersScenario {
    /// fleetgate's CoAP listener (IPv4 loopback only).
    pub target: SocketAddr,
    /// fleetgate's HTTP API listener (IPv4 loopback only): `/metrics` and the commands.
    pub api: SocketAddr,
    /// The project in `/v5/iot/{project}/…`.
    #[serde(default = "default_project")]
    pub project: String,
    /// File holding the API key (fleetgate writes `{data_dir}/store/admin-api-key`).
    #[serde(default, skip_serializing)]
    pub api_key_file: Option<String>,
    /// The product of the devices (device ids are `{product}_{node_id}`).
    #[serde(default = "default_product")]
    pub product: String,
    /// Devices registered: node ids `node_id(first_node) …`.
    pub devices: u32,
    /// Node id number of the first device.
    #[serde(default = "one")]
    pub first_node: u64,
    /// UDP sockets of the generator (at most this many devices awake at once).
    pub sockets: u32,
    /// Source addresses 127.0.0.2 … the sockets are spread over.
    #[serde(default = "default_sources")]
    pub sources: u8,
    /// Registrations started per second.
    pub register_rate: u64,
    /// Registrations in flight at once (also bounded by free sockets); default `sockets`.
    #[serde(default)]
    pub max_inflight: Option<u32>,
    /// Registration lifetime `lt`, seconds.
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: u32,
    /// A device stays awake this long after its latest datagram, milliseconds (it answers the
    /// server's observe request, and commands after a wake, in this time).
    #[serde(default = "default_device_awake_ms")]
    pub device_awake_ms: u64,
    /// The server's `engine.lwm2m.awake_window_secs` (the fleet reuses a socket only after it).
    pub server_awake_window_secs: u64,
    /// A socket serves another device this long after its previous one slept; default the
    /// server's awake window + 2 s.
    #[serde(default)]
    pub socket_reuse_secs: Option<u64>,
    /// Longest wait for the server to report no awake device after registering.
    #[serde(default)]
    pub hibernate_timeout_secs: Option<u64>,
    /// Seconds to wait after hibernation before sampling the server's memory.
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
    /// Devices woken (chosen at random among the registered ones by `seed`); 0 = no wake phase.
    #[serde(default)]
    pub wake: u32,
    /// Delayed commands queued per woken device.
    #[serde(default = "one_u32")]
    pub commands_per_device: u32,
    /// Commands queued per second through the API (fleetgate allows an application 50
    /// device-bound calls per second by default: `api.rate_limit.downlinks_per_sec`). A 429
    /// is retried after its `Retry-After`, at most 5 times.
    #[serde(default = "default_queue_rate")]
    pub queue_rate: u64,
    /// Wakes started per second.
    #[serde(default = "default_wake_rate")]
    pub wake_rate: u64,
    /// Longest wait for the commands after the wakes, seconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
    /// Hard bound on the whole run, seconds.
    #[serde(default = "default_duration")]
    pub duration_secs: u64,
    /// Seed of the choice of woken devices.
    #[serde(default = "one")]
    pub seed: u64,
    /// The server's process id (memory and CPU are read from /proc); none = not sampled.
    #[serde(default)]
    pub server_pid: Option<u32>,
}

fn default_project() -> String {
    "loadtest".to_owned()
}
fn default_product() -> String {
    "nbwm".to_owned()
}
fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_sources() -> u8 {
    8
}
fn default_lifetime() -> u32 {
    86_400
}
fn default_device_awake_ms() -> u64 {
    2000
}
fn default_settle() -> u64 {
    3
}
fn default_queue_rate() -> u64 {
    40
}
fn default_wake_rate() -> u64 {
    200
}
fn default_command_timeout() -> u64 {
    60
}
fn default_duration() -> u64 {
    3600
}

fn check_addr(key: &str, addr: SocketAddr, problems: &mut Vec<String>) {
    if !matches!(addr, SocketAddr::V4(a) if a.ip().is_loopback()) {
        problems.push(format!(
            "{key}: {addr} is not an IPv4 loopback address (127.0.0.0/8); load is only ever sent to this machine"
        ));
    }
    if addr.port() == 0 {
        problems.push(format!("{key}: port 0 is not a listener"));
    }
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    range: std::ops::RangeInclusive<T>,
    problems: &mut Vec<String>,
) {
    if !range.contains(&v) {
        problems.push(format!(
            "{key}: must be in {}..={}, got {v}",
            range.start(),
            range.end()
        ));
    }
}

fn id_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SleepersScenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<SleepersScenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        SleepersScenario::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<SleepersScenario, Problems> {
        let s: SleepersScenario =
            toml::from_str(text).map_err(|e| Problems(vec![e.to_string()]))?;
        let problems = s.problems();
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(Problems(problems))
        }
    }

    /// Every problem of the values.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        check_addr("target", self.target, &mut p);
        check_addr("api", self.api, &mut p);
        if !id_like(&self.project) {
            p.push(format!(
                "project: {:?} must be 1-32 characters of [A-Za-z0-9_-]",
                self.project
            ));
        }
        if !id_like(&self.product) {
            p.push(format!(
                "product: {:?} must be 1-32 characters of [A-Za-z0-9_-]",
                self.product
            ));
        }
        check_range("devices", self.devices, 1..=1_000_000, &mut p);
        check_range("first_node", self.first_node, 0..=9_000_000_000_000, &mut p);
        check_range("sockets", self.sockets, 1..=MAX_SOCKETS, &mut p);
        check_range("sources", self.sources, 1..=250, &mut p);
        check_range("register_rate", self.register_rate, 1..=100_000, &mut p);
        if let Some(m) = self.max_inflight {
            check_range("max_inflight", m, 1..=MAX_SOCKETS, &mut p);
        }
        check_range("lifetime_secs", self.lifetime_secs, 60..=31_536_000, &mut p);
        check_range(
            "device_awake_ms",
            self.device_awake_ms,
            100..=600_000,
            &mut p,
        );
        check_range(
            "server_awake_window_secs",
            self.server_awake_window_secs,
            1..=86_400,
            &mut p,
        );
        if let Some(r) = self.socket_reuse_secs
            && r < self.server_awake_window_secs
        {
            p.push(format!(
                "socket_reuse_secs: {r} is under server_awake_window_secs ({}): what the server sends a sleeper would reach the next device on its socket",
                self.server_awake_window_secs
            ));
        }
        if let Some(h) = self.hibernate_timeout_secs {
            check_range("hibernate_timeout_secs", h, 1..=86_400, &mut p);
        }
        check_range("settle_secs", self.settle_secs, 0..=600, &mut p);
        check_range("wake", self.wake, 0..=MAX_WAKE.min(self.devices), &mut p);
        check_range(
            "commands_per_device",
            self.commands_per_device,
            1..=10,
            &mut p,
        );
        check_range("queue_rate", self.queue_rate, 1..=10_000, &mut p);
        check_range("wake_rate", self.wake_rate, 1..=100_000, &mut p);
        check_range(
            "command_timeout_secs",
            self.command_timeout_secs,
            1..=3600,
            &mut p,
        );
        check_range("duration_secs", self.duration_secs, 1..=86_400, &mut p);
        if self.duration_secs < self.min_duration_secs() {
            p.push(format!(
                "duration_secs: {} is too short for the registrations at register_rate, the hibernation and the wakes: at least {}",
                self.duration_secs,
                self.min_duration_secs()
            ));
        }
        p
    }

    /// The socket reuse delay.
    pub fn socket_reuse_secs(&self) -> u64 {
        self.socket_reuse_secs
            .unwrap_or(self.server_awake_window_secs + 2)
    }

    /// The bound on waiting for hibernation.
    pub fn hibernate_timeout_secs(&self) -> u64 {
        self.hibernate_timeout_secs
            .unwrap_or(self.server_awake_window_secs * 2 + 60)
    }

    /// Registrations in flight at once.
    pub fn max_inflight(&self) -> u32 {
        self.max_inflight.unwrap_or(self.sockets)
    }

    /// The shortest run the phases need at their nominal pace.
    pub fn min_duration_secs(&self) -> u64 {
        u64::from(self.devices).div_ceil(self.register_rate.max(1))
            + self.server_awake_window_secs
            + self.settle_secs
            + u64::from(self.wake) * u64::from(self.commands_per_device) / self.queue_rate.max(1)
            + 10
    }

    /// The register phase's timeout: twice its nominal time, plus a minute.
    pub fn register_timeout_secs(&self) -> u64 {
        2 * u64::from(self.devices).div_ceil(self.register_rate.max(1)) + 60
    }

    /// The device id of node `n`.
    pub fn device_id(&self, node: &str) -> String {
        format!("{}_{node}", self.product)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_file_is_valid() {
        let s =
            SleepersScenario::parse(include_str!("../../scenarios/coap-sleepers.toml")).unwrap();
        assert!(s.target.ip().is_loopback());
        assert!(s.socket_reuse_secs() >= s.server_awake_window_secs);
    }

    #[test]
    fn problems_are_reported_at_once() {
        let text = "target = \"10.0.0.1:5683\"\napi = \"127.0.0.1:0\"\ndevices = 0\nsockets = 20000\nregister_rate = 10\nserver_awake_window_secs = 10\nsocket_reuse_secs = 5\n";
        let p = SleepersScenario::parse(text).unwrap_err().0;
        assert!(p.iter().any(|m| m.starts_with("target:")), "{p:#?}");
        assert!(p.iter().any(|m| m.starts_with("api:")), "{p:#?}");
        assert!(p.iter().any(|m| m.starts_with("devices:")), "{p:#?}");
        assert!(p.iter().any(|m| m.starts_with("sockets:")), "{p:#?}");
        assert!(
            p.iter().any(|m| m.starts_with("socket_reuse_secs:")),
            "{p:#?}"
        );
        let unknown = SleepersScenario::parse("target = \"127.0.0.1:1\"\nbogus = 1\n");
        assert!(unknown.is_err());
    }
}
