//! A worker process of `telemetry` or `command-roundtrip`: owns devices `i+1, i+1+P, …` (worker
//! `i` of `P`), connects them at its share of `connect_rate`, then publishes its share of the
//! reports from the coordinator's `t0` (`device.rs` does the pacing) or answers
//! commands, and reports its counters, its CPU and its memory. One current-thread tokio
//! runtime, one task per device.
//!
//! Started by the coordinator (`telemetry --worker I/P`, `command-roundtrip --worker I/P`),
//! which feeds it commands on standard input and reads events from its standard output. It
//! stops by itself when that pipe closes or its deadline passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::device::{self, Ctx, DevEvent, NO_RANK, Plan, Role, Shared};
use super::protocol::{Command, Counts, Event, Job, WorkerInit, WorkerReport};
use crate::credentials::Identities;
use crate::idle::protocol::WorkerShare;
use crate::procfs::{self, CpuSecs, CpuTicks};
use crate::scenario;

fn emit(event: &Event) {
    crate::pool::emit_line(event);
}

fn ticks() -> CpuTicks {
    procfs::cpu_ticks("self").unwrap_or_default()
}

fn cpu_between(a: CpuTicks, b: CpuTicks) -> CpuSecs {
    CpuSecs::from_ticks(
        b.user.saturating_sub(a.user),
        b.system.saturating_sub(a.system),
    )
}

/// Runs a worker: reads its [`WorkerInit`] and commands from standard input.
pub fn run(share: WorkerShare) -> anyhow::Result<()> {
    crate::pool::serve_worker::<_, _, Event, _>(
        share,
        |init: &WorkerInit| init.job.fleet().processes,
        Command::Stop,
        |init, cmd_rx| Worker::new(init, share).run(cmd_rx),
    )
}

/// What the worker knows of one of its devices.
#[derive(Debug, Clone, Copy, Default)]
struct DevState {
    alive: bool,
    ranked: bool,
    done: bool,
}

/// The publishing under way.
#[derive(Debug)]
struct Publishing {
    /// Devices that publish, and how many of them are done (or lost).
    expected: u64,
    done: u64,
    cpu_start: CpuTicks,
    reported: bool,
}

struct Worker {
    job: Job,
    share: WorkerShare,
    deadline: Duration,
    ctx: Arc<Ctx>,
    events: mpsc::Receiver<DevEvent>,
    plan: watch::Sender<Option<Arc<Plan>>>,
    stop: watch::Sender<bool>,
    devices: Vec<DevState>,
    /// Device tasks started, and how many have ended.
    spawned: u64,
    ended: u64,
    connected: u64,
    failed: u64,
    dropped: u64,
    failures: BTreeMap<String, u64>,
    lost: BTreeMap<String, u64>,
    connecting: bool,
    publishing: Option<Publishing>,
    cpu_publishing: CpuSecs,
}

impl Worker {
    fn new(init: WorkerInit, share: WorkerShare) -> Worker {
        let f = init.job.fleet().clone();
        let role = match &init.job {
            Job::Telemetry(s) => Role::Publish {
                rate: s.rate,
                qos: s.qos,
                planned: s.planned(),
                payload_bytes: s.payload_bytes,
                max_inflight: s.max_inflight,
            },
            Job::CommandRoundtrip(s) => Role::Answer {
                command_qos: s.command_qos,
            },
        };
        let owned = scenario::share(f.count, share.index, share.processes);
        let (tx, events) = mpsc::channel(4096);
        let ctx = Arc::new(Ctx {
            ids: Identities {
                product: f.product.clone(),
                seed: f.seed,
                sign_type: f.sign_type,
                auth: f.auth,
            },
            fleet: f,
            role,
            index: u64::from(share.index),
            processes: u64::from(share.processes),
            shared: Shared::new(init.deadline_secs),
            events: tx,
        });
        Worker {
            job: init.job,
            share,
            deadline: Duration::from_secs(init.deadline_secs),
            ctx,
            events,
            plan: watch::channel(None).0,
            stop: watch::channel(false).0,
            devices: vec![DevState::default(); owned as usize],
            spawned: 0,
            ended: 0,
            connected: 0,
            failed: 0,
            dropped: 0,
            failures: BTreeMap::new(),
            lost: BTreeMap::new(),
            connecting: false,
            publishing: None,
            cpu_publishing: CpuSecs::default(),
        }
    }

    fn counts(&self) -> Counts {
        let sh = &self.ctx.shared;
        let cpu = ticks();
        Counts {
            connected: self.connected,
            failed: self.failed,
            dropped: self.dropped,
            sent: sh.sent.load(Ordering::Relaxed),
            acked: sh.acked.load(Ordering::Relaxed),
            window_delayed: sh.window_delayed.load(Ordering::Relaxed),
            answered: sh.answered.load(Ordering::Relaxed),
            cpu_user_ticks: cpu.user,
            cpu_system_ticks: cpu.system,
        }
    }

    /// Starts one task per device, each connecting at its turn: device `k` of this worker is
    /// device number `d = index + k·P` of the fleet and starts at `d / connect_rate`.
    fn connect(&mut self) {
        if self.spawned > 0 {
            return;
        }
        self.connecting = true;
        let f = &self.ctx.fleet;
        let (index, p) = (u64::from(self.share.index), u64::from(self.share.processes));
        let start = Instant::now();
        for k in 0..self.devices.len() {
            let d = index + p * k as u64;
            let offset = u128::from(p * k as u64) * 1_000_000_000 / u128::from(f.connect_rate);
            let at = start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
            tokio::spawn(device::run(
                Arc::clone(&self.ctx),
                k,
                d,
                at,
                self.plan.subscribe(),
                self.stop.subscribe(),
            ));
            self.spawned += 1;
        }
    }

    /// Ranks the devices still connected and sends them the plan.
    fn publish(&mut self, t0_unix_us: u64) {
        let Job::Telemetry(s) = &self.job else {
            emit(&Event::Fatal(
                "publish: this worker answers commands".to_owned(),
            ));
            return;
        };
        if self.publishing.is_some() {
            return;
        }
        // t0 on this process's monotonic clock.
        let t0_wall = UNIX_EPOCH + Duration::from_micros(t0_unix_us);
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let t0 = match t0_wall.duration_since(now_wall) {
            Ok(ahead) => now + ahead,
            Err(e) => now.checked_sub(e.duration()).unwrap_or(now),
        };
        let stop_at = t0 + Duration::from_secs(2 * s.duration_secs);
        let mut ranks = vec![NO_RANK; self.devices.len()];
        let mut publishing = 0u64;
        for (k, dev) in self.devices.iter_mut().enumerate() {
            if dev.alive {
                ranks[k] = publishing as u32;
                dev.ranked = true;
                publishing += 1;
            }
        }
        self.publishing = Some(Publishing {
            expected: publishing,
            done: 0,
            cpu_start: ticks(),
            reported: false,
        });
        let _ = self.plan.send(Some(Arc::new(Plan {
            t0,
            stop_at,
            drain_until: stop_at + Duration::from_secs(s.drain_secs),
            ranks,
            publishing,
        })));
    }

    /// A device `k` is done publishing (or will never be).
    fn publish_done(&mut self, k: usize) {
        if let Some(dev) = self.devices.get_mut(k)
            && dev.ranked
            && !dev.done
        {
            dev.done = true;
            if let Some(p) = &mut self.publishing {
                p.done += 1;
            }
        }
    }

    fn on_event(&mut self, ev: DevEvent) {
        match ev {
            DevEvent::Connected(k) => {
                self.connected += 1;
                if let Some(dev) = self.devices.get_mut(k) {
                    dev.alive = true;
                }
            }
            DevEvent::Failed(reason) => {
                self.failed += 1;
                self.ended += 1;
                *self.failures.entry(reason).or_default() += 1;
            }
            DevEvent::PublishDone(k) => self.publish_done(k),
            DevEvent::Lost(k, reason) => {
                self.dropped += 1;
                self.ended += 1;
                *self.lost.entry(reason).or_default() += 1;
                if let Some(dev) = self.devices.get_mut(k) {
                    dev.alive = false;
                }
                self.publish_done(k);
            }
            DevEvent::Closed => self.ended += 1,
        }
    }

    /// Emits what has just become true: every attempt resolved, every device published.
    fn report_milestones(&mut self) {
        if self.connecting && self.connected + self.failed >= self.devices.len() as u64 {
            self.connecting = false;
            if let Job::CommandRoundtrip(_) = self.job {
                let (index, p) = (u64::from(self.share.index), u64::from(self.share.processes));
                let online = self
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(_, dev)| dev.alive)
                    .map(|(k, _)| index + p * k as u64 + 1)
                    .collect();
                emit(&Event::Online(online));
            }
            emit(&Event::Connected(self.counts()));
        }
        if let Some(p) = &mut self.publishing
            && !p.reported
            && p.done >= p.expected
        {
            p.reported = true;
            self.cpu_publishing = cpu_between(p.cpu_start, ticks());
            emit(&Event::Published(self.counts()));
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let deadline = tokio::time::sleep(self.deadline);
        tokio::pin!(deadline);
        let mut progress = crate::pool::ticker(Duration::from_millis(250));
        let mut last = Counts::default();
        loop {
            tokio::select! {
                () = &mut deadline => {
                    emit(&Event::Fatal(format!("worker {} reached its deadline of {:?}", self.share, self.deadline)));
                    break;
                }
                cmd = cmds.recv() => match cmd {
                    Some(Command::Connect) => self.connect(),
                    Some(Command::Publish { t0_unix_us }) => self.publish(t0_unix_us),
                    Some(Command::Status) => emit(&Event::Status(self.counts())),
                    Some(Command::Stop) | None => break,
                },
                Some(ev) = self.events.recv() => self.on_event(ev),
                _ = progress.tick() => {
                    let now = self.counts();
                    if now.moved_since(&last) {
                        emit(&Event::Progress(now));
                        last = now;
                    }
                }
            }
            self.report_milestones();
        }

        // Stop: every device sends DISCONNECT and ends; wait a bounded time for them.
        let _ = self.stop.send(true);
        let until = Instant::now() + Duration::from_secs(5);
        while self.ended < self.spawned {
            match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(ev)) => self.on_event(ev),
                _ => break,
            }
        }
        if let Some(p) = &self.publishing
            && !p.reported
        {
            self.cpu_publishing = cpu_between(p.cpu_start, ticks());
        }
        let report = WorkerReport {
            counts: self.counts(),
            devices: self.devices.len() as u64,
            failures: std::mem::take(&mut self.failures),
            dropped: std::mem::take(&mut self.lost),
            sent_per_sec: trimmed(&self.ctx.shared.sent_per_sec),
            cpu_publishing: self.cpu_publishing,
            cpu: cpu_between(CpuTicks::default(), ticks()),
            memory: procfs::memory(std::process::id()).unwrap_or_default(),
        };
        emit(&Event::Final(Box::new(report)));
    }
}

/// The per-second counts up to the last non-zero one.
fn trimmed(per_sec: &[std::sync::atomic::AtomicU64]) -> Vec<u64> {
    let mut v: Vec<u64> = per_sec.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}
