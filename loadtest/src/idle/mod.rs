//! The `idle-connections` scenario: how much memory does the server spend per idle,
//! authenticated MQTT session?
//!
//! The coordinator (this module) re-executes the binary as `processes` workers
//! ([`worker`]), each holding its share of the connections so that no process nears the
//! open-file limit. It moves them from checkpoint to checkpoint: every worker opens its share of
//! the next count at its share of the rate, the coordinator waits for all, lets the server
//! settle, and samples the server's `/proc/PID/status`. Then the connections are held idle for
//! `hold_secs`, sampled once more, and closed. The [`report::IdleReport`] gives outcomes,
//! rate, latency percentiles, memory per connection (least squares over the checkpoints) and
//! the generator's own CPU, so a saturated generator shows.
//!
//! Everything is bounded: the scenario caps counts and durations, the coordinator and every
//! worker give up at [`IdleScenario::deadline_secs`], and workers stop when the coordinator's
//! pipe closes.

pub mod protocol;
pub mod report;
pub mod worker;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::procfs::{self, CpuSecs};
use crate::scenario::{IdleScenario, share};
use crate::stats::{latency_histogram, percentiles};
use protocol::{Command, Counts, Event, WorkerInit, WorkerReport, WorkerShare};
use report::{Checkpoint, Connections, Generator, IdleReport, Server, Slope};

/// A message from a worker's reader thread.
enum FromWorker {
    Event(Event),
    Gone,
}

/// The worker processes, their pipes, and the latest counters of each.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::Receiver<(usize, FromWorker)>,
    latest: Vec<Counts>,
    /// Which workers have sent their final report (and may exit).
    finished: Vec<bool>,
    deadline: Instant,
}

impl Workers {
    fn spawn(s: &IdleScenario, deadline_secs: u64) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let init = serde_json::to_string(&WorkerInit {
            scenario: s.clone(),
            deadline_secs,
        })?;
        let (tx, events) = mpsc::channel();
        let mut w = Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            events,
            latest: vec![Counts::default(); s.processes as usize],
            finished: vec![false; s.processes as usize],
            deadline: Instant::now() + Duration::from_secs(deadline_secs),
        };
        for index in 0..s.processes {
            let share = WorkerShare {
                index,
                processes: s.processes,
            };
            let mut child = Process::new(&exe)
                .args(["idle-connections", "--worker", &share.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting worker {share}"))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker {share} has no pipes");
            };
            w.children.push(child);
            writeln!(stdin, "{init}")
                .with_context(|| format!("sending worker {share} its scenario"))?;
            w.stdins.push(stdin);
            let tx = tx.clone();
            let i = index as usize;
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let msg = match serde_json::from_str::<Event>(&line) {
                            Ok(ev) => FromWorker::Event(ev),
                            Err(e) => FromWorker::Event(Event::Fatal(format!(
                                "unreadable line {line:?}: {e}"
                            ))),
                        };
                        if tx.send((i, msg)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((i, FromWorker::Gone));
                })?;
        }
        Ok(w)
    }

    fn send(&mut self, i: usize, cmd: &Command) -> anyhow::Result<()> {
        let line = serde_json::to_string(cmd)?;
        writeln!(self.stdins[i], "{line}").with_context(|| format!("worker {i} is gone"))?;
        self.stdins[i]
            .flush()
            .with_context(|| format!("worker {i} is gone"))
    }

    /// The next message, or an error at the deadline or when a worker exits before its
    /// final report.
    fn next(&mut self) -> anyhow::Result<(usize, Event)> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok((i, FromWorker::Event(Event::Fatal(why)))) => bail!("worker {i}: {why}"),
            Ok((i, FromWorker::Event(ev))) => {
                match &ev {
                    Event::Progress(c) | Event::Reached(c) | Event::Status(c) => {
                        self.latest[i] = *c
                    }
                    Event::Final(_) => self.finished[i] = true,
                    Event::Fatal(_) => {}
                }
                Ok((i, ev))
            }
            Ok((i, FromWorker::Gone)) if self.finished[i] => self.next(),
            Ok((i, FromWorker::Gone)) => {
                let status = wait_bounded(&mut self.children[i], Duration::from_secs(2))
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                bail!("worker {i} exited unexpectedly ({status})")
            }
            Err(_) => bail!("the run passed its deadline"),
        }
    }

    fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in &self.latest {
            t.add(c);
        }
        t
    }

    /// Sends `cmd` to every worker and waits until each has answered with an event `done`
    /// accepts, printing progress about once a second.
    fn round(
        &mut self,
        cmd: impl Fn(usize) -> Command,
        done: fn(&Event) -> bool,
    ) -> anyhow::Result<Counts> {
        let n = self.children.len();
        for i in 0..n {
            self.send(i, &cmd(i))?;
        }
        let mut answered = vec![false; n];
        let mut last_print = Instant::now();
        while answered.iter().any(|a| !a) {
            let (i, ev) = self.next()?;
            if done(&ev) {
                answered[i] = true;
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                let t = self.total();
                eprintln!(
                    "  … {} established, {} failed, {} in flight",
                    t.established,
                    t.failed,
                    t.inflight()
                );
                last_print = Instant::now();
            }
        }
        Ok(self.total())
    }

    /// Stops every worker and collects their reports.
    fn stop(mut self) -> anyhow::Result<Vec<WorkerReport>> {
        let n = self.children.len();
        let mut reports: Vec<Option<WorkerReport>> = vec![None; n];
        for i in 0..n {
            self.send(i, &Command::Stop)?;
        }
        while reports.iter().any(Option::is_none) {
            if let (i, Event::Final(r)) = self.next()? {
                reports[i] = Some(*r);
            }
        }
        for (i, child) in self.children.iter_mut().enumerate() {
            wait_bounded(child, Duration::from_secs(10))
                .with_context(|| format!("waiting for worker {i}"))?;
        }
        Ok(reports.into_iter().flatten().collect())
    }
}

impl Drop for Workers {
    /// Workers still running (after an error) are killed by their pid and reaped.
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= until {
            child.kill()?;
            child.wait()?;
            bail!("did not exit within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
        "idle-connections: {} connections to {} at {}/s from {} source address(es) in {} process(es)",
        s.count, s.target, s.rate, s.sources, s.processes
    );
    let mut workers = Workers::spawn(s, s.deadline_secs())?;
    let p = s.processes;
    let mut ramp = Duration::ZERO;
    for step in s.steps() {
        let t0 = Instant::now();
        let reached = workers.round(
            |i| Command::Open {
                until: share(step, i as u32, p),
            },
            |ev| matches!(ev, Event::Reached(_)),
        )?;
        ramp += t0.elapsed();
        eprintln!(
            "  step {step}: {} established, {} failed after {:.2} s",
            reached.established,
            reached.failed,
            t0.elapsed().as_secs_f64()
        );
        if let Some(pid) = s.server_pid {
            std::thread::sleep(Duration::from_secs(s.settle_secs));
            let now = workers.round(|_| Command::Status, |ev| matches!(ev, Event::Status(_)))?;
            let cp = sample(pid, step, now.alive, started)?;
            eprintln!(
                "  checkpoint {step}: {} open, server VmRSS {} KiB",
                now.alive,
                cp.memory.vm_rss / 1024
            );
            checkpoints.push(cp);
        }
    }

    eprintln!("  holding for {} s", s.hold_secs);
    let hold_end = Instant::now() + Duration::from_secs(s.hold_secs);
    while Instant::now() < hold_end {
        std::thread::sleep(
            hold_end
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10)),
        );
        let now = workers.round(|_| Command::Status, |ev| matches!(ev, Event::Status(_)))?;
        eprintln!(
            "  … {} open, {} PINGREQ sent, {} PINGRESP",
            now.alive, now.pings_sent, now.pingresps
        );
    }
    let held = workers.round(|_| Command::Status, |ev| matches!(ev, Event::Status(_)))?;
    let after_hold = match s.server_pid {
        Some(pid) => Some(sample(pid, s.count, held.alive, started)?),
        None => None,
    };
    let server_cpu_end = s.server_pid.and_then(server_cpu);

    let reports = workers.stop()?;
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
    let mut workers = Vec::new();
    let mut cpu = CpuSecs::default();
    for (index, r) in reports.iter().enumerate() {
        totals.add(&r.counts);
        for (k, v) in &r.failures {
            *conns.failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.dropped {
            *conns.dropped.entry(k.clone()).or_default() += v;
        }
        for &(value, count) in &r.latency_us {
            let _ = hist.record_n(value, count);
        }
        cpu.user += r.cpu.user;
        cpu.system += r.cpu.system;
        workers.push(report::Worker {
            index: index as u32,
            established: r.counts.established,
            cpu: r.cpu,
            memory: r.memory,
        });
    }
    // The coordinator's own CPU (its children are counted from their own reports).
    if let Ok(me) = procfs::cpu_ticks("self") {
        let mine = CpuSecs::from_ticks(me.user, me.system);
        cpu.user += mine.user;
        cpu.system += mine.system;
    }
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
