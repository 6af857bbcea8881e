//! The device side of `telemetry` and `command-roundtrip`, spread over worker processes: the
//! coordinator ([`crate::telemetry`], [`crate::command`]) keeps the measuring end (the
//! monitor, the HTTP clients) and re-executes the binary as `processes` workers
//! (`--worker I/P`, through [`crate::pool`]); worker `i` of `P` owns devices
//! `i+1, i+1+P, …`, connects them at its share of `connect_rate`, publishes its share of the
//! reports or answers commands (`device.rs`), and reports its counters, CPU and memory
//! ([`protocol`]). With `processes = 1` there is one worker: the same path, tested by every
//! run.
//!
//! This module also holds the coordinator's steps both scenarios share: spawning the workers,
//! connecting the fleet with a progress bar, and the per-process cost in the reports.

pub(crate) mod device;
pub mod protocol;
pub mod worker;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pool::merge_reasons;
use crate::procfs::{CpuSecs, Memory};
use crate::progress::Progress;
use protocol::{Command, Counts, Event, Job, WorkerInit, WorkerReport};

/// The worker processes of a run.
pub type Workers = crate::pool::Workers<Event>;

/// How often the coordinator refreshes its progress bars.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// Starts the `processes` workers of `subcommand` for `job`.
pub(crate) fn spawn(subcommand: &str, job: Job, deadline_secs: u64) -> anyhow::Result<Workers> {
    let processes = job.fleet().processes;
    let init = WorkerInit { job, deadline_secs };
    Workers::spawn(subcommand, processes, &init, deadline_secs)
}

/// The fleet once every connection attempt has resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct Online {
    /// The workers' counters then.
    pub(crate) counts: Counts,
    /// The online devices (1-based numbers, ascending), when the workers list them
    /// (`command-roundtrip`).
    pub(crate) devices: Vec<u64>,
}

/// Has every worker connect its devices; shows a progress bar until all attempts resolved.
pub(crate) fn connect(workers: &mut Workers, count: u64) -> anyhow::Result<Online> {
    let bar = Progress::phase("connecting", count);
    let started = Instant::now();
    workers.send_all(&Command::Connect)?;
    let mut answered = vec![false; workers.len()];
    let mut devices = Vec::new();
    while answered.iter().any(|a| !a) {
        match workers.next_until(Instant::now() + TICK)? {
            Some((_, Event::Online(list))) => devices.extend(list),
            Some((i, Event::Connected(_))) => answered[i] = true,
            _ => {}
        }
        let c = workers.total();
        bar.set(
            c.connected + c.failed,
            format!("{} connected, {} failed", c.connected, c.failed),
        );
    }
    devices.sort_unstable();
    let counts = workers.total();
    let secs = started.elapsed().as_secs_f64();
    bar.note(format!(
        "{} of {count} devices connected, {} failed, in {secs:.2} s ({} process(es))",
        counts.connected,
        counts.failed,
        workers.len()
    ));
    bar.finish(format!("{} connected", counts.connected));
    Ok(Online { counts, devices })
}

/// Stops the workers after no device could connect, and says why.
pub(crate) fn none_connected(workers: Workers) -> anyhow::Error {
    match workers.stop(&Command::Stop) {
        Ok(reports) => {
            let mut failures = BTreeMap::new();
            for r in &reports {
                merge_reasons(&mut failures, &r.failures);
            }
            anyhow::anyhow!("no device could connect: {failures:?}")
        }
        Err(e) => e.context("no device could connect"),
    }
}

/// One worker process in a report.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerCost {
    /// Its index (it owns devices `index+1, index+1+P, …`).
    pub index: u32,
    /// Devices it owns.
    pub devices: u64,
    /// Of which connected.
    pub connected: u64,
    /// Reports it sent (`telemetry`).
    pub sent: u64,
    /// Commands its devices answered (`command-roundtrip`).
    pub answered: u64,
    /// Its CPU over its whole life.
    pub cpu: CpuSecs,
    /// Its memory at the end (`vm_hwm` is its peak).
    pub memory: Memory,
}

/// What the workers' final reports add up to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub(crate) counts: Counts,
    pub(crate) failures: BTreeMap<String, u64>,
    pub(crate) dropped: BTreeMap<String, u64>,
    /// The sum of the workers' CPU over their whole life.
    pub(crate) cpu: CpuSecs,
    /// The sum of the workers' CPU while publishing.
    pub(crate) cpu_publishing: CpuSecs,
    /// Reports sent per second since `t0`, all workers together.
    pub(crate) sent_per_sec: Vec<u64>,
    pub(crate) workers: Vec<WorkerCost>,
}

/// Adds up the workers' final reports (in worker order).
pub(crate) fn totals(reports: &[WorkerReport]) -> Totals {
    let mut t = Totals::default();
    for (index, r) in reports.iter().enumerate() {
        t.counts.add(&r.counts);
        merge_reasons(&mut t.failures, &r.failures);
        merge_reasons(&mut t.dropped, &r.dropped);
        t.cpu.add(&r.cpu);
        t.cpu_publishing.add(&r.cpu_publishing);
        if t.sent_per_sec.len() < r.sent_per_sec.len() {
            t.sent_per_sec.resize(r.sent_per_sec.len(), 0);
        }
        for (sum, n) in t.sent_per_sec.iter_mut().zip(&r.sent_per_sec) {
            *sum += n;
        }
        t.workers.push(WorkerCost {
            index: index as u32,
            devices: r.devices,
            connected: r.counts.connected,
            sent: r.counts.sent,
            answered: r.counts.answered,
            cpu: r.cpu,
            memory: r.memory,
        });
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_reports_add_up() {
        let one = |sent: u64, per_sec: Vec<u64>, reason: &str| WorkerReport {
            counts: Counts {
                connected: 2,
                sent,
                ..Counts::default()
            },
            devices: 2,
            failures: [(reason.to_owned(), 1)].into(),
            sent_per_sec: per_sec,
            cpu: CpuSecs {
                user: 1.0,
                system: 0.5,
            },
            ..WorkerReport::default()
        };
        let t = totals(&[
            one(5, vec![2, 3], "timeout"),
            one(7, vec![1, 2, 4], "timeout"),
        ]);
        assert_eq!(t.counts.sent, 12);
        assert_eq!(t.counts.connected, 4);
        assert_eq!(t.sent_per_sec, [3, 5, 4]);
        assert_eq!(t.failures["timeout"], 2);
        assert_eq!(t.cpu.user, 2.0);
        assert_eq!(t.workers.len(), 2);
        assert_eq!((t.workers[1].index, t.workers[1].sent), (1, 7));
    }
}
