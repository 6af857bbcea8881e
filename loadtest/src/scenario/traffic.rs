//! The scenario files of `telemetry` and `command-roundtrip`: the device fleet both share
//! ([`Fleet`]) and each one's own keys, read with the same checks as the other scenarios
//! (every problem reported at once, unknown keys refused, targets only in 127.0.0.0/8).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::credentials::Auth;

use super::{MAX_SOURCES, Problems, Reader, check_product, load_text, loopback_addr, table_of};

/// Most devices of one `telemetry` or `command-roundtrip` run (one generator process).
pub const MAX_ACTIVE_DEVICES: u64 = 10_000;

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
    /// MQTT keep-alive, seconds.
    pub keepalive_secs: u16,
    /// Seconds from connect() to CONNACK before an attempt counts as failed.
    pub connect_timeout_secs: u64,
    /// Sign type of the client id (0 or 1).
    pub sign_type: u8,
    /// How the devices authenticate.
    pub auth: Auth,
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
    "keepalive_secs",
    "connect_timeout_secs",
    "sign_type",
    "auth",
    "server_pid",
];

impl Fleet {
    fn read(r: &mut Reader<'_>) -> Fleet {
        let target_text = r.string("target", None);
        let product = r.string("product", Some("lt"));
        let seed = r.int("seed", Some(1), 0..=u64::MAX);
        let count = r.int("count", None, 1..=MAX_ACTIVE_DEVICES);
        let connect_rate = r.int("connect_rate", Some(1000), 1..=100_000);
        let sources = r.int("sources", Some(8), 1..=u64::from(MAX_SOURCES)) as u32;
        let keepalive_secs = r.int("keepalive_secs", Some(60), 10..=1200) as u16;
        let connect_timeout_secs = r.int("connect_timeout_secs", Some(10), 1..=300);
        let sign_type = r.int("sign_type", Some(0), 0..=1) as u8;
        let auth = r.auth();
        let server_pid = r.server_pid();
        let target = loopback_addr("target", &target_text, &mut r.problems);
        check_product(&product, &mut r.problems);
        Fleet {
            target,
            product,
            seed,
            count,
            connect_rate,
            sources,
            keepalive_secs,
            connect_timeout_secs,
            sign_type,
            auth,
            server_pid,
        }
    }

    /// Source address number `i` (0-based): 127.0.0.2, 127.0.0.3, …
    pub fn source(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, (2 + i % u64::from(self.sources.max(1))) as u8)
    }

    /// An upper bound on the time to connect every device, seconds.
    pub fn connect_bound_secs(&self) -> u64 {
        (2 * self.count).div_ceil(self.connect_rate) + self.connect_timeout_secs + 5
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
}

const TELEMETRY_KEYS: &[&str] = &[
    "rate",
    "qos",
    "duration_secs",
    "payload_bytes",
    "drain_secs",
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
