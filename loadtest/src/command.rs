//! The `command-roundtrip` scenario: `count` online devices answer commands, and an HTTP client
//! sends sync commands through the application API (`POST /v5/iot/{project}/devices/{id}/
//! commands`, bearer API key) at a set rate with at most `concurrency` in flight; reported are
//! the latency percentiles of the answered commands (HDR histogram), errors by status, the
//! server's and the generator's CPU, and a per-second series.
//!
//! The devices run as tasks of one current-thread tokio runtime: each (optionally) subscribes
//! to `$oc/devices/{id}/sys/commands/#` at QoS 1, and answers every
//! `…/sys/commands/request_id={rid}` with `{"result_code":0}` on
//! `…/sys/commands/response/request_id={rid}`. The HTTP side is `concurrency` threads with
//! blocking `ureq` clients sharing one connection pool (ureq is the workspace's HTTP client,
//! without TLS); command number `g` goes to connected device `g mod n` and is due at
//! `t0 + g / rate` (a thread that falls behind sends at once; latency is measured from the
//! actual send).
//!
//! Bounded: at most `rate * duration_secs` commands, none started after twice the planned
//! duration, each request limited to `request_timeout_secs`, and the whole run abandoned at
//! [`CommandScenario::deadline_secs`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::conn::{self, Framer, Packet};
use crate::credentials::device_id;
use crate::procfs::{self, CpuSecs};
use crate::scenario::CommandScenario;
use crate::series::{Second, Series};
use crate::stats::{Percentiles, latency_histogram, percentiles};
use crate::telemetry::{Devices, connect_online, cpu_diff, run_within, server_ticks, subscribe};

/// The response topic of a command topic, if it is one:
/// `$oc/devices/{id}/sys/commands/request_id={rid}` →
/// `$oc/devices/{id}/sys/commands/response/request_id={rid}`.
pub fn response_topic(topic: &str) -> Option<String> {
    let (head, rid) = topic.split_once("/sys/commands/request_id=")?;
    (head.starts_with("$oc/devices/") && !rid.is_empty() && !rid.contains('/'))
        .then(|| format!("{head}/sys/commands/response/request_id={rid}"))
}

/// One device: answers every command until `stop` turns true.
async fn responder(
    mut stream: TcpStream,
    mut framer: Framer,
    answered: Arc<AtomicU64>,
    keepalive_secs: u16,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let mut buf = [0u8; 2048];
    let ping_every = Duration::from_secs(u64::from(keepalive_secs) / 2);
    let mut last_ping = tokio::time::Instant::now();
    loop {
        let mut out = Vec::new();
        loop {
            match framer.next_packet() {
                Ok(Some(Packet::Publish {
                    topic,
                    qos,
                    packet_id,
                    ..
                })) => {
                    if qos > 0 {
                        out.extend_from_slice(&conn::puback(packet_id));
                    }
                    if let Some(rt) = response_topic(&topic) {
                        out.extend_from_slice(&conn::publish(&rt, b"{\"result_code\":0}", 0, 0));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Some(e.0),
            }
        }
        if !out.is_empty()
            && let Err(e) = stream.write_all(&out).await
        {
            return Some(format!("send: {:?}", e.kind()));
        }
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => return Some("closed by the server".into()),
                Ok(k) => framer.feed(&buf[..k]),
                Err(e) => return Some(format!("read: {:?}", e.kind())),
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    let _ = stream.write_all(&crate::mqtt::DISCONNECT).await;
                    return None;
                }
            }
            () = tokio::time::sleep_until(last_ping + ping_every) => {
                if let Err(e) = stream.write_all(&crate::mqtt::PINGREQ).await {
                    return Some(format!("send: {:?}", e.kind()));
                }
                last_ping = tokio::time::Instant::now();
            }
        }
    }
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

/// The generator's cost.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorCost {
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of this process over the run.
    pub cpu: CpuSecs,
    /// CPU over the sending window divided by its length.
    pub cores_busy_sending: f64,
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
    /// Per second since the first command: `ok`, `errors`, `p99_us` (of the successes that
    /// completed in that second).
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
            "  {:.0} ok/s; latency µs p50 {} p90 {} p99 {} p999 {} max {}\n",
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
        out += &format!(
            "  generator: {:.2} CPU-s over {:.1} s ({:.2} cores busy while sending)\n",
            self.generator.cpu.total(),
            self.generator.wall_secs,
            self.generator.cores_busy_sending
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

/// What one HTTP thread saw.
struct ClientOutcome {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    hist: hdrhistogram::Histogram<u64>,
    series: Series,
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
}

fn client(plan: &HttpPlan, next: &AtomicU64) -> ClientOutcome {
    let mut o = ClientOutcome {
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        hist: latency_histogram(),
        series: Series::new(),
    };
    let auth = format!("Bearer {}", plan.api_key);
    let n = plan.urls.len() as u64;
    loop {
        let g = next.fetch_add(1, Ordering::Relaxed);
        if g >= plan.planned {
            break;
        }
        let due = plan.t0 + Duration::from_nanos(g * 1_000_000_000 / plan.rate);
        if due >= plan.stop_at {
            break;
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if Instant::now() >= plan.stop_at {
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
        match failure {
            None => {
                let us = (done - start).as_micros() as u64;
                o.ok += 1;
                let _ = o.hist.record(us.max(1));
                o.series.latency(sec, us);
                o.series.add(sec, "ok", 1);
            }
            Some(label) => {
                *o.errors.entry(label).or_default() += 1;
                o.series.add(sec, "errors", 1);
            }
        }
    }
    o
}

/// Runs the scenario within its hard deadline, with `api_key` as the bearer key.
pub fn run(s: &CommandScenario, api_key: String) -> anyhow::Result<CommandReport> {
    run_within(s.deadline_secs(), run_async(Arc::new(s.clone()), api_key))
}

async fn run_async(s: Arc<CommandScenario>, api_key: String) -> anyhow::Result<CommandReport> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cpu_start = procfs::cpu_ticks("self").ok();
    let f = &s.fleet;
    eprintln!(
        "command-roundtrip: {} devices on {}, {} commands/s through http://{} with {} in flight for {} s",
        f.count, f.target, s.rate, s.api, s.concurrency, s.duration_secs
    );
    let timeout = Duration::from_secs(f.connect_timeout_secs);
    let (mut devices, streams) = connect_online(f).await;
    let mut subscribing = Vec::new();
    for (index, mut stream) in streams {
        let qos = s.command_qos;
        let product = f.product.clone();
        subscribing.push(tokio::spawn(async move {
            let mut framer = Framer::default();
            if qos > 0 {
                let filter = format!("$oc/devices/{}/sys/commands/#", device_id(&product, index));
                let codes = subscribe(&mut stream, &mut framer, &filter, 1, timeout).await?;
                if codes.first().is_none_or(|&c| c > 1) {
                    return Err(format!("suback {:?}", Packet::SubAck(1, codes)));
                }
            }
            Ok::<_, String>((index, stream, framer))
        }));
    }
    let answered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut responders = Vec::new();
    let mut online = Vec::new();
    for t in subscribing {
        match t.await {
            Ok(Ok((index, stream, framer))) => {
                online.push(index);
                responders.push(tokio::spawn(responder(
                    stream,
                    framer,
                    Arc::clone(&answered),
                    f.keepalive_secs,
                    stop_rx.clone(),
                )));
            }
            Ok(Err(e)) => *devices.failures.entry(e).or_default() += 1,
            Err(e) => *devices.failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    devices.connected = online.len() as u64;
    eprintln!("  {} devices online", devices.connected);
    if online.is_empty() {
        bail!("no device could connect: {:?}", devices.failures);
    }

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(s.request_timeout_secs)))
        .max_idle_connections(s.concurrency as usize)
        .max_idle_connections_per_host(s.concurrency as usize)
        .build()
        .into();
    let t0 = Instant::now() + Duration::from_millis(100);
    let plan = Arc::new(HttpPlan {
        agent,
        api_key,
        urls: online
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
    });
    let server_start = server_ticks(f.server_pid);
    let gen_start = procfs::cpu_ticks("self").ok();
    let concurrency = s.concurrency;
    let http_plan = Arc::clone(&plan);
    let http = tokio::task::spawn_blocking(move || {
        let next = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..concurrency)
                .map(|_| scope.spawn(|| client(&http_plan, &next)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .collect::<Vec<_>>()
        })
    });
    let ticker = {
        let answered = Arc::clone(&answered);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "  … {} commands answered by devices",
                    answered.load(Ordering::Relaxed)
                );
            }
        })
    };
    let outcomes = http.await.context("the HTTP clients")?;
    ticker.abort();
    let send_end = Instant::now();
    let gen_send_end = procfs::cpu_ticks("self").ok();
    let server_end = server_ticks(f.server_pid);
    let _ = stop_tx.send(true);
    for r in responders {
        match r.await {
            Ok(None) => {}
            Ok(Some(e)) => *devices.dropped.entry(e).or_default() += 1,
            Err(e) => *devices.dropped.entry(format!("task: {e}")).or_default() += 1,
        }
    }

    let mut commands = Commands {
        planned: s.planned(),
        answered_by_devices: answered.load(Ordering::Relaxed),
        ..Commands::default()
    };
    let mut hist = latency_histogram();
    let mut series = Series::new();
    for o in outcomes {
        commands.sent += o.sent;
        commands.ok += o.ok;
        for (k, v) in o.errors {
            commands.errors += v;
            *commands.errors_by_status.entry(k).or_default() += v;
        }
        let _ = hist.add(&o.hist);
        series.merge(o.series);
    }
    let send_secs = send_end.saturating_duration_since(t0).as_secs_f64();
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
    let gen_send = cpu_diff(gen_start, gen_send_end);
    let ok = devices.connected == f.count
        && commands.sent == commands.planned
        && commands.ok == commands.sent
        && devices.dropped.is_empty();
    Ok(CommandReport {
        scenario_kind: "command-roundtrip",
        scenario: (*s).clone(),
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
            wall_secs: started.elapsed().as_secs_f64(),
            cpu: cpu_diff(cpu_start, procfs::cpu_ticks("self").ok()),
            cores_busy_sending: if send_secs > 0.0 {
                gen_send.total() / send_secs
            } else {
                0.0
            },
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
