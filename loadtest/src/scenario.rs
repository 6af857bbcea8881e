//! Scenario files: TOML read raw, every key checked for type and range, unknown keys refused,
//! and all problems reported at once; the result is a typed scenario. One struct per
//! scenario kind (today `idle-connections`; telemetry, command round trips and reconnect storms
//! come later, each with its own section here and its own sample in `loadtest/scenarios/`).
//!
//! The limits keep every run bounded and on this machine: targets only in 127.0.0.0/8, counts,
//! rates and durations capped, each generator process well under the 20,000 open-file limit.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::credentials::valid_product;

mod reconnect;
pub use reconnect::{MAX_PER_SOURCE, ReconnectScenario};
mod traffic;
pub use crate::credentials::Auth;
pub use traffic::{CommandScenario, Fleet, MAX_ACTIVE_DEVICES, TelemetryScenario};

/// Most connections one generator process holds (the hard open-file limit here is 20,000).
pub const MAX_PER_PROCESS: u64 = 16_000;
/// Most source addresses: 127.0.0.2 ..= 127.0.0.251.
pub const MAX_SOURCES: u32 = 250;

/// Every problem found in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the scenario:", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The `idle-connections` scenario: open `count` authenticated MQTT connections at `rate` per
/// second, hold them idle for `hold_secs`, sample the server's memory at `checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleScenario {
    /// The MQTT listener (IPv4 loopback only).
    pub target: SocketAddr,
    /// Product id of the devices (`lt_n000001`, …).
    pub product: String,
    /// Seed of the device secrets (as given to `credentials --seed`).
    pub seed: u64,
    /// Connections to open (devices 1..=count).
    pub count: u64,
    /// New connections per second, all processes together.
    pub rate: u64,
    /// Source addresses 127.0.0.2, 127.0.0.3, … the connections are spread over.
    pub sources: u32,
    /// Generator processes.
    pub processes: u32,
    /// MQTT keep-alive; each connection sends PINGREQ this often.
    pub keepalive_secs: u16,
    /// Seconds the connections are held idle once all are open.
    pub hold_secs: u64,
    /// The server's process id, whose memory is sampled; none = no sampling.
    pub server_pid: Option<u32>,
    /// Connection counts at which opening pauses and the server's memory is sampled; `count`
    /// itself is always one.
    pub checkpoints: Vec<u64>,
    /// Seconds from connect() to CONNACK (to the SUBACK with `subscribe`) before an attempt
    /// counts as failed.
    pub connect_timeout_secs: u64,
    /// Seconds to wait at a checkpoint before sampling, for the server to settle.
    pub settle_secs: u64,
    /// Sign type of the client id: 0 (timestamp not checked) or 1 (checked).
    pub sign_type: u8,
    /// How the devices authenticate (`auth`: device, password or anonymous).
    pub auth: Auth,
    /// Whether each connection, right after its CONNACK 0, subscribes at QoS 1 to its own
    /// `$oc/devices/{device_id}/sys/commands/#` and counts as established only once a SUBACK
    /// grants QoS 0 or 1 (the memory of an idle session with one subscription).
    pub subscribe: bool,
    /// First level of the subscribed topic: `$oc` (fleetgate) or, for a plain broker that
    /// refuses `$` filters (rumqttd), another root such as `oc`.
    pub topic_root: String,
    /// Connection attempts awaiting CONNACK at once, per process (keeps bursts under the
    /// listen backlog).
    pub max_inflight: u64,
    /// Smallest checkpoint used for the memory slope (smaller ones carry start-up noise).
    pub slope_from: u64,
}

/// The keys of `IdleScenario`, for the unknown-key check.
const IDLE_KEYS: &[&str] = &[
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
    "checkpoints",
    "connect_timeout_secs",
    "settle_secs",
    "sign_type",
    "auth",
    "subscribe",
    "topic_root",
    "max_inflight",
    "slope_from",
];

/// Parses a loopback `IP:PORT` for `key`, noting problems.
fn loopback_addr(key: &str, text: &str, problems: &mut Vec<String>) -> SocketAddr {
    match text.parse::<SocketAddr>() {
        Ok(addr) => {
            if !matches!(addr, SocketAddr::V4(a) if a.ip().is_loopback()) {
                problems.push(format!("{key}: {addr} is not an IPv4 loopback address (127.0.0.0/8); load is only ever sent to this machine"));
            }
            if addr.port() == 0 {
                problems.push(format!("{key}: port 0 is not a listener"));
            }
            addr
        }
        Err(_) => {
            if !text.is_empty() {
                problems.push(format!("{key}: {text:?} is not an IP:PORT address"));
            }
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1))
        }
    }
}

/// Parses scenario text into a table, noting every key not in `known`.
fn table_of(text: &str, known: &[&str]) -> Result<(toml::Table, Vec<String>), Problems> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Problems(vec![e.to_string()]))?;
    let problems = table
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{k}: unknown key (known: {})", known.join(", ")))
        .collect();
    Ok((table, problems))
}

/// Reads a scenario file.
fn load_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Notes the problems shared by every product name.
fn check_product(product: &str, problems: &mut Vec<String>) {
    if !valid_product(product) {
        problems.push(format!(
            "product: {product:?} must be 1-32 characters of [A-Za-z0-9-]"
        ));
    }
}

/// Notes the problems of spreading `count` `what` (connections, devices) over `processes`
/// generator processes.
fn check_processes(count: u64, processes: u32, what: &str, problems: &mut Vec<String>) {
    let per_process = count.div_ceil(u64::from(processes));
    if per_process > MAX_PER_PROCESS {
        problems.push(format!(
            "processes: {processes} process(es) for {count} {what} is {per_process} each; at most {MAX_PER_PROCESS} per process (open-file limit 20,000): use processes >= {}",
            count.div_ceil(MAX_PER_PROCESS)
        ));
    }
    if u64::from(processes) > count {
        problems.push(format!(
            "processes: {processes} is more than count ({count})"
        ));
    }
}

/// Reads typed values out of a TOML table, noting every problem instead of stopping at one.
struct Reader<'a> {
    table: &'a toml::Table,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn get(&mut self, key: &str, required: bool) -> Option<&toml::Value> {
        let v = self.table.get(key);
        if v.is_none() && required {
            self.problems.push(format!("{key}: missing (required)"));
        }
        v
    }

    fn int(
        &mut self,
        key: &str,
        default: Option<u64>,
        range: std::ops::RangeInclusive<u64>,
    ) -> u64 {
        let fallback = default.unwrap_or(*range.start());
        let Some(v) = self.get(key, default.is_none()) else {
            return fallback;
        };
        match v.as_integer().map(u64::try_from) {
            Some(Ok(n)) if range.contains(&n) => n,
            Some(_) => {
                let msg = format!(
                    "{key}: must be an integer in {}..={}, got {v}",
                    range.start(),
                    range.end()
                );
                self.problems.push(msg);
                fallback
            }
            None => {
                let msg = format!("{key}: must be an integer, got {} {v}", v.type_str());
                self.problems.push(msg);
                fallback
            }
        }
    }

    fn string(&mut self, key: &str, default: Option<&str>) -> String {
        let fallback = default.unwrap_or_default().to_owned();
        match self.get(key, default.is_none()) {
            None => fallback,
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => {
                let msg = format!("{key}: must be a string, got {} {v}", v.type_str());
                self.problems.push(msg);
                fallback
            }
        }
    }

    /// A boolean `key`, `default` when absent.
    fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.get(key, false) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(v) => {
                let msg = format!(
                    "{key}: must be one of true, false (a TOML boolean, unquoted), got {} {v}",
                    v.type_str()
                );
                self.problems.push(msg);
                default
            }
        }
    }

    /// The key `topic_root` (default `$oc`): the first level of the device topics.
    fn topic_root(&mut self) -> String {
        let root = self.string("topic_root", Some(crate::credentials::DEFAULT_TOPIC_ROOT));
        if !crate::credentials::valid_topic_root(&root) {
            self.problems.push(format!(
                "topic_root: {root:?} must be 1-16 characters of [A-Za-z0-9$_-]"
            ));
        }
        root
    }

    /// The key `auth` (default "device"), one of [`Auth::NAMES`].
    fn auth(&mut self) -> Auth {
        let got = match self.get("auth", false) {
            None => return Auth::Device,
            Some(toml::Value::String(text)) => match Auth::parse(text) {
                Some(auth) => return auth,
                None => format!("{text:?}"),
            },
            Some(v) => format!("{} {v}", v.type_str()),
        };
        self.problems.push(format!(
            "auth: must be one of {}, got {got}",
            Auth::NAMES.join(", ")
        ));
        Auth::Device
    }

    /// The optional `server_pid`.
    fn server_pid(&mut self) -> Option<u32> {
        self.table
            .contains_key("server_pid")
            .then(|| self.int("server_pid", None, 1..=u64::from(u32::MAX)) as u32)
    }

    fn int_list(&mut self, key: &str) -> Vec<u64> {
        match self.get(key, false) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let items = items.clone();
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_integer().map(u64::try_from) {
                        Some(Ok(n)) => out.push(n),
                        _ => self.problems.push(format!(
                            "{key}[{i}]: must be a non-negative integer, got {item}"
                        )),
                    }
                }
                out
            }
            Some(v) => {
                let msg = format!(
                    "{key}: must be an array of integers, got {} {v}",
                    v.type_str()
                );
                self.problems.push(msg);
                Vec::new()
            }
        }
    }
}

impl IdleScenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<IdleScenario> {
        IdleScenario::parse(&load_text(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates scenario text; `server_pid_override` (from the command line) wins
    /// over the file's `server_pid`.
    pub fn parse(text: &str) -> Result<IdleScenario, Problems> {
        let (table, problems) = table_of(text, IDLE_KEYS)?;
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
        let hold_secs = r.int("hold_secs", Some(10), 0..=3600);
        let server_pid = r.server_pid();
        let checkpoints = r.int_list("checkpoints");
        let connect_timeout_secs = r.int("connect_timeout_secs", Some(10), 1..=300);
        let settle_secs = r.int("settle_secs", Some(3), 0..=60);
        let sign_type = r.int("sign_type", Some(0), 0..=1) as u8;
        let auth = r.auth();
        let subscribe = r.boolean("subscribe", false);
        let topic_root = r.topic_root();
        let max_inflight = r.int("max_inflight", Some(1000), 1..=4096);
        let slope_from = r.int("slope_from", Some(5000), 0..=1_000_000);
        let mut problems = r.problems;

        let target = loopback_addr("target", &target_text, &mut problems);
        check_product(&product, &mut problems);
        check_processes(count, processes, "connections", &mut problems);
        for (i, &c) in checkpoints.iter().enumerate() {
            if c == 0 || c > count {
                problems.push(format!(
                    "checkpoints[{i}]: {c} must be in 1..=count ({count})"
                ));
            }
            if i > 0 && c <= checkpoints[i - 1] {
                problems.push(format!(
                    "checkpoints[{i}]: {c} must be greater than the one before ({})",
                    checkpoints[i - 1]
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        Ok(IdleScenario {
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
            checkpoints,
            connect_timeout_secs,
            settle_secs,
            sign_type,
            auth,
            subscribe,
            topic_root,
            max_inflight,
            slope_from,
        })
    }

    /// The connection counts at which opening pauses: the checkpoints, then `count`.
    pub fn steps(&self) -> Vec<u64> {
        let mut steps: Vec<u64> = self
            .checkpoints
            .iter()
            .copied()
            .filter(|&c| c < self.count)
            .collect();
        steps.push(self.count);
        steps
    }

    /// Source address number `i` (0-based): 127.0.0.2, 127.0.0.3, …
    pub fn source(&self, i: u32) -> Ipv4Addr {
        let last = 2 + (i % self.sources.max(1));
        Ipv4Addr::new(127, 0, 0, last as u8)
    }

    /// An upper bound on the run's duration, seconds: opening at the configured rate (with
    /// slack for a slow server), every settle and timeout, the hold, and a minute to stop.
    pub fn deadline_secs(&self) -> u64 {
        let steps = self.steps().len() as u64;
        let ramp = (2 * self.count).div_ceil(self.rate);
        ramp + steps * (self.settle_secs + self.connect_timeout_secs + 10) + self.hold_secs + 60
    }
}

/// How many of the first `total` connections belong to worker `index` of `processes`: worker
/// `i` owns global connection numbers `i, i + p, i + 2p, …`.
pub fn share(total: u64, index: u32, processes: u32) -> u64 {
    let p = u64::from(processes.max(1));
    let i = u64::from(index);
    total / p + u64::from(i < total % p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "target = \"127.0.0.1:18830\"\ncount = 100\nrate = 500\n";

    #[test]
    fn minimal_file_gets_the_defaults() {
        let s = IdleScenario::parse(MINIMAL).unwrap();
        assert_eq!(s.target, "127.0.0.1:18830".parse().unwrap());
        assert_eq!(s.product, "lt");
        assert_eq!(s.seed, 1);
        assert_eq!(s.processes, 1);
        assert_eq!(s.sources, 8);
        assert_eq!(s.keepalive_secs, 300);
        assert_eq!(s.server_pid, None);
        assert_eq!(s.auth, Auth::Device);
        assert!(!s.subscribe);
        assert_eq!(s.steps(), vec![100]);
    }

    #[test]
    fn subscribe_and_auth_are_read() {
        let text = format!("{MINIMAL}subscribe = true\nauth = \"password\"\n");
        let s = IdleScenario::parse(&text).unwrap();
        assert!(s.subscribe);
        assert_eq!(s.auth, Auth::Password);
        let text = format!("{MINIMAL}subscribe = false\nauth = \"anonymous\"\n");
        let s = IdleScenario::parse(&text).unwrap();
        assert!(!s.subscribe);
        assert_eq!(s.auth, Auth::Anonymous);
    }

    #[test]
    fn topic_root_defaults_to_fleetgate_and_is_checked() {
        let base = "target = \"127.0.0.1:1883\"\ncount = 10\nrate = 10\n";
        let s = IdleScenario::parse(base).unwrap();
        assert_eq!(s.topic_root, "$oc");
        let s = IdleScenario::parse(&format!("{base}topic_root = \"oc\"\n")).unwrap();
        assert_eq!(s.topic_root, "oc");
        let e = IdleScenario::parse(&format!("{base}topic_root = \"a/b\"\n")).unwrap_err();
        assert!(e.0.iter().any(|p| p.starts_with("topic_root:")), "{e}");
    }

    #[test]
    fn unknown_subscribe_and_auth_values_are_refused_with_the_accepted_ones() {
        let text = format!("{MINIMAL}subscribe = \"yes\"\nauth = \"plain\"\n");
        let Problems(p) = IdleScenario::parse(&text).unwrap_err();
        assert_eq!(
            p,
            vec![
                "auth: must be one of device, password, anonymous, got \"plain\"",
                "subscribe: must be one of true, false (a TOML boolean, unquoted), got string \"yes\"",
            ]
        );
        // Case matters, and a number is not a boolean.
        let text = format!("{MINIMAL}subscribe = 1\nauth = \"Device\"\n");
        let Problems(p) = IdleScenario::parse(&text).unwrap_err();
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("auth: must be one of device, password, anonymous"));
        assert!(
            p[1].starts_with("subscribe: must be one of true, false"),
            "{p:#?}"
        );
        assert!(p[1].ends_with("got integer 1"), "{p:#?}");
    }

    #[test]
    fn the_sample_file_is_valid() {
        let text = include_str!("../scenarios/idle-connections.toml");
        let s = IdleScenario::parse(text).unwrap();
        assert_eq!(s.count, 19_000);
        assert!(s.count.div_ceil(u64::from(s.processes)) <= MAX_PER_PROCESS);
        assert_eq!(s.steps().last(), Some(&19_000));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            target = "10.0.0.1:1883"
            product = "bad_product"
            count = 40000
            rate = 0
            processes = 2
            keepalive_secs = 5
            hold_secs = "long"
            checkpoints = [5000, 2000, 50000, -1]
            colour = "blue"
        "#;
        let Problems(p) = IdleScenario::parse(text).unwrap_err();
        let has = |needle: &str| p.iter().any(|m| m.contains(needle));
        assert!(has("colour: unknown key"), "{p:#?}");
        assert!(
            has("target: 10.0.0.1:1883 is not an IPv4 loopback"),
            "{p:#?}"
        );
        assert!(has("product: \"bad_product\""), "{p:#?}");
        assert!(
            has("rate: must be an integer in 1..=100000, got 0"),
            "{p:#?}"
        );
        assert!(
            has("keepalive_secs: must be an integer in 10..=1200"),
            "{p:#?}"
        );
        assert!(has("hold_secs: must be an integer, got string"), "{p:#?}");
        assert!(has("checkpoints[1]: 2000 must be greater"), "{p:#?}");
        assert!(has("checkpoints[2]: 50000 must be in 1..=count"), "{p:#?}");
        assert!(
            has("checkpoints[3]: must be a non-negative integer"),
            "{p:#?}"
        );
        assert!(
            has("processes: 2 process(es) for 40000 connections is 20000 each"),
            "{p:#?}"
        );
        assert_eq!(p.len(), 10, "{p:#?}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let Problems(p) = IdleScenario::parse("").unwrap_err();
        assert_eq!(
            p,
            vec![
                "target: missing (required)",
                "count: missing (required)",
                "rate: missing (required)",
            ]
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(IdleScenario::parse("target = ").is_err());
    }

    #[test]
    fn non_loopback_and_ipv6_targets_are_refused() {
        for t in [
            "192.168.1.5:1883",
            "8.8.8.8:1883",
            "[::1]:1883",
            "0.0.0.0:1883",
        ] {
            let text = format!("target = \"{t}\"\ncount = 1\nrate = 1\n");
            assert!(IdleScenario::parse(&text).is_err(), "{t}");
        }
        let text = "target = \"127.9.9.9:1883\"\ncount = 1\nrate = 1\n";
        assert!(IdleScenario::parse(text).is_ok());
    }

    #[test]
    fn steps_end_at_count() {
        let mut s = IdleScenario::parse(MINIMAL).unwrap();
        s.checkpoints = vec![10, 50, 100];
        assert_eq!(s.steps(), vec![10, 50, 100]);
        s.checkpoints = vec![10, 50];
        assert_eq!(s.steps(), vec![10, 50, 100]);
    }

    #[test]
    fn sources_cycle_from_127_0_0_2() {
        let mut s = IdleScenario::parse(MINIMAL).unwrap();
        s.sources = 3;
        let got: Vec<_> = (0..4).map(|i| s.source(i).to_string()).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
    }

    #[test]
    fn shares_partition_the_connections() {
        for total in [0u64, 1, 7, 100, 19_000, 19_001] {
            for p in 1..=5u32 {
                let sum: u64 = (0..p).map(|i| share(total, i, p)).sum();
                assert_eq!(sum, total, "total {total} p {p}");
                // Worker i owns global numbers g = k*p + i for k < share: all below total.
                for i in 0..p {
                    let n = share(total, i, p);
                    if n > 0 {
                        assert!((n - 1) * u64::from(p) + u64::from(i) < total);
                    }
                    assert!(n * u64::from(p) + u64::from(i) >= total);
                }
            }
        }
    }

    #[test]
    fn deadline_grows_with_the_work() {
        let s = IdleScenario::parse(MINIMAL).unwrap();
        let mut longer = s.clone();
        longer.hold_secs += 100;
        assert_eq!(longer.deadline_secs(), s.deadline_secs() + 100);
    }
}
