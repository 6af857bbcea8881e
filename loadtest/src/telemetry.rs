//! The `telemetry` scenario: devices publish property reports at a set total rate and one
//! application-side subscriber receives them; reported are the delivered rate, the end-to-end
//! latency percentiles (HDR histogram), losses, the server's CPU per message and the
//! generator's own CPU, plus a per-second series for plots.
//!
//! The coordinator (this module) keeps the subscriber (the "monitor": device 0 of the product,
//! allowed by the ACL rule `credentials` provisions, or an anonymous client on a plain broker)
//! on `$oc/devices/+/sys/properties/report`, on a thread of its own; the devices live in
//! `processes` worker processes ([`crate::traffic`]). Once every device has connected, the
//! coordinator picks `t0` (a wall-clock instant shared by every process) and report number `g`
//! (0-based, over all devices) is sent at `t0 + g / rate` by worker `g mod P`, spread over its
//! connected devices, so the total rate holds whatever the device and process counts. Each
//! report carries its number (`seq`) and the time it was actually sent (`ts`, µs since the Unix
//! epoch); the monitor's receive time minus `ts` is the latency (`latency_us`), and its
//! receive time minus the scheduled time `t0 + seq / rate` is the latency from the schedule
//! (`schedule_latency_us`), which also holds any lateness of the generator or of a full QoS 1
//! window. A report never delivered within `drain_secs` of the end of publishing is lost.
//!
//! Bounded: at most `rate * duration_secs` reports, at QoS 1 at most `max_inflight`
//! unacknowledged per device; devices stop sending at twice the planned duration (what is
//! left counts as not sent — a saturated generator or server shows), and the whole run is
//! abandoned at [`TelemetryScenario::deadline_secs`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::conn::{self, Framer, Packet};
use crate::credentials::{Identities, MqttCredentials, SERVICE_ID, device_topic};
use crate::procfs::{self, CpuSecs, CpuTicks};
use crate::progress::Progress;
use crate::scenario::{Auth, Fleet, TelemetryScenario};
use crate::series::{Second, Series};
use crate::stats::{Percentiles, latency_histogram, percentiles};
use crate::traffic::protocol::{Command, Event, Job};
use crate::traffic::{self, TICK, WorkerCost};

/// The login of device `index` (0 = the monitor).
pub(crate) fn login(fleet: &Fleet, index: u64) -> MqttCredentials {
    Identities {
        product: fleet.product.clone(),
        seed: fleet.seed,
        sign_type: fleet.sign_type,
        auth: fleet.auth,
    }
    .mqtt(index, SystemTime::now())
}

/// Subscribes to `filter` with packet id 1 and waits for the SUBACK; returns its codes.
pub(crate) async fn subscribe(
    stream: &mut TcpStream,
    framer: &mut Framer,
    filter: &str,
    qos: u8,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(&conn::subscribe(1, filter, qos))
        .await
        .map_err(|e| format!("subscribe: {:?}", e.kind()))?;
    match read_until(stream, framer, timeout, |p| {
        matches!(p, Packet::SubAck(1, _))
    })
    .await
    {
        Ok(Packet::SubAck(_, codes)) => Ok(codes),
        Ok(p) => Err(format!("suback {p:?}")),
        Err(e) => Err(format!("suback: {e}")),
    }
}

/// Reads packets until `want` accepts one, or fails after `limit`.
pub(crate) async fn read_until(
    stream: &mut TcpStream,
    framer: &mut Framer,
    limit: Duration,
    mut want: impl FnMut(&Packet) -> bool,
) -> anyhow::Result<Packet> {
    let until = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        while let Some(p) = framer
            .next_packet()
            .map_err(|e| anyhow::anyhow!("{}", e.0))?
        {
            if want(&p) {
                return Ok(p);
            }
        }
        let n = tokio::time::timeout_at(until, stream.read(&mut buf))
            .await
            .context("timed out")??;
        if n == 0 {
            bail!("the server closed the connection");
        }
        framer.feed(&buf[..n]);
    }
}

/// The report's payload for report number `seq`, sent at `ts` (µs), padded to `size` bytes.
pub fn payload(seq: u64, ts: u64, size: u64) -> Vec<u8> {
    let head = format!(
        "{{\"services\":[{{\"service_id\":\"{SERVICE_ID}\",\"properties\":{{\"seq\":{seq},\"ts\":{ts},\"value\":{}",
        seq % 101
    );
    let tail = "}}]}";
    let bare = head.len() + tail.len();
    let pad_overhead = ",\"pad\":\"\"".len();
    let mut out = head.into_bytes();
    let size = size as usize;
    if size > bare + pad_overhead {
        out.extend_from_slice(b",\"pad\":\"");
        out.resize(size - tail.len() - 1, b'x');
        out.push(b'"');
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

#[derive(Deserialize)]
struct ReportIn {
    services: Vec<ServiceIn>,
}

#[derive(Deserialize)]
struct ServiceIn {
    properties: PropsIn,
}

#[derive(Deserialize)]
struct PropsIn {
    seq: u64,
    ts: u64,
}

/// The `seq` and `ts` of a received report.
pub fn parse_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let r: ReportIn = serde_json::from_slice(payload).ok()?;
    let p = &r.services.first()?.properties;
    Some((p.seq, p.ts))
}

/// When the monitor's reports start: `t0` on this process's clock and on the wall clock.
#[derive(Debug, Clone, Copy)]
struct MonitorPlan {
    t0: Instant,
    t0_unix_us: u64,
    rate: u64,
}

/// What the coordinator tells the monitor thread.
#[derive(Debug, Clone, Copy, Default)]
struct MonitorCtl {
    /// Set just before the workers are told to publish.
    plan: Option<MonitorPlan>,
    /// Set once publishing is over: the reports sent, and when to stop waiting for the rest.
    end: Option<(u64, Instant)>,
}

/// What the monitor saw.
struct MonitorOutcome {
    delivered: u64,
    duplicates: u64,
    malformed: u64,
    out_of_range: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Receive time − `ts` (the actual send).
    hist: hdrhistogram::Histogram<u64>,
    /// Receive time − `t0 + seq / rate` (the schedule).
    schedule_hist: hdrhistogram::Histogram<u64>,
    series: Series,
    error: Option<String>,
}

/// The monitor: reads reports until every sent one has arrived or the drain deadline has
/// passed (both sent through `ctl`), or the coordinator is gone. Sends PINGREQ every half
/// keep-alive whatever arrives (at QoS 0 it sends nothing else), and DISCONNECT at the end.
async fn monitor(
    mut stream: TcpStream,
    mut framer: Framer,
    planned: u64,
    keepalive_secs: u16,
    mut ctl: watch::Receiver<MonitorCtl>,
    live: Arc<AtomicU64>,
) -> MonitorOutcome {
    let mut o = MonitorOutcome {
        delivered: 0,
        duplicates: 0,
        malformed: 0,
        out_of_range: 0,
        first: None,
        last: None,
        hist: latency_histogram(),
        schedule_hist: latency_histogram(),
        series: Series::new(),
        error: None,
    };
    let mut seen = vec![0u64; planned.div_ceil(64) as usize];
    let mut buf = vec![0u8; 64 * 1024];
    let ping_every = Duration::from_secs(u64::from(keepalive_secs) / 2);
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    'outer: loop {
        let c = *ctl.borrow();
        if let Some((sent, _)) = c.end
            && o.delivered >= sent
        {
            break;
        }
        if tokio::time::Instant::now() >= next_ping {
            if let Err(e) = stream.write_all(&crate::mqtt::PINGREQ).await {
                o.error = Some(format!("send: {:?}", e.kind()));
                break;
            }
            next_ping = tokio::time::Instant::now() + ping_every;
        }
        let deadline = c.end.map(|(_, d)| tokio::time::Instant::from_std(d));
        tokio::select! {
            biased;
            r = stream.read(&mut buf) => {
                let k = match r {
                    Ok(0) => { o.error = Some("closed by the server".into()); break; }
                    Err(e) => { o.error = Some(format!("read: {:?}", e.kind())); break; }
                    Ok(k) => k,
                };
                framer.feed(&buf[..k]);
                let now = Instant::now();
                let now_us = conn::unix_micros();
                let mut acks = Vec::new();
                loop {
                    let p = match framer.next_packet() {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => { o.error = Some(e.0); break 'outer; }
                    };
                    let Packet::Publish { qos, packet_id, payload, .. } = p else { continue };
                    if qos > 0 {
                        acks.extend_from_slice(&conn::puback(packet_id));
                    }
                    let Some((seq, ts)) = parse_stamp(&payload) else {
                        o.malformed += 1;
                        continue;
                    };
                    let Some(plan) = c.plan.filter(|_| seq < planned) else {
                        o.out_of_range += 1;
                        continue;
                    };
                    let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                    if seen[word] & bit != 0 {
                        o.duplicates += 1;
                        continue;
                    }
                    seen[word] |= bit;
                    o.delivered += 1;
                    o.first.get_or_insert(now);
                    o.last = Some(now);
                    let us = now_us.saturating_sub(ts).max(1);
                    let _ = o.hist.record(us);
                    let due_us = plan.t0_unix_us
                        + u64::try_from(u128::from(seq) * 1_000_000 / u128::from(plan.rate.max(1)))
                            .unwrap_or(u64::MAX);
                    let _ = o.schedule_hist.record(now_us.saturating_sub(due_us).max(1));
                    let sec = now.saturating_duration_since(plan.t0).as_secs();
                    o.series.latency(sec, us);
                    o.series.add(sec, "delivered", 1);
                }
                live.store(o.delivered, Ordering::Relaxed);
                if !acks.is_empty() {
                    if let Err(e) = stream.write_all(&acks).await {
                        o.error = Some(format!("send: {:?}", e.kind()));
                        break;
                    }
                    next_ping = tokio::time::Instant::now() + ping_every;
                }
            }
            r = ctl.changed() => {
                if r.is_err() { break; }
            }
            () = sleep_until_opt(deadline) => break,
            () = tokio::time::sleep_until(next_ping) => {}
        }
    }
    if o.error.is_none() {
        let _ = stream.write_all(&crate::mqtt::DISCONNECT).await;
    }
    o
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monitor thread and what the coordinator shares with it.
struct Monitor {
    ctl: watch::Sender<MonitorCtl>,
    /// Distinct reports delivered so far.
    delivered: Arc<AtomicU64>,
    thread: JoinHandle<MonitorOutcome>,
}

/// Connects and subscribes the monitor (errors end the run before any device connects), then
/// runs it on a thread of its own with a current-thread tokio runtime.
fn start_monitor(s: &TelemetryScenario) -> anyhow::Result<Monitor> {
    let f = &s.fleet;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(f.connect_timeout_secs);
    let (stream, framer) = rt.block_on(async {
        let mut mon = conn::connect(
            Ipv4Addr::LOCALHOST,
            f.target,
            &login(f, 0),
            f.keepalive_secs,
            timeout,
        )
        .await
        .map_err(|e| anyhow::anyhow!("the monitor (device 0) could not connect: {e}"))?;
        let mut framer = Framer::default();
        let filter = device_topic(&s.fleet.topic_root, "+", "properties/report");
        let codes = subscribe(&mut mon, &mut framer, &filter, s.qos, timeout)
            .await
            .map_err(|e| anyhow::anyhow!("the monitor's subscription: {e}"))?;
        if codes.first().is_none_or(|&c| c > 1) {
            bail!(
                "the server refused the monitor's subscription to {filter} (codes {codes:?}); on fleetgate, provision with `fleetgate-loadtest credentials`, which adds the ACL rule"
            );
        }
        Ok((mon, framer))
    })?;
    let (ctl, ctl_rx) = watch::channel(MonitorCtl::default());
    let delivered = Arc::new(AtomicU64::new(0));
    let live = Arc::clone(&delivered);
    let (planned, keepalive) = (s.planned(), f.keepalive_secs);
    let thread = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || rt.block_on(monitor(stream, framer, planned, keepalive, ctl_rx, live)))
        .context("starting the monitor thread")?;
    Ok(Monitor {
        ctl,
        delivered,
        thread,
    })
}

/// Devices of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Devices {
    /// Devices asked for.
    pub requested: u64,
    /// Devices connected (CONNACK 0).
    pub connected: u64,
    /// Failed connection attempts by reason (`connack 4`, `timeout`, …).
    pub failures: BTreeMap<String, u64>,
    /// Connections lost while publishing, by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl Devices {
    /// One line per connect failure and per lost connection, by reason (empty when none).
    pub fn problems_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.failures {
            out += &format!("  connect failure {k}: {v}\n");
        }
        for (k, v) in &self.dropped {
            out += &format!("  dropped {k}: {v}\n");
        }
        out
    }
}

/// Message counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Messages {
    /// `rate * duration_secs`.
    pub planned: u64,
    /// Reports written to the socket.
    pub sent: u64,
    /// `planned - sent`: reports never sent (their device was lost, or they were still
    /// waiting at twice the planned duration: a saturated generator, or a full QoS 1 window).
    pub unsent: u64,
    /// PUBACKs received (QoS 1).
    pub acked: u64,
    /// At QoS 1, `sent - acked`: reports whose PUBACK never came (0 at QoS 0).
    pub unacked: u64,
    /// Reports sent late because their device already had `max_inflight` reports without
    /// PUBACK when they were due (QoS 1; the lateness is in `schedule_latency_us`).
    pub window_delayed: u64,
    /// Distinct reports the monitor received.
    pub delivered: u64,
    /// `sent - delivered`.
    pub lost: u64,
    /// Reports received more than once.
    pub duplicates: u64,
    /// Publications the monitor could not read as a load-test report.
    pub malformed: u64,
}

/// The server's cost.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCost {
    /// Its pid.
    pub pid: u32,
    /// CPU from the start of publishing to the end of draining (/proc/PID/stat).
    pub cpu: CpuSecs,
    /// Delivered reports per server CPU-second (user + system).
    pub delivered_per_cpu_sec: f64,
}

/// The generator's cost: the coordinator (with the monitor) and its worker processes.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorCost {
    /// Worker processes.
    pub processes: u32,
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of every generator process over the run: the coordinator and the workers.
    pub cpu: CpuSecs,
    /// CPU of every generator process over the publishing window divided by its length (1.0 =
    /// one core saturated: on a machine with few cores, the generator, not the server, may be
    /// the limit).
    pub cores_busy_publishing: f64,
    /// The coordinator's own CPU (the monitor) over the run.
    pub coordinator_cpu: CpuSecs,
    /// Each worker process.
    pub workers: Vec<WorkerCost>,
}

/// The JSON report of a `telemetry` run.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryReport {
    /// `telemetry`.
    pub scenario_kind: &'static str,
    /// The scenario as run.
    pub scenario: TelemetryScenario,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Every device connected, every planned report sent, some delivered, none dropped, and
    /// at QoS 1 none lost.
    pub ok: bool,
    /// Devices.
    pub devices: Devices,
    /// Messages.
    pub messages: Messages,
    /// Seconds from `t0` (the first report's scheduled time) until every device was done
    /// publishing.
    pub publish_secs: f64,
    /// `sent / publish_secs`.
    pub sent_per_sec: f64,
    /// Delivered reports per second between the first and the last delivery.
    pub delivered_per_sec: f64,
    /// End-to-end latency from the actual send (the payload's `ts`, taken as the report is
    /// written) to the monitor's receipt, µs.
    pub latency_us: Percentiles,
    /// Latency from the schedule (`t0 + seq / rate`) to the monitor's receipt, µs: also
    /// counts the time a report waited for its turn (a full QoS 1 window, a busy generator).
    pub schedule_latency_us: Percentiles,
    /// The server's CPU, when its pid was given.
    pub server: Option<ServerCost>,
    /// The generator's CPU.
    pub generator: GeneratorCost,
    /// Per second since `t0`: `sent`, `delivered`, and `p50_us`, `p99_us` (latency from the
    /// actual send of the reports delivered in that second).
    pub series: Vec<Second>,
}

impl TelemetryReport {
    /// A human summary.
    pub fn text(&self) -> String {
        let m = &self.messages;
        let (l, sl) = (&self.latency_us, &self.schedule_latency_us);
        let mut out = format!(
            "telemetry: {} of {} devices connected; {} of {} reports sent at QoS {} ({} not sent), {} delivered, {} lost, {} duplicates\n",
            self.devices.connected,
            self.devices.requested,
            m.sent,
            m.planned,
            self.scenario.qos,
            m.unsent,
            m.delivered,
            m.lost,
            m.duplicates
        );
        if self.scenario.qos == 1 {
            out += &format!(
                "  QoS 1: {} acknowledged, {} not; {} sent late with a full window of {} per device\n",
                m.acked, m.unacked, m.window_delayed, self.scenario.max_inflight
            );
        }
        out += &format!(
            "  sent {:.0}/s, delivered {:.0}/s\n",
            self.sent_per_sec, self.delivered_per_sec
        );
        out += &format!(
            "  latency from the send (payload ts), µs: p50 {} p90 {} p99 {} p999 {} max {}\n",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        out += &format!(
            "  latency from the schedule (t0 + seq/rate), µs: p50 {} p90 {} p99 {} p999 {} max {}\n",
            sl.p50, sl.p90, sl.p99, sl.p999, sl.max
        );
        if let Some(s) = &self.server {
            out += &format!(
                "  server pid {}: {:.2} CPU-s, {:.0} delivered per CPU-second\n",
                s.pid,
                s.cpu.total(),
                s.delivered_per_cpu_sec
            );
        }
        let g = &self.generator;
        out += &format!(
            "  generator: {:.2} CPU-s over {:.1} s in {} worker process(es) and the coordinator ({:.2} cores busy while publishing)\n",
            g.cpu.total(),
            g.wall_secs,
            g.processes,
            g.cores_busy_publishing
        );
        out += &self.devices.problems_text();
        out
    }
}

/// CPU between two readings; zero if either is missing.
pub(crate) fn cpu_diff(a: Option<CpuTicks>, b: Option<CpuTicks>) -> CpuSecs {
    match (a, b) {
        (Some(a), Some(b)) => CpuSecs::from_ticks(
            b.user.saturating_sub(a.user),
            b.system.saturating_sub(a.system),
        ),
        _ => CpuSecs::default(),
    }
}

/// The server's CPU ticks, when its pid is given and readable.
pub(crate) fn server_ticks(pid: Option<u32>) -> Option<CpuTicks> {
    procfs::cpu_ticks(&pid?.to_string()).ok()
}

/// Microseconds since the Unix epoch of `t`.
pub(crate) fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs the scenario: the monitor here, the devices in worker processes; everything gives up
/// at the scenario's hard deadline.
pub fn run(s: &TelemetryScenario) -> anyhow::Result<TelemetryReport> {
    let started = Instant::now();
    let started_unix = unix_us(SystemTime::now()) / 1_000_000;
    let cpu_start = procfs::cpu_ticks("self").ok();
    let f = &s.fleet;
    let deadline = started + Duration::from_secs(s.deadline_secs());
    eprintln!(
        "telemetry: {} devices to {} in {} process(es), {} reports/s at QoS {} for {} s",
        f.count, f.target, f.processes, s.rate, s.qos, s.duration_secs
    );
    if f.auth == Auth::Device && s.rate.div_ceil(f.count) > 100 {
        eprintln!(
            "  warning: {} reports/s per device exceeds fleetgate's default per-device limit of 100/s",
            s.rate.div_ceil(f.count)
        );
    }

    // The monitor subscribes first, then the devices connect.
    let monitor = start_monitor(s)?;
    let mut workers = traffic::spawn("telemetry", Job::Telemetry(s.clone()), s.deadline_secs())?;
    let online = traffic::connect(&mut workers, f.count)?;
    if online.counts.connected == 0 {
        return Err(traffic::none_connected(workers));
    }

    // Publishing, from t0 a little ahead (every worker has it by then).
    let lead = Duration::from_millis(200 + 5 * u64::from(f.processes));
    let t0 = Instant::now() + lead;
    let t0_unix_us = unix_us(SystemTime::now() + lead);
    monitor.ctl.send_modify(|c| {
        c.plan = Some(MonitorPlan {
            t0,
            t0_unix_us,
            rate: s.rate,
        });
    });
    let server_start = server_ticks(f.server_pid);
    let coordinator_start = procfs::cpu_ticks("self").ok();
    let bar = Progress::phase("publishing", s.planned());
    let published = workers.round(
        |_| Command::Publish { t0_unix_us },
        |ev| matches!(ev, Event::Published(_)),
        TICK,
        |t| {
            bar.set(
                t.sent,
                format!(
                    "{} delivered, {} acked",
                    monitor.delivered.load(Ordering::Relaxed),
                    t.acked
                ),
            );
        },
    )?;
    let publish_end = Instant::now();
    let coordinator_publish_end = procfs::cpu_ticks("self").ok();
    let sent = published.sent;
    let publish_secs = publish_end.saturating_duration_since(t0).as_secs_f64();
    bar.set(sent, format!("{} acked", published.acked));
    bar.note(format!(
        "{sent} of {} reports sent in {publish_secs:.2} s ({} not sent)",
        s.planned(),
        s.planned().saturating_sub(sent)
    ));
    bar.finish(format!("{sent} sent"));

    // Draining: the monitor waits at most `drain_secs` for the rest.
    let drain_deadline = Instant::now() + Duration::from_secs(s.drain_secs);
    monitor
        .ctl
        .send_modify(|c| c.end = Some((sent, drain_deadline)));
    let spinner = Progress::spinner("draining");
    while !monitor.thread.is_finished() && Instant::now() < deadline {
        spinner.message(format!(
            "{} of {sent} delivered",
            monitor.delivered.load(Ordering::Relaxed)
        ));
        workers.next_until(Instant::now() + TICK)?;
    }
    let mon_out = monitor
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("the monitor thread panicked"))?;
    let server_end = server_ticks(f.server_pid);
    spinner.note(format!(
        "{} of {sent} reports delivered, {} lost, {} duplicates",
        mon_out.delivered,
        sent.saturating_sub(mon_out.delivered),
        mon_out.duplicates
    ));
    spinner.finish(format!("{} delivered", mon_out.delivered));
    let reports = workers.stop(&Command::Stop)?;
    let totals = traffic::totals(&reports);

    let mut devices = Devices {
        requested: f.count,
        connected: online.counts.connected,
        failures: totals.failures,
        dropped: totals.dropped,
    };
    if let Some(e) = &mon_out.error {
        *devices.dropped.entry(format!("monitor: {e}")).or_default() += 1;
    }
    let delivered = mon_out.delivered;
    let c = &totals.counts;
    let messages = Messages {
        planned: s.planned(),
        sent,
        unsent: s.planned().saturating_sub(sent),
        acked: c.acked,
        unacked: if s.qos == 1 {
            sent.saturating_sub(c.acked)
        } else {
            0
        },
        window_delayed: c.window_delayed,
        delivered,
        lost: sent.saturating_sub(delivered),
        duplicates: mon_out.duplicates,
        malformed: mon_out.malformed + mon_out.out_of_range,
    };
    let delivery_secs = match (mon_out.first, mon_out.last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64().max(1e-3),
        _ => 0.0,
    };
    let server = f.server_pid.map(|pid| {
        let cpu = cpu_diff(server_start, server_end);
        ServerCost {
            pid,
            delivered_per_cpu_sec: if cpu.total() > 0.0 {
                delivered as f64 / cpu.total()
            } else {
                0.0
            },
            cpu,
        }
    });
    let mut series = mon_out.series;
    for (t, &v) in totals.sent_per_sec.iter().enumerate() {
        if v > 0 {
            series.add(t as u64, "sent", v);
        }
    }
    let coordinator_cpu = cpu_diff(cpu_start, procfs::cpu_ticks("self").ok());
    let mut cpu = totals.cpu;
    cpu.add(&coordinator_cpu);
    let mut cpu_publishing = totals.cpu_publishing;
    cpu_publishing.add(&cpu_diff(coordinator_start, coordinator_publish_end));
    let ok = devices.connected == f.count
        && sent == s.planned()
        && delivered > 0
        && devices.dropped.is_empty()
        && (s.qos == 0 || messages.lost == 0);
    Ok(TelemetryReport {
        scenario_kind: "telemetry",
        scenario: s.clone(),
        started_unix,
        ok,
        devices,
        publish_secs,
        sent_per_sec: if publish_secs > 0.0 {
            sent as f64 / publish_secs
        } else {
            0.0
        },
        delivered_per_sec: if delivery_secs > 0.0 {
            delivered as f64 / delivery_secs
        } else {
            0.0
        },
        messages,
        latency_us: percentiles(&mon_out.hist),
        schedule_latency_us: percentiles(&mon_out.schedule_hist),
        server,
        generator: GeneratorCost {
            processes: f.processes,
            wall_secs: started.elapsed().as_secs_f64(),
            cpu,
            cores_busy_publishing: if publish_secs > 0.0 {
                cpu_publishing.total() / publish_secs
            } else {
                0.0
            },
            coordinator_cpu,
            workers: totals.workers,
        },
        series: series.finish(),
    })
}

/// `telemetry --scenario FILE`: runs, prints the summary, writes the JSON report.
pub fn main(s: &TelemetryScenario, json: Option<&Path>) -> anyhow::Result<bool> {
    let report = run(s)?;
    print!("{}", report.text());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_seq_and_ts_and_pad_to_size() {
        let p = payload(42, 1_700_000_000_000_000, 0);
        assert_eq!(parse_stamp(&p), Some((42, 1_700_000_000_000_000)));
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["services"][0]["service_id"], SERVICE_ID);
        assert_eq!(v["services"][0]["properties"]["value"], 42);
        for size in [200u64, 512, 4096] {
            let p = payload(7, 9, size);
            assert_eq!(p.len() as u64, size);
            assert_eq!(parse_stamp(&p), Some((7, 9)));
        }
        // Too small to pad: the bare report.
        assert_eq!(payload(1, 2, 10), payload(1, 2, 0));
    }

    #[test]
    fn the_sample_file_is_valid() {
        let s = TelemetryScenario::parse(include_str!("../scenarios/telemetry.toml")).unwrap();
        assert!(s.planned() > 0);
        assert!(s.deadline_secs() > s.duration_secs);
    }

    #[test]
    fn scenario_problems_are_reported_at_once() {
        let text =
            "target = \"10.1.1.1:1883\"\ncount = 0\nrate = 10\nqos = 2\nauth = \"x\"\nspeed = 1\n";
        let p = TelemetryScenario::parse(text).unwrap_err().0;
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p.iter().any(|m| m.starts_with("speed: unknown key")));
        assert!(p.iter().any(|m| m.contains("not an IPv4 loopback")));
        assert!(p.iter().any(|m| m.starts_with("qos:")));
        assert!(p.iter().any(|m| m.starts_with("auth:")));
        assert!(p.iter().any(|m| m.starts_with("count:")));
    }
}
