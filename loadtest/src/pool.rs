//! The worker-process pool shared by the scenarios that spread their connections over several
//! processes (`idle-connections`, `reconnect-storm`): the coordinator re-executes this binary
//! as `SUBCOMMAND --worker I/P`, sends each worker its init line and then commands as JSON
//! lines on its stdin, and reads events as JSON lines from its stdout on one thread per worker.
//!
//! Everything is bounded: [`Workers::next_until`] gives up at the run's deadline, a worker that
//! exits before its final report is an error, and workers still running when the pool is
//! dropped (after an error) are killed by their pid and reaped.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::idle::protocol::WorkerShare;

/// Counters a worker reports, summed over the workers.
pub trait Tally: Copy + Default {
    fn add(&mut self, other: &Self);
}

/// An event of a scenario's worker protocol.
pub trait WorkerEvent: DeserializeOwned + Send + 'static {
    type Counts: Tally;
    type Report;
    /// The event for a line that cannot be read (a fatal error).
    fn unreadable(why: String) -> Self;
    /// Why the worker cannot go on, for a fatal event.
    fn fatal(&self) -> Option<&str>;
    /// The worker's counters, for events that carry them.
    fn counts(&self) -> Option<Self::Counts>;
    /// Whether this is the final report (after which the worker may exit).
    fn is_final(&self) -> bool;
    /// The final report, for the final event.
    fn into_report(self) -> Option<Self::Report>;
}

/// Implements [`Tally`] for `$counts` (through its field-wise `add`) and [`WorkerEvent`] for
/// `$event`, an enum with the variants `Fatal(String)`, `Final(Box<$report>)` and the listed
/// variants that carry `$counts`.
macro_rules! worker_protocol {
    ($event:ident, $counts:ident, $report:ident, [$($with_counts:ident),+ $(,)?]) => {
        impl $crate::pool::Tally for $counts {
            fn add(&mut self, other: &$counts) {
                $counts::add(self, other);
            }
        }

        impl $crate::pool::WorkerEvent for $event {
            type Counts = $counts;
            type Report = $report;

            fn unreadable(why: String) -> $event {
                $event::Fatal(why)
            }

            fn fatal(&self) -> Option<&str> {
                match self {
                    $event::Fatal(why) => Some(why),
                    _ => None,
                }
            }

            fn counts(&self) -> Option<$counts> {
                match self {
                    $($event::$with_counts(c))|+ => Some(*c),
                    _ => None,
                }
            }

            fn is_final(&self) -> bool {
                matches!(self, $event::Final(_))
            }

            fn into_report(self) -> Option<$report> {
                match self {
                    $event::Final(r) => Some(*r),
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use worker_protocol;

/// A message from a worker's reader thread.
enum FromWorker<E> {
    Event(E),
    Gone,
}

/// The worker processes, their pipes, and the latest counters of each.
pub struct Workers<E: WorkerEvent> {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::Receiver<(usize, FromWorker<E>)>,
    latest: Vec<E::Counts>,
    /// Which workers have sent their final report (and may exit).
    finished: Vec<bool>,
    deadline: Instant,
}

impl<E: WorkerEvent> Workers<E> {
    /// Starts `processes` workers of `subcommand`, sending each `init` as its first line.
    pub fn spawn(
        subcommand: &str,
        processes: u32,
        init: &impl Serialize,
        deadline_secs: u64,
    ) -> anyhow::Result<Workers<E>> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let init = serde_json::to_string(init)?;
        let (tx, events) = mpsc::channel();
        let mut w = Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            events,
            latest: vec![E::Counts::default(); processes as usize],
            finished: vec![false; processes as usize],
            deadline: Instant::now() + Duration::from_secs(deadline_secs),
        };
        for index in 0..processes {
            let share = WorkerShare { index, processes };
            let mut child = Process::new(&exe)
                .args([subcommand, "--worker", &share.to_string()])
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
                        let ev = serde_json::from_str::<E>(&line).unwrap_or_else(|e| {
                            E::unreadable(format!("unreadable line {line:?}: {e}"))
                        });
                        if tx.send((i, FromWorker::Event(ev))).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((i, FromWorker::Gone));
                })?;
        }
        Ok(w)
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The run's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends `cmd` to worker `i`.
    pub fn send(&mut self, i: usize, cmd: &impl Serialize) -> anyhow::Result<()> {
        let line = serde_json::to_string(cmd)?;
        writeln!(self.stdins[i], "{line}").with_context(|| format!("worker {i} is gone"))?;
        self.stdins[i]
            .flush()
            .with_context(|| format!("worker {i} is gone"))
    }

    /// Sends `cmd` to every worker.
    pub fn send_all(&mut self, cmd: &impl Serialize) -> anyhow::Result<()> {
        for i in 0..self.len() {
            self.send(i, cmd)?;
        }
        Ok(())
    }

    /// The next message before `until` (or the run's deadline); `None` at `until`. An error at
    /// the deadline, on a fatal event, or when a worker exits before its final report.
    pub fn next_until(&mut self, until: Instant) -> anyhow::Result<Option<(usize, E)>> {
        let limit = until.min(self.deadline);
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((i, FromWorker::Event(ev))) => {
                    if let Some(why) = ev.fatal() {
                        bail!("worker {i}: {why}");
                    }
                    if let Some(c) = ev.counts() {
                        self.latest[i] = c;
                    }
                    if ev.is_final() {
                        self.finished[i] = true;
                    }
                    return Ok(Some((i, ev)));
                }
                Ok((i, FromWorker::Gone)) if self.finished[i] => {}
                Ok((i, FromWorker::Gone)) => {
                    let status = wait_bounded(&mut self.children[i], Duration::from_secs(2))
                        .map_or_else(|e| e.to_string(), |s| s.to_string());
                    bail!("worker {i} exited unexpectedly ({status})")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every worker is gone"),
                Err(_) if limit < until || Instant::now() >= self.deadline => {
                    bail!("the run passed its deadline")
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// The sum of the latest counters of every worker.
    pub fn total(&self) -> E::Counts {
        let mut t = E::Counts::default();
        for c in &self.latest {
            t.add(c);
        }
        t
    }

    /// Sends `cmd(i)` to every worker `i` and waits until each has answered with an event
    /// `done` accepts; `tick` runs about every `every` meanwhile (progress, samples).
    pub fn round<C: Serialize>(
        &mut self,
        cmd: impl Fn(usize) -> C,
        done: fn(&E) -> bool,
        every: Duration,
        mut tick: impl FnMut(&E::Counts),
    ) -> anyhow::Result<E::Counts> {
        for i in 0..self.len() {
            self.send(i, &cmd(i))?;
        }
        let mut answered = vec![false; self.len()];
        let mut next_tick = Instant::now() + every;
        while answered.iter().any(|a| !a) {
            if let Some((i, ev)) = self.next_until(next_tick)?
                && done(&ev)
            {
                answered[i] = true;
            }
            if Instant::now() >= next_tick {
                tick(&self.total());
                next_tick = Instant::now() + every;
            }
        }
        Ok(self.total())
    }

    /// Sends `stop` to every worker and collects their final reports.
    pub fn stop(mut self, stop: &impl Serialize) -> anyhow::Result<Vec<E::Report>> {
        let mut reports: Vec<Option<E::Report>> = (0..self.len()).map(|_| None).collect();
        self.send_all(stop)?;
        while reports.iter().any(Option::is_none) {
            if let Some((i, ev)) = self.next_until(self.deadline)?
                && let Some(r) = ev.into_report()
            {
                reports[i] = Some(r);
            }
        }
        for (i, child) in self.children.iter_mut().enumerate() {
            wait_bounded(child, Duration::from_secs(10))
                .with_context(|| format!("waiting for worker {i}"))?;
        }
        Ok(reports.into_iter().flatten().collect())
    }
}

impl<E: WorkerEvent> std::fmt::Debug for Workers<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("children", &self.children)
            .field("finished", &self.finished)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<E: WorkerEvent> Drop for Workers<E> {
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

/// Writes one event line to standard output (the coordinator's pipe), in a worker.
pub(crate) fn emit_line<T: Serialize>(event: &T) {
    let mut out = std::io::stdout().lock();
    // A broken pipe means the coordinator is gone; the worker then stops on stdin EOF.
    if let Ok(line) = serde_json::to_string(event) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The worker side of the pipes: reads the init line from standard input, checks that it is
/// for `share` (`processes` reads its process count), raises the open-file limit, then passes
/// every later line to `body` as a command (and `stop` when the coordinator's pipe closes),
/// running `body` on a current-thread tokio runtime. An unreadable command is reported as a
/// fatal event.
pub fn serve_worker<I, C, E, F>(
    share: WorkerShare,
    processes: impl FnOnce(&I) -> u32,
    stop: C,
    body: impl FnOnce(I, tokio::sync::mpsc::Receiver<C>) -> F,
) -> anyhow::Result<()>
where
    I: DeserializeOwned,
    C: DeserializeOwned + Send + 'static,
    E: WorkerEvent + Serialize,
    F: Future<Output = ()>,
{
    let mut first = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut first)
        .context("reading the worker's init line")?;
    let init: I = serde_json::from_str(&first).context("parsing the worker's init line")?;
    let n = processes(&init);
    anyhow::ensure!(
        n == share.processes,
        "worker {share} started for a scenario with {n} processes"
    );
    crate::procfs::raise_nofile_limit().context("raising the open-file limit")?;

    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel::<C>(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<C>(&line) {
                    Ok(cmd) => {
                        if cmd_tx.blocking_send(cmd).is_err() {
                            return;
                        }
                    }
                    Err(e) => emit_line(&E::unreadable(format!("bad command {line:?}: {e}"))),
                }
            }
            // The coordinator closed the pipe (or died): stop.
            let _ = cmd_tx.blocking_send(stop);
        })
        .context("spawning the stdin reader")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(body(init, cmd_rx));
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Adds per-reason counts of a worker's report to the run's.
pub fn merge_reasons(
    into: &mut std::collections::BTreeMap<String, u64>,
    from: &std::collections::BTreeMap<String, u64>,
) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Records a worker's `(value, count)` latency pairs into the run's histogram.
pub fn record_pairs(hist: &mut hdrhistogram::Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let _ = hist.record_n(value, count);
    }
}

/// A worker's interval timer that delays missed ticks rather than bursting.
pub fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Waits for `child`, killing it past `limit`.
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
