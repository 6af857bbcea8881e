//! The `telemetry` scenario: devices publish property reports at a set total rate and one
//! application-side subscriber receives them; reported are the delivered rate, the end-to-end
//! latency percentiles (HDR histogram), losses, the server's CPU per message and the
//! generator's own CPU, plus a per-second series for plots.
//!
//! One generator process, one current-thread tokio runtime: the subscriber (the "monitor":
//! device 0 of the product, allowed by the ACL rule `credentials` provisions, or an anonymous
//! client on a plain broker) subscribes to `$oc/devices/+/sys/properties/report`; then the
//! devices connect at `connect_rate`, and report number `g` (0-based, over all devices) is
//! sent by connected device `g mod n` at `t0 + g / rate`, so the total rate holds whatever the
//! device count. Each report carries its number (`seq`) and its send time (`ts`, µs since the
//! Unix epoch); the monitor's receive time minus `ts` is the latency. A report never delivered
//! within `drain_secs` of the end of publishing is lost.
//!
//! Bounded: at most `rate * duration_secs` reports; devices stop sending at twice the planned
//! duration (what is left counts as not sent — a saturated generator shows), and the whole run
//! is abandoned at [`TelemetryScenario::deadline_secs`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::conn::{self, Framer, Packet};
use crate::credentials::{Identities, MqttCredentials, REPORTS_FILTER, SERVICE_ID, device_id};
use crate::procfs::{self, CpuSecs, CpuTicks};
use crate::scenario::{Auth, Fleet, TelemetryScenario};
use crate::series::{Second, Series};
use crate::stats::{Percentiles, latency_histogram, percentiles};

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

/// Connects devices 1..=count at `connect_rate`; returns each device's stream or the label of
/// its failure.
pub(crate) async fn connect_fleet(fleet: &Fleet) -> Vec<(u64, Result<TcpStream, String>)> {
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(fleet.count as usize);
    let timeout = Duration::from_secs(fleet.connect_timeout_secs);
    let mut last_print = Instant::now();
    for i in 0..fleet.count {
        let at = start + Duration::from_nanos(i * 1_000_000_000 / fleet.connect_rate);
        tokio::time::sleep_until(at).await;
        let (source, target, login) = (fleet.source(i), fleet.target, login(fleet, i + 1));
        let keepalive = fleet.keepalive_secs;
        handles.push(tokio::spawn(async move {
            conn::connect(source, target, &login, keepalive, timeout).await
        }));
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("  … {} connections started", i + 1);
            last_print = Instant::now();
        }
    }
    let mut out = Vec::with_capacity(handles.len());
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.await.unwrap_or_else(|e| Err(format!("task: {e}")));
        out.push((i as u64 + 1, r));
    }
    out
}

/// Connects the fleet ([`connect_fleet`]): the devices that connected, and the failures by
/// reason.
pub(crate) async fn connect_online(fleet: &Fleet) -> (Devices, Vec<(u64, TcpStream)>) {
    let mut devices = Devices {
        requested: fleet.count,
        ..Devices::default()
    };
    let mut streams = Vec::new();
    for (index, r) in connect_fleet(fleet).await {
        match r {
            Ok(stream) => streams.push((index, stream)),
            Err(e) => *devices.failures.entry(e).or_default() += 1,
        }
    }
    (devices, streams)
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

/// Counters the device tasks share.
struct Shared {
    t0: tokio::time::Instant,
    sent: AtomicU64,
    acked: AtomicU64,
    sent_per_sec: Vec<AtomicU64>,
}

struct DeviceOutcome {
    error: Option<String>,
    stream: TcpStream,
}

/// One device: sends reports `j, j + n, j + 2n, …` below `planned` on schedule, reads PUBACKs
/// (and acknowledges anything the server pushes at QoS 1), stops sending at `stop_at`, and
/// waits for its last PUBACKs until `drain_until`.
#[allow(clippy::too_many_arguments)]
async fn device(
    mut stream: TcpStream,
    topic: String,
    j: u64,
    n: u64,
    s: Arc<TelemetryScenario>,
    shared: Arc<Shared>,
    stop_at: tokio::time::Instant,
    drain_until: tokio::time::Instant,
) -> DeviceOutcome {
    let (planned, rate, qos) = (s.planned(), s.rate, s.qos);
    let mut framer = Framer::default();
    let mut buf = [0u8; 1024];
    let mut g = j;
    let mut pid: u16 = 0;
    let mut unacked: u64 = 0;
    let mut error = None;
    let mut last_ping = tokio::time::Instant::now();
    let ping_every = Duration::from_secs(u64::from(s.fleet.keepalive_secs) / 2);
    loop {
        let sending = g < planned;
        if !sending && (qos == 0 || unacked == 0) {
            break;
        }
        let next = if sending {
            (shared.t0 + Duration::from_nanos(g * 1_000_000_000 / rate)).min(stop_at)
        } else {
            drain_until
        };
        let wake = next.min(last_ping + ping_every);
        tokio::select! {
            biased;
            r = stream.read(&mut buf) => {
                match r {
                    Ok(0) => { error = Some("closed by the server".to_owned()); break; }
                    Err(e) => { error = Some(format!("read: {:?}", e.kind())); break; }
                    Ok(k) => framer.feed(&buf[..k]),
                }
                let mut acks = Vec::new();
                loop {
                    match framer.next_packet() {
                        Ok(Some(Packet::PubAck(_))) => {
                            unacked = unacked.saturating_sub(1);
                            shared.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(Packet::Publish { qos: 1.., packet_id, .. })) => acks.extend_from_slice(&conn::puback(packet_id)),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => { error = Some(e.0); break; }
                    }
                }
                if error.is_some() { break; }
                if !acks.is_empty() && let Err(e) = stream.write_all(&acks).await {
                    error = Some(format!("send: {:?}", e.kind()));
                    break;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if now >= last_ping + ping_every {
                    if let Err(e) = stream.write_all(&crate::mqtt::PINGREQ).await {
                        error = Some(format!("send: {:?}", e.kind()));
                        break;
                    }
                    last_ping = now;
                }
                if sending && now >= next {
                    if now >= stop_at {
                        // Out of time: what is left stays unsent.
                        g = planned;
                        continue;
                    }
                    pid = pid.checked_add(1).unwrap_or(1);
                    let packet = conn::publish(&topic, &payload(g, conn::unix_micros(), s.payload_bytes), qos, pid);
                    if let Err(e) = stream.write_all(&packet).await {
                        error = Some(format!("send: {:?}", e.kind()));
                        break;
                    }
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    let sec = now.saturating_duration_since(shared.t0).as_secs() as usize;
                    if let Some(c) = shared.sent_per_sec.get(sec) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    if qos == 1 { unacked += 1; }
                    g += n;
                } else if !sending && now >= drain_until {
                    break;
                }
            }
        }
    }
    DeviceOutcome { error, stream }
}

/// What the monitor saw.
struct MonitorOutcome {
    delivered: u64,
    duplicates: u64,
    malformed: u64,
    out_of_range: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    hist: hdrhistogram::Histogram<u64>,
    series: Series,
    error: Option<String>,
}

/// The monitor: reads reports until every sent one has arrived or the drain deadline (sent
/// through `end`: the final sent count and the deadline) has passed.
async fn monitor(
    mut stream: TcpStream,
    mut framer: Framer,
    planned: u64,
    shared: Arc<Shared>,
    mut end: watch::Receiver<Option<(u64, tokio::time::Instant)>>,
) -> (MonitorOutcome, TcpStream) {
    let mut o = MonitorOutcome {
        delivered: 0,
        duplicates: 0,
        malformed: 0,
        out_of_range: 0,
        first: None,
        last: None,
        hist: latency_histogram(),
        series: Series::new(),
        error: None,
    };
    let mut seen = vec![0u64; planned.div_ceil(64) as usize];
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_print = Instant::now();
    let t0 = shared.t0.into_std();
    'outer: loop {
        let finish = *end.borrow();
        if let Some((sent, _)) = finish
            && o.delivered >= sent
        {
            break;
        }
        let deadline = finish.map(|(_, d)| d);
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
                let sec = now.saturating_duration_since(t0).as_secs();
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
                    if seq >= planned {
                        o.out_of_range += 1;
                        continue;
                    }
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
                    o.series.latency(sec, us);
                    o.series.add(sec, "delivered", 1);
                }
                if !acks.is_empty() && let Err(e) = stream.write_all(&acks).await {
                    o.error = Some(format!("send: {:?}", e.kind()));
                    break;
                }
            }
            r = end.changed(), if finish.is_none() => {
                if r.is_err() { break; }
            }
            () = sleep_until_opt(deadline) => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "  … {} sent, {} delivered",
                shared.sent.load(Ordering::Relaxed),
                o.delivered
            );
            last_print = Instant::now();
        }
    }
    (o, stream)
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

/// Message counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Messages {
    /// `rate * duration_secs`.
    pub planned: u64,
    /// Reports written to the socket.
    pub sent: u64,
    /// PUBACKs received (QoS 1).
    pub acked: u64,
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

/// The generator's cost.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorCost {
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of this process over the run.
    pub cpu: CpuSecs,
    /// CPU over the publishing window divided by its length (1.0 = one core saturated: the
    /// generator, not the server, may be the limit).
    pub cores_busy_publishing: f64,
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
    /// Seconds from the first scheduled report to the last one sent.
    pub publish_secs: f64,
    /// `sent / publish_secs`.
    pub sent_per_sec: f64,
    /// Delivered reports per second between the first and the last delivery.
    pub delivered_per_sec: f64,
    /// End-to-end latency (send time in the payload to the monitor's receipt), µs.
    pub latency_us: Percentiles,
    /// The server's CPU, when its pid was given.
    pub server: Option<ServerCost>,
    /// The generator's CPU.
    pub generator: GeneratorCost,
    /// Per second since the start of publishing: `sent`, `delivered`, `p99_us` (of the
    /// reports delivered in that second).
    pub series: Vec<Second>,
}

impl TelemetryReport {
    /// A human summary.
    pub fn text(&self) -> String {
        let m = &self.messages;
        let l = &self.latency_us;
        let mut out = format!(
            "telemetry: {} of {} devices connected; {} of {} reports sent at QoS {}, {} delivered, {} lost, {} duplicates\n",
            self.devices.connected,
            self.devices.requested,
            m.sent,
            m.planned,
            self.scenario.qos,
            m.delivered,
            m.lost,
            m.duplicates
        );
        out += &format!(
            "  sent {:.0}/s, delivered {:.0}/s; latency µs p50 {} p90 {} p99 {} p999 {} max {}\n",
            self.sent_per_sec, self.delivered_per_sec, l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let Some(s) = &self.server {
            out += &format!(
                "  server pid {}: {:.2} CPU-s, {:.0} delivered per CPU-second\n",
                s.pid,
                s.cpu.total(),
                s.delivered_per_cpu_sec
            );
        }
        out += &format!(
            "  generator: {:.2} CPU-s over {:.1} s ({:.2} cores busy while publishing)\n",
            self.generator.cpu.total(),
            self.generator.wall_secs,
            self.generator.cores_busy_publishing
        );
        for (k, v) in &self.devices.failures {
            out += &format!("  connect failure {k}: {v}\n");
        }
        for (k, v) in &self.devices.dropped {
            out += &format!("  dropped {k}: {v}\n");
        }
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

/// Runs `run` on a current-thread runtime, abandoning it after `deadline_secs`.
pub(crate) fn run_within<T>(
    deadline_secs: u64,
    run: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(deadline_secs);
    rt.block_on(async move {
        match tokio::time::timeout(limit, run).await {
            Ok(r) => r,
            Err(_) => bail!("the run passed its hard deadline of {} s", limit.as_secs()),
        }
    })
}

/// Runs the scenario within its hard deadline.
pub fn run(s: &TelemetryScenario) -> anyhow::Result<TelemetryReport> {
    run_within(s.deadline_secs(), run_async(Arc::new(s.clone())))
}

async fn run_async(s: Arc<TelemetryScenario>) -> anyhow::Result<TelemetryReport> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cpu_start = procfs::cpu_ticks("self").ok();
    let f = &s.fleet;
    eprintln!(
        "telemetry: {} devices to {}, {} reports/s at QoS {} for {} s",
        f.count, f.target, s.rate, s.qos, s.duration_secs
    );
    if f.auth == Auth::Device && s.rate.div_ceil(f.count) > 100 {
        eprintln!(
            "  warning: {} reports/s per device exceeds fleetgate's default per-device limit of 100/s",
            s.rate.div_ceil(f.count)
        );
    }

    // The monitor subscribes first.
    let timeout = Duration::from_secs(f.connect_timeout_secs);
    let mut mon = conn::connect(
        Ipv4Addr::LOCALHOST,
        f.target,
        &login(f, 0),
        f.keepalive_secs,
        timeout,
    )
    .await
    .map_err(|e| anyhow::anyhow!("the monitor (device 0) could not connect: {e}"))?;
    let mut mon_framer = Framer::default();
    let codes = subscribe(&mut mon, &mut mon_framer, REPORTS_FILTER, s.qos, timeout)
        .await
        .map_err(|e| anyhow::anyhow!("the monitor's subscription: {e}"))?;
    if codes.first().is_none_or(|&c| c > 1) {
        bail!(
            "the server refused the monitor's subscription to {REPORTS_FILTER} (codes {codes:?}); on fleetgate, provision with `fleetgate-loadtest credentials`, which adds the ACL rule"
        );
    }

    // The devices connect.
    let t_connect = Instant::now();
    let (mut devices, streams) = connect_online(f).await;
    devices.connected = streams.len() as u64;
    eprintln!(
        "  {} connected, {} failed in {:.2} s",
        devices.connected,
        f.count - devices.connected,
        t_connect.elapsed().as_secs_f64()
    );
    if streams.is_empty() {
        bail!("no device could connect: {:?}", devices.failures);
    }

    // Publishing.
    let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
    let secs = (s.deadline_secs() + 1) as usize;
    let shared = Arc::new(Shared {
        t0,
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        sent_per_sec: (0..secs).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop_at = t0 + Duration::from_secs(2 * s.duration_secs);
    let drain_until = stop_at + Duration::from_secs(s.drain_secs);
    let (end_tx, end_rx) = watch::channel(None);
    let server_start = server_ticks(f.server_pid);
    let gen_start = procfs::cpu_ticks("self").ok();
    let mon_task = tokio::spawn(monitor(
        mon,
        mon_framer,
        s.planned(),
        Arc::clone(&shared),
        end_rx,
    ));
    let n = streams.len() as u64;
    let mut tasks = Vec::with_capacity(streams.len());
    for (j, (index, stream)) in streams.into_iter().enumerate() {
        let topic = format!(
            "$oc/devices/{}/sys/properties/report",
            device_id(&f.product, index)
        );
        tasks.push(tokio::spawn(device(
            stream,
            topic,
            j as u64,
            n,
            Arc::clone(&s),
            Arc::clone(&shared),
            stop_at,
            drain_until,
        )));
    }
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(o) => {
                if let Some(e) = o.error {
                    *devices.dropped.entry(e).or_default() += 1;
                }
                held.push(o.stream);
            }
            Err(e) => *devices.dropped.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let publish_end = Instant::now();
    let gen_publish_end = procfs::cpu_ticks("self").ok();
    let sent = shared.sent.load(Ordering::Relaxed);
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(s.drain_secs);
    let _ = end_tx.send(Some((sent, drain_deadline)));
    let (mon_out, mut mon_stream) = mon_task.await.context("the monitor task")?;
    let server_end = server_ticks(f.server_pid);
    for mut stream in held {
        let _ = stream.write_all(&crate::mqtt::DISCONNECT).await;
    }
    let _ = mon_stream.write_all(&crate::mqtt::DISCONNECT).await;
    if let Some(e) = &mon_out.error {
        *devices.dropped.entry(format!("monitor: {e}")).or_default() += 1;
    }

    let publish_secs = publish_end
        .saturating_duration_since(t0.into_std())
        .as_secs_f64();
    let delivered = mon_out.delivered;
    let messages = Messages {
        planned: s.planned(),
        sent,
        acked: shared.acked.load(Ordering::Relaxed),
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
    for (t, c) in shared.sent_per_sec.iter().enumerate() {
        let v = c.load(Ordering::Relaxed);
        if v > 0 {
            series.add(t as u64, "sent", v);
        }
    }
    let gen_publish = cpu_diff(gen_start, gen_publish_end);
    let ok = devices.connected == f.count
        && sent == s.planned()
        && delivered > 0
        && devices.dropped.is_empty()
        && (s.qos == 0 || messages.lost == 0);
    Ok(TelemetryReport {
        scenario_kind: "telemetry",
        scenario: (*s).clone(),
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
        server,
        generator: GeneratorCost {
            wall_secs: started.elapsed().as_secs_f64(),
            cpu: cpu_diff(cpu_start, procfs::cpu_ticks("self").ok()),
            cores_busy_publishing: if publish_secs > 0.0 {
                gen_publish.total() / publish_secs
            } else {
                0.0
            },
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
