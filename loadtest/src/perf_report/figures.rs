//! The figures of `perf-report`: for each scenario (a section of the document) and each of its
//! variants (a part), which rows its table shows, where each figure sits in a JSON report and
//! how it is printed, and what an incomplete run missed. Reports are read leniently, as JSON
//! values: a figure that a report lacks is no figure (`None`), shown as "–".
//!
//! Used by the Markdown rendering (`render`) through [`SECTIONS`] and [`Inputs::value`].

use serde_json::Value;

use super::{Inputs, Run, Status};

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

/// How a figure is printed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fmt {
    /// Rounded, with thousands separators.
    Int,
    /// This many decimals (thousands and up: as `Int`).
    Dec(usize),
}

/// A number as the tables print it.
pub(super) fn fmt_num(v: f64, f: Fmt) -> String {
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
pub(super) enum Src {
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
    /// The figure in the report `v`, in the unit it is shown in; `None` where the report has
    /// none.
    pub(super) fn get(self, v: &Value) -> Option<f64> {
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
pub(super) struct Metric {
    /// The row's label (Markdown).
    pub(super) label: &'static str,
    /// Which way the figure is better.
    pub(super) better: Better,
    /// How the figure is printed.
    pub(super) fmt: Fmt,
    /// Where the figure is in a report.
    src: Src,
}

/// A row of the tables below, one line each.
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
pub(super) struct Part {
    /// The variant, as the run-info file names it.
    pub(super) variant: &'static str,
    /// The part's title in the table and the notes.
    pub(super) title: &'static str,
    /// A note under the section's introduction; empty for none.
    pub(super) note: &'static str,
    /// The rows.
    pub(super) metrics: &'static [Metric],
    /// What was missed, for an incomplete run.
    pub(super) shortfall: fn(&Value) -> String,
    /// The generator's cores busy while loading the server (the bottleneck check).
    pub(super) generator_busy: &'static str,
    /// A count that must be above 0 for the report's figures to mean anything (an incomplete
    /// run that established nothing shows its outcome only).
    pub(super) valid: &'static str,
}

/// One scenario: one table.
pub(super) struct Section {
    /// The section's heading.
    pub(super) title: &'static str,
    /// The paragraph under the heading: what the scenario does.
    pub(super) intro: &'static str,
    /// Only fleetgate can run it: no ratio columns, the peers are "not applicable".
    pub(super) fleetgate_only: bool,
    /// Its variants, in table order.
    pub(super) parts: &'static [Part],
}

/// The number at the JSON pointer `ptr` of a report, if there is one.
pub(super) fn num(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr)?.as_f64()
}

/// The count at `ptr` as the tables print it, "?" where the report has none.
fn int(v: &Value, ptr: &str) -> String {
    num(v, ptr).map_or_else(|| "?".to_owned(), |n| fmt_num(n, Int))
}

/// The rows of the idle scenarios.
#[rustfmt::skip]
pub(super) const IDLE_METRICS: &[Metric] = &[
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

/// What an incomplete idle run missed.
fn idle_shortfall(v: &Value) -> String {
    format!(
        "{} of {} connections established, {} still open after the hold",
        int(v, "/connections/established"),
        int(v, "/connections/requested"),
        int(v, "/connections/alive_after_hold")
    )
}

/// The bottleneck check of the telemetry parts, as a row.
#[rustfmt::skip]
const GENERATOR_PUBLISHING: Metric =
    m("generator cores busy publishing", Neither, Dec(2), Num("/generator/cores_busy_publishing"));

/// The rows of telemetry (a), saturation.
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

/// The rows of telemetry (b), half of each server's maximum.
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

/// The rows of telemetry (c), one fixed rate.
#[rustfmt::skip]
pub(super) const FIXED_METRICS: &[Metric] = &[
    m("offered (msg/s)", Neither, Int, Num("/scenario/rate")),
    m("delivered (msg/s)", Higher, Int, Num("/delivered_per_sec")),
    m("**delivered per server CPU-second**", Higher, Int, Num("/server/delivered_per_cpu_sec")),
    m("server CPU (s)", Lower, Dec(2), Cpu("/server/cpu")),
    m("latency p50 (ms)", Lower, Dec(2), Ms("/latency_us/p50")),
    m("**latency p99 (ms)**", Lower, Dec(2), Ms("/latency_us/p99")),
    m("lost", Lower, Int, Num("/messages/lost")),
    GENERATOR_PUBLISHING,
];

/// What an incomplete telemetry run missed.
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

/// The rows of the reconnect storm.
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

/// What an incomplete reconnect storm missed.
fn storm_shortfall(v: &Value) -> String {
    format!(
        "{} of {} devices back, {} connected at the end",
        int(v, "/storm/reconnected"),
        int(v, "/storm/dropped"),
        int(v, "/alive_after")
    )
}

/// The rows of the command round trip.
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

/// What an incomplete command round trip missed.
fn command_shortfall(v: &Value) -> String {
    format!(
        "{} of {} commands answered, {} errors",
        int(v, "/commands/ok"),
        int(v, "/commands/planned"),
        int(v, "/commands/errors")
    )
}

/// The rows of the CoAP sleepers.
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

/// What an incomplete CoAP sleepers run missed.
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

/// A variant of the idle scenario: every one has the same rows, shortfall and checks.
const fn idle_part(variant: &'static str, title: &'static str) -> Part {
    Part {
        variant,
        title,
        note: "",
        metrics: IDLE_METRICS,
        shortfall: idle_shortfall,
        generator_busy: "/generator/cores_busy",
        valid: "/connections/established",
    }
}

/// A variant of the telemetry scenario: rows and note of its own, the shortfall and checks
/// that every one shares.
const fn telemetry_part(
    variant: &'static str,
    title: &'static str,
    note: &'static str,
    metrics: &'static [Metric],
) -> Part {
    Part {
        variant,
        title,
        note,
        metrics,
        shortfall: telemetry_shortfall,
        generator_busy: "/generator/cores_busy_publishing",
        valid: "/messages/delivered",
    }
}

/// Every scenario, in the document's order.
pub(super) const SECTIONS: &[Section] = &[
    Section {
        title: "Idle MQTT sessions",
        intro: "Authenticated MQTT 3.1.1 connections opened at a paced rate and held idle; the server's RSS is sampled at checkpoints and its least-squares slope is the memory per connection. Goal: at most 1 KiB per idle connection.",
        fleetgate_only: false,
        parts: &[
            idle_part("idle-connections", "idle connections"),
            idle_part(
                "idle-subscribed",
                "idle, one QoS 1 subscription per session",
            ),
        ],
    },
    Section {
        title: "Telemetry at QoS 1",
        intro: "Devices publish property reports at QoS 1 on `$oc/devices/{id}/sys/properties/report`; one subscriber (QoS 1) receives them all and measures end-to-end latency from the send time in each payload. Each run starts a fresh server.",
        fleetgate_only: false,
        parts: &[
            telemetry_part(
                "telemetry-saturation",
                "(a) saturation",
                "Offered far above what any server delivers: the delivered rate is the maximum.",
                SATURATION_METRICS,
            ),
            telemetry_part(
                "telemetry-half",
                "(b) half of each server's own maximum",
                "Each server is offered half the rate it delivered in (a), so each runs at the same relative load.",
                HALF_METRICS,
            ),
            telemetry_part(
                "telemetry-fixed",
                "(c) one fixed rate for every server",
                "Goal: fleetgate delivers at least twice Mosquitto's QoS 1 messages per server CPU-second.",
                FIXED_METRICS,
            ),
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

impl Inputs {
    /// The run of `variant` against `server`, as the run-info file records it.
    pub(super) fn run(&self, variant: &str, server: &str) -> Option<&Run> {
        self.info
            .runs
            .iter()
            .find(|r| r.variant == variant && r.server == server)
    }

    /// The report of a run that produced one (ok or incomplete).
    pub(super) fn report(&self, variant: &str, server: &str) -> Option<&Value> {
        let run = self.run(variant, server)?;
        if !matches!(run.status, Status::Ok | Status::Incomplete) {
            return None;
        }
        self.reports.get(&(variant.to_owned(), server.to_owned()))
    }

    /// A figure of a run whose report has any (see `Part::valid`).
    pub(super) fn value(&self, part: &Part, metric: &Metric, server: &str) -> Option<f64> {
        let report = self.report(part.variant, server)?;
        if num(report, part.valid).is_some_and(|n| n <= 0.0) {
            return None;
        }
        metric.src.get(report)
    }
}
