//! The result of a `reconnect-storm` run: how the devices first connected, how fast they came
//! back after all dropped at once (milestones, auth rate, CONNACK latency, refusals, a
//! per-100-ms series of connected devices for plots), what the server's CPU did during the
//! storm, and what the generator itself cost. Written as JSON (`--json`) and printed as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::procfs::{CpuSecs, Memory};
use crate::scenario::ReconnectScenario;
use crate::stats::Percentiles;

/// Width of one step of [`Storm::series`], milliseconds.
pub const SERIES_STEP_MS: u64 = 100;

/// The devices' first connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Initial {
    /// Devices the scenario asked for.
    pub requested: u64,
    /// Attempts made.
    pub attempted: u64,
    /// CONNACK 0.
    pub established: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Failed attempts by reason.
    pub failures: BTreeMap<String, u64>,
    /// Seconds from the first attempt until every attempt resolved.
    pub ramp_secs: f64,
    /// Established connections per second of ramp.
    pub connect_rate_per_sec: f64,
    /// connect() to CONNACK, microseconds.
    pub connect_latency_us: Percentiles,
    /// Connections open just before the storm.
    pub alive_before_storm: u64,
}

/// Seconds from the drop until this share of the devices was back (of those open at the
/// drop); `None` when that share never came back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Milestones {
    /// Half.
    pub p50: Option<f64>,
    /// 90 %.
    pub p90: Option<f64>,
    /// 99 %.
    pub p99: Option<f64>,
    /// All: the time to recover.
    pub p100: Option<f64>,
}

impl Milestones {
    /// From the sorted reconnect offsets (microseconds) of `of` dropped devices.
    pub fn from_sorted(sorted_us: &[u64], of: u64) -> Milestones {
        let at = |share: f64| {
            let need = ((of as f64) * share).ceil().max(1.0) as usize;
            sorted_us.get(need - 1).map(|&us| us as f64 / 1e6)
        };
        if of == 0 {
            return Milestones::default();
        }
        Milestones {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p100: at(1.0),
        }
    }
}

/// One step of the connected-devices series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeriesPoint {
    /// Milliseconds after the drop (the end of the step).
    pub t_ms: u64,
    /// Dropped devices back by then.
    pub connected: u64,
    /// Devices that came back during this step.
    pub reconnected: u64,
}

/// The per-step series of reconnections over `steps` steps of [`SERIES_STEP_MS`].
pub fn series(sorted_us: &[u64], steps: u64) -> Vec<SeriesPoint> {
    let mut out = Vec::with_capacity(steps as usize + 1);
    let mut i = 0;
    out.push(SeriesPoint {
        t_ms: 0,
        connected: 0,
        reconnected: 0,
    });
    for k in 1..=steps {
        let end_us = k * SERIES_STEP_MS * 1000;
        let before = i;
        while i < sorted_us.len() && sorted_us[i] < end_us {
            i += 1;
        }
        out.push(SeriesPoint {
            t_ms: k * SERIES_STEP_MS,
            connected: i as u64,
            reconnected: (i - before) as u64,
        });
    }
    out
}

/// The storm.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    /// Connections closed at the drop.
    pub dropped: u64,
    /// Dropped devices back with CONNACK 0.
    pub reconnected: u64,
    /// Dropped devices that gave up (storm timeout), by their last failure.
    pub gave_up: BTreeMap<String, u64>,
    /// Whether every dropped device came back.
    pub recovered: bool,
    /// Seconds from the drop until the last device was back (= `milestones.p100`).
    pub recovery_secs: Option<f64>,
    /// Seconds until 50/90/99/100 % of the dropped devices were back.
    pub milestones: Milestones,
    /// Seconds from the drop until every worker reported its devices back or given up.
    pub storm_secs: f64,
    /// Reconnect attempts (successful and failed).
    pub attempts: u64,
    /// Failed reconnect attempts by reason (`connack N`, timeouts, I/O errors).
    pub failures: BTreeMap<String, u64>,
    /// CONNACK refusals by return code (1..=5).
    pub refusals: BTreeMap<u8, u64>,
    /// CONNACKs received (accepted + refused).
    pub connacks: u64,
    /// CONNACKs per second over the recovery (or the storm, if not recovered): the auth rate.
    pub auth_rate_per_sec: f64,
    /// CONNACK 0 per second over the same span.
    pub accepted_rate_per_sec: f64,
    /// The most devices back in one step, per second.
    pub peak_accepted_per_sec: f64,
    /// connect() to CONNACK 0 of the successful reconnect attempts, microseconds.
    pub connack_latency_us: Percentiles,
    /// Devices back, per [`SERIES_STEP_MS`] from the drop until the last one.
    pub series: Vec<SeriesPoint>,
}

/// A reading of the server's cumulative CPU during the storm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuPoint {
    /// Milliseconds after the drop (negative: before it).
    pub t_ms: i64,
    /// CPU seconds (user + system) since the storm command went out, 200 ms before the drop.
    pub cpu_secs: f64,
}

/// The server under test.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Its process id.
    pub pid: u32,
    /// CPU from the storm command (200 ms before the drop) until every worker reported back.
    pub storm_cpu: CpuSecs,
    /// `storm_cpu.total() / storm_secs`.
    pub storm_cores_busy: f64,
    /// Storm CPU per reconnected device, microseconds.
    pub cpu_us_per_reconnect: f64,
    /// CPU since the storm command, read about every 100 ms until the storm is over.
    pub cpu_series: Vec<CpuPoint>,
    /// Its memory after the storm.
    pub memory_after: Option<Memory>,
}

/// One generator process.
#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    /// 0-based.
    pub index: u32,
    /// Devices it reconnected.
    pub reconnected: u64,
    /// Its CPU during the storm.
    pub storm_cpu: CpuSecs,
    /// Its CPU over the run.
    pub cpu: CpuSecs,
    /// Its memory at the end (VmHWM = its peak).
    pub memory: Memory,
}

/// The generator's own cost, to show whether it kept up.
#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    /// Processes (the coordinator not counted).
    pub processes: u32,
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of the coordinator and all workers over the run.
    pub cpu: CpuSecs,
    /// CPU of the workers during the storm.
    pub storm_cpu: CpuSecs,
    /// `storm_cpu.total() / storm_secs`: cores the generator kept busy during the storm (2
    /// cores here, shared with the server).
    pub storm_cores_busy: f64,
    /// Each worker.
    pub workers: Vec<Worker>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    /// `reconnect-storm`.
    pub scenario_kind: &'static str,
    /// The scenario as run.
    pub scenario: ReconnectScenario,
    /// Unix time the run started.
    pub started_unix: u64,
    /// Whether every device connected, came back after the drop, and stayed.
    pub ok: bool,
    /// The first connection.
    pub initial: Initial,
    /// The storm.
    pub storm: Storm,
    /// Connections open at the end of `hold_after_secs`.
    pub alive_after: u64,
    /// Established connections lost other than by the storm, by reason.
    pub lost: BTreeMap<String, u64>,
    /// The server, when its pid was given.
    pub server: Option<Server>,
    /// The generator.
    pub generator: Generator,
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_owned(), |s| format!("{s:.3} s"))
}

impl ReconnectReport {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let i = &self.initial;
        let st = &self.storm;
        let _ = writeln!(
            o,
            "reconnect-storm against {}, auth {} ({})",
            self.scenario.target,
            crate::idle::report::auth_name(self.scenario.auth),
            if self.ok { "ok" } else { "FAILED" }
        );
        let _ = writeln!(
            o,
            "  initial: {} established of {} requested ({} failed) at {:.0}/s; CONNACK µs p50 {} p99 {}",
            i.established,
            i.requested,
            i.failed,
            i.connect_rate_per_sec,
            i.connect_latency_us.p50,
            i.connect_latency_us.p99
        );
        for (why, n) in &i.failures {
            let _ = writeln!(o, "    failed {n}: {why}");
        }
        let _ = writeln!(
            o,
            "  storm: {} reconnected of {} dropped; back 50% {} 90% {} 99% {} 100% {}",
            st.reconnected,
            st.dropped,
            secs(st.milestones.p50),
            secs(st.milestones.p90),
            secs(st.milestones.p99),
            secs(st.milestones.p100)
        );
        let _ = writeln!(
            o,
            "  auth rate {:.0} CONNACK/s ({:.0} accepted/s, peak {:.0}/s); {} attempts; CONNACK µs p50 {} p90 {} p99 {} max {}",
            st.auth_rate_per_sec,
            st.accepted_rate_per_sec,
            st.peak_accepted_per_sec,
            st.attempts,
            st.connack_latency_us.p50,
            st.connack_latency_us.p90,
            st.connack_latency_us.p99,
            st.connack_latency_us.max
        );
        for (why, n) in &st.failures {
            let _ = writeln!(o, "    failed attempts {n}: {why}");
        }
        for (why, n) in &st.gave_up {
            let _ = writeln!(o, "    gave up {n}: {why}");
        }
        let _ = writeln!(o, "  alive after the storm: {}", self.alive_after);
        for (why, n) in &self.lost {
            let _ = writeln!(o, "    lost {n}: {why}");
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                o,
                "  server pid {}: storm CPU {:.2} s user + {:.2} s system ({:.2} cores busy, {:.0} µs per reconnect)",
                s.pid,
                s.storm_cpu.user,
                s.storm_cpu.system,
                s.storm_cores_busy,
                s.cpu_us_per_reconnect
            );
        }
        let g = &self.generator;
        let _ = writeln!(
            o,
            "  generator: {} process(es); storm CPU {:.2} s ({:.2} cores busy); run CPU {:.2} s over {:.1} s",
            g.processes,
            g.storm_cpu.total(),
            g.storm_cores_busy,
            g.cpu.total(),
            g.wall_secs
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_count_against_the_dropped_devices() {
        let sorted: Vec<u64> = (1..=100).map(|i| i * 10_000).collect();
        let m = Milestones::from_sorted(&sorted, 100);
        assert_eq!(m.p50, Some(0.5));
        assert_eq!(m.p90, Some(0.9));
        assert_eq!(m.p99, Some(0.99));
        assert_eq!(m.p100, Some(1.0));
        // Only 95 of 100 came back: 99 % and 100 % were never reached.
        let m = Milestones::from_sorted(&sorted[..95], 100);
        assert_eq!(m.p90, Some(0.9));
        assert_eq!(m.p99, None);
        assert_eq!(m.p100, None);
        assert_eq!(Milestones::from_sorted(&[], 0), Milestones::default());
    }

    #[test]
    fn series_counts_per_step() {
        let s = series(&[50_000, 99_999, 100_000, 250_000], 3);
        let connected: Vec<u64> = s.iter().map(|p| p.connected).collect();
        let per_step: Vec<u64> = s.iter().map(|p| p.reconnected).collect();
        assert_eq!(connected, [0, 2, 3, 4]);
        assert_eq!(per_step, [0, 2, 1, 1]);
        assert_eq!(s[3].t_ms, 300);
    }
}
