//! The `reconnect-storm` scenario file: `count` devices connect at `rate`, hold, then all drop
//! their connections at once and reconnect immediately. Read and validated like every scenario
//! file (unknown keys refused, every problem reported at once) with the parent module's reader.
//! Used by [`crate::reconnect`] and the `reconnect-storm` subcommand.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    Auth, MAX_SOURCES, Problems, Reader, check_processes, check_product, load_text, loopback_addr,
    table_of,
};

/// Most devices per source address: each reconnecting device briefly holds two ephemeral ports
/// of its source (the old one in TIME_WAIT, the new one), out of ~28,000.
pub const MAX_PER_SOURCE: u64 = 12_000;

/// The `reconnect-storm` scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectScenario {
    /// The MQTT listener (IPv4 loopback only).
    pub target: SocketAddr,
    /// Product id of the devices (`lt_n000001`, …).
    pub product: String,
    /// Seed of the device secrets (as given to `credentials --seed`).
    pub seed: u64,
    /// Devices (1..=count), one connection each.
    pub count: u64,
    /// New connections per second while the devices first connect, all processes together.
    pub rate: u64,
    /// Source addresses 127.0.0.2, 127.0.0.3, … the devices are spread over.
    pub sources: u32,
    /// Generator processes.
    pub processes: u32,
    /// MQTT keep-alive; each connection sends PINGREQ this often.
    pub keepalive_secs: u16,
    /// Seconds all connections are held before the storm.
    pub hold_secs: u64,
    /// The server's process id, whose CPU is sampled; none = no sampling.
    pub server_pid: Option<u32>,
    /// Seconds from connect() to CONNACK before an attempt counts as failed.
    pub connect_timeout_secs: u64,
    /// Sign type of the client id: 0 (timestamp not checked) or 1 (checked).
    pub sign_type: u8,
    /// How the devices authenticate (`auth`: device, password or anonymous).
    pub auth: Auth,
    /// Initial connection attempts awaiting CONNACK at once, per process (the storm itself is
    /// not throttled).
    pub max_inflight: u64,
    /// Seconds after the drop by which every device must be back; devices still out then give
    /// up and count as not recovered.
    pub storm_timeout_secs: u64,
    /// Milliseconds a device waits after a failed reconnect attempt before the next one.
    pub retry_delay_ms: u64,
    /// Seconds the reconnected devices are held before the run stops (catches late losses).
    pub hold_after_secs: u64,
}

/// The keys of `ReconnectScenario`, for the unknown-key check.
const RECONNECT_KEYS: &[&str] = &[
    "target",
    "product",
    "seed",
    "count",
    "rate",
    "sources",
    "processes",
    "keepalive_secs",
    "hold_secs",
    "server_pid",
    "connect_timeout_secs",
    "sign_type",
    "auth",
    "max_inflight",
    "storm_timeout_secs",
    "retry_delay_ms",
    "hold_after_secs",
];

impl ReconnectScenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<ReconnectScenario> {
        ReconnectScenario::parse(&load_text(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<ReconnectScenario, Problems> {
        let (table, problems) = table_of(text, RECONNECT_KEYS)?;
        let mut r = Reader {
            table: &table,
            problems,
        };
        let target_text = r.string("target", None);
        let product = r.string("product", Some("lt"));
        let seed = r.int("seed", Some(1), 0..=u64::MAX);
        let count = r.int("count", None, 1..=1_000_000);
        let rate = r.int("rate", None, 1..=100_000);
        let sources = r.int("sources", Some(8), 1..=u64::from(MAX_SOURCES)) as u32;
        let processes = r.int("processes", Some(count.div_ceil(10_000).max(1)), 1..=64) as u32;
        let keepalive_secs = r.int("keepalive_secs", Some(300), 10..=1200) as u16;
        let hold_secs = r.int("hold_secs", Some(5), 0..=3600);
        let server_pid = r.server_pid();
        let connect_timeout_secs = r.int("connect_timeout_secs", Some(10), 1..=300);
        let sign_type = r.int("sign_type", Some(0), 0..=1) as u8;
        let auth = r.auth();
        let max_inflight = r.int("max_inflight", Some(1000), 1..=4096);
        let storm_timeout_secs = r.int("storm_timeout_secs", Some(60), 1..=600);
        let retry_delay_ms = r.int("retry_delay_ms", Some(100), 0..=60_000);
        let hold_after_secs = r.int("hold_after_secs", Some(2), 0..=3600);
        let mut problems = r.problems;

        let target = loopback_addr("target", &target_text, &mut problems);
        check_product(&product, &mut problems);
        check_processes(count, processes, "devices", &mut problems);
        let per_source = count.div_ceil(u64::from(sources));
        if per_source > MAX_PER_SOURCE {
            problems.push(format!(
                "sources: {sources} source(s) for {count} devices is {per_source} each; at most {MAX_PER_SOURCE} per source (a reconnecting device holds two ephemeral ports): use sources >= {}",
                count.div_ceil(MAX_PER_SOURCE)
            ));
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        Ok(ReconnectScenario {
            target,
            product,
            seed,
            count,
            rate,
            sources,
            processes,
            keepalive_secs,
            hold_secs,
            server_pid,
            connect_timeout_secs,
            sign_type,
            auth,
            max_inflight,
            storm_timeout_secs,
            retry_delay_ms,
            hold_after_secs,
        })
    }

    /// Source address of global connection number `g` (0-based): 127.0.0.2, 127.0.0.3, …
    pub fn source(&self, g: u64) -> Ipv4Addr {
        let last = 2 + (g % u64::from(self.sources.max(1)));
        Ipv4Addr::new(127, 0, 0, last as u8)
    }

    /// An upper bound on the run's duration, seconds: connecting at the configured rate (with
    /// slack for a slow server), the holds, the storm, and a minute to stop.
    pub fn deadline_secs(&self) -> u64 {
        let ramp = (2 * self.count).div_ceil(self.rate);
        ramp + self.connect_timeout_secs
            + 10
            + self.hold_secs
            + self.storm_timeout_secs
            + self.connect_timeout_secs
            + self.hold_after_secs
            + 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::MAX_PER_PROCESS;

    const MINIMAL: &str = "target = \"127.0.0.1:18830\"\ncount = 100\nrate = 500\n";

    #[test]
    fn minimal_file_gets_the_defaults() {
        let s = ReconnectScenario::parse(MINIMAL).unwrap();
        assert_eq!(s.product, "lt");
        assert_eq!(s.processes, 1);
        assert_eq!(s.sources, 8);
        assert_eq!(s.storm_timeout_secs, 60);
        assert_eq!(s.retry_delay_ms, 100);
        assert_eq!(s.server_pid, None);
        assert_eq!(s.auth, Auth::Device);
    }

    #[test]
    fn auth_is_read_and_unknown_values_are_refused_with_the_accepted_ones() {
        for (name, auth) in [
            ("device", Auth::Device),
            ("password", Auth::Password),
            ("anonymous", Auth::Anonymous),
        ] {
            let s = ReconnectScenario::parse(&format!("{MINIMAL}auth = \"{name}\"\n")).unwrap();
            assert_eq!(s.auth, auth);
        }
        let Problems(p) =
            ReconnectScenario::parse(&format!("{MINIMAL}auth = \"plain\"\n")).unwrap_err();
        assert_eq!(
            p,
            vec!["auth: must be one of device, password, anonymous, got \"plain\""]
        );
        let Problems(p) = ReconnectScenario::parse(&format!("{MINIMAL}auth = true\n")).unwrap_err();
        assert_eq!(
            p,
            vec!["auth: must be one of device, password, anonymous, got boolean true"]
        );
    }

    #[test]
    fn subscribe_is_an_idle_connections_key_only() {
        // reconnect-storm devices hold no subscription: the key is refused, naming the known ones.
        let Problems(p) =
            ReconnectScenario::parse(&format!("{MINIMAL}subscribe = true\n")).unwrap_err();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("subscribe: unknown key (known: target,"),
            "{p:#?}"
        );
        assert!(p[0].contains("auth,"), "{p:#?}");
    }

    #[test]
    fn the_sample_file_is_valid() {
        let text = include_str!("../../scenarios/reconnect-storm.toml");
        let s = ReconnectScenario::parse(text).unwrap();
        assert_eq!(s.count, 19_000);
        assert!(s.count.div_ceil(u64::from(s.processes)) <= MAX_PER_PROCESS);
        assert!(s.count.div_ceil(u64::from(s.sources)) <= MAX_PER_SOURCE);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            target = "10.0.0.1:1883"
            count = 40000
            rate = 10
            processes = 2
            sources = 1
            storm_timeout_secs = 0
            checkpoints = [1]
        "#;
        let Problems(p) = ReconnectScenario::parse(text).unwrap_err();
        let has = |needle: &str| p.iter().any(|m| m.contains(needle));
        assert!(has("checkpoints: unknown key"), "{p:#?}");
        assert!(has("not an IPv4 loopback"), "{p:#?}");
        assert!(
            has("storm_timeout_secs: must be an integer in 1..=600"),
            "{p:#?}"
        );
        assert!(has("processes: 2 process(es) for 40000 devices"), "{p:#?}");
        assert!(has("sources: 1 source(s) for 40000 devices"), "{p:#?}");
        assert_eq!(p.len(), 5, "{p:#?}");
    }

    #[test]
    fn sources_cycle_and_the_deadline_covers_the_storm() {
        let s = ReconnectScenario::parse(MINIMAL).unwrap();
        assert_eq!(s.source(0).to_string(), "127.0.0.2");
        assert_eq!(s.source(8).to_string(), "127.0.0.2");
        let mut longer = s.clone();
        longer.storm_timeout_secs += 30;
        assert_eq!(longer.deadline_secs(), s.deadline_secs() + 30);
    }
}
