//! End-to-end: `fleetgate-loadtest reconnect-storm` against the real `fleetgate` binary — a
//! small fleet connects, every connection drops at once, every device comes back with
//! CONNACK 0, and the report is complete and well-formed. Speed is never asserted.
//!
//! The `fleetgate` binary is looked up beside this package's binary in the target directory
//! (`cargo build -p fleetgate-api` builds it), or taken from `LOADTEST_FLEETGATE_BIN`, as in
//! `tests/idle_connections.rs`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LOADTEST: &str = env!("CARGO_BIN_EXE_fleetgate-loadtest");

fn fleetgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOADTEST_FLEETGATE_BIN") {
        return PathBuf::from(p);
    }
    let beside = Path::new(LOADTEST).with_file_name("fleetgate");
    assert!(
        beside.exists(),
        "{} not found: build it with `cargo build -p fleetgate-api` (cargo test --workspace does) or set LOADTEST_FLEETGATE_BIN",
        beside.display()
    );
    beside
}

/// A fleetgate process on a temporary data directory; killed by its pid on drop.
struct Server {
    child: Child,
    mqtt: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `count` devices with secrets from `seed`, then starts fleetgate on `driver`.
fn start_server(driver: &str, count: u64, seed: u64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.json");
    let out = run_bounded(
        Command::new(LOADTEST)
            .args([
                "credentials",
                "--count",
                &count.to_string(),
                "--product",
                "lt",
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&devices),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "credentials: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let out = run_bounded(
        Command::new(fleetgate_bin())
            .arg("--data-dir")
            .arg(&data)
            .arg("provision")
            .arg(&devices),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "provision: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = Command::new(fleetgate_bin());
    cmd.arg("--data-dir").arg(&data).args([
        "--api-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--set",
        "engine.mqtt.listen=127.0.0.1:0",
        "--set",
        &format!("engine.driver={driver}"),
    ]);
    for off in [
        "mqtts",
        "mqtt_ws",
        "coap",
        "coaps",
        "device_https",
        "app_mqtt",
    ] {
        cmd.args(["--set", &format!("engine.{off}.enabled=false")]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads every log line (so the pipe never fills) and passes on the MQTT address.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "mqtt listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let mut server = Server {
        child,
        mqtt: String::new(),
        _dir: dir,
    };
    server.mqtt = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fleetgate did not log \"mqtt listening\" within 60 s");
    server
}

/// Runs a command to completion, killing it past `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn scenario(dir: &Path, target: &str, count: u64) -> PathBuf {
    let path = dir.join("reconnect.toml");
    let text = format!(
        "target = \"{target}\"\nproduct = \"lt\"\nseed = 7\ncount = {count}\nrate = 2000\nsources = 4\nprocesses = 2\nkeepalive_secs = 10\nhold_secs = 1\nhold_after_secs = 1\nconnect_timeout_secs = 20\nstorm_timeout_secs = 60\nretry_delay_ms = 50\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_device_reconnects_after_the_storm() {
    let server = start_server("epoll", 200, 7);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("reconnect-storm")
            .arg("--scenario")
            .arg(scenario(dir.path(), &server.mqtt, 200))
            .arg("--server-pid")
            .arg(server.child.id().to_string())
            .arg("--json")
            .arg(&json),
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("200 reconnected of 200 dropped"),
        "{stdout}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["scenario_kind"], "reconnect-storm");
    assert_eq!(r["ok"], true, "{r}");
    let initial = &r["initial"];
    assert_eq!(initial["established"], 200, "{initial}");
    assert_eq!(initial["failed"], 0, "{initial}");
    assert_eq!(initial["alive_before_storm"], 200, "{initial}");
    assert_eq!(initial["connect_latency_us"]["count"], 200);

    let storm = &r["storm"];
    assert_eq!(storm["dropped"], 200, "{storm}");
    assert_eq!(storm["reconnected"], 200, "{storm}");
    assert_eq!(storm["recovered"], true, "{storm}");
    assert_eq!(storm["gave_up"], serde_json::json!({}), "{storm}");
    assert_eq!(storm["connack_latency_us"]["count"], 200);
    assert!(storm["connacks"].as_u64().unwrap() >= 200, "{storm}");
    assert!(storm["attempts"].as_u64().unwrap() >= 200, "{storm}");
    assert!(storm["refusals"].is_object(), "{storm}");
    assert!(
        storm["auth_rate_per_sec"].as_f64().unwrap() > 0.0,
        "{storm}"
    );
    // Milestones exist and never go backwards; the last one is the recovery time.
    let m = &storm["milestones"];
    let times: Vec<f64> = ["p50", "p90", "p99", "p100"]
        .iter()
        .map(|k| {
            m[*k]
                .as_f64()
                .unwrap_or_else(|| panic!("milestone {k}: {m}"))
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{m}");
    assert_eq!(storm["recovery_secs"].as_f64(), Some(times[3]));
    // The series: 100 ms steps from the drop, never decreasing, ending with everyone back.
    let series = storm["series"].as_array().unwrap();
    assert!(series.len() >= 2, "{storm}");
    let mut sum = 0;
    for (k, p) in series.iter().enumerate() {
        assert_eq!(p["t_ms"].as_u64(), Some(100 * k as u64), "{p}");
        sum += p["reconnected"].as_u64().unwrap();
        assert_eq!(p["connected"].as_u64(), Some(sum), "{p}");
    }
    assert_eq!(sum, 200);

    assert_eq!(r["alive_after"], 200);
    assert_eq!(r["lost"], serde_json::json!({}));
    let s = &r["server"];
    assert_eq!(s["pid"], server.child.id());
    assert!(s["storm_cpu"]["user"].is_f64(), "{s}");
    assert!(s["cpu_series"].is_array(), "{s}");
    let g = &r["generator"];
    assert_eq!(g["workers"].as_array().unwrap().len(), 2);
    assert!(g["storm_cpu"]["system"].is_f64(), "{g}");
}

#[test]
fn invalid_reconnect_scenarios_are_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "target = \"192.0.2.1:1883\"\ncount = 10\nrate = 10\nstorm_timeout_secs = 0\n",
    )
    .unwrap();
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("reconnect-storm")
            .arg("--scenario")
            .arg(&path),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(err.contains("not an IPv4 loopback address"), "{err}");
    assert!(
        err.contains("storm_timeout_secs: must be an integer in 1..=600"),
        "{err}"
    );
}
