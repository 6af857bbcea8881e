//! The scenario files of `telemetry` and `command-roundtrip`: the device fleet both share
//! ([`Fleet`], spread over `processes` worker processes) and each one's own keys, read with the
//! same checks as the other scenarios (every problem reported at once, unknown keys refused,
//! targets only in 127.0.0.0/8, at most [`MAX_PER_PROCESS`](super::MAX_PER_PROCESS)
//! connections per process).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::credentials::Auth;

use super::{
    MAX_PER_SOURCE, MAX_SOURCES, Problems, Reader, check_processes, check_product, load_text,
    loopback_addr, table_of,
};

/// Most devices of one `telemetry` or `command-roundtrip` run (all worker processes together).
pub const MAX_ACTIVE_DEVICES: u64 = 100_000;

/// Devices per worker process the default `processes` aims at (well under
/// [`MAX_PER_PROCESS`](super::MAX_PER_PROCESS)).
const DEVICES_PER_PROCESS: u64 = 10_000;

/// Most worker processes of one run.
const MAX_PROCESSES: u64 = 64;

/// Default per-device window of unacknowledged QoS 1 reports (`max_inflight`).
const DEFAULT_MAX_INFLIGHT: u64 = 20;

/// The MQTT connection settings shared by `telemetry` and `command-roundtrip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    /// The MQTT listener (IPv4 loopback only).
    pub target: SocketAddr,
    /// Product id of the devices (`lt_n000001`, …).
    pub product: String,
    /// Seed of the device secrets.
    pub seed: u64,
    /// Devices (1..=count).
    pub count: u64,
    /// New connections per second while connecting.
    pub connect_rate: u64,
    /// Source addresses 127.0.0.2, … the connections are spread over.
    pub sources: u32,
    /// Worker processes holding the devices: worker `i` of `P` owns devices `i+1, i+1+P, …`.
    pub processes: u32,
    /// MQTT keep-alive, seconds.
    pub keepalive_secs: u16,
    /// Seconds from connect() to CONNACK before an attempt counts as failed.
    pub connect_timeout_secs: u64,
    /// Sign type of the client id (0 or 1).
    pub sign_type: u8,
    /// How the devices authenticate.
    pub auth: Auth,
    /// First level of the device topics: `$oc` (fleetgate) or, for a plain broker that
    /// refuses `$` filters (rumqttd), another root such as `oc`.
    pub topic_root: String,
    /// The server's pid, whose CPU is read from /proc; none = not read.
    pub server_pid: Option<u32>,
}

const FLEET_KEYS: &[&str] = &[
    "target",
    "product",
    "seed",
    "count",
    "connect_rate",
    "sources",
    "processes",
    "keepalive_secs",
    "connect_timeout_secs",
    "sign_type",
    "auth",
    "topic_root",
    "server_pid",
];

impl Fleet {
    fn read(r: &mut Reader<'_>) -> Fleet {
        let target_text = r.string("target", None);
        let product = r.string("product", Some("lt"));
        let seed = r.int("seed", Some(1), 0..=u64::MAX);
        let count = r.int("count", None, 1..=MAX_ACTIVE_DEVICES);
        let connect_rate = r.int("connect_rate", Some(1000), 1..=100_000);
        let default_sources = count
            .div_ceil(MAX_PER_SOURCE)
            .clamp(8, u64::from(MAX_SOURCES));
        let sources = r.int("sources", Some(default_sources), 1..=u64::from(MAX_SOURCES)) as u32;
        let default_processes = count.div_ceil(DEVICES_PER_PROCESS).clamp(1, MAX_PROCESSES);
        let processes = r.int("processes", Some(default_processes), 1..=MAX_PROCESSES) as u32;
        let keepalive_secs = r.int("keepalive_secs", Some(60), 10..=1200) as u16;
        let connect_timeout_secs = r.int("connect_timeout_secs", Some(10), 1..=300);
        let sign_type = r.int("sign_type", Some(0), 0..=1) as u8;
        let auth = r.auth();
        let topic_root = r.topic_root();
        let server_pid = r.server_pid();
        let target = loopback_addr("target", &target_text, &mut r.problems);
        check_product(&product, &mut r.problems);
        check_processes(count, processes, "devices", &mut r.problems);
        let per_source = count.div_ceil(u64::from(sources));
        if per_source > MAX_PER_SOURCE {
            r.problems.push(format!(
                "sources: {sources} source(s) for {count} devices is {per_source} each; at most {MAX_PER_SOURCE} per source (each connection holds an ephemeral port of its source, and a previous run's may still sit in TIME_WAIT): use sources >= {}",
                count.div_ceil(MAX_PER_SOURCE)
            ));
        }
        Fleet {
            target,
            product,
            seed,
            count,
            connect_rate,
            sources,
            processes,
            keepalive_secs,
            connect_timeout_secs,
            sign_type,
            auth,
            topic_root,
            server_pid,
        }
    }

    /// Source address number `i` (0-based): 127.0.0.2, 127.0.0.3, …
    pub fn source(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, (2 + i % u64::from(self.sources.max(1))) as u8)
    }

    /// An upper bound on the time to start the worker processes and connect every device,
    /// seconds.
    pub fn connect_bound_secs(&self) -> u64 {
        (2 * self.count).div_ceil(self.connect_rate) + self.connect_timeout_secs + 10
    }
}

/// The `telemetry` scenario: `count` devices publish property reports at `rate` per second
/// in total for `duration_secs`; one subscriber receives them and measures the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryScenario {
    /// The devices and their connections.
    #[serde(flatten)]
    pub fleet: Fleet,
    /// Property reports per second, all devices together.
    pub rate: u64,
    /// QoS of the reports and of the subscriber's subscription (0 or 1).
    pub qos: u8,
    /// Seconds of publishing.
    pub duration_secs: u64,
    /// Payload size to pad to, bytes (0 = the smallest report).
    pub payload_bytes: u64,
    /// Seconds to wait for the last deliveries once publishing has stopped.
    pub drain_secs: u64,
    /// At QoS 1, reports a device may have sent without their PUBACK yet; a device whose
    /// window is full sends its next report when a PUBACK arrives (late, never skipped).
    pub max_inflight: u64,
}

const TELEMETRY_KEYS: &[&str] = &[
    "rate",
    "qos",
    "duration_secs",
    "payload_bytes",
    "drain_secs",
    "max_inflight",
];

impl TelemetryScenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<TelemetryScenario> {
        TelemetryScenario::parse(&load_text(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<TelemetryScenario, Problems> {
        let known: Vec<&str> = FLEET_KEYS.iter().chain(TELEMETRY_KEYS).copied().collect();
        let (table, problems) = table_of(text, &known)?;
        let mut r = Reader {
            table: &table,
            problems,
        };
        let fleet = Fleet::read(&mut r);
        let rate = r.int("rate", None, 1..=200_000);
        let qos = r.int("qos", Some(1), 0..=1) as u8;
        let duration_secs = r.int("duration_secs", Some(10), 1..=3600);
        let payload_bytes = r.int("payload_bytes", Some(0), 0..=8192);
        let drain_secs = r.int("drain_secs", Some(5), 0..=120);
        let max_inflight = r.int("max_inflight", Some(DEFAULT_MAX_INFLIGHT), 1..=1000);
        if !r.problems.is_empty() {
            return Err(Problems(r.problems));
        }
        Ok(TelemetryScenario {
            fleet,
            rate,
            qos,
            duration_secs,
            payload_bytes,
            drain_secs,
            max_inflight,
        })
    }

    /// Reports planned: `rate * duration_secs`.
    pub fn planned(&self) -> u64 {
        self.rate * self.duration_secs
    }

    /// The hard deadline of a run, seconds: connecting, publishing (with as much again for a
    /// slow generator), draining, and 30 s to stop.
    pub fn deadline_secs(&self) -> u64 {
        self.fleet.connect_bound_secs() + 2 * self.duration_secs + self.drain_secs + 30
    }
}

/// The `command-roundtrip` scenario: `count` online devices answer commands; an HTTP client
/// sends sync commands through the application API at `rate` per second with at most
/// `concurrency` in flight, for `duration_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandScenario {
    /// The devices and their connections.
    #[serde(flatten)]
    pub fleet: Fleet,
    /// The HTTP API listener (IPv4 loopback only).
    pub api: SocketAddr,
    /// The project in `/v5/iot/{project}/…`.
    pub project: String,
    /// File holding the API key (fleetgate writes `{data_dir}/store/admin-api-key`).
    pub api_key_file: Option<String>,
    /// Commands per second, all clients together.
    pub rate: u64,
    /// Commands in flight at once (HTTP client threads).
    pub concurrency: u64,
    /// Seconds of sending.
    pub duration_secs: u64,
    /// Seconds an HTTP request may take before it counts as an error.
    pub request_timeout_secs: u64,
    /// QoS the devices subscribe to their command topic with (0 = implicit subscription only).
    pub command_qos: u8,
    /// The service of the command.
    pub service_id: String,
    /// The command.
    pub command_name: String,
}

const COMMAND_KEYS: &[&str] = &[
    "api",
    "project",
    "api_key_file",
    "rate",
    "concurrency",
    "duration_secs",
    "request_timeout_secs",
    "command_qos",
    "service_id",
    "command_name",
];

impl CommandScenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<CommandScenario> {
        CommandScenario::parse(&load_text(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<CommandScenario, Problems> {
        let known: Vec<&str> = FLEET_KEYS.iter().chain(COMMAND_KEYS).copied().collect();
        let (table, problems) = table_of(text, &known)?;
        let mut r = Reader {
            table: &table,
            problems,
        };
        let fleet = Fleet::read(&mut r);
        let api_text = r.string("api", None);
        let project = r.string("project", Some("loadtest"));
        let api_key_file = r
            .table
            .contains_key("api_key_file")
            .then(|| r.string("api_key_file", None));
        let rate = r.int("rate", None, 1..=100_000);
        let concurrency = r.int("concurrency", Some(16), 1..=256);
        let duration_secs = r.int("duration_secs", Some(10), 1..=3600);
        let request_timeout_secs = r.int("request_timeout_secs", Some(30), 1..=300);
        let command_qos = r.int("command_qos", Some(1), 0..=1) as u8;
        let service_id = r.string("service_id", Some(crate::credentials::SERVICE_ID));
        let command_name = r.string("command_name", Some(crate::credentials::COMMAND_NAME));
        let api = loopback_addr("api", &api_text, &mut r.problems);
        if project.is_empty()
            || !project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            r.problems.push(format!(
                "project: {project:?} must be 1+ characters of [A-Za-z0-9_-]"
            ));
        }
        if fleet.auth != Auth::Device {
            r.problems.push(
                "auth: command-roundtrip needs fleetgate's device authentication (\"device\")"
                    .to_owned(),
            );
        }
        if fleet.topic_root != crate::credentials::DEFAULT_TOPIC_ROOT {
            r.problems.push(format!(
                "topic_root: command-roundtrip sends commands through fleetgate's API, whose devices use {:?}",
                crate::credentials::DEFAULT_TOPIC_ROOT
            ));
        }
        if !r.problems.is_empty() {
            return Err(Problems(r.problems));
        }
        Ok(CommandScenario {
            fleet,
            api,
            project,
            api_key_file,
            rate,
            concurrency,
            duration_secs,
            request_timeout_secs,
            command_qos,
            service_id,
            command_name,
        })
    }

    /// Commands planned: `rate * duration_secs`.
    pub fn planned(&self) -> u64 {
        self.rate * self.duration_secs
    }

    /// The hard deadline of a run, seconds: connecting, sending (with as much again for a slow
    /// server), the last requests' timeout, and 30 s to stop.
    pub fn deadline_secs(&self) -> u64 {
        self.fleet.connect_bound_secs() + 2 * self.duration_secs + self.request_timeout_secs + 30
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_PER_PROCESS;
    use super::*;

    fn telemetry(extra: &str) -> Result<TelemetryScenario, Problems> {
        TelemetryScenario::parse(&format!("target = \"127.0.0.1:1883\"\nrate = 100\n{extra}"))
    }

    fn problems(extra: &str) -> Vec<String> {
        telemetry(extra).map_or_else(|p| p.0, |s| panic!("accepted: {s:?}"))
    }

    #[test]
    fn processes_default_to_one_per_ten_thousand_devices() {
        for (count, processes, sources) in [
            (1u64, 1u32, 8u32),
            (10_000, 1, 8),
            (10_001, 2, 8),
            (45_000, 5, 8),
            (100_000, 10, 9),
        ] {
            let s = telemetry(&format!("count = {count}\n")).unwrap();
            assert_eq!(s.fleet.processes, processes, "count {count}");
            assert_eq!(s.fleet.sources, sources, "count {count}");
            assert!(count.div_ceil(u64::from(processes)) <= MAX_PER_PROCESS);
        }
        let s = telemetry("count = 300\nprocesses = 2\n").unwrap();
        assert_eq!(s.fleet.processes, 2);
        assert_eq!(s.max_inflight, DEFAULT_MAX_INFLIGHT);
        let s = CommandScenario::parse(
            "target = \"127.0.0.1:1883\"\napi = \"127.0.0.1:80\"\nrate = 1\ncount = 64\nprocesses = 64\n",
        )
        .unwrap();
        assert_eq!(s.fleet.processes, 64);
    }

    #[test]
    fn the_device_limit_is_one_hundred_thousand() {
        assert!(telemetry("count = 100000\n").is_ok());
        let p = problems("count = 100001\n");
        assert_eq!(
            p,
            ["count: must be an integer in 1..=100000, got 100001"],
            "{p:#?}"
        );
    }

    #[test]
    fn process_problems_are_reported_with_the_others() {
        let p = problems("count = 100000\nprocesses = 2\nsources = 4\nmax_inflight = 0\nqos = 3\n");
        let has = |needle: &str| p.iter().any(|m| m.contains(needle));
        assert!(
            has(
                "processes: 2 process(es) for 100000 devices is 50000 each; at most 16000 per process"
            ),
            "{p:#?}"
        );
        assert!(has("use processes >= 7"), "{p:#?}");
        assert!(
            has("sources: 4 source(s) for 100000 devices is 25000 each"),
            "{p:#?}"
        );
        assert!(has("use sources >= 9"), "{p:#?}");
        assert!(
            has("max_inflight: must be an integer in 1..=1000, got 0"),
            "{p:#?}"
        );
        assert!(has("qos: must be an integer in 0..=1"), "{p:#?}");
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn processes_out_of_range_are_refused() {
        let p = problems("count = 10\nprocesses = 0\n");
        assert_eq!(
            p,
            ["processes: must be an integer in 1..=64, got 0"],
            "{p:#?}"
        );
        let p = problems("count = 10\nprocesses = 65\n");
        assert_eq!(
            p,
            ["processes: must be an integer in 1..=64, got 65"],
            "{p:#?}"
        );
        let p = problems("count = 10\nprocesses = 11\n");
        assert_eq!(p, ["processes: 11 is more than count (10)"], "{p:#?}");
        let p = problems("count = 10\nprocesses = \"two\"\n");
        assert_eq!(
            p,
            ["processes: must be an integer, got string \"two\""],
            "{p:#?}"
        );
        let p = CommandScenario::parse(
            "target = \"127.0.0.1:1883\"\napi = \"127.0.0.1:80\"\nrate = 1\ncount = 40000\nprocesses = 1\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("processes: 1 process(es) for 40000 devices"),
            "{p:#?}"
        );
    }

    #[test]
    fn topic_root_is_read_and_command_roundtrip_needs_fleetgates() {
        assert_eq!(telemetry("count = 5\n").unwrap().fleet.topic_root, "$oc");
        assert_eq!(
            telemetry("count = 5\ntopic_root = \"oc\"\n")
                .unwrap()
                .fleet
                .topic_root,
            "oc"
        );
        assert!(
            problems("count = 5\ntopic_root = \"+\"\n")
                .iter()
                .any(|p| p.starts_with("topic_root:"))
        );
        let cmd = |extra: &str| {
            CommandScenario::parse(&format!(
                "target = \"127.0.0.1:1883\"\napi = \"127.0.0.1:8080\"\nproject = \"p\"\ncount = 5\nrate = 10\n{extra}"
            ))
        };
        assert!(cmd("").is_ok(), "{:?}", cmd(""));
        let e = cmd("topic_root = \"oc\"\n").unwrap_err();
        assert!(
            e.0.iter()
                .any(|p| p.contains("command-roundtrip sends commands")),
            "{e}"
        );
    }

    #[test]
    fn max_inflight_is_read() {
        assert_eq!(
            telemetry("count = 5\nmax_inflight = 1\n")
                .unwrap()
                .max_inflight,
            1
        );
        assert_eq!(
            telemetry("count = 5\nmax_inflight = 1000\n")
                .unwrap()
                .max_inflight,
            1000
        );
        let p = problems("count = 5\nmax_inflight = 1001\n");
        assert_eq!(
            p,
            ["max_inflight: must be an integer in 1..=1000, got 1001"],
            "{p:#?}"
        );
        // Command round trips have no such key.
        let p = CommandScenario::parse(
            "target = \"127.0.0.1:1883\"\napi = \"127.0.0.1:80\"\nrate = 1\ncount = 5\nmax_inflight = 5\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].starts_with("max_inflight: unknown key"), "{p:#?}");
    }

    #[test]
    fn scenarios_survive_the_worker_pipe() {
        let s = telemetry("count = 300\nprocesses = 2\nserver_pid = 7\n").unwrap();
        let back: TelemetryScenario =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
