//! `fleetgate-loadtest perf-report`: writes docs/perf.md from one run of `loadtest/compare.sh`.
//!
//! The script runs the same scenarios against fleetgate on each of its drivers and against
//! Mosquitto and rumqttd, keeps every JSON report and a run-info file (date, machine, versions,
//! the commands and scenario files, each run's outcome) in one directory, and calls this. The
//! document has one Markdown table per scenario with a column per server and, where the peers
//! ran the same scenario, the ratio of each fleetgate driver to each peer with its direction
//! and who wins; every loss is listed again at the top. Reports are read leniently (as JSON
//! values), so a figure that a generator version does not report shows as "–".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

/// fleetgate's servers as `loadtest/compare.sh` names them.
pub const FLEETGATE: [&str; 2] = ["fleetgate-epoll", "fleetgate-io_uring"];
/// The peers fleetgate is compared with.
pub const PEERS: [&str; 2] = ["mosquitto", "rumqttd"];

/// What `loadtest/compare.sh` records about a run besides the reports. File names are
/// relative to the run-info file's directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// Start of the run, UTC.
    pub date: String,
    /// Wall-clock seconds of the whole run.
    pub duration_secs: Option<u64>,
    /// A smoke run (tiny counts): its figures prove the pipeline, not the servers.
    pub smoke: bool,
    /// The command that ran, with the settings that differ from the defaults.
    pub command: String,
    /// Every setting of the run (`NAME=value`).
    pub settings: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// Versions of everything measured and of the compiler.
    pub versions: Versions,
    /// The servers measured, in column order.
    pub servers: Vec<String>,
    /// How each server was started.
    pub server_commands: BTreeMap<String, String>,
    /// Each peer's configuration file, by server.
    pub server_configs: BTreeMap<String, String>,
    /// Every run of a scenario against a server.
    pub runs: Vec<Run>,
}

/// The machine of the run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// CPU cores (`nproc`).
    pub cores: u64,
    /// The CPU model.
    pub cpu: String,
    /// Memory, KiB.
    pub memory_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Open-file limit per process.
    pub open_files: String,
}

/// Versions of the run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Versions {
    /// `fleetgate --version`.
    pub fleetgate: String,
    /// The commit built, with a note when the tree had uncommitted changes.
    pub commit: String,
    /// Mosquitto's version line.
    pub mosquitto: String,
    /// `rumqttd --version`.
    pub rumqttd: String,
    /// `rustc --version`.
    pub rustc: String,
}

/// How one run ended, as the script saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The generator exited 0.
    Ok,
    /// The generator finished but something was missed (exit 1): the report still counts.
    Incomplete,
    /// No usable report: see the reason.
    Failed,
    /// The server cannot run the scenario.
    NotApplicable,
    /// Not run.
    #[default]
    NotRun,
}

/// One scenario run against one server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Run {
    /// The variant (`idle-connections`, `telemetry-saturation`, …).
    pub variant: String,
    /// The server.
    pub server: String,
    /// How it ended.
    pub status: Status,
    /// Why it failed or was not applicable.
    pub reason: String,
    /// The JSON report.
    pub report: Option<String>,
    /// The scenario file.
    pub scenario_file: Option<String>,
    /// The generator's command line.
    pub command: String,
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Memory, latency, CPU, time.
    Lower,
    /// Rates.
    Higher,
    /// Context only: no verdict.
    Neither,
}

/// fleetgate's figure against a peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// fleetgate's is better.
    Wins,
    /// The peer's is better.
    Loses,
    /// Within half a percent.
    Even,
}

/// The verdict for fleetgate's figure against a peer's where `better` is better; `None` for
/// context figures and non-finite values.
pub fn verdict(fleetgate: f64, peer: f64, better: Better) -> Option<Verdict> {
    if better == Better::Neither || !fleetgate.is_finite() || !peer.is_finite() {
        return None;
    }
    let even = if peer == 0.0 {
        fleetgate == 0.0
    } else {
        (fleetgate / peer - 1.0).abs() < 0.005
    };
    if even {
        return Some(Verdict::Even);
    }
    Some(match (better, fleetgate > peer) {
        (Better::Higher, true) | (Better::Lower, false) => Verdict::Wins,
        _ => Verdict::Loses,
    })
}

/// The ratio `fleetgate ÷ peer` with its verdict, as a table cell ("0.74× wins",
/// "2.10× **loses**").
pub fn ratio_cell(fleetgate: Option<f64>, peer: Option<f64>, better: Better) -> String {
    let (Some(f), Some(p)) = (fleetgate, peer) else {
        return "–".to_owned();
    };
    let ratio = if p != 0.0 {
        let r = f / p;
        if r.abs() < 0.1 {
            format!("{r:.3}×")
        } else {
            format!("{r:.2}×")
        }
    } else if f == 0.0 {
        "1.00×".to_owned()
    } else {
        "∞".to_owned()
    };
    match verdict(f, p, better) {
        None => ratio,
        Some(Verdict::Wins) => format!("{ratio} wins"),
        Some(Verdict::Loses) => format!("{ratio} **loses**"),
        Some(Verdict::Even) => format!("{ratio} even"),
    }
}

/// How a figure is printed.
#[derive(Debug, Clone, Copy)]
enum Fmt {
    /// Rounded, with thousands separators.
    Int,
    /// This many decimals (thousands and up: as `Int`).
    Dec(usize),
}

/// A number as the tables print it.
fn fmt_num(v: f64, f: Fmt) -> String {
    match f {
        Fmt::Dec(d) if v.abs() < 1000.0 => format!("{v:.d$}"),
        _ => {
            let digits = format!("{:.0}", v.abs());
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            if v < 0.0 && digits != "0" {
                out.insert(0, '-');
            }
            out
        }
    }
}

/// Where a figure comes from in a report (a JSON pointer) and its unit there.
#[derive(Clone, Copy)]
enum Src {
    /// The number as is.
    Num(&'static str),
    /// Microseconds, shown in milliseconds.
    Ms(&'static str),
    /// Bytes, shown in MiB.
    Mib(&'static str),
    /// Bytes, shown in KiB.
    Kib(&'static str),
    /// A `{user, system}` object, shown as their sum in seconds.
    Cpu(&'static str),
    /// The idle scenario's RSS (MiB) with no connection open (false) or at its last
    /// checkpoint (true).
    IdleRss(bool),
}

impl Src {
    fn get(self, v: &Value) -> Option<f64> {
        match self {
            Src::Num(p) => num(v, p),
            Src::Ms(p) => {
                // A percentile of an empty histogram is no figure.
                let parent = p.rsplit_once('/').map_or("", |(parent, _)| parent);
                if num(v, &format!("{parent}/count")) == Some(0.0) {
                    return None;
                }
                num(v, p).map(|us| us / 1000.0)
            }
            Src::Mib(p) => num(v, p).map(|b| b / 1_048_576.0),
            Src::Kib(p) => num(v, p).map(|b| b / 1024.0),
            Src::Cpu(p) => {
                let c = v.pointer(p)?;
                Some(c.get("user")?.as_f64()? + c.get("system")?.as_f64()?)
            }
            Src::IdleRss(last) => {
                let points = v.pointer("/server/checkpoints")?.as_array()?;
                let point = if last {
                    points.last()
                } else {
                    points.iter().find(|p| num(p, "/connections") == Some(0.0))
                }?;
                Src::Mib("/memory/vm_rss").get(point)
            }
        }
    }
}

/// One row of a table: a figure read out of a report.
struct Metric {
    label: &'static str,
    better: Better,
    fmt: Fmt,
    src: Src,
}

const fn m(label: &'static str, better: Better, fmt: Fmt, src: Src) -> Metric {
    Metric {
        label,
        better,
        fmt,
        src,
    }
}

use Better::{Higher, Lower, Neither};
use Fmt::{Dec, Int};
use Src::{Cpu, IdleRss, Kib, Mib, Ms, Num};

/// One run of a scenario (a variant) and its rows.
struct Part {
    variant: &'static str,
    title: &'static str,
    note: &'static str,
    metrics: &'static [Metric],
    /// What was missed, for an incomplete run.
    shortfall: fn(&Value) -> String,
    /// The generator's cores busy while loading the server (the bottleneck check).
    generator_busy: &'static str,
    /// A count that must be above 0 for the report's figures to mean anything (an incomplete
    /// run that established nothing shows its outcome only).
    valid: &'static str,
}

/// One scenario: one table.
struct Section {
    title: &'static str,
    intro: &'static str,
    fleetgate_only: bool,
    parts: &'static [Part],
}

fn num(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr)?.as_f64()
}

fn int(v: &Value, ptr: &str) -> String {
    num(v, ptr).map_or_else(|| "?".to_owned(), |n| fmt_num(n, Int))
}

#[rustfmt::skip]
const IDLE_METRICS: &[Metric] = &[
    m("**KiB of RSS per connection** (slope)", Lower, Dec(2), Kib("/server/slope/vm_rss/slope")),
    m("r² of that slope", Neither, Dec(4), Num("/server/slope/vm_rss/r2")),
    m("RSS with no connection (MiB)", Lower, Dec(1), IdleRss(false)),
    m("RSS with every connection open (MiB)", Lower, Dec(1), IdleRss(true)),
    m("connections established", Neither, Int, Num("/connections/established")),
    m("connect rate (/s)", Higher, Int, Num("/connect_rate_per_sec")),
    m("CONNACK latency p50 (ms)", Lower, Dec(2), Ms("/connect_latency_us/p50")),
    m("CONNACK latency p99 (ms)", Lower, Dec(2), Ms("/connect_latency_us/p99")),
    m("server CPU over the run (s)", Lower, Dec(2), Cpu("/server/cpu")),
    m("generator cores busy", Neither, Dec(2), Num("/generator/cores_busy")),
];

fn idle_shortfall(v: &Value) -> String {
    format!(
        "{} of {} connections established, {} still open after the hold",
        int(v, "/connections/established"),
        int(v, "/connections/requested"),
        int(v, "/connections/alive_after_hold")
    )
}

#[rustfmt::skip]
const GENERATOR_PUBLISHING: Metric =
    m("generator cores busy publishing", Neither, Dec(2), Num("/generator/cores_busy_publishing"));

#[rustfmt::skip]
const SATURATION_METRICS: &[Metric] = &[
    m("offered (msg/s)", Neither, Int, Num("/scenario/rate")),
    m("sent (msg/s)", Neither, Int, Num("/sent_per_sec")),
    m("**maximum delivered rate (msg/s)**", Higher, Int, Num("/delivered_per_sec")),
    m("delivered per server CPU-second", Higher, Int, Num("/server/delivered_per_cpu_sec")),
    m("lost (not delivered in the drain time)", Neither, Int, Num("/messages/lost")),
    m("latency p99 at saturation (ms)", Neither, Dec(1), Ms("/latency_us/p99")),
    GENERATOR_PUBLISHING,
];

#[rustfmt::skip]
const HALF_METRICS: &[Metric] = &[
    m("offered (msg/s): half the server's own maximum", Neither, Int, Num("/scenario/rate")),
    m("delivered (msg/s)", Neither, Int, Num("/delivered_per_sec")),
    m("latency p50 (ms)", Lower, Dec(2), Ms("/latency_us/p50")),
    m("**latency p99 (ms)**", Lower, Dec(2), Ms("/latency_us/p99")),
    m("**latency p99.9 (ms)**", Lower, Dec(2), Ms("/latency_us/p999")),
    m("**lost**", Lower, Int, Num("/messages/lost")),
    m("duplicates", Lower, Int, Num("/messages/duplicates")),
    GENERATOR_PUBLISHING,
];

#[rustfmt::skip]
const FIXED_METRICS: &[Metric] = &[
    m("offered (msg/s)", Neither, Int, Num("/scenario/rate")),
    m("delivered (msg/s)", Higher, Int, Num("/delivered_per_sec")),
    m("**delivered per server CPU-second**", Higher, Int, Num("/server/delivered_per_cpu_sec")),
    m("server CPU (s)", Lower, Dec(2), Cpu("/server/cpu")),
    m("latency p50 (ms)", Lower, Dec(2), Ms("/latency_us/p50")),
    m("**latency p99 (ms)**", Lower, Dec(2), Ms("/latency_us/p99")),
    m("lost", Lower, Int, Num("/messages/lost")),
    GENERATOR_PUBLISHING,
];

fn telemetry_shortfall(v: &Value) -> String {
    format!(
        "{} of {} devices connected, {} of {} reports sent, {} delivered, {} lost",
        int(v, "/devices/connected"),
        int(v, "/devices/requested"),
        int(v, "/messages/sent"),
        int(v, "/messages/planned"),
        int(v, "/messages/delivered"),
        int(v, "/messages/lost")
    )
}

#[rustfmt::skip]
const STORM_METRICS: &[Metric] = &[
    m("devices dropped", Neither, Int, Num("/storm/dropped")),
    m("devices back", Higher, Int, Num("/storm/reconnected")),
    m("half back after (s)", Lower, Dec(2), Num("/storm/milestones/p50")),
    m("99 % back after (s)", Lower, Dec(2), Num("/storm/milestones/p99")),
    m("**time to recover: all back after (s)**", Lower, Dec(2), Num("/storm/milestones/p100")),
    m("**auth rate (CONNACKs/s)**", Higher, Int, Num("/storm/auth_rate_per_sec")),
    m("peak reconnections (/s, best 100 ms)", Higher, Int, Num("/storm/peak_accepted_per_sec")),
    m("CONNACK latency p99 (ms)", Lower, Dec(1), Ms("/storm/connack_latency_us/p99")),
    m("**server CPU during the storm (s)**", Lower, Dec(2), Cpu("/server/storm_cpu")),
    m("server CPU per reconnect (µs)", Lower, Int, Num("/server/cpu_us_per_reconnect")),
    m("server cores busy during the storm", Neither, Dec(2), Num("/server/storm_cores_busy")),
    m("generator cores busy during the storm", Neither, Dec(2), Num("/generator/storm_cores_busy")),
];

fn storm_shortfall(v: &Value) -> String {
    format!(
        "{} of {} devices back, {} connected at the end",
        int(v, "/storm/reconnected"),
        int(v, "/storm/dropped"),
        int(v, "/alive_after")
    )
}

#[rustfmt::skip]
const COMMAND_METRICS: &[Metric] = &[
    m("commands sent", Neither, Int, Num("/commands/sent")),
    m("answered", Neither, Int, Num("/commands/ok")),
    m("errors", Neither, Int, Num("/commands/errors")),
    m("answered per second", Neither, Int, Num("/ok_per_sec")),
    m("latency p50 (ms)", Neither, Dec(2), Ms("/latency_us/p50")),
    m("latency p90 (ms)", Neither, Dec(2), Ms("/latency_us/p90")),
    m("**latency p99 (ms)**", Neither, Dec(2), Ms("/latency_us/p99")),
    m("latency p99.9 (ms)", Neither, Dec(2), Ms("/latency_us/p999")),
    m("round trips per server CPU-second", Neither, Int, Num("/server/ok_per_cpu_sec")),
    m("generator cores busy sending", Neither, Dec(2), Num("/generator/cores_busy_sending")),
];

fn command_shortfall(v: &Value) -> String {
    format!(
        "{} of {} commands answered, {} errors",
        int(v, "/commands/ok"),
        int(v, "/commands/planned"),
        int(v, "/commands/errors")
    )
}

#[rustfmt::skip]
const SLEEPER_METRICS: &[Metric] = &[
    m("devices registered", Neither, Int, Num("/register/phase/ok")),
    m("**bytes of RSS per sleeping device**", Neither, Int, Num("/memory/vm_rss_bytes_per_device")),
    m("RSS before registering (MiB)", Neither, Dec(1), Mib("/memory/before/memory/vm_rss")),
    m("RSS after hibernation (MiB)", Neither, Dec(1), Mib("/memory/after_hibernation/memory/vm_rss")),
    m("registrations per second", Neither, Int, Num("/register/ok_per_sec")),
    m("register latency p99 (ms)", Neither, Dec(2), Ms("/register/latency_us/p99")),
    m("commands received after a wake", Neither, Int, Num("/wake/commands_received")),
    m("wake-to-command p50 (ms)", Neither, Dec(2), Ms("/wake/wake_to_command_us/p50")),
    m("**wake-to-command p99 (ms)**", Neither, Dec(2), Ms("/wake/wake_to_command_us/p99")),
    m("registrations per server CPU-second", Neither, Int, Num("/server/registers_per_cpu_sec")),
    m("generator cores busy registering", Neither, Dec(2), Num("/generator/cores_busy_registering")),
];

fn sleeper_shortfall(v: &Value) -> String {
    format!(
        "{} of {} devices registered, hibernation reached: {}, {} of {} commands received",
        int(v, "/register/phase/ok"),
        int(v, "/register/phase/requested"),
        v.pointer("/hibernation/reached").unwrap_or(&Value::Null),
        int(v, "/wake/commands_received"),
        int(v, "/wake/commands_queued")
    )
}

const SECTIONS: &[Section] = &[
    Section {
        title: "Idle MQTT sessions",
        intro: "Authenticated MQTT 3.1.1 connections opened at a paced rate and held idle; the server's RSS is sampled at checkpoints and its least-squares slope is the memory per connection. Goal: at most 1 KiB per idle connection.",
        fleetgate_only: false,
        parts: &[
            Part {
                variant: "idle-connections",
                title: "idle connections",
                note: "",
                metrics: IDLE_METRICS,
                shortfall: idle_shortfall,
                generator_busy: "/generator/cores_busy",
                valid: "/connections/established",
            },
            Part {
                variant: "idle-subscribed",
                title: "idle, one QoS 1 subscription per session",
                note: "",
                metrics: IDLE_METRICS,
                shortfall: idle_shortfall,
                generator_busy: "/generator/cores_busy",
                valid: "/connections/established",
            },
        ],
    },
    Section {
        title: "Telemetry at QoS 1",
        intro: "Devices publish property reports at QoS 1 on `$oc/devices/{id}/sys/properties/report`; one subscriber (QoS 1) receives them all and measures end-to-end latency from the send time in each payload. Each run starts a fresh server.",
        fleetgate_only: false,
        parts: &[
            Part {
                variant: "telemetry-saturation",
                title: "(a) saturation",
                note: "Offered far above what any server delivers: the delivered rate is the maximum.",
                metrics: SATURATION_METRICS,
                shortfall: telemetry_shortfall,
                generator_busy: "/generator/cores_busy_publishing",
                valid: "/messages/delivered",
            },
            Part {
                variant: "telemetry-half",
                title: "(b) half of each server's own maximum",
                note: "Each server is offered half the rate it delivered in (a), so each runs at the same relative load.",
                metrics: HALF_METRICS,
                shortfall: telemetry_shortfall,
                generator_busy: "/generator/cores_busy_publishing",
                valid: "/messages/delivered",
            },
            Part {
                variant: "telemetry-fixed",
                title: "(c) one fixed rate for every server",
                note: "Goal: fleetgate delivers at least twice Mosquitto's QoS 1 messages per server CPU-second.",
                metrics: FIXED_METRICS,
                shortfall: telemetry_shortfall,
                generator_busy: "/generator/cores_busy_publishing",
                valid: "/messages/delivered",
            },
        ],
    },
    Section {
        title: "Reconnect storm",
        intro: "Every device drops its connection at once (a plain close) and reconnects immediately, unpaced: the connect-plus-authentication rate each server sustains, and the time until the whole fleet is back.",
        fleetgate_only: false,
        parts: &[Part {
            variant: "reconnect-storm",
            title: "storm",
            note: "",
            metrics: STORM_METRICS,
            shortfall: storm_shortfall,
            generator_busy: "/generator/storm_cores_busy",
            valid: "/storm/reconnected",
        }],
    },
    Section {
        title: "Command round trip",
        intro: "Online devices answer synchronous commands sent through fleetgate's HTTP API (`POST /v5/iot/{project}/devices/{id}/commands`) at a fixed rate. The peers have no device-command API.",
        fleetgate_only: true,
        parts: &[Part {
            variant: "command-roundtrip",
            title: "commands",
            note: "",
            metrics: COMMAND_METRICS,
            shortfall: command_shortfall,
            generator_busy: "/generator/cores_busy_sending",
            valid: "/commands/ok",
        }],
    },
    Section {
        title: "Sleeping CoAP/LwM2M devices",
        intro: "LwM2M devices (CoAP, queue mode) register and fall asleep; once the server has hibernated them all, its RSS per sleeping device is read; then delayed commands are queued for some devices, which wake and receive them. The peers do not speak LwM2M. A quick run: the figure per device depends on the count (bounded caches dominate small runs); the 1,000,000-device run is in [perf-notes.md](perf-notes.md).",
        fleetgate_only: true,
        parts: &[Part {
            variant: "coap-sleepers",
            title: "sleepers",
            note: "",
            metrics: SLEEPER_METRICS,
            shortfall: sleeper_shortfall,
            generator_busy: "/generator/cores_busy_registering",
            valid: "/register/phase/ok",
        }],
    },
];

/// Why the peers are configured as they are; printed under "Servers and their settings".
const SETTINGS_TEXT: &str = "\
Every server listens on 127.0.0.1 only, on a port of its own, and is started afresh for every run (fleetgate on a copy of the same freshly provisioned store), and all are measured with the same generator and the same clients. Persistence is off for the peers; fleetgate keeps its RocksDB store (its device registry, presence and sessions) as it always does.

- **Authentication.** fleetgate authenticates every device with its own scheme (an HMAC of the client id, checked against the device registry). The peers check a plain user name and password from a list (client id = user name = device id, password = the device's secret): Mosquitto from a `password_file` hashed with `mosquitto_passwd -U`, rumqttd from its `connections.auth` table. Neither peer accepts anonymous clients.
- **Slow subscriber.** A QoS 1 message queued for a subscriber that cannot keep up is the one place where servers differ by policy rather than speed: Mosquitto 2.0.11 keeps at most `max_queued_messages` 1000 beyond `max_inflight_messages` 20 and drops newer ones; fleetgate keeps `engine.session.max_queued_messages` 1000 beyond `receive_maximum` 32 and drops the oldest; rumqttd reads every subscriber from its commit log (`max_segment_size` × `max_segment_count`, 1 GB) and drops only when a segment it still needs is recycled. So that the telemetry figures compare throughput and not drop policies, nothing is dropped below a backlog no run reaches: Mosquitto gets `max_queued_messages 0` (no limit) and fleetgate `engine.session.max_queued_messages=1000000` (its maximum); the in-flight window is 32 for both (fleetgate's default, Mosquitto `max_inflight_messages 32`). rumqttd's `max_inflight_count` is not a QoS window (it bounds a read batch) and keeps its default 100.
- **Sockets.** fleetgate sets `TCP_NODELAY` on every connection, so Mosquitto gets `set_tcp_nodelay true` (off by default: Nagle's algorithm would add delay to the latency figures). rumqttd 0.20.0 has no such setting and keeps Nagle's algorithm.
- **Limits.** Mosquitto: `max_connections -1`. rumqttd: `next_connection_delay_ms = 0` (its default 1 ms caps accepts near 1,000/s) and `router.max_connections` below the open-file limit (at that limit it logs in a tight loop). fleetgate: its defaults (100 messages/s per device: the telemetry runs keep below it), except the command round trip, which lifts the HTTP API's per-application rate limits (`api.rate_limit.calls_per_sec` and `downlinks_per_sec` = 0) so that the generator's rate, not a 50/s budget, is what is measured.
- **Topics.** The scenarios publish and subscribe on fleetgate's device topics (`$oc/devices/{id}/…`), on Mosquitto too. rumqttd 0.20.0 refuses every subscription whose filter begins with `$` (other than `$share/`; `InvalidFilterPrefix`), so its runs use the same topics without the `$` (`oc/devices/{id}/…`, the scenario key `topic_root`): the same levels and lengths but one character.
- **Logging.** fleetgate logs JSON at `info` (nothing per connection); Mosquitto logs errors and warnings only (`log_type error`, `log_type warning`, `connection_messages false`); rumqttd logs at its lowest setting, warnings, which still writes an error per connection that closes (its level cannot be lowered from the command line), so in the reconnect storm it pays for that logging.
";

/// Everything the document is made from, already read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The run-info file.
    pub info: RunInfo,
    /// Reports by `(variant, server)`.
    pub reports: BTreeMap<(String, String), Value>,
    /// Each peer's configuration text, by server.
    pub configs: BTreeMap<String, String>,
    /// PNG files (names) in the plots directory.
    pub plots: Vec<String>,
    /// The reports' directory, relative to the document's.
    pub results_link: String,
    /// The plots' directory, relative to the document's.
    pub plots_link: String,
}

impl Inputs {
    fn run(&self, variant: &str, server: &str) -> Option<&Run> {
        self.info
            .runs
            .iter()
            .find(|r| r.variant == variant && r.server == server)
    }

    /// The report of a run that produced one (ok or incomplete).
    fn report(&self, variant: &str, server: &str) -> Option<&Value> {
        let run = self.run(variant, server)?;
        if !matches!(run.status, Status::Ok | Status::Incomplete) {
            return None;
        }
        self.reports.get(&(variant.to_owned(), server.to_owned()))
    }

    /// A figure of a run whose report has any (see `Part::valid`).
    fn value(&self, part: &Part, metric: &Metric, server: &str) -> Option<f64> {
        let report = self.report(part.variant, server)?;
        if num(report, part.valid).is_some_and(|n| n <= 0.0) {
            return None;
        }
        metric.src.get(report)
    }
}

/// A comparison fleetgate lost, for the list at the top.
struct Loss {
    /// Section, part and figure.
    what: String,
    better: Better,
    /// fleetgate's server and figure.
    fleetgate: String,
    f: String,
    /// The peer's, and the ratio.
    peer: String,
    p: String,
    ratio: String,
}

/// The losses, one line per figure: "what (lower is better): fleetgate (epoll) 1.30 against
/// Mosquitto 0.80 (1.62×); …".
fn losses_text(losses: &[Loss]) -> String {
    let mut o = String::new();
    let mut i = 0;
    while i < losses.len() {
        let what = &losses[i].what;
        let n = losses[i..].iter().take_while(|l| &l.what == what).count();
        let items: Vec<String> = losses[i..i + n]
            .iter()
            .map(|l| {
                format!(
                    "{} {} against {} {} ({})",
                    l.fleetgate, l.f, l.peer, l.p, l.ratio
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "- {what} ({} is better): {}.",
            better_text(losses[i].better),
            items.join("; ")
        );
        i += n;
    }
    o
}

fn display_name(server: &str) -> &str {
    match server {
        "mosquitto" => "Mosquitto",
        "fleetgate-epoll" => "fleetgate (epoll)",
        "fleetgate-io_uring" => "fleetgate (io_uring)",
        other => other,
    }
}

fn short_name(server: &str) -> &str {
    server.strip_prefix("fleetgate-").unwrap_or(server)
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn is_fleetgate(server: &str) -> bool {
    FLEETGATE.contains(&server)
}

fn is_peer(server: &str) -> bool {
    PEERS.contains(&server)
}

fn outcome(inputs: &Inputs, part: &Part, server: &str, fleetgate_only: bool) -> String {
    if fleetgate_only && !is_fleetgate(server) {
        return "not applicable".to_owned();
    }
    let Some(run) = inputs.run(part.variant, server) else {
        return "not run".to_owned();
    };
    let reason = cell(run.reason.trim());
    match (run.status, inputs.report(part.variant, server)) {
        (Status::Ok, Some(_)) => "ok".to_owned(),
        (Status::Incomplete, Some(r)) => {
            let mut s = format!("incomplete: {}", cell(&(part.shortfall)(r)));
            if !reason.is_empty() {
                let _ = write!(s, " ({reason})");
            }
            s
        }
        (Status::NotApplicable, _) if reason.is_empty() => "not applicable".to_owned(),
        (Status::NotApplicable, _) => format!("not applicable: {reason}"),
        (Status::NotRun, _) => "not run".to_owned(),
        (_, None) if reason.is_empty() => "failed: no report".to_owned(),
        (_, _) => format!("failed: {reason}"),
    }
}

/// The `(fleetgate, peer)` pairs compared, in column order.
fn pairs(servers: &[String]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for f in servers.iter().filter(|s| is_fleetgate(s)) {
        for p in servers.iter().filter(|s| is_peer(s)) {
            out.push((f.as_str(), p.as_str()));
        }
    }
    out
}

fn better_text(b: Better) -> &'static str {
    match b {
        Better::Lower => "lower",
        Better::Higher => "higher",
        Better::Neither => "",
    }
}

fn section_table(inputs: &Inputs, s: &Section, losses: &mut Vec<Loss>) -> String {
    let servers = &inputs.info.servers;
    let pairs = if s.fleetgate_only {
        Vec::new()
    } else {
        pairs(servers)
    };
    let mut o = String::from("| figure | better |");
    for server in servers {
        let _ = write!(o, " {} |", display_name(server));
    }
    for (f, p) in &pairs {
        let _ = write!(o, " {} ÷ {} |", short_name(f), display_name(p));
    }
    o.push_str("\n|---|---|");
    o.push_str(&"---:|".repeat(servers.len() + pairs.len()));
    o.push('\n');
    for part in parts_run(inputs, s) {
        let _ = write!(o, "| **{}**: outcome | |", part.title);
        for server in servers {
            let _ = write!(o, " {} |", outcome(inputs, part, server, s.fleetgate_only));
        }
        o.push_str(&" |".repeat(pairs.len()));
        o.push('\n');
        for m in part.metrics {
            let _ = write!(o, "| {} | {} |", m.label, better_text(m.better));
            for server in servers {
                let v = inputs.value(part, m, server);
                let _ = write!(
                    o,
                    " {} |",
                    v.map_or_else(|| "–".to_owned(), |v| fmt_num(v, m.fmt))
                );
            }
            for (f, p) in &pairs {
                if m.better == Neither {
                    o.push_str(" |");
                    continue;
                }
                let (fv, pv) = (inputs.value(part, m, f), inputs.value(part, m, p));
                let ratio = ratio_cell(fv, pv, m.better);
                if let (Some(a), Some(b)) = (fv, pv)
                    && verdict(a, b, m.better) == Some(Verdict::Loses)
                {
                    losses.push(Loss {
                        what: format!(
                            "{} — {} — {}",
                            s.title,
                            part.title,
                            m.label.replace("**", "")
                        ),
                        fleetgate: display_name(f).to_owned(),
                        peer: display_name(p).to_owned(),
                        f: fmt_num(a, m.fmt),
                        p: fmt_num(b, m.fmt),
                        ratio: ratio.replace(" **loses**", ""),
                        better: m.better,
                    });
                }
                let _ = write!(o, " {ratio} |");
            }
            o.push('\n');
        }
    }
    o
}

/// Notes under a table: the generator as the bottleneck, per part.
fn bottleneck_notes(inputs: &Inputs, s: &Section) -> String {
    let mut o = String::new();
    for part in parts_run(inputs, s) {
        for server in &inputs.info.servers {
            let Some(r) = inputs.report(part.variant, server) else {
                continue;
            };
            let Some(busy) = num(r, part.generator_busy) else {
                continue;
            };
            let processes = num(r, "/scenario/processes").unwrap_or(1.0).max(1.0);
            if busy >= 0.9 * processes {
                let _ = writeln!(
                    o,
                    "- **The generator was the bottleneck** in {} against {}: {busy:.2} cores busy for {processes:.0} generator process(es). The server may do more than this shows.",
                    part.title,
                    display_name(server)
                );
            }
        }
    }
    o
}

fn plots_of(inputs: &Inputs, variant: &str) -> Vec<String> {
    let prefix = format!("{variant}-");
    let mut out: Vec<String> = inputs
        .plots
        .iter()
        .filter(|f| {
            f.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".png"))
                .is_some_and(|chart| {
                    !chart.is_empty()
                        && chart
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
        })
        .cloned()
        .collect();
    out.sort();
    out
}

fn link(dir: &str, file: &str) -> String {
    if dir.is_empty() || dir == "." {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    }
}

/// The parts of a section that were run against at least one server.
fn parts_run<'a>(inputs: &'a Inputs, s: &'a Section) -> impl Iterator<Item = &'a Part> + 'a {
    s.parts.iter().filter(|p| {
        inputs
            .info
            .runs
            .iter()
            .any(|r| r.variant == p.variant && r.status != Status::NotRun)
    })
}

fn section(inputs: &Inputs, s: &Section, losses: &mut Vec<Loss>) -> Option<String> {
    parts_run(inputs, s).next()?;
    let mut o = format!("## {}\n\n{}\n\n", s.title, s.intro);
    let mut notes = 0;
    for part in parts_run(inputs, s).filter(|p| !p.note.is_empty()) {
        let _ = writeln!(o, "- {}: {}", part.title, part.note);
        notes += 1;
    }
    if notes > 0 {
        o.push('\n');
    }
    o.push_str(&section_table(inputs, s, losses));
    o.push('\n');
    let notes = bottleneck_notes(inputs, s);
    if !notes.is_empty() {
        o.push_str(&notes);
        o.push('\n');
    }
    for part in parts_run(inputs, s) {
        for png in plots_of(inputs, part.variant) {
            let chart = png
                .trim_start_matches(part.variant)
                .trim_start_matches('-')
                .trim_end_matches(".png");
            let _ = writeln!(
                o,
                "![{} — {}: {chart}]({})\n",
                s.title,
                part.title,
                link(&inputs.plots_link, &png)
            );
        }
    }
    let mut runs = String::new();
    for part in parts_run(inputs, s) {
        for run in inputs
            .info
            .runs
            .iter()
            .filter(|r| r.variant == part.variant)
        {
            let mut files = Vec::new();
            if let Some(f) = &run.report {
                files.push(format!("[report]({})", link(&inputs.results_link, f)));
            }
            if let Some(f) = &run.scenario_file {
                files.push(format!("[scenario]({})", link(&inputs.results_link, f)));
            }
            if run.command.is_empty() && files.is_empty() {
                continue;
            }
            let _ = writeln!(
                runs,
                "- {} against {}: `{}` {}",
                part.title,
                display_name(&run.server),
                run.command,
                files.join(", ")
            );
        }
    }
    if !runs.is_empty() {
        let _ = write!(o, "Commands, reports and scenario files:\n\n{runs}\n");
    }
    Some(o)
}

/// The goals, met or missed per fleetgate driver.
fn goals(inputs: &Inputs) -> String {
    let mut o = String::new();
    let fleetgate = || inputs.info.servers.iter().filter(|s| is_fleetgate(s));
    for f in fleetgate() {
        let idle = &SECTIONS[0].parts[0];
        if let Some(kib) = inputs.value(idle, &IDLE_METRICS[0], f) {
            let met = if kib <= 1.0 { "met" } else { "**missed**" };
            let _ = writeln!(
                o,
                "- ≤ 1 KiB of RSS per idle connection, {}: {kib:.2} KiB — {met}.",
                display_name(f)
            );
        }
    }
    for f in fleetgate() {
        let fixed = &SECTIONS[1].parts[2];
        let per_cpu = &FIXED_METRICS[2];
        if let (Some(a), Some(b)) = (
            inputs.value(fixed, per_cpu, f),
            inputs.value(fixed, per_cpu, "mosquitto"),
        ) && b > 0.0
        {
            let met = if a >= 2.0 * b { "met" } else { "**missed**" };
            let _ = writeln!(
                o,
                "- ≥ 2× Mosquitto's delivered QoS 1 messages per server CPU-second, {}: {} against {} ({:.2}×) — {met}.",
                display_name(f),
                fmt_num(a, Fmt::Int),
                fmt_num(b, Fmt::Int),
                a / b
            );
        }
    }
    o
}

fn header(inputs: &Inputs) -> String {
    let i = &inputs.info;
    let m = &i.machine;
    let v = &i.versions;
    let mut o = String::from(
        "# fleetgate performance\n\n<!-- Generated by loadtest/compare.sh (fleetgate-loadtest perf-report): do not edit, re-run the script. -->\n\n",
    );
    o.push_str("fleetgate on each of its I/O drivers (epoll, io_uring) next to Mosquitto and rumqttd, measured in one run on one machine with the same load generator (`fleetgate-loadtest`) and the same clients. Scenarios that only fleetgate can run (device commands through its API, CoAP/LwM2M sleepers) are measured on fleetgate alone.\n\n");
    if i.smoke {
        o.push_str("> **Smoke run** (`SMOKE=1`): tiny counts and a few seconds per scenario. It proves that the pipeline works end to end; its figures say nothing about the servers.\n\n");
    }
    let minutes = i.duration_secs.map_or_else(String::new, |s| {
        format!(", took {:.1} min", s as f64 / 60.0)
    });
    let _ = writeln!(o, "- **Run:** {}{minutes}: `{}`", i.date, i.command);
    if !i.settings.is_empty() {
        let _ = writeln!(o, "- **Settings:** `{}`", i.settings.join(" "));
    }
    let _ = writeln!(
        o,
        "- **Machine:** {} cores ({}), {:.1} GiB, kernel {}, open files {} per process. Servers and generator share the cores.",
        m.cores,
        if m.cpu.is_empty() { "?" } else { &m.cpu },
        m.memory_kib as f64 / 1_048_576.0,
        m.kernel,
        m.open_files
    );
    let _ = writeln!(
        o,
        "- **Versions:** {} (commit {}, release build, {}); {}; rumqttd {}.",
        v.fleetgate, v.commit, v.rustc, v.mosquitto, v.rumqttd
    );
    o.push_str("\nHow to read the tables: a column per server; then, per fleetgate driver and peer, the ratio **fleetgate ÷ peer** with the verdict for fleetgate. Where the *better* column says *lower* (memory, latency, CPU, time) a ratio below 1 wins; where it says *higher* (rates, messages per CPU-second) a ratio above 1 wins; within half a percent is *even*. Rows without a direction are context. \"failed: …\" is a run that gave no report, with the reason; \"incomplete: …\" a run that finished but missed something (its figures are shown).\n\n");
    o
}

fn settings_section(inputs: &Inputs) -> String {
    let mut o = format!("## Servers and their settings\n\n{SETTINGS_TEXT}\n");
    for (server, command) in &inputs.info.server_commands {
        let _ = writeln!(
            o,
            "{}:\n\n```sh\n{}\n```\n",
            display_name(server),
            command.trim()
        );
    }
    for (server, text) in &inputs.configs {
        let _ = writeln!(
            o,
            "{} configuration:\n\n```\n{}\n```\n",
            display_name(server),
            text.trim()
        );
    }
    o
}

/// The whole document.
pub fn markdown(inputs: &Inputs) -> String {
    let mut losses = Vec::new();
    let sections: Vec<String> = SECTIONS
        .iter()
        .filter_map(|s| section(inputs, s, &mut losses))
        .collect();
    let mut o = header(inputs);
    o.push_str("## Where fleetgate loses\n\n");
    if losses.is_empty() {
        o.push_str("Nowhere in this run: every compared figure is even or better.\n\n");
    } else {
        o.push_str(&losses_text(&losses));
        o.push('\n');
    }
    let goals = goals(inputs);
    if !goals.is_empty() {
        let _ = writeln!(o, "## Goals\n\n{goals}");
    }
    for s in sections {
        o.push_str(&s);
    }
    o.push_str(&settings_section(inputs));
    o.push_str("## Further measurements\n\nLonger runs, profiles and what changed and why (among them the 1,000,000-device sleepers run and the micro-benchmarks): [Further measurements](perf-notes.md).\n");
    o
}

/// `to` relative to the directory `from_dir` (both absolute), as a link.
pub fn relative(from_dir: &Path, to: &Path) -> String {
    let from: Vec<_> = from_dir.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for c in &to[common..] {
        p.push(c);
    }
    let s = p.to_string_lossy().into_owned();
    if s.is_empty() { ".".to_owned() } else { s }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .with_context(|| format!("resolving {}", p.display()))
}

/// Reads the run-info file and the reports beside it and writes the document to `out`; PNG
/// plots are looked up in `plots` (default: `perf/` beside `out`).
pub fn main(run_info: &Path, out: &Path, plots: Option<&Path>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(run_info)
        .with_context(|| format!("reading {}", run_info.display()))?;
    let mut info: RunInfo =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", run_info.display()))?;
    let results = absolute(run_info.parent().unwrap_or(Path::new(".")))?;
    let out_dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let out_dir = out_dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = absolute(out_dir)?;
    let plots = plots.map_or_else(|| out_dir.join("perf"), Path::to_path_buf);
    let plots = absolute(&plots)?;

    let mut reports = BTreeMap::new();
    for run in &mut info.runs {
        run.report = run.report.take().filter(|f| results.join(f).is_file());
        run.scenario_file = run
            .scenario_file
            .take()
            .filter(|f| results.join(f).is_file());
        let Some(file) = &run.report else { continue };
        let parsed = std::fs::read_to_string(results.join(file))
            .map_err(anyhow::Error::from)
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(anyhow::Error::from));
        match parsed {
            Ok(v) => {
                reports.insert((run.variant.clone(), run.server.clone()), v);
            }
            Err(e) => {
                run.status = Status::Failed;
                run.reason = format!("unreadable report: {e}");
            }
        }
    }
    let mut configs = BTreeMap::new();
    for (server, file) in &info.server_configs {
        if let Ok(text) = std::fs::read_to_string(results.join(file)) {
            configs.insert(server.clone(), text);
        }
    }
    let mut png = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&plots) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".png") {
                png.push(name);
            }
        }
    }
    let inputs = Inputs {
        results_link: relative(&out_dir, &results),
        plots_link: relative(&out_dir, &plots),
        info,
        reports,
        configs,
        plots: png,
    };
    std::fs::write(out, markdown(&inputs)).with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(variant: &str, server: &str, status: Status, reason: &str) -> Run {
        Run {
            variant: variant.to_owned(),
            server: server.to_owned(),
            status,
            reason: reason.to_owned(),
            report: Some(format!("{variant}-{server}.json")),
            scenario_file: Some(format!("{variant}-{server}.toml")),
            command: format!("fleetgate-loadtest x --json {variant}-{server}.json"),
        }
    }

    fn idle(kib: f64, p99_us: u64) -> Value {
        json!({
            "connections": {"established": 100, "requested": 100, "alive_after_hold": 100},
            "connect_rate_per_sec": 1000.0,
            "connect_latency_us": {"p50": 500, "p99": p99_us},
            "server": {
                "checkpoints": [
                    {"target": 0, "connections": 0, "memory": {"vm_rss": 10_485_760}},
                    {"target": 100, "memory": {"vm_rss": 20_971_520}}
                ],
                "slope": {"vm_rss": {"slope": kib * 1024.0, "r2": 0.999}},
                "cpu": {"user": 0.5, "system": 0.25}
            },
            "generator": {"cores_busy": 0.1}
        })
    }

    fn fixed(per_cpu: f64, p99_us: u64, busy: f64) -> Value {
        json!({
            "scenario": {"rate": 10000},
            "messages": {"sent": 100, "planned": 100, "delivered": 100, "lost": 0},
            "delivered_per_sec": 10000.0,
            "latency_us": {"p50": 800, "p99": p99_us},
            "server": {"cpu": {"user": 1.0, "system": 1.0}, "delivered_per_cpu_sec": per_cpu},
            "generator": {"cores_busy_publishing": busy}
        })
    }

    /// Two fleetgate drivers and two peers: fleetgate wins idle memory against rumqttd, loses
    /// it to Mosquitto on io_uring, loses messages per CPU-second to Mosquitto on both.
    fn inputs() -> Inputs {
        let servers = [
            "fleetgate-epoll",
            "fleetgate-io_uring",
            "mosquitto",
            "rumqttd",
        ];
        let mut runs = Vec::new();
        let mut reports = BTreeMap::new();
        let idle_kib = [0.74, 1.5, 0.84, 43.8];
        let per_cpu = [15_000.0, 12_000.0, 20_000.0, 5_000.0];
        for (i, s) in servers.iter().enumerate() {
            runs.push(run("idle-connections", s, Status::Ok, ""));
            reports.insert(
                ("idle-connections".to_owned(), (*s).to_owned()),
                idle(idle_kib[i], 2000),
            );
            runs.push(run("telemetry-fixed", s, Status::Ok, ""));
            let busy = if *s == "rumqttd" { 0.97 } else { 0.5 };
            reports.insert(
                ("telemetry-fixed".to_owned(), (*s).to_owned()),
                fixed(per_cpu[i], 4000, busy),
            );
        }
        runs.push(run(
            "telemetry-saturation",
            "rumqttd",
            Status::Failed,
            "exit 2: subscription refused | see log",
        ));
        runs.push(run("command-roundtrip", "fleetgate-epoll", Status::Ok, ""));
        reports.insert(
            ("command-roundtrip".to_owned(), "fleetgate-epoll".to_owned()),
            json!({"commands": {"sent": 10, "ok": 10, "errors": 0}, "latency_us": {"p99": 3000}}),
        );
        Inputs {
            info: RunInfo {
                date: "2026-11-23T10:00Z".to_owned(),
                command: "loadtest/compare.sh".to_owned(),
                servers: servers.iter().map(|s| (*s).to_owned()).collect(),
                runs,
                ..RunInfo::default()
            },
            reports,
            plots: vec![
                "idle-connections-rss.png".to_owned(),
                "idle-subscribed-rss.png".to_owned(),
                "idle-connections-rss.txt".to_owned(),
            ],
            results_link: "../loadtest/results/compare".to_owned(),
            plots_link: "perf".to_owned(),
            ..Inputs::default()
        }
    }

    #[test]
    fn verdicts_follow_the_direction() {
        assert_eq!(verdict(0.74, 0.84, Better::Lower), Some(Verdict::Wins));
        assert_eq!(verdict(1.5, 0.84, Better::Lower), Some(Verdict::Loses));
        assert_eq!(verdict(12.0, 20.0, Better::Higher), Some(Verdict::Loses));
        assert_eq!(verdict(30.0, 20.0, Better::Higher), Some(Verdict::Wins));
        assert_eq!(verdict(1000.0, 1003.0, Better::Higher), Some(Verdict::Even));
        assert_eq!(verdict(0.0, 0.0, Better::Lower), Some(Verdict::Even));
        assert_eq!(verdict(3.0, 0.0, Better::Lower), Some(Verdict::Loses));
        assert_eq!(verdict(0.0, 3.0, Better::Lower), Some(Verdict::Wins));
        assert_eq!(verdict(1.0, 2.0, Better::Neither), None);
        assert_eq!(verdict(f64::NAN, 2.0, Better::Lower), None);
    }

    #[test]
    fn ratio_cells_say_who_wins() {
        assert_eq!(
            ratio_cell(Some(0.74), Some(0.84), Better::Lower),
            "0.88× wins"
        );
        assert_eq!(
            ratio_cell(Some(12_000.0), Some(20_000.0), Better::Higher),
            "0.60× **loses**"
        );
        assert_eq!(
            ratio_cell(Some(0.74), Some(43.8), Better::Lower),
            "0.017× wins"
        );
        assert_eq!(
            ratio_cell(Some(5.0), Some(0.0), Better::Lower),
            "∞ **loses**"
        );
        assert_eq!(
            ratio_cell(Some(0.0), Some(0.0), Better::Lower),
            "1.00× even"
        );
        assert_eq!(ratio_cell(Some(2.0), Some(1.0), Better::Neither), "2.00×");
        assert_eq!(ratio_cell(None, Some(1.0), Better::Lower), "–");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(1_234_567.4, Fmt::Int), "1,234,567");
        assert_eq!(fmt_num(999.4, Fmt::Int), "999");
        assert_eq!(fmt_num(12_345.678, Fmt::Dec(2)), "12,346");
        assert_eq!(fmt_num(0.745, Fmt::Dec(2)), "0.74");
        assert_eq!(fmt_num(-1500.0, Fmt::Int), "-1,500");
    }

    #[test]
    fn the_table_gives_ratios_and_says_where_fleetgate_loses() {
        let md = markdown(&inputs());
        let row = |label: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {label} |")))
                .unwrap_or_else(|| panic!("no row {label:?} in\n{md}"))
                .to_owned()
        };
        // Header: a column per server, then epoll and io_uring against each peer.
        assert!(
            md.contains("| figure | better | fleetgate (epoll) | fleetgate (io_uring) | Mosquitto | rumqttd | epoll ÷ Mosquitto | epoll ÷ rumqttd | io_uring ÷ Mosquitto | io_uring ÷ rumqttd |"),
            "{md}"
        );
        assert_eq!(
            row("**KiB of RSS per connection** (slope)"),
            "| **KiB of RSS per connection** (slope) | lower | 0.74 | 1.50 | 0.84 | 43.80 | 0.88× wins | 0.017× wins | 1.79× **loses** | 0.034× wins |"
        );
        assert_eq!(
            row("**delivered per server CPU-second**"),
            "| **delivered per server CPU-second** | higher | 15,000 | 12,000 | 20,000 | 5,000 | 0.75× **loses** | 3.00× wins | 0.60× **loses** | 2.40× wins |"
        );
        // Context rows have no ratio.
        assert_eq!(
            row("r² of that slope"),
            "| r² of that slope |  | 0.9990 | 0.9990 | 0.9990 | 0.9990 | | | | |"
        );
        // Losses are listed again at the top, plainly, one line per figure.
        let top = md.split("## Goals").next().unwrap_or_default();
        assert!(
            top.contains("- Telemetry at QoS 1 — (c) one fixed rate for every server — delivered per server CPU-second (higher is better): fleetgate (epoll) 15,000 against Mosquitto 20,000 (0.75×); fleetgate (io_uring) 12,000 against Mosquitto 20,000 (0.60×).\n"),
            "{top}"
        );
        assert!(
            top.contains("- Idle MQTT sessions — idle connections — KiB of RSS per connection (slope) (lower is better): fleetgate (io_uring) 1.50 against Mosquitto 0.84 (1.79×).\n"),
            "{top}"
        );
        assert!(
            !top.contains("against rumqttd"),
            "fleetgate beat rumqttd everywhere: {top}"
        );
        // Goals, met and missed.
        assert!(
            md.contains("≤ 1 KiB of RSS per idle connection, fleetgate (epoll): 0.74 KiB — met.")
        );
        assert!(md.contains("fleetgate (io_uring): 1.50 KiB — **missed**."));
        assert!(md.contains("fleetgate (epoll): 15,000 against 20,000 (0.75×) — **missed**."));
    }

    #[test]
    fn failures_and_inapplicable_runs_are_named() {
        let md = markdown(&inputs());
        assert!(
            md.contains("| **(a) saturation**: outcome | | not run | not run | not run | failed: exit 2: subscription refused \\| see log |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| **commands**: outcome | | ok | not run | not applicable | not applicable |"
            ),
            "{md}"
        );
        // No ratio columns where the peers cannot run the scenario.
        assert!(md.contains(
            "| figure | better | fleetgate (epoll) | fleetgate (io_uring) | Mosquitto | rumqttd |\n"
        ));
        // Sections without any run are left out.
        assert!(!md.contains("## Reconnect storm"));
        assert!(
            md.contains("- **The generator was the bottleneck** in (c) one fixed rate for every server against rumqttd: 0.97 cores busy")
        );
    }

    #[test]
    fn incomplete_runs_show_what_was_missed() {
        let mut i = inputs();
        let r = i
            .info
            .runs
            .iter_mut()
            .find(|r| r.variant == "idle-connections" && r.server == "mosquitto");
        if let Some(r) = r {
            r.status = Status::Incomplete;
        }
        if let Some(v) = i
            .reports
            .get_mut(&("idle-connections".to_owned(), "mosquitto".to_owned()))
        {
            v["connections"]["established"] = json!(97);
        }
        let md = markdown(&i);
        assert!(
            md.contains(
                "| incomplete: 97 of 100 connections established, 100 still open after the hold |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| connections established |  | 100 | 100 | 97 | 100 |"),
            "{md}"
        );
    }

    #[test]
    fn a_run_that_established_nothing_gives_no_figures() {
        let mut i = inputs();
        if let Some(r) = i.info.runs.iter_mut().find(|r| r.server == "rumqttd") {
            r.status = Status::Incomplete;
        }
        if let Some(v) = i
            .reports
            .get_mut(&("idle-connections".to_owned(), "rumqttd".to_owned()))
        {
            v["connections"]["established"] = json!(0);
            v["connect_latency_us"] = json!({"count": 0, "p50": 0, "p99": 0});
        }
        let md = markdown(&i);
        assert!(
            md.contains("| CONNACK latency p99 (ms) | lower | 2.00 | 2.00 | 2.00 | – | 1.00× even | – | 1.00× even | – |"),
            "{md}"
        );
        assert!(!md.contains('∞'), "{md}");
    }

    #[test]
    fn empty_histograms_are_no_figure() {
        let v = json!({"latency_us": {"count": 0, "p99": 0}, "l2": {"count": 3, "p99": 1500}});
        assert_eq!(Ms("/latency_us/p99").get(&v), None);
        assert_eq!(Ms("/l2/p99").get(&v), Some(1.5));
        assert_eq!(Ms("/missing/p99").get(&v), None);
    }

    #[test]
    fn plots_links_and_the_closing_link() {
        let md = markdown(&inputs());
        assert!(md.contains("(perf/idle-connections-rss.png)"), "{md}");
        assert!(
            !md.contains("idle-subscribed-rss.png"),
            "no idle-subscribed run: {md}"
        );
        assert!(!md.contains("rss.txt"));
        assert!(md.contains(
            "[report](../loadtest/results/compare/idle-connections-mosquitto.json), [scenario](../loadtest/results/compare/idle-connections-mosquitto.toml)"
        ));
        assert!(
            md.trim_end()
                .ends_with("[Further measurements](perf-notes.md)."),
            "{md}"
        );
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative(
                Path::new("/r/docs"),
                Path::new("/r/loadtest/results/compare")
            ),
            "../loadtest/results/compare"
        );
        assert_eq!(
            relative(Path::new("/r/docs"), Path::new("/r/docs/perf")),
            "perf"
        );
        assert_eq!(relative(Path::new("/r/docs"), Path::new("/r/docs")), ".");
    }

    #[test]
    fn main_reads_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("loadtest/results/compare");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::create_dir_all(dir.path().join("docs/perf")).unwrap();
        std::fs::write(
            dir.path().join("docs/perf/idle-connections-rss.png"),
            b"png",
        )
        .unwrap();
        std::fs::write(
            results.join("idle-connections-mosquitto.json"),
            idle(0.8, 1000).to_string(),
        )
        .unwrap();
        std::fs::write(results.join("idle-connections-rumqttd.json"), "{not json").unwrap();
        std::fs::write(results.join("mosquitto.conf"), "listener 1 127.0.0.1\n").unwrap();
        let info = json!({
            "date": "2026-11-23T10:00Z",
            "smoke": true,
            "servers": ["mosquitto", "rumqttd"],
            "server_configs": {"mosquitto": "mosquitto.conf"},
            "runs": [
                {"variant": "idle-connections", "server": "mosquitto", "status": "ok",
                 "report": "idle-connections-mosquitto.json", "scenario_file": "missing.toml"},
                {"variant": "idle-connections", "server": "rumqttd", "status": "ok",
                 "report": "idle-connections-rumqttd.json"}
            ]
        });
        std::fs::write(results.join("run-info.json"), info.to_string()).unwrap();
        let out = dir.path().join("docs/perf.md");
        main(&results.join("run-info.json"), &out, None).unwrap();
        let md = std::fs::read_to_string(&out).unwrap();
        assert!(md.contains("**Smoke run**"));
        assert!(md.contains("| 0.80 | – |"), "{md}");
        assert!(md.contains("failed: unreadable report"), "{md}");
        assert!(md.contains("(perf/idle-connections-rss.png)"), "{md}");
        assert!(
            md.contains("[report](../loadtest/results/compare/idle-connections-mosquitto.json)")
        );
        assert!(!md.contains("missing.toml"));
        assert!(md.contains("listener 1 127.0.0.1"));
    }
}
