//! The `coap-sleepers` scenario: how much memory does the server keep per registered, sleeping
//! NB-IoT device, and how fast does a queued command reach a device that wakes?
//!
//! 1. Starts a [`Fleet`] (no device registered), samples the server's memory, registers
//!    `devices` LwM2M devices at `register_rate` (register latency, failures);
//! 2. samples the memory, polls the server's `/metrics` until `fleetgate_coap_awake_devices`
//!    is 0 (every actor hibernated) or a bound passes, waits `settle_secs`, samples again:
//!    bytes per sleeping device = (after hibernation − before) / devices;
//! 3. queues `commands_per_device` delayed commands (`send_strategy = "delay"`) through the
//!    HTTP API for `wake` devices chosen by `seed`, wakes them (a registration update from a
//!    new port) and waits for the commands: wake-to-command latency from the fleet;
//! 4. writes a JSON report with a per-second series and the generator's own CPU.
//!
//! Progress goes to stderr through [`Progress`]: bars while registering, queueing and waking,
//! a spinner while waiting for hibernation, phase results as lasting lines.
//!
//! Devices must be provisioned beforehand (product `nbwm`, protocol CoAP, codec
//! `watermeter-v1`: see [`provision_file`]) and the server's `engine.lwm2m.awake_window_secs`
//! given as `server_awake_window_secs`. Bounded by `duration_secs`; loopback only.

mod scenario;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

pub use scenario::{MAX_SOCKETS, MAX_WAKE, SleepersScenario};

use crate::lwm2m::{Fleet, FleetConfig, FleetCounters, Pacing, PhaseReport, WakeBy, node_id};
use crate::procfs::{self, CpuSecs, Memory};
use crate::progress::Progress;
use crate::series::Second;
use crate::stats::{Percentiles, percentiles};
use crate::telemetry::{cpu_diff, server_ticks};

/// The product of the scenario's devices, as `fleetgate provision` reads it (the model of
/// api/tests/coap.rs: service `WaterMeter`, command `SET_VALVE`).
pub fn product_json(product: &str) -> serde_json::Value {
    serde_json::json!({
        "product_id": product,
        "app_id": "default",
        "name": "nb-water-meter",
        "protocol_type": "CoAP",
        "data_format": "binary",
        "codec": "watermeter-v1",
        "device_type": "WaterMeter",
        "service_capabilities": [{
            "service_id": "WaterMeter",
            "properties": [
                {"property_name": "battery_level", "data_type": "int", "required": false, "min": "0", "max": "100", "method": "R"},
                {"property_name": "signal_strength", "data_type": "int", "required": false, "min": "-140", "max": "0", "method": "R"},
                {"property_name": "meter_reading", "data_type": "int", "required": false, "min": "0", "max": "4294967295", "method": "R"},
                {"property_name": "valve", "data_type": "string", "required": false, "enum_list": ["OPEN", "CLOSED"], "method": "R"},
            ],
            "commands": [
                {"command_name": "SET_VALVE",
                 "paras": [{"para_name": "valve", "data_type": "string", "required": true, "enum_list": ["OPEN", "CLOSED"]}]},
                {"command_name": "SET_INTERVAL",
                 "paras": [{"para_name": "interval", "data_type": "int", "required": true, "min": "60", "max": "86400"}]},
            ],
        }],
    })
}

/// A `fleetgate provision` file: the product and devices with node ids
/// `node_id(first_node) .. node_id(first_node + count)`, without secrets (not secure: no DTLS).
pub fn provision_file(product: &str, first_node: u64, count: u64) -> serde_json::Value {
    let devices: Vec<_> = (first_node..first_node + count)
        .map(|n| serde_json::json!({"product_id": product, "node_id": node_id(n)}))
        .collect();
    serde_json::json!({"products": [product_json(product)], "devices": devices})
}

/// The server's memory at one moment of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the registrations started.
    pub t_secs: f64,
    /// The reading.
    pub memory: Memory,
}

/// The memory figures.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Before the first registration.
    pub before: Option<Sample>,
    /// Once every registration finished.
    pub after_register: Option<Sample>,
    /// Once the server reported no awake device (plus `settle_secs`).
    pub after_hibernation: Option<Sample>,
    /// (VmRSS after hibernation − before) / devices.
    pub vm_rss_bytes_per_device: Option<f64>,
    /// The same for RssAnon.
    pub rss_anon_bytes_per_device: Option<f64>,
    /// (VmRSS after registering − before) / devices (actors still in memory).
    pub vm_rss_bytes_per_awake_device: Option<f64>,
}

/// The register phase.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterReport {
    /// What the fleet reported.
    pub phase: PhaseReport,
    /// Successful registrations per second over the phase.
    pub ok_per_sec: f64,
    /// Register request to 2.01, µs.
    pub latency_us: Percentiles,
}

/// The wait for hibernation.
#[derive(Debug, Clone, Serialize)]
pub struct HibernationReport {
    /// Whether the server reported 0 awake devices within the bound.
    pub reached: bool,
    /// Seconds from the end of the registrations to that report (or to giving up).
    pub waited_secs: f64,
    /// The last `fleetgate_coap_awake_devices` read (none: /metrics unreadable).
    pub awake_devices: Option<u64>,
    /// The last `fleetgate_coap_hibernations_total` read.
    pub hibernations_total: Option<u64>,
}

/// The wake phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WakeReport {
    /// Devices chosen.
    pub devices: u64,
    /// Commands to queue (devices × commands_per_device).
    pub commands_planned: u64,
    /// Commands the API accepted.
    pub commands_queued: u64,
    /// Refusals by status (`409 FLEETGATE…`, `transport: …`), after retries.
    pub queue_errors: BTreeMap<String, u64>,
    /// 429 answers retried after their `Retry-After`.
    pub queue_retried_429: u64,
    /// What the fleet reported for the wakes.
    pub phase: Option<PhaseReport>,
    /// Commands the woken devices received.
    pub commands_received: u64,
    /// A device's wake (its first datagram) to its first command, µs.
    pub wake_to_command_us: Percentiles,
}

/// The server's cost.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCost {
    /// Its pid.
    pub pid: u32,
    /// CPU over the register phase.
    pub register_cpu: CpuSecs,
    /// Registrations per server CPU-second.
    pub registers_per_cpu_sec: f64,
}

/// The generator's cost.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorCost {
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of this process over the run.
    pub cpu: CpuSecs,
    /// CPU over the register phase divided by its length (1.0 = one core saturated).
    pub cores_busy_registering: f64,
    /// Its memory at the end.
    pub memory: Option<Memory>,
}

/// The JSON report of a `coap-sleepers` run.
#[derive(Debug, Clone, Serialize)]
pub struct SleepersReport {
    /// `"coap-sleepers"`.
    pub scenario_kind: &'static str,
    /// The scenario run.
    pub scenario: SleepersScenario,
    /// Unix time of the start.
    pub started_unix: u64,
    /// Every device registered, the server hibernated them all, and every queued command
    /// reached its woken device.
    pub ok: bool,
    /// Registrations.
    pub register: RegisterReport,
    /// Hibernation.
    pub hibernation: HibernationReport,
    /// Server memory.
    pub memory: MemoryReport,
    /// Wakes and commands.
    pub wake: WakeReport,
    /// The fleet's counters at the end.
    pub counters: FleetCounters,
    /// The server's CPU, when its pid was given.
    pub server: Option<ServerCost>,
    /// The generator's cost.
    pub generator: GeneratorCost,
    /// Per second since the registrations started: `registered`, `register_failed`, `wakes`,
    /// `commands`, `timeouts`, `retransmissions` (deltas), `fleet_awake`, `server_awake`,
    /// `server_rss_kib` (gauges), `p99_us` (register latency, then wake-to-command in the
    /// wake phase).
    pub series: Vec<Second>,
}

fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

impl SleepersReport {
    /// A human summary.
    pub fn text(&self) -> String {
        let r = &self.register;
        let l = &r.latency_us;
        let mut out = format!(
            "coap-sleepers: {} of {} devices registered ({} failed, {} unfinished) at {:.0}/s; register latency µs p50 {} p90 {} p99 {} p999 {} max {}\n",
            r.phase.ok,
            r.phase.requested,
            r.phase.failed,
            r.phase.unfinished,
            r.ok_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
        for (k, v) in &r.phase.failures {
            out += &format!("  register failure {k}: {v}\n");
        }
        let h = &self.hibernation;
        out += &format!(
            "  hibernation: {} after {:.1} s (server awake devices {:?}, hibernations {:?})\n",
            if h.reached { "reached" } else { "NOT reached" },
            h.waited_secs,
            h.awake_devices,
            h.hibernations_total
        );
        let m = &self.memory;
        for (name, s) in [
            ("before", &m.before),
            ("after register", &m.after_register),
            ("after hibernation", &m.after_hibernation),
        ] {
            if let Some(s) = s {
                out += &format!(
                    "  server memory {name}: VmRSS {:.1} MiB, RssAnon {:.1} MiB, RssFile {:.1} MiB\n",
                    mib(s.memory.vm_rss),
                    mib(s.memory.rss_anon),
                    mib(s.memory.rss_file)
                );
            }
        }
        if let Some(b) = m.vm_rss_bytes_per_device {
            out += &format!(
                "  bytes per sleeping device: VmRSS {b:.0}, RssAnon {:.0}\n",
                m.rss_anon_bytes_per_device.unwrap_or(0.0)
            );
        }
        let w = &self.wake;
        if w.devices > 0 {
            let l = &w.wake_to_command_us;
            out += &format!(
                "  wake: {} devices, {} of {} commands queued, {} received; wake-to-command µs p50 {} p90 {} p99 {} max {}\n",
                w.devices,
                w.commands_queued,
                w.commands_planned,
                w.commands_received,
                l.p50,
                l.p90,
                l.p99,
                l.max
            );
            if w.queue_retried_429 > 0 {
                out += &format!("  429 retried: {}\n", w.queue_retried_429);
            }
            for (k, v) in &w.queue_errors {
                out += &format!("  queue error {k}: {v}\n");
            }
            if let Some(p) = &w.phase {
                for (k, v) in &p.failures {
                    out += &format!("  wake failure {k}: {v}\n");
                }
            }
        }
        if let Some(s) = &self.server {
            out += &format!(
                "  server pid {}: {:.2} CPU-s registering, {:.0} registrations per CPU-second\n",
                s.pid,
                s.register_cpu.total(),
                s.registers_per_cpu_sec
            );
        }
        out += &format!(
            "  generator: {:.2} CPU-s over {:.1} s ({:.2} cores busy while registering)\n",
            self.generator.cpu.total(),
            self.generator.wall_secs,
            self.generator.cores_busy_registering
        );
        out
    }
}

/// A plain HTTP/1.1 GET of `path` (the `/metrics` text), bounded by `timeout`.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of the HTTP head")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    // fleetgate's /metrics is small enough to come whole or chunked; undo chunking.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        return Ok(out);
    }
    Ok(body.to_owned())
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `fleetgate_coap_awake_devices` and `fleetgate_coap_hibernations_total`.
fn server_awake(api: SocketAddr) -> Option<(u64, u64)> {
    let text = http_get(api, "/metrics", Duration::from_secs(10)).ok()?;
    let awake = metric(&text, "fleetgate_coap_awake_devices")?;
    let hib = metric(&text, "fleetgate_coap_hibernations_total").unwrap_or(0.0);
    Some((awake as u64, hib as u64))
}

/// `k` distinct indices below `n`, chosen by `seed` (a partial Fisher–Yates over a sparse map).
pub fn choose(n: u32, k: u32, seed: u64) -> Vec<u32> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let k = k.min(n);
    let mut swapped: BTreeMap<u32, u32> = BTreeMap::new();
    let mut out = Vec::with_capacity(k as usize);
    for i in 0..k {
        let j = i + (next() % u64::from(n - i)) as u32;
        let vj = *swapped.get(&j).unwrap_or(&j);
        let vi = *swapped.get(&i).unwrap_or(&i);
        swapped.insert(j, vi);
        out.push(vj);
    }
    out
}

/// The series' readings (the rest are counts per second).
const GAUGES: &[&str] = &["fleet_awake", "server_awake", "server_rss_kib"];

/// What the progress display of the current phase shows, from the fleet's counters.
#[derive(Debug, Clone, Copy)]
enum View {
    /// Registrations answered (ok or failed) of all devices.
    Register,
    /// The server's awake devices, while waiting for hibernation.
    Hibernate,
    /// Commands received since the wake phase started, of those queued.
    Wake {
        /// The fleet's command count before the wakes.
        commands_before: u64,
        /// The fleet's wake count before the wakes.
        wakes_before: u64,
        /// Devices to wake.
        devices: u64,
    },
}

/// What the sampler keeps between seconds.
struct Sampler<'a> {
    fleet: &'a Fleet,
    s: &'a SleepersScenario,
    t0: Instant,
    last: FleetCounters,
    last_hist: Option<Histogram<u64>>,
    /// Register latencies until the wake phase, wake-to-command after.
    waking: bool,
    series: Vec<Second>,
    last_awake: Option<(u64, u64)>,
    /// The current phase's bar or spinner, updated at every sample.
    bar: Option<(Progress, View)>,
}

impl Sampler<'_> {
    fn sample(&mut self) {
        let t = self.t0.elapsed().as_secs();
        let c = self.fleet.counters();
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let l = &self.last;
        counts.insert("registered", c.registered - l.registered);
        counts.insert("register_failed", c.register_failed - l.register_failed);
        counts.insert("wakes", c.wakes - l.wakes);
        counts.insert("commands", c.commands - l.commands);
        counts.insert("timeouts", c.timeouts - l.timeouts);
        counts.insert("retransmissions", c.retransmissions - l.retransmissions);
        counts.insert("fleet_awake", c.awake);
        self.last_awake = server_awake(self.s.api).or(self.last_awake);
        if let Some((awake, _)) = self.last_awake {
            counts.insert("server_awake", awake);
        }
        if let Some(pid) = self.s.server_pid
            && let Ok(m) = procfs::memory(pid)
        {
            counts.insert("server_rss_kib", m.vm_rss / 1024);
        }
        let mut p99 = 0;
        if let Ok(lat) = self.fleet.latencies() {
            let h = if self.waking {
                lat.wake_to_command
            } else {
                lat.register
            };
            let mut delta = h.clone();
            if let Some(prev) = &self.last_hist {
                let _ = delta.subtract(prev);
            }
            if !delta.is_empty() {
                p99 = delta.value_at_quantile(0.99);
            }
            self.last_hist = Some(h);
        }
        self.show(&c);
        self.last = c;
        while self.series.len() as u64 <= t {
            let t = self.series.len() as u64;
            self.series.push(Second {
                t,
                ..Second::default()
            });
        }
        let slot = &mut self.series[t as usize];
        for (k, v) in counts {
            if GAUGES.contains(&k) {
                // Two samples in one second: the later reading, never their sum.
                slot.counts.insert(k, v);
            } else {
                *slot.counts.entry(k).or_default() += v;
            }
        }
        slot.p99_us = slot.p99_us.max(p99);
    }

    /// Updates the current phase's bar from the fleet's counters `c`.
    fn show(&self, c: &FleetCounters) {
        let Some((bar, view)) = &self.bar else {
            return;
        };
        let server = self
            .last_awake
            .map_or_else(|| "?".to_owned(), |(awake, _)| awake.to_string());
        match *view {
            View::Register => bar.set(
                c.registered + c.register_failed,
                format!(
                    "{} registered, {} failed, {} awake here, server awake {server}",
                    c.registered, c.register_failed, c.awake
                ),
            ),
            View::Hibernate => {
                bar.message(format!("server awake {server}, {} awake here", c.awake));
            }
            View::Wake {
                commands_before,
                wakes_before,
                devices,
            } => bar.set(
                c.commands.saturating_sub(commands_before),
                format!(
                    "commands received; {} of {devices} devices woken, {} timeouts",
                    c.wakes.saturating_sub(wakes_before),
                    c.timeouts
                ),
            ),
        }
    }

    /// Starts a phase: a bar or spinner shown at every sample.
    fn start(&mut self, bar: Progress, view: View) {
        self.bar = Some((bar, view));
        self.show(&self.fleet.counters());
    }

    /// Ends the current phase with a lasting line.
    fn finish(&mut self, message: String) {
        if let Some((bar, _)) = self.bar.take() {
            bar.finish(message);
        }
    }

    /// Samples every second until `done` is set or `until` passes.
    fn run_until(&mut self, done: &AtomicBool, until: Instant) {
        let mut next = Instant::now() + Duration::from_secs(1);
        while !done.load(Ordering::Acquire) && Instant::now() < until {
            let now = Instant::now();
            if now >= next {
                self.sample();
                next += Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(now)));
        }
    }
}

fn sample_memory(pid: Option<u32>, t0: Instant) -> Option<Sample> {
    let memory = procfs::memory(pid?).ok()?;
    Some(Sample {
        t_secs: t0.elapsed().as_secs_f64(),
        memory,
    })
}

/// Queues the delayed commands at `queue_rate`, retrying a 429 after its `Retry-After` (at
/// most 5 times), counting them on `bar`; returns (accepted, errors by label, 429s retried).
fn queue_commands(
    s: &SleepersScenario,
    api_key: &str,
    chosen: &[u32],
    bar: &Progress,
) -> (u64, BTreeMap<String, u64>, u64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let auth = format!("Bearer {api_key}");
    let body = serde_json::json!({
        "service_id": "WaterMeter",
        "command_name": "SET_VALVE",
        "paras": {"valve": "OPEN"},
        "send_strategy": "delay",
    })
    .to_string();
    let mut ok = 0;
    let mut retried = 0;
    let mut errors = BTreeMap::new();
    let t0 = Instant::now();
    let mut g: u64 = 0;
    for &i in chosen {
        let device = s.device_id(&node_id(s.first_node + u64::from(i)));
        let url = format!(
            "http://{}/v5/iot/{}/devices/{device}/async-commands",
            s.api, s.project
        );
        for _ in 0..s.commands_per_device {
            let due = t0 + Duration::from_nanos(g * 1_000_000_000 / s.queue_rate.max(1));
            g += 1;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let mut attempts = 0;
            let label = loop {
                attempts += 1;
                let result = agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .content_type("application/json")
                    .send(body.as_bytes())
                    .and_then(|mut res| {
                        let status = res.status().as_u16();
                        let retry_after = res
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        res.body_mut()
                            .read_to_string()
                            .map(|t| (status, t, retry_after))
                    });
                match result {
                    Ok((200 | 201, _, _)) => break None,
                    Ok((429, _, after)) if attempts <= 5 => {
                        retried += 1;
                        std::thread::sleep(Duration::from_secs(after.unwrap_or(1).clamp(1, 5)));
                    }
                    Ok((status, text, _)) => {
                        let v: Option<serde_json::Value> = serde_json::from_str(&text).ok();
                        break Some(match v.as_ref().and_then(|v| v["error_code"].as_str()) {
                            Some(code) => format!("{status} {code}"),
                            None => status.to_string(),
                        });
                    }
                    Err(e) => break Some(format!("transport: {e}")),
                }
            };
            match label {
                None => ok += 1,
                Some(l) => *errors.entry(l).or_default() += 1,
            }
            let failed: u64 = errors.values().sum();
            bar.set(
                ok + failed,
                format!("{ok} queued, {failed} refused, {retried} retried after 429"),
            );
        }
    }
    (ok, errors, retried)
}

fn per_device(
    after: Option<&Sample>,
    before: Option<&Sample>,
    n: u32,
    f: fn(&Memory) -> u64,
) -> Option<f64> {
    let (a, b) = (after?, before?);
    Some((f(&a.memory) as f64 - f(&b.memory) as f64) / f64::from(n.max(1)))
}

/// Runs the scenario; `api_key` is needed when `wake > 0`.
pub fn run(s: &SleepersScenario, api_key: Option<String>) -> anyhow::Result<SleepersReport> {
    let started = Instant::now();
    let hard_stop = started + Duration::from_secs(s.duration_secs);
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cpu_start = procfs::cpu_ticks("self").ok();
    anyhow::ensure!(
        s.wake == 0 || api_key.is_some(),
        "wake = {} needs an API key to queue commands",
        s.wake
    );
    let _ = procfs::raise_nofile_limit();
    let mut config = FleetConfig::new(s.target, s.devices, s.sockets, s.sources);
    config.first_node = s.first_node;
    config.lifetime = s.lifetime_secs;
    config.awake_for = Duration::from_millis(s.device_awake_ms);
    config.socket_reuse_delay = Duration::from_secs(s.socket_reuse_secs());
    let fleet = Fleet::start(config).context("starting the fleet's sockets")?;
    eprintln!(
        "coap-sleepers: {} devices to {} at {}/s over {} sockets on {} sources; server awake window {} s",
        s.devices, s.target, s.register_rate, s.sockets, s.sources, s.server_awake_window_secs
    );

    // 1. Register.
    let t0 = Instant::now();
    let before = sample_memory(s.server_pid, t0);
    let mut sampler = Sampler {
        fleet: &fleet,
        s,
        t0,
        last: fleet.counters(),
        last_hist: None,
        waking: false,
        series: Vec::new(),
        last_awake: None,
        bar: None,
    };
    sampler.start(
        Progress::phase("registering", u64::from(s.devices)),
        View::Register,
    );
    let register_timeout = Duration::from_secs(s.register_timeout_secs())
        .min(hard_stop.saturating_duration_since(Instant::now()));
    let pacing = Pacing {
        rate: s.register_rate as f64,
        max_inflight: s.max_inflight(),
        timeout: register_timeout,
    };
    let server_start = server_ticks(s.server_pid);
    let gen_start = procfs::cpu_ticks("self").ok();
    let done = AtomicBool::new(false);
    let result = Mutex::new(None);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let r = fleet.register(0..s.devices, pacing);
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            done.store(true, Ordering::Release);
        });
        sampler.run_until(&done, hard_stop);
    });
    let register_phase = result
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .context("the register phase did not finish")?
        .context("the register phase")?;
    let register_end = Instant::now();
    let server_end = server_ticks(s.server_pid);
    let gen_end = procfs::cpu_ticks("self").ok();
    let register_secs = register_phase.elapsed_us as f64 / 1e6;
    let lat = fleet.latencies().context("reading the fleet's latencies")?;
    let register = RegisterReport {
        ok_per_sec: if register_secs > 0.0 {
            register_phase.ok as f64 / register_secs
        } else {
            0.0
        },
        latency_us: percentiles(&lat.register),
        phase: register_phase,
    };
    sampler.show(&fleet.counters());
    sampler.finish(format!(
        "{} registered, {} failed, {} unfinished in {:.1} s",
        register.phase.ok, register.phase.failed, register.phase.unfinished, register_secs
    ));
    let after_register = sample_memory(s.server_pid, t0);

    // 2. Hibernation.
    let bound = (register_end + Duration::from_secs(s.hibernate_timeout_secs())).min(hard_stop);
    sampler.start(Progress::spinner("hibernating"), View::Hibernate);
    let mut reached = false;
    let mut next = Instant::now();
    while Instant::now() < bound {
        if Instant::now() >= next {
            sampler.sample();
            next += Duration::from_secs(1);
            if sampler.last_awake.is_some_and(|(a, _)| a == 0) && fleet.counters().awake == 0 {
                reached = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited_secs = register_end.elapsed().as_secs_f64();
    let outcome = format!(
        "{} after {waited_secs:.1} s (server awake {})",
        if reached { "reached" } else { "NOT reached" },
        sampler
            .last_awake
            .map_or_else(|| "unknown".to_owned(), |(awake, _)| awake.to_string())
    );
    let settle_until = (Instant::now() + Duration::from_secs(s.settle_secs)).min(hard_stop);
    let never = AtomicBool::new(false);
    sampler.run_until(&never, settle_until);
    sampler.finish(outcome);
    let after_hibernation = sample_memory(s.server_pid, t0);
    let hibernation = HibernationReport {
        reached,
        waited_secs,
        awake_devices: sampler.last_awake.map(|a| a.0),
        hibernations_total: sampler.last_awake.map(|a| a.1),
    };

    // 3. Wake K devices with commands queued.
    let mut wake = WakeReport::default();
    if s.wake > 0
        && let Some(key) = api_key.as_deref()
    {
        let chosen = choose(s.devices, s.wake, s.seed);
        wake.devices = chosen.len() as u64;
        wake.commands_planned = wake.devices * u64::from(s.commands_per_device);
        let queueing = Progress::phase("queueing", wake.commands_planned);
        let (queued, errors, retried) = queue_commands(s, key, &chosen, &queueing);
        queueing.finish(format!(
            "{queued} commands queued for {} devices, {} refused, {retried} retried after 429",
            chosen.len(),
            errors.values().sum::<u64>()
        ));
        wake.commands_queued = queued;
        wake.queue_errors = errors;
        wake.queue_retried_429 = retried;
        sampler.waking = true;
        sampler.last_hist = None;
        let before_wake = fleet.counters();
        let commands_before = before_wake.commands;
        sampler.start(
            Progress::phase("waking", queued),
            View::Wake {
                commands_before,
                wakes_before: before_wake.wakes,
                devices: wake.devices,
            },
        );
        let pacing = Pacing {
            rate: s.wake_rate as f64,
            max_inflight: s.sockets,
            timeout: Duration::from_secs(s.command_timeout_secs)
                .min(hard_stop.saturating_duration_since(Instant::now())),
        };
        let done = AtomicBool::new(false);
        let result = Mutex::new(None);
        let wait_until = (Instant::now()
            + Duration::from_secs(s.command_timeout_secs)
            + Duration::from_secs(u64::from(s.wake).div_ceil(s.wake_rate)))
        .min(hard_stop);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let r = fleet.wake(chosen.clone(), WakeBy::Update, pacing);
                let target = commands_before + queued;
                fleet.wait_for_commands(
                    target,
                    wait_until.saturating_duration_since(Instant::now()),
                );
                *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                done.store(true, Ordering::Release);
            });
            sampler.run_until(&done, hard_stop);
        });
        wake.phase = result
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .and_then(Result::ok);
        wake.commands_received = fleet.counters().commands - commands_before;
        let lat = fleet.latencies().context("reading the fleet's latencies")?;
        wake.wake_to_command_us = percentiles(&lat.wake_to_command);
        sampler.sample();
        let l = &wake.wake_to_command_us;
        sampler.finish(format!(
            "{} of {} commands received; wake-to-command µs p50 {} p99 {}",
            wake.commands_received, wake.commands_queued, l.p50, l.p99
        ));
    }
    let counters = fleet.counters();
    let series = std::mem::take(&mut sampler.series);
    drop(sampler);
    drop(fleet);

    let n = s.devices;
    let memory = MemoryReport {
        vm_rss_bytes_per_device: per_device(after_hibernation.as_ref(), before.as_ref(), n, |m| {
            m.vm_rss
        }),
        rss_anon_bytes_per_device: per_device(
            after_hibernation.as_ref(),
            before.as_ref(),
            n,
            |m| m.rss_anon,
        ),
        vm_rss_bytes_per_awake_device: per_device(
            after_register.as_ref(),
            before.as_ref(),
            n,
            |m| m.vm_rss,
        ),
        before,
        after_register,
        after_hibernation,
    };
    let register_cpu = cpu_diff(server_start, server_end);
    let server = s.server_pid.map(|pid| ServerCost {
        pid,
        registers_per_cpu_sec: if register_cpu.total() > 0.0 {
            register.phase.ok as f64 / register_cpu.total()
        } else {
            0.0
        },
        register_cpu,
    });
    let gen_register = cpu_diff(gen_start, gen_end);
    let ok = register.phase.ok == u64::from(s.devices)
        && hibernation.reached
        && wake.commands_queued == wake.commands_planned
        && wake.commands_received >= wake.commands_queued;
    Ok(SleepersReport {
        scenario_kind: "coap-sleepers",
        scenario: s.clone(),
        started_unix,
        ok,
        register,
        hibernation,
        memory,
        wake,
        counters,
        server,
        generator: GeneratorCost {
            wall_secs: started.elapsed().as_secs_f64(),
            cpu: cpu_diff(cpu_start, procfs::cpu_ticks("self").ok()),
            cores_busy_registering: if register_secs > 0.0 {
                gen_register.total() / register_secs
            } else {
                0.0
            },
            memory: procfs::memory(std::process::id()).ok(),
        },
        series,
    })
}

/// `coap-sleepers --scenario FILE`: reads the API key, runs, prints the summary, writes the
/// JSON report.
pub fn main(
    s: &SleepersScenario,
    api_key_file: Option<&Path>,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    let path = api_key_file
        .map(Path::to_path_buf)
        .or_else(|| s.api_key_file.as_ref().map(Into::into));
    let key = match path {
        Some(path) => {
            let key = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the API key from {}", path.display()))?
                .trim()
                .to_owned();
            anyhow::ensure!(!key.is_empty(), "{} is empty", path.display());
            Some(key)
        }
        None => None,
    };
    let report = run(s, key)?;
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
    fn metrics_are_read_by_name() {
        let text = "# HELP fleetgate_coap_awake_devices x\n# TYPE fleetgate_coap_awake_devices gauge\nfleetgate_coap_awake_devices_other 5\nfleetgate_coap_awake_devices 12\n";
        assert_eq!(metric(text, "fleetgate_coap_awake_devices"), Some(12.0));
        assert_eq!(metric(text, "nope"), None);
    }

    #[test]
    fn choices_are_distinct_and_in_range() {
        let c = choose(1000, 200, 7);
        assert_eq!(c.len(), 200);
        let set: std::collections::BTreeSet<_> = c.iter().copied().collect();
        assert_eq!(set.len(), 200);
        assert!(c.iter().all(|&i| i < 1000));
        assert_eq!(c, choose(1000, 200, 7));
        assert_eq!(choose(5, 9, 1).len(), 5);
    }

    #[test]
    fn the_provision_file_has_no_secrets() {
        let f = provision_file("nbwm", 1, 3);
        assert_eq!(f["devices"].as_array().unwrap().len(), 3);
        assert_eq!(f["devices"][0]["node_id"], "860000000000001");
        assert!(f["devices"][0].get("secret").is_none());
        assert_eq!(f["products"][0]["protocol_type"], "CoAP");
    }
}
