//! The `reconnect-storm` scenario: how fast does the server take back a whole fleet that drops
//! at once (a network blip, a load balancer restart)?
//!
//! As in `idle-connections`, the coordinator (this module) re-executes the binary as
//! `processes` workers ([`worker`]), each owning devices `i, i+P, …` spread over the source
//! addresses, so the run scales past one process's open-file limit and one address's ports.
//! The workers connect every device and hold; then the coordinator picks an instant 200 ms
//! ahead on the wall clock (shared by all processes) and every worker closes all its sockets at
//! that instant and reconnects each device immediately. Workers record, per device, the time
//! from the drop to its CONNACK 0; the coordinator samples the server's `/proc/PID/stat` about
//! every 100 ms until every worker reports its devices back (or given up at
//! `storm_timeout_secs`). The [`report::ReconnectReport`] gives the recovery milestones, the
//! auth rate, CONNACK latency, refusals by code, a per-100-ms series, the server's CPU and the
//! generator's own. Progress goes to stderr through [`Progress`]: bars while connecting and
//! during the storm, spinners while holding.
//!
//! Everything is bounded: the scenario caps counts and durations, the coordinator and every
//! worker give up at [`ReconnectScenario::deadline_secs`], and workers stop when the
//! coordinator's pipe closes.

pub mod protocol;
pub mod report;
pub mod worker;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::pool::{merge_reasons, record_pairs};
use crate::procfs::{self, CpuSecs, CpuTicks};
use crate::progress::Progress;
use crate::scenario::ReconnectScenario;
use crate::stats::{latency_histogram, percentiles};
use protocol::{Command, Counts, Event, WorkerInit, WorkerReport};
use report::{CpuPoint, Generator, Initial, Milestones, ReconnectReport, SERIES_STEP_MS, Storm};

type Workers = crate::pool::Workers<Event>;

/// How often the coordinator updates a bar while connecting (workers report four times a
/// second).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The message of the storm bar.
fn storm_message(t: &Counts) -> String {
    format!(
        "{} back of {} dropped, {} failed attempts, {} gave up",
        t.reconnected, t.dropped, t.storm_failed_attempts, t.gave_up
    )
}

/// Holds for `secs` under a "holding" spinner saying `what`, then asks every worker for its
/// counters.
fn hold(workers: &mut Workers, secs: u64, what: &str) -> anyhow::Result<Counts> {
    let spinner = Progress::spinner("holding");
    spinner.message(format!("{secs} s {what}"));
    std::thread::sleep(Duration::from_secs(secs));
    let now = workers.round(
        |_| Command::Status,
        |ev| matches!(ev, Event::Status(_)),
        Duration::from_secs(1),
        |_| {},
    )?;
    spinner.finish(format!("{} open after {secs} s", now.alive));
    Ok(now)
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn cpu_since(a: CpuTicks, b: CpuTicks) -> CpuSecs {
    CpuSecs::from_ticks(
        b.user.saturating_sub(a.user),
        b.system.saturating_sub(a.system),
    )
}

/// What the coordinator measured itself, for [`assemble`].
struct Measured {
    started_unix: u64,
    wall_secs: f64,
    ramp_secs: f64,
    alive_before: u64,
    storm_secs: f64,
    alive_after: u64,
    server_storm_cpu: Option<CpuSecs>,
    server_cpu_series: Vec<CpuPoint>,
}

/// Runs the scenario; returns the report (whose `ok` says whether every device came back).
pub fn run(s: &ReconnectScenario) -> anyhow::Result<ReconnectReport> {
    let started = Instant::now();
    let started_unix = unix_us(SystemTime::now()) / 1_000_000;
    eprintln!(
        "reconnect-storm: {} devices to {} at {}/s from {} source address(es) in {} process(es); auth {}",
        s.count,
        s.target,
        s.rate,
        s.sources,
        s.processes,
        crate::idle::report::auth_name(s.auth)
    );
    let server_ticks = || {
        s.server_pid
            .and_then(|pid| procfs::cpu_ticks(&pid.to_string()).ok())
    };
    if let Some(pid) = s.server_pid {
        procfs::cpu_ticks(&pid.to_string())
            .with_context(|| format!("reading the CPU of server pid {pid} (is it running?)"))?;
    }
    let init = WorkerInit {
        scenario: s.clone(),
        deadline_secs: s.deadline_secs(),
    };
    let mut workers = Workers::spawn("reconnect-storm", s.processes, &init, s.deadline_secs())?;

    let t0 = Instant::now();
    let bar = Progress::phase("connecting", s.count);
    let reached = workers.round(
        |_| Command::Open,
        |ev| matches!(ev, Event::Reached(_)),
        PROGRESS_EVERY,
        |t| {
            bar.set(
                t.established + t.failed,
                format!("{} established, {} failed", t.established, t.failed),
            )
        },
    )?;
    let ramp_secs = t0.elapsed().as_secs_f64();
    let done = format!(
        "{} established, {} failed in {ramp_secs:.2} s",
        reached.established, reached.failed
    );
    bar.set(reached.established + reached.failed, done.clone());
    bar.finish(done);
    let before = hold(&mut workers, s.hold_secs, "before the storm")?;

    // The storm: every worker drops at `at`. The server's CPU is read just before the command
    // goes out (so the baseline includes up to 200 ms of the idle server) and about every
    // step after.
    let server_before = server_ticks();
    let at = SystemTime::now() + Duration::from_millis(200);
    let at_instant = Instant::now() + Duration::from_millis(200);
    let bar = Progress::phase("storm", before.alive);
    bar.note(format!("dropping {} connections at once", before.alive));
    let mut series = Vec::new();
    let recovered = workers.round(
        |_| Command::Storm {
            at_unix_us: unix_us(at),
        },
        |ev| matches!(ev, Event::Recovered(_)),
        Duration::from_millis(SERIES_STEP_MS),
        |t| {
            let now = Instant::now();
            if let (Some(base), Some(ticks)) = (server_before, server_ticks()) {
                let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                series.push(CpuPoint {
                    t_ms: ms(now.saturating_duration_since(at_instant))
                        - ms(at_instant.saturating_duration_since(now)),
                    cpu_secs: cpu_since(base, ticks).total(),
                });
            }
            bar.set(t.reconnected, storm_message(t));
        },
    )?;
    let storm_secs = at_instant.elapsed().as_secs_f64();
    let server_storm_cpu = match (server_before, server_ticks()) {
        (Some(a), Some(b)) => Some(cpu_since(a, b)),
        _ => None,
    };
    bar.set(recovered.reconnected, storm_message(&recovered));
    bar.finish(format!(
        "over after {storm_secs:.2} s: {}",
        storm_message(&recovered)
    ));
    let after = hold(
        &mut workers,
        s.hold_after_secs,
        "after the storm (late losses)",
    )?;
    let reports = workers.stop(&Command::Stop)?;
    Ok(assemble(
        s,
        Measured {
            started_unix,
            wall_secs: started.elapsed().as_secs_f64(),
            ramp_secs,
            alive_before: before.alive,
            storm_secs,
            alive_after: after.alive,
            server_storm_cpu,
            server_cpu_series: series,
        },
        &reports,
    ))
}

/// Builds the report from the workers' reports and the coordinator's measurements.
fn assemble(s: &ReconnectScenario, m: Measured, reports: &[WorkerReport]) -> ReconnectReport {
    let mut totals = Counts::default();
    let mut initial = Initial {
        requested: s.count,
        ramp_secs: m.ramp_secs,
        alive_before_storm: m.alive_before,
        ..Initial::default()
    };
    let mut storm = Storm {
        storm_secs: m.storm_secs,
        ..Storm::default()
    };
    let mut lost = std::collections::BTreeMap::new();
    let mut connect_hist = latency_histogram();
    let mut storm_hist = latency_histogram();
    let mut offsets = Vec::new();
    let mut workers = Vec::new();
    let (mut cpu, mut storm_cpu) = (CpuSecs::default(), CpuSecs::default());
    for (index, r) in reports.iter().enumerate() {
        totals.add(&r.counts);
        merge_reasons(&mut initial.failures, &r.failures);
        merge_reasons(&mut storm.failures, &r.storm_failures);
        merge_reasons(&mut storm.gave_up, &r.gave_up);
        merge_reasons(&mut lost, &r.lost);
        record_pairs(&mut connect_hist, &r.connect_latency_us);
        record_pairs(&mut storm_hist, &r.storm_latency_us);
        offsets.extend_from_slice(&r.reconnected_at_us);
        cpu.add(&r.cpu);
        storm_cpu.add(&r.storm_cpu);
        workers.push(report::Worker {
            index: index as u32,
            reconnected: r.counts.reconnected,
            storm_cpu: r.storm_cpu,
            cpu: r.cpu,
            memory: r.memory,
        });
    }
    cpu.add(&CpuSecs::own());
    offsets.sort_unstable();

    initial.attempted = totals.attempted;
    initial.established = totals.established;
    initial.failed = totals.failed;
    initial.connect_latency_us = percentiles(&connect_hist);
    initial.connect_rate_per_sec = if m.ramp_secs > 0.0 {
        totals.established as f64 / m.ramp_secs
    } else {
        0.0
    };

    storm.dropped = totals.dropped;
    storm.reconnected = totals.reconnected;
    storm.recovered = totals.dropped > 0 && totals.reconnected == totals.dropped;
    storm.milestones = Milestones::from_sorted(&offsets, totals.dropped);
    storm.recovery_secs = storm.milestones.p100;
    storm.attempts = totals.reconnected + totals.storm_failed_attempts;
    for (reason, n) in &storm.failures {
        if let Some(code) = reason
            .strip_prefix("connack ")
            .and_then(|c| c.parse::<u8>().ok())
        {
            *storm.refusals.entry(code).or_default() += n;
        }
    }
    storm.connacks = totals.reconnected + storm.refusals.values().sum::<u64>();
    let span = storm.recovery_secs.unwrap_or(m.storm_secs);
    if span > 0.0 {
        storm.auth_rate_per_sec = storm.connacks as f64 / span;
        storm.accepted_rate_per_sec = totals.reconnected as f64 / span;
    }
    storm.connack_latency_us = percentiles(&storm_hist);
    let last_us = offsets.last().copied().unwrap_or(0);
    let steps = (last_us / 1000 / SERIES_STEP_MS + 1).max((m.storm_secs * 10.0).ceil() as u64);
    storm.series = report::series(&offsets, steps);
    storm.peak_accepted_per_sec = storm
        .series
        .iter()
        .map(|p| p.reconnected)
        .max()
        .unwrap_or(0) as f64
        * (1000 / SERIES_STEP_MS) as f64;

    let server = s.server_pid.map(|pid| {
        let c = m.server_storm_cpu.unwrap_or_default();
        report::Server {
            pid,
            storm_cpu: c,
            storm_cores_busy: if m.storm_secs > 0.0 {
                c.total() / m.storm_secs
            } else {
                0.0
            },
            cpu_us_per_reconnect: if totals.reconnected > 0 {
                c.total() * 1e6 / totals.reconnected as f64
            } else {
                0.0
            },
            cpu_series: m.server_cpu_series,
            memory_after: procfs::memory(pid).ok(),
        }
    });
    let ok = totals.established == s.count
        && storm.recovered
        && totals.dropped == s.count
        && m.alive_after == s.count
        && lost.is_empty();
    ReconnectReport {
        scenario_kind: "reconnect-storm",
        scenario: s.clone(),
        started_unix: m.started_unix,
        ok,
        initial,
        storm,
        alive_after: m.alive_after,
        lost,
        server,
        generator: Generator {
            processes: s.processes,
            wall_secs: m.wall_secs,
            cpu,
            storm_cores_busy: if m.storm_secs > 0.0 {
                storm_cpu.total() / m.storm_secs
            } else {
                0.0
            },
            storm_cpu,
            workers,
        },
    }
}

/// `reconnect-storm --scenario FILE`: runs, prints the summary, writes the JSON report.
pub fn main(s: &ReconnectScenario, json: Option<&Path>) -> anyhow::Result<bool> {
    let report = run(s)?;
    print!("{}", report.text());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.ok)
}
