//! A worker process of `reconnect-storm`: connects its share of the devices (each bound to one
//! of the source addresses, with the handshake of `idle-connections`), holds them, and at the
//! storm instant closes every socket at once (plain close, no DISCONNECT) and reconnects each
//! device immediately, retrying after `retry_delay_ms` until `storm_timeout_secs` have passed.
//! One current-thread tokio runtime; one task per device.
//!
//! Started by the coordinator (`reconnect-storm --worker I/P`), which feeds it commands on
//! standard input and reads events from its standard output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::protocol::{Command, Counts, Event, WorkerInit, WorkerReport};
use crate::credentials::Identities;
use crate::idle::protocol::WorkerShare;
use crate::idle::worker::{ConnSpec, handshake, micros};
use crate::mqtt::{DISCONNECT, PINGREQ, Scanner};
use crate::pool::emit_line;
use crate::procfs::{self, CpuSecs, CpuTicks};
use crate::scenario::{ReconnectScenario, share};
use crate::stats::latency_histogram;

fn emit(event: &Event) {
    emit_line(event);
}

/// Runs a worker: reads its [`WorkerInit`] and commands from standard input.
pub fn run(share: WorkerShare) -> anyhow::Result<()> {
    crate::pool::serve_worker::<_, _, Event, _>(
        share,
        |init: &WorkerInit| init.scenario.processes,
        Command::Stop,
        |init, cmd_rx| Worker::new(init, share).run(cmd_rx),
    )
}

/// What a device task reports to the worker loop.
#[derive(Debug)]
enum DevEvent {
    /// Initial CONNACK 0 after this many microseconds.
    Established(u64),
    /// The initial attempt failed.
    Failed(String),
    /// The storm closed the connection.
    Dropped,
    /// A reconnect attempt failed; the device retries.
    AttemptFailed(String),
    /// Back with CONNACK 0.
    Reconnected {
        /// Microseconds from the drop instant.
        at_us: u64,
        /// connect() to CONNACK of the successful attempt, microseconds.
        latency_us: u64,
    },
    /// A dropped device stopped trying, with its last failure.
    GaveUp(String),
    /// An established connection was lost other than by the storm.
    Lost(String),
    /// Closed on the stop.
    Closed,
}

/// Why a held connection stopped being held.
enum HoldEnd {
    Stopped,
    Storm(SystemTime),
    Lost(String),
}

/// What every device task shares.
#[derive(Debug)]
struct DevCtx {
    ids: Identities,
    keepalive_secs: u16,
    storm_timeout: Duration,
    retry_delay: Duration,
    events: mpsc::Sender<DevEvent>,
}

struct Worker {
    scenario: ReconnectScenario,
    share: WorkerShare,
    deadline: Duration,
    counts: Counts,
    failures: BTreeMap<String, u64>,
    storm_failures: BTreeMap<String, u64>,
    gave_up: BTreeMap<String, u64>,
    lost: BTreeMap<String, u64>,
    connect_hist: hdrhistogram::Histogram<u64>,
    storm_hist: hdrhistogram::Histogram<u64>,
    reconnected_at_us: Vec<u64>,
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

impl Worker {
    fn new(init: WorkerInit, share: WorkerShare) -> Worker {
        Worker {
            scenario: init.scenario,
            share,
            deadline: Duration::from_secs(init.deadline_secs),
            counts: Counts::default(),
            failures: BTreeMap::new(),
            storm_failures: BTreeMap::new(),
            gave_up: BTreeMap::new(),
            lost: BTreeMap::new(),
            connect_hist: latency_histogram(),
            storm_hist: latency_histogram(),
            reconnected_at_us: Vec::new(),
        }
    }

    fn on_event(&mut self, ev: DevEvent) {
        let c = &mut self.counts;
        match ev {
            DevEvent::Established(us) => {
                c.established += 1;
                c.alive += 1;
                let _ = self.connect_hist.record(us.max(1));
            }
            DevEvent::Failed(reason) => {
                c.failed += 1;
                *self.failures.entry(reason).or_default() += 1;
            }
            DevEvent::Dropped => {
                c.dropped += 1;
                c.alive -= 1;
            }
            DevEvent::AttemptFailed(reason) => {
                c.storm_failed_attempts += 1;
                *self.storm_failures.entry(reason).or_default() += 1;
            }
            DevEvent::Reconnected { at_us, latency_us } => {
                c.reconnected += 1;
                c.alive += 1;
                self.reconnected_at_us.push(at_us);
                let _ = self.storm_hist.record(latency_us.max(1));
            }
            DevEvent::GaveUp(reason) => {
                c.gave_up += 1;
                *self.gave_up.entry(reason).or_default() += 1;
            }
            DevEvent::Lost(reason) => {
                c.lost += 1;
                c.alive -= 1;
                *self.lost.entry(reason).or_default() += 1;
            }
            DevEvent::Closed => c.alive -= 1,
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let s = self.scenario.clone();
        let p = u64::from(self.share.processes);
        let rate = s.rate as f64 / p as f64;
        let mine = share(s.count, self.share.index, self.share.processes);
        let (ev_tx, mut ev_rx) = mpsc::channel::<DevEvent>(4096);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (storm_tx, storm_rx) = watch::channel::<Option<SystemTime>>(None);
        let ctx = Arc::new(DevCtx {
            ids: Identities {
                product: s.product.clone(),
                seed: s.seed,
                sign_type: s.sign_type,
                auth: s.auth,
            },
            keepalive_secs: s.keepalive_secs,
            storm_timeout: Duration::from_secs(s.storm_timeout_secs),
            retry_delay: Duration::from_millis(s.retry_delay_ms),
            events: ev_tx,
        });
        let spec = ConnSpec::new(s.target, s.keepalive_secs, s.connect_timeout_secs);

        let deadline = tokio::time::sleep(self.deadline);
        tokio::pin!(deadline);
        let mut tick = crate::pool::ticker(Duration::from_millis(1));
        let mut progress = crate::pool::ticker(Duration::from_millis(250));
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let fire = tokio::time::sleep_until(far);
        tokio::pin!(fire);

        let mut opening = false;
        let mut open_start = Instant::now();
        // The storm: (instant, alive then, lost then, CPU then) once fired.
        let mut storm_at: Option<SystemTime> = None;
        let mut fired: Option<(u64, u64, CpuTicks)> = None;
        let mut storm_cpu: Option<CpuSecs> = None;

        loop {
            tokio::select! {
                () = &mut deadline => {
                    emit(&Event::Fatal(format!("worker {} reached its deadline of {:?}", self.share, self.deadline)));
                    break;
                }
                cmd = cmds.recv() => match cmd {
                    Some(Command::Open) => {
                        opening = true;
                        open_start = Instant::now();
                    }
                    Some(Command::Status) => emit(&Event::Status(self.counts)),
                    Some(Command::Storm { at_unix_us }) => {
                        let at = UNIX_EPOCH + Duration::from_micros(at_unix_us);
                        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                        storm_at = Some(at);
                        fire.as_mut().reset(Instant::now() + wait);
                    }
                    Some(Command::Stop) | None => break,
                },
                () = &mut fire, if storm_at.is_some() && fired.is_none() => {
                    fired = Some((self.counts.alive, self.counts.lost, ticks()));
                    let _ = storm_tx.send(storm_at);
                }
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                _ = tick.tick(), if opening && self.counts.attempted < mine => {
                    let due = (1 + (rate * open_start.elapsed().as_secs_f64()) as u64).min(mine);
                    while self.counts.attempted < due && self.counts.inflight() < s.max_inflight {
                        let g = self.counts.attempted * p + u64::from(self.share.index);
                        let spec = ConnSpec { source: s.source(g), ..spec.clone() };
                        tokio::spawn(device(spec, g + 1, Arc::clone(&ctx), stop_rx.clone(), storm_rx.clone()));
                        self.counts.attempted += 1;
                    }
                }
                _ = progress.tick(), if opening || (fired.is_some() && storm_cpu.is_none()) => {
                    emit(&Event::Progress(self.counts));
                }
            }
            if opening && self.counts.attempted >= mine && self.counts.inflight() == 0 {
                opening = false;
                emit(&Event::Reached(self.counts));
            }
            if let Some((alive_then, lost_then, cpu_then)) = fired
                && storm_cpu.is_none()
            {
                let c = &self.counts;
                // Every connection open at the instant was dropped (or lost meanwhile), and
                // every dropped device is back or has given up.
                if c.out() == 0 && c.dropped + (c.lost - lost_then) >= alive_then {
                    storm_cpu = Some(cpu_between(cpu_then, ticks()));
                    emit(&Event::Recovered(self.counts));
                }
            }
        }

        // Stop: every connection sends DISCONNECT and closes, retrying devices give up; wait a
        // bounded time for them.
        let _ = stop_tx.send(true);
        drop(ctx);
        let until = Instant::now() + Duration::from_secs(5);
        while self.counts.alive > 0 || self.counts.inflight() > 0 || self.counts.out() > 0 {
            match tokio::time::timeout_at(until, ev_rx.recv()).await {
                Ok(Some(ev)) => self.on_event(ev),
                _ => break,
            }
        }
        let storm_cpu = match (storm_cpu, fired) {
            (Some(c), _) => c,
            (None, Some((_, _, then))) => cpu_between(then, ticks()),
            (None, None) => CpuSecs::default(),
        };
        let hist_pairs = |h: &hdrhistogram::Histogram<u64>| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        let report = WorkerReport {
            counts: self.counts,
            failures: std::mem::take(&mut self.failures),
            storm_failures: std::mem::take(&mut self.storm_failures),
            gave_up: std::mem::take(&mut self.gave_up),
            lost: std::mem::take(&mut self.lost),
            connect_latency_us: hist_pairs(&self.connect_hist),
            storm_latency_us: hist_pairs(&self.storm_hist),
            reconnected_at_us: std::mem::take(&mut self.reconnected_at_us),
            storm_cpu,
            cpu: cpu_between(CpuTicks::default(), ticks()),
            memory: procfs::memory(std::process::id()).unwrap_or_default(),
        };
        emit(&Event::Final(Box::new(report)));
    }
}

/// One handshake within the timeout: the stream and its latency, or a failure label.
async fn attempt(spec: &ConnSpec, index: u64, ctx: &DevCtx) -> Result<(TcpStream, u64), String> {
    let start = Instant::now();
    let creds = ctx.ids.mqtt(index, SystemTime::now());
    match tokio::time::timeout(spec.timeout, handshake(spec, creds, ctx.keepalive_secs)).await {
        Ok(Ok(stream)) => Ok((stream, micros(start.elapsed()))),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("timeout waiting for CONNACK".into()),
    }
}

/// One device (1-based `index`): connect, hold, drop at the storm, reconnect, hold until the
/// stop.
async fn device(
    spec: ConnSpec,
    index: u64,
    ctx: Arc<DevCtx>,
    mut stop: watch::Receiver<bool>,
    mut storm: watch::Receiver<Option<SystemTime>>,
) {
    let send = |ev| {
        let tx = ctx.events.clone();
        async move {
            let _ = tx.send(ev).await;
        }
    };
    let stream = match attempt(&spec, index, &ctx).await {
        Ok((stream, us)) => {
            send(DevEvent::Established(us)).await;
            stream
        }
        Err(reason) => return send(DevEvent::Failed(reason)).await,
    };
    let at = match hold(stream, spec.keepalive, &mut stop, Some(&mut storm)).await {
        HoldEnd::Stopped => return send(DevEvent::Closed).await,
        HoldEnd::Lost(reason) => return send(DevEvent::Lost(reason)).await,
        // `hold` has dropped (closed) the stream.
        HoldEnd::Storm(at) => at,
    };
    send(DevEvent::Dropped).await;
    let since = || SystemTime::now().duration_since(at).unwrap_or_default();
    let stream = loop {
        match attempt(&spec, index, &ctx).await {
            Ok((stream, latency_us)) => {
                let at_us = micros(since());
                send(DevEvent::Reconnected { at_us, latency_us }).await;
                break stream;
            }
            Err(reason) => {
                send(DevEvent::AttemptFailed(reason.clone())).await;
                if since() + ctx.retry_delay >= ctx.storm_timeout {
                    return send(DevEvent::GaveUp(reason)).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(ctx.retry_delay) => {}
                    _ = stop.changed() => return send(DevEvent::GaveUp(reason)).await,
                }
            }
        }
    };
    match hold(stream, spec.keepalive, &mut stop, None).await {
        HoldEnd::Lost(reason) => send(DevEvent::Lost(reason)).await,
        HoldEnd::Stopped | HoldEnd::Storm(_) => send(DevEvent::Closed).await,
    }
}

/// Holds a connection: PINGREQ every keep-alive, reads and checks what arrives. Ends on the
/// stop (after DISCONNECT), at the storm (closing the socket without DISCONNECT), or when the
/// connection is lost.
async fn hold(
    mut stream: TcpStream,
    keepalive: Duration,
    stop: &mut watch::Receiver<bool>,
    mut storm: Option<&mut watch::Receiver<Option<SystemTime>>>,
) -> HoldEnd {
    let mut scanner = Scanner::default();
    let mut next_ping = Instant::now() + keepalive;
    let mut buf = [0u8; 64];
    if *stop.borrow() {
        let _ = stream.write_all(&DISCONNECT).await;
        return HoldEnd::Stopped;
    }
    if let Some(at) = storm.as_deref().and_then(|rx| *rx.borrow()) {
        return HoldEnd::Storm(at);
    }
    loop {
        let storm_fired = async {
            match storm.as_deref_mut() {
                Some(rx) => {
                    // The guard is released before any further await.
                    let fired = rx.wait_for(Option::is_some).await.map(|at| *at);
                    match fired {
                        Ok(at) => at,
                        Err(_) => std::future::pending().await,
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            at = storm_fired => {
                if let Some(at) = at {
                    drop(stream);
                    return HoldEnd::Storm(at);
                }
            }
            () = tokio::time::sleep_until(next_ping) => {
                if let Err(e) = stream.write_all(&PINGREQ).await {
                    return HoldEnd::Lost(format!("write PINGREQ: {}", e.kind()));
                }
                next_ping += keepalive;
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) => return HoldEnd::Lost("closed by the server".into()),
                Ok(n) => {
                    if !scanner.feed(&buf[..n]) {
                        return HoldEnd::Lost("invalid MQTT framing from the server".into());
                    }
                }
                Err(e) => return HoldEnd::Lost(format!("read: {}", e.kind())),
            },
            _ = stop.changed() => {
                let _ = stream.write_all(&DISCONNECT).await;
                return HoldEnd::Stopped;
            }
        }
    }
}
