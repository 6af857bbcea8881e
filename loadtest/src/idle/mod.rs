//! The `idle-connections` scenario: how much memory does the server spend per idle,
//! authenticated MQTT session?
//!
//! The coordinator (this module) re-executes the binary as `processes` workers
//! ([`worker`]), each holding its share of the connections so that no process nears the
//! open-file limit. It moves them from checkpoint to checkpoint: every worker opens its share of
//! the next count at its share of the rate (with `subscribe`, each connection also subscribes
//! to its own command topic), the coordinator waits for all, lets the server settle, and
//! samples the server's `/proc/PID/status`. Then the connections are held idle for
//! `hold_secs`, sampled once more, and closed. The [`report::IdleReport`] gives outcomes,
//! rate, latency percentiles, memory per connection (least squares over the checkpoints) and
//! the generator's own CPU, so a saturated generator shows. Progress goes to stderr through
//! [`Progress`]: a bar while connecting, a spinner while holding.
//!
//! Everything is bounded: the scenario caps counts and durations, the coordinator and every
//! worker give up at [`IdleScenario::deadline_secs`], and workers stop when the coordinator's
//! pipe closes.

pub mod protocol;
pub mod report;
pub mod worker;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::pool::{merge_reasons, record_pairs};
use crate::procfs::{self, CpuSecs};
use crate::progress::Progress;
use crate::scenario::{IdleScenario, share};
use crate::stats::{latency_histogram, percentiles};
use protocol::{Command, Counts, Event, WorkerInit, WorkerReport};
use report::{
    Checkpoint, Connections, Generator, IdleReport, Server, Slope, Subscriptions, auth_name,
};

type Workers = crate::pool::Workers<Event>;

/// How often the coordinator updates a bar from the workers' counters (they report four
/// times a second while opening).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The message of the connecting bar.
fn connecting(t: &Counts) -> String {
    format!(
        "{} established, {} failed, {} in flight",
        t.established,
        t.failed,
        t.inflight()
    )
}

/// Asks every worker for its counters.
fn status(workers: &mut Workers) -> anyhow::Result<Counts> {
    workers.round(
        |_| Command::Status,
        |ev| matches!(ev, Event::Status(_)),
        PROGRESS_EVERY,
        |_| {},
    )
}

/// Samples the server's memory, with the connection count and time.
fn sample(pid: u32, target: u64, connections: u64, since: Instant) -> anyhow::Result<Checkpoint> {
    let memory = procfs::memory(pid)
        .with_context(|| format!("reading the memory of server pid {pid} (is it running?)"))?;
    Ok(Checkpoint {
        target,
        connections,
        at_secs: since.elapsed().as_secs_f64(),
        memory,
    })
}

fn server_cpu(pid: u32) -> Option<procfs::CpuTicks> {
    procfs::cpu_ticks(&pid.to_string()).ok()
}

/// Runs the scenario; returns the report (whose `ok` says whether the run met its count).
pub fn run(s: &IdleScenario) -> anyhow::Result<IdleReport> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut checkpoints = Vec::new();
    let server_cpu_start = s.server_pid.and_then(server_cpu);
    if let Some(pid) = s.server_pid {
        checkpoints.push(sample(pid, 0, 0, started)?);
    }
    eprintln!(
        "idle-connections: {} connections to {} at {}/s from {} source address(es) in {} process(es); auth {}, {}",
        s.count,
        s.target,
        s.rate,
        s.sources,
        s.processes,
        auth_name(s.auth),
        if s.subscribe {
            "one subscription each"
        } else {
            "no subscription"
        }
    );
    let init = WorkerInit {
        scenario: s.clone(),
        deadline_secs: s.deadline_secs(),
    };
    let mut workers = Workers::spawn("idle-connections", s.processes, &init, s.deadline_secs())?;
    let p = s.processes;
    let mut ramp = Duration::ZERO;
    let bar = Progress::phase("connecting", s.count);
    let mut reached = Counts::default();
    for step in s.steps() {
        let t0 = Instant::now();
        reached = workers.round(
            |i| Command::Open {
                until: share(step, i as u32, p),
            },
            |ev| matches!(ev, Event::Reached(_)),
            PROGRESS_EVERY,
            |t| bar.set(t.established + t.failed, connecting(t)),
        )?;
        ramp += t0.elapsed();
        bar.set(reached.established + reached.failed, connecting(&reached));
        bar.note(format!(
            "step {step}: {} established, {} failed after {:.2} s",
            reached.established,
            reached.failed,
            t0.elapsed().as_secs_f64()
        ));
        if let Some(pid) = s.server_pid {
            bar.message(format!(
                "{}; settling {} s for checkpoint {step}",
                connecting(&reached),
                s.settle_secs
            ));
            std::thread::sleep(Duration::from_secs(s.settle_secs));
            let now = status(&mut workers)?;
            let cp = sample(pid, step, now.alive, started)?;
            bar.note(format!(
                "checkpoint {step}: {} open, server VmRSS {} KiB",
                now.alive,
                cp.memory.vm_rss / 1024
            ));
            checkpoints.push(cp);
        }
    }
    bar.finish(format!(
        "{} established, {} failed in {:.2} s",
        reached.established,
        reached.failed,
        ramp.as_secs_f64()
    ));

    let holding = Progress::spinner("holding");
    let hold_end = Instant::now() + Duration::from_secs(s.hold_secs);
    let mut held = status(&mut workers)?;
    loop {
        let left = hold_end.saturating_duration_since(Instant::now());
        holding.message(format!(
            "{} open, {} PINGREQ sent, {} PINGRESP; {} s left",
            held.alive,
            held.pings_sent,
            held.pingresps,
            left.as_secs_f64().ceil()
        ));
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
        held = status(&mut workers)?;
    }
    holding.finish(format!(
        "{} open after {} s, {} PINGREQ sent, {} PINGRESP",
        held.alive, s.hold_secs, held.pings_sent, held.pingresps
    ));
    let after_hold = match s.server_pid {
        Some(pid) => Some(sample(pid, s.count, held.alive, started)?),
        None => None,
    };
    let server_cpu_end = s.server_pid.and_then(server_cpu);

    let reports = workers.stop(&Command::Stop)?;
    let wall = started.elapsed().as_secs_f64();
    Ok(assemble(
        s,
        started_unix,
        wall,
        ramp,
        held,
        checkpoints,
        after_hold,
        (server_cpu_start, server_cpu_end),
        &reports,
    ))
}

/// Builds the report from the workers' reports and the samples.
#[allow(clippy::too_many_arguments)]
fn assemble(
    s: &IdleScenario,
    started_unix: u64,
    wall: f64,
    ramp: Duration,
    held: Counts,
    checkpoints: Vec<Checkpoint>,
    after_hold: Option<Checkpoint>,
    server_cpu: (Option<procfs::CpuTicks>, Option<procfs::CpuTicks>),
    reports: &[WorkerReport],
) -> IdleReport {
    let mut totals = Counts::default();
    let mut conns = Connections {
        requested: s.count,
        alive_after_hold: held.alive,
        ..Connections::default()
    };
    let mut hist = latency_histogram();
    let mut suback_hist = latency_histogram();
    let mut granted_qos = std::collections::BTreeMap::new();
    let mut workers = Vec::new();
    let mut cpu = CpuSecs::default();
    for (index, r) in reports.iter().enumerate() {
        totals.add(&r.counts);
        merge_reasons(&mut conns.failures, &r.failures);
        merge_reasons(&mut conns.dropped, &r.dropped);
        record_pairs(&mut hist, &r.latency_us);
        record_pairs(&mut suback_hist, &r.suback_latency_us);
        for (qos, n) in &r.granted_qos {
            *granted_qos.entry(*qos).or_default() += n;
        }
        cpu.add(&r.cpu);
        workers.push(report::Worker {
            index: index as u32,
            established: r.counts.established,
            cpu: r.cpu,
            memory: r.memory,
        });
    }
    // The coordinator's own CPU (its children are counted from their own reports).
    cpu.add(&CpuSecs::own());
    conns.attempted = totals.attempted;
    conns.established = totals.established;
    conns.failed = totals.failed;
    conns.pings_sent = totals.pings_sent;
    conns.pingresps = totals.pingresps;
    let server = s.server_pid.map(|pid| {
        let cpu = match server_cpu {
            (Some(a), Some(b)) => CpuSecs::from_ticks(
                b.user.saturating_sub(a.user),
                b.system.saturating_sub(a.system),
            ),
            _ => CpuSecs::default(),
        };
        Server {
            pid,
            slope: Slope::fit(&checkpoints, s.slope_from),
            checkpoints,
            after_hold,
            cpu,
        }
    });
    let ramp_secs = ramp.as_secs_f64();
    IdleReport {
        scenario_kind: "idle-connections",
        scenario: s.clone(),
        started_unix,
        ok: conns.established >= s.count
            && conns.alive_after_hold >= s.count
            && conns.dropped.is_empty(),
        ramp_secs,
        connect_rate_per_sec: if ramp_secs > 0.0 {
            conns.established as f64 / ramp_secs
        } else {
            0.0
        },
        connect_latency_us: percentiles(&hist),
        subscriptions: s.subscribe.then(|| Subscriptions {
            filter: worker::command_filter(&s.topic_root, "{device_id}"),
            requested_qos: worker::SUBSCRIBE_QOS,
            granted_qos,
            latency_us: percentiles(&suback_hist),
        }),
        server,
        generator: Generator {
            processes: s.processes,
            wall_secs: wall,
            cores_busy: if wall > 0.0 { cpu.total() / wall } else { 0.0 },
            cpu_us_per_connection: if conns.established > 0 {
                cpu.total() * 1e6 / conns.established as f64
            } else {
                0.0
            },
            cpu,
            workers,
        },
        connections: conns,
    }
}

/// `idle-connections --scenario FILE`: runs, prints the summary, writes the JSON report.
pub fn main(s: &IdleScenario, json: Option<&Path>) -> anyhow::Result<bool> {
    let report = run(s)?;
    print!("{}", report.text());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.ok)
}
