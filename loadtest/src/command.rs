//! The `command-roundtrip` scenario: `count` online devices answer commands, and an HTTP client
//! sends sync commands through the application API (`POST /v5/iot/{project}/devices/{id}/
//! commands`, bearer API key) at a set rate with at most `concurrency` in flight; reported are
//! the latency percentiles of the answered commands (HDR histogram), errors by status, the
//! server's and the generator's CPU, and a per-second series.
//!
//! The devices live in `processes` worker processes ([`crate::traffic`]): each (optionally)
//! subscribes to `$oc/devices/{id}/sys/commands/#` at QoS 1, and answers every
//! `…/sys/commands/request_id={rid}` with `{"result_code":0}` on
//! `…/sys/commands/response/request_id={rid}`. The coordinator (this module) keeps the HTTP
//! side: `concurrency` threads with blocking `ureq` clients sharing one connection pool (ureq
//! is the workspace's HTTP client, without TLS); command number `g` goes to online device
//! `g mod n` (in device order) and is due at `t0 + g / rate` (a thread that falls behind sends
//! at once; latency is measured from the actual send).
//!
//! Bounded: at most `rate * duration_secs` commands, none started after twice the planned
//! duration, each request limited to `request_timeout_secs`, and the whole run abandoned at
//! [`CommandScenario::deadline_secs`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::credentials::device_id;
use crate::procfs::{self, CpuSecs};
use crate::progress::Progress;
use crate::scenario::CommandScenario;
use crate::series::{Second, Series};
use crate::stats::{Percentiles, latency_histogram, percentiles};
use crate::telemetry::{Devices, cpu_diff, server_ticks, unix_us};
use crate::traffic::protocol::{Command, Event, Job};
use crate::traffic::{self, TICK, WorkerCost};

/// The response topic of a command topic, if it is one:
/// `$oc/devices/{id}/sys/commands/request_id={rid}` →
/// `$oc/devices/{id}/sys/commands/response/request_id={rid}`.
pub fn response_topic(topic: &str) -> Option<String> {
    let (head, rid) = topic.split_once("/sys/commands/request_id=")?;
    (head.starts_with("$oc/devices/") && !rid.is_empty() && !rid.contains('/'))
        .then(|| format!("{head}/sys/commands/response/request_id={rid}"))
}

/// Command counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Commands {
    /// `rate * duration_secs`.
    pub planned: u64,
    /// Requests sent.
    pub sent: u64,
    /// Answered 200 with `response.result_code` 0.
    pub ok: u64,
    /// Everything else.
    pub errors: u64,
    /// Errors by HTTP status and error code (`409 FLEETGATE.DEVICE_OFFLINE`), or by transport
    /// failure (`transport: …`).
    pub errors_by_status: BTreeMap<String, u64>,
    /// Commands the devices received and answered.
    pub answered_by_devices: u64,
}

/// The server's cost.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCost {
    /// Its pid.
    pub pid: u32,
    /// CPU over the sending window (/proc/PID/stat).
    pub cpu: CpuSecs,
    /// Successful round trips per server CPU-second.
    pub ok_per_cpu_sec: f64,
}

/// The generator's cost: the coordinator (the HTTP clients) and its worker processes (the
/// devices).
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorCost {
    /// Worker processes.
    pub processes: u32,
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of every generator process over the run: the coordinator and the workers.
    pub cpu: CpuSecs,
    /// CPU of every generator process over the sending window divided by its length.
    pub cores_busy_sending: f64,
    /// The coordinator's own CPU (the HTTP clients) over the run.
    pub coordinator_cpu: CpuSecs,
    /// Each worker process.
    pub workers: Vec<WorkerCost>,
}

/// The JSON report of a `command-roundtrip` run.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    /// `command-roundtrip`.
    pub scenario_kind: &'static str,
    /// The scenario as run (the API key is not in it).
    pub scenario: CommandScenario,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Every device connected, every planned command sent, all answered, none dropped.
    pub ok: bool,
    /// Devices.
    pub devices: Devices,
    /// Commands.
    pub commands: Commands,
    /// Seconds from the first scheduled command to the last answer.
    pub send_secs: f64,
    /// Successful round trips per second over `send_secs`.
    pub ok_per_sec: f64,
    /// Latency of the successful round trips (request sent to answer read), µs.
    pub latency_us: Percentiles,
    /// The server's CPU, when its pid was given.
    pub server: Option<ServerCost>,
    /// The generator's CPU.
    pub generator: GeneratorCost,
    /// Per second since the first command: `ok`, `errors`, `p50_us`, `p99_us` (of the
    /// successes that completed in that second, over every HTTP client).
    pub series: Vec<Second>,
}

impl CommandReport {
    /// A human summary.
    pub fn text(&self) -> String {
        let c = &self.commands;
        let l = &self.latency_us;
        let mut out = format!(
            "command-roundtrip: {} of {} devices connected; {} of {} commands sent, {} ok, {} errors, {} answered by devices\n",
            self.devices.connected,
            self.devices.requested,
            c.sent,
            c.planned,
            c.ok,
            c.errors,
            c.answered_by_devices
        );
        out += &format!(
            "  {:.0} ok/s; latency from the send, µs: p50 {} p90 {} p99 {} p999 {} max {}\n",
            self.ok_per_sec, l.p50, l.p90, l.p99, l.p999, l.max
        );
        for (k, v) in &c.errors_by_status {
            out += &format!("  error {k}: {v}\n");
        }
        if let Some(s) = &self.server {
            out += &format!(
                "  server pid {}: {:.2} CPU-s, {:.0} round trips per CPU-second\n",
                s.pid,
                s.cpu.total(),
                s.ok_per_cpu_sec
            );
        }
        let g = &self.generator;
        out += &format!(
            "  generator: {:.2} CPU-s over {:.1} s in {} worker process(es) and the coordinator ({:.2} cores busy while sending)\n",
            g.cpu.total(),
            g.wall_secs,
            g.processes,
            g.cores_busy_sending
        );
        out += &self.devices.problems_text();
        out
    }
}

/// What one HTTP thread saw.
struct ClientOutcome {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    hist: hdrhistogram::Histogram<u64>,
}

/// The label of an unsuccessful answer, or `None` for a success.
pub fn classify(status: u16, body: &str) -> Option<String> {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    if status == 200 {
        let code = v
            .as_ref()
            .and_then(|v| v["response"]["result_code"].as_i64());
        return match code {
            Some(0) => None,
            Some(c) => Some(format!("200 result_code {c}")),
            None => Some("200 without response.result_code".to_owned()),
        };
    }
    match v.as_ref().and_then(|v| v["error_code"].as_str()) {
        Some(code) => Some(format!("{status} {code}")),
        None => Some(status.to_string()),
    }
}

/// What the HTTP threads share.
struct HttpPlan {
    agent: ureq::Agent,
    api_key: String,
    urls: Vec<String>,
    planned: u64,
    rate: u64,
    service_id: String,
    command_name: String,
    t0: Instant,
    stop_at: Instant,
    /// The next command number to take.
    next: AtomicU64,
    /// Counters for the progress bar.
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Set when the run fails elsewhere: the threads stop taking commands.
    abort: AtomicBool,
    /// Every thread's successes, so that each second's percentiles cover them all.
    series: Mutex<Series>,
}

fn client(plan: &HttpPlan) -> ClientOutcome {
    let mut o = ClientOutcome {
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        hist: latency_histogram(),
    };
    let auth = format!("Bearer {}", plan.api_key);
    let n = plan.urls.len() as u64;
    loop {
        if plan.abort.load(Ordering::Relaxed) {
            break;
        }
        let g = plan.next.fetch_add(1, Ordering::Relaxed);
        if g >= plan.planned {
            break;
        }
        let due = plan.t0 + Duration::from_nanos(g * 1_000_000_000 / plan.rate);
        if due >= plan.stop_at {
            break;
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if Instant::now() >= plan.stop_at || plan.abort.load(Ordering::Relaxed) {
            break;
        }
        let body = serde_json::json!({
            "service_id": plan.service_id,
            "command_name": plan.command_name,
            "paras": {"value": g % 101},
        })
        .to_string();
        let url = &plan.urls[(g % n) as usize];
        let start = Instant::now();
        o.sent += 1;
        plan.sent.fetch_add(1, Ordering::Relaxed);
        let result = plan
            .agent
            .post(url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(body.as_bytes())
            .and_then(|mut res| {
                let status = res.status().as_u16();
                res.body_mut().read_to_string().map(|text| (status, text))
            });
        let done = Instant::now();
        let sec = done.saturating_duration_since(plan.t0).as_secs();
        let failure = match result {
            Ok((status, text)) => classify(status, &text),
            Err(e) => Some(format!("transport: {e}")),
        };
        let mut series = plan
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match failure {
            None => {
                let us = (done - start).as_micros() as u64;
                o.ok += 1;
                plan.ok.fetch_add(1, Ordering::Relaxed);
                let _ = o.hist.record(us.max(1));
                series.latency(sec, us);
                series.add(sec, "ok", 1);
            }
            Some(label) => {
                *o.errors.entry(label).or_default() += 1;
                plan.errors.fetch_add(1, Ordering::Relaxed);
                series.add(sec, "errors", 1);
            }
        }
    }
    o
}

/// Runs the HTTP threads until they are done, refreshing `bar` meanwhile; a worker's failure
/// stops them and ends the run.
fn send_commands(
    plan: &HttpPlan,
    concurrency: u64,
    workers: &mut traffic::Workers,
    bar: &Progress,
) -> anyhow::Result<Vec<ClientOutcome>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| scope.spawn(|| client(plan)))
            .collect();
        let mut failure = None;
        while handles.iter().any(|h| !h.is_finished()) {
            if let Err(e) = workers.next_until(Instant::now() + TICK) {
                plan.abort.store(true, Ordering::Relaxed);
                failure = Some(e);
                break;
            }
            bar.set(
                plan.sent.load(Ordering::Relaxed),
                format!(
                    "{} ok, {} errors, {} answered by devices",
                    plan.ok.load(Ordering::Relaxed),
                    plan.errors.load(Ordering::Relaxed),
                    workers.total().answered
                ),
            );
        }
        let outcomes: Vec<ClientOutcome> =
            handles.into_iter().filter_map(|h| h.join().ok()).collect();
        match failure {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    })
}

/// Runs the scenario with `api_key` as the bearer key: the devices in worker processes, the
/// HTTP clients here; everything gives up at the scenario's hard deadline.
pub fn run(s: &CommandScenario, api_key: String) -> anyhow::Result<CommandReport> {
    let started = Instant::now();
    let started_unix = unix_us(SystemTime::now()) / 1_000_000;
    let cpu_start = procfs::cpu_ticks("self").ok();
    let f = &s.fleet;
    eprintln!(
        "command-roundtrip: {} devices on {} in {} process(es), {} commands/s through http://{} with {} in flight for {} s",
        f.count, f.target, f.processes, s.rate, s.api, s.concurrency, s.duration_secs
    );
    let mut workers = traffic::spawn(
        "command-roundtrip",
        Job::CommandRoundtrip(s.clone()),
        s.deadline_secs(),
    )?;
    let online = traffic::connect(&mut workers, f.count)?;
    if online.devices.is_empty() {
        return Err(traffic::none_connected(workers));
    }

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(s.request_timeout_secs)))
        .max_idle_connections(s.concurrency as usize)
        .max_idle_connections_per_host(s.concurrency as usize)
        .build()
        .into();
    let status = |workers: &mut traffic::Workers| {
        workers.round(
            |_| Command::Status,
            |ev| matches!(ev, Event::Status(_)),
            TICK,
            |_| {},
        )
    };
    let workers_before = status(&mut workers)?;
    let t0 = Instant::now() + Duration::from_millis(100);
    let plan = HttpPlan {
        agent,
        api_key,
        urls: online
            .devices
            .iter()
            .map(|&i| {
                format!(
                    "http://{}/v5/iot/{}/devices/{}/commands",
                    s.api,
                    s.project,
                    device_id(&f.product, i)
                )
            })
            .collect(),
        planned: s.planned(),
        rate: s.rate,
        service_id: s.service_id.clone(),
        command_name: s.command_name.clone(),
        t0,
        stop_at: t0 + Duration::from_secs(2 * s.duration_secs),
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        series: Mutex::new(Series::new()),
    };
    let server_start = server_ticks(f.server_pid);
    let coordinator_start = procfs::cpu_ticks("self").ok();
    let bar = Progress::phase("commands", s.planned());
    let outcomes = send_commands(&plan, s.concurrency, &mut workers, &bar)?;
    let send_end = Instant::now();
    let coordinator_send_end = procfs::cpu_ticks("self").ok();
    let server_end = server_ticks(f.server_pid);
    let workers_after = status(&mut workers)?;
    let send_secs = send_end.saturating_duration_since(t0).as_secs_f64();

    let mut commands = Commands {
        planned: s.planned(),
        ..Commands::default()
    };
    let mut hist = latency_histogram();
    for o in outcomes {
        commands.sent += o.sent;
        commands.ok += o.ok;
        for (k, v) in o.errors {
            commands.errors += v;
            *commands.errors_by_status.entry(k).or_default() += v;
        }
        let _ = hist.add(&o.hist);
    }
    bar.note(format!(
        "{} of {} commands sent in {send_secs:.2} s: {} ok, {} errors, {} answered by devices",
        commands.sent, commands.planned, commands.ok, commands.errors, workers_after.answered
    ));
    bar.finish(format!("{} ok", commands.ok));
    let reports = workers.stop(&Command::Stop)?;
    let totals = traffic::totals(&reports);
    commands.answered_by_devices = totals.counts.answered;
    let devices = Devices {
        requested: f.count,
        connected: online.devices.len() as u64,
        failures: totals.failures,
        dropped: totals.dropped,
    };
    let server = f.server_pid.map(|pid| {
        let cpu = cpu_diff(server_start, server_end);
        ServerCost {
            pid,
            ok_per_cpu_sec: if cpu.total() > 0.0 {
                commands.ok as f64 / cpu.total()
            } else {
                0.0
            },
            cpu,
        }
    });
    let mut cpu_sending = workers_after.cpu_since(&workers_before);
    cpu_sending.add(&cpu_diff(coordinator_start, coordinator_send_end));
    let coordinator_cpu = cpu_diff(cpu_start, procfs::cpu_ticks("self").ok());
    let mut cpu = totals.cpu;
    cpu.add(&coordinator_cpu);
    let ok = devices.connected == f.count
        && commands.sent == commands.planned
        && commands.ok == commands.sent
        && devices.dropped.is_empty();
    let series = plan
        .series
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(CommandReport {
        scenario_kind: "command-roundtrip",
        scenario: s.clone(),
        started_unix,
        ok,
        devices,
        ok_per_sec: if send_secs > 0.0 {
            commands.ok as f64 / send_secs
        } else {
            0.0
        },
        commands,
        send_secs,
        latency_us: percentiles(&hist),
        server,
        generator: GeneratorCost {
            processes: f.processes,
            wall_secs: started.elapsed().as_secs_f64(),
            cpu,
            cores_busy_sending: if send_secs > 0.0 {
                cpu_sending.total() / send_secs
            } else {
                0.0
            },
            coordinator_cpu,
            workers: totals.workers,
        },
        series: series.finish(),
    })
}

/// `command-roundtrip --scenario FILE`: reads the API key, runs, prints the summary, writes the
/// JSON report.
pub fn main(
    s: &CommandScenario,
    api_key_file: Option<&Path>,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    let path = api_key_file
        .map(Path::to_path_buf)
        .or_else(|| s.api_key_file.as_ref().map(Into::into))
        .context("no API key: give --api-key-file or api_key_file in the scenario (fleetgate writes {data_dir}/store/admin-api-key)")?;
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the API key from {}", path.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(!key.is_empty(), "{} is empty", path.display());
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
    fn response_topics() {
        assert_eq!(
            response_topic("$oc/devices/lt_n000001/sys/commands/request_id=abc").as_deref(),
            Some("$oc/devices/lt_n000001/sys/commands/response/request_id=abc")
        );
        assert_eq!(
            response_topic("$oc/devices/x/sys/commands/request_id="),
            None
        );
        assert_eq!(response_topic("$oc/devices/x/sys/messages/down"), None);
        assert_eq!(response_topic("other/sys/commands/request_id=1"), None);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, r#"{"response":{"result_code":0}}"#), None);
        assert_eq!(
            classify(200, r#"{"response":{"result_code":1}}"#).as_deref(),
            Some("200 result_code 1")
        );
        assert_eq!(
            classify(
                409,
                r#"{"error_code":"FLEETGATE.DEVICE_OFFLINE","error_msg":"x"}"#
            )
            .as_deref(),
            Some("409 FLEETGATE.DEVICE_OFFLINE")
        );
        assert_eq!(classify(502, "bad gateway").as_deref(), Some("502"));
    }

    #[test]
    fn the_sample_file_is_valid() {
        let s =
            CommandScenario::parse(include_str!("../scenarios/command-roundtrip.toml")).unwrap();
        assert!(s.planned() > 0);
        assert!(s.api.ip().is_loopback());
    }

    #[test]
    fn scenario_problems_are_reported_at_once() {
        let text = "target = \"127.0.0.1:1883\"\napi = \"192.168.0.1:80\"\ncount = 5\nrate = 0\nconcurrency = 1000\nauth = \"anonymous\"\n";
        let p = CommandScenario::parse(text).unwrap_err().0;
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p.iter().any(|m| m.starts_with("api:")));
        assert!(p.iter().any(|m| m.starts_with("rate:")));
        assert!(p.iter().any(|m| m.starts_with("concurrency:")));
        assert!(p.iter().any(|m| m.starts_with("auth:")));
    }
}
