//! End-to-end: `fleetgate-loadtest telemetry` against the real `fleetgate` binary — devices
//! authenticate and publish property reports, the monitor (granted by the provisioned ACL
//! rule) receives them, and the report is well-formed. Small counts; never asserts speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    LOADTEST, check_generator, check_series, read_report, run_bounded, run_scenario, start_server,
    succeeded,
};
use fleetgate_loadtest::scenario::TelemetryScenario;
use fleetgate_loadtest::traffic::protocol::{Job, WorkerInit};

fn telemetry(qos: u8, payload_bytes: u64) {
    let server = start_server("epoll", 20, 5);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("telemetry.toml");
    std::fs::write(
        &scenario,
        format!(
            "target = \"{}\"\nproduct = \"lt\"\nseed = 5\ncount = 20\nrate = 100\nqos = {qos}\nduration_secs = 3\npayload_bytes = {payload_bytes}\ndrain_secs = 5\nsources = 4\n",
            server.mqtt
        ),
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let out = run_scenario(
        "telemetry",
        &scenario,
        &[],
        server.child.id(),
        &json,
        Duration::from_secs(120),
    );
    let (stdout, _) = succeeded(&out);
    assert!(stdout.contains("20 of 20 devices connected"), "{stdout}");

    let r = read_report(&json);
    assert_eq!(r["scenario_kind"], "telemetry");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["devices"]["connected"], 20, "{r}");
    assert_eq!(r["devices"]["failures"], serde_json::json!({}), "{r}");
    assert_eq!(r["devices"]["dropped"], serde_json::json!({}), "{r}");
    let m = &r["messages"];
    assert_eq!(m["planned"], 300, "{m}");
    assert_eq!(m["sent"], 300, "{m}");
    assert!(m["delivered"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["malformed"], 0, "{m}");
    if qos == 1 {
        assert_eq!(m["acked"], 300, "{m}");
        assert_eq!(m["lost"], 0, "{m}");
        assert_eq!(m["delivered"], 300, "{m}");
    }
    let l = &r["latency_us"];
    assert_eq!(l["count"], m["delivered"], "{l}");
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(l[k].as_u64().unwrap() > 0, "{k}: {l}");
    }
    assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());
    let s = &r["server"];
    assert_eq!(s["pid"], server.child.id());
    assert!(s["cpu"]["user"].is_f64(), "{s}");
    check_generator(&r);
    check_series(&r);
    let series = r["series"].as_array().unwrap();
    let sum = |k: &str| {
        series
            .iter()
            .map(|p| p[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("sent"), 300);
    assert_eq!(sum("delivered"), m["delivered"].as_u64().unwrap());
}

#[test]
fn telemetry_reports_are_delivered_at_qos_1() {
    telemetry(1, 0);
}

#[test]
fn telemetry_reports_are_delivered_at_qos_0_with_padding() {
    telemetry(0, 512);
}

#[test]
fn a_monitor_that_cannot_connect_fails_the_run() {
    // No device of product `other` is registered: the monitor (device 0) is refused and the
    // run stops with a message saying so (exit 2) before any device publishes.
    let server = start_server("epoll", 5, 5);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("telemetry.toml");
    std::fs::write(
        &scenario,
        format!(
            "target = \"{}\"\nproduct = \"other\"\nseed = 5\ncount = 5\nrate = 10\nduration_secs = 1\n",
            server.mqtt
        ),
    )
    .unwrap();
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("telemetry")
            .arg("--scenario")
            .arg(&scenario),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the monitor (device 0) could not connect: connack"),
        "{err}"
    );
}

#[test]
fn devices_in_two_processes_add_up() {
    // 300 devices in 2 worker processes (150 each), 600 reports/s for 3 s at QoS 1: worker
    // w sends reports w, w+2, w+4, …, so 900 each.
    let server = start_server("epoll", 300, 6);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("telemetry.toml");
    std::fs::write(
        &scenario,
        format!(
            "target = \"{}\"\nproduct = \"lt\"\nseed = 6\ncount = 300\nprocesses = 2\nrate = 600\nqos = 1\nmax_inflight = 5\nduration_secs = 3\ndrain_secs = 5\nsources = 4\nconnect_rate = 1000\n",
            server.mqtt
        ),
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let out = run_scenario(
        "telemetry",
        &scenario,
        &[],
        server.child.id(),
        &json,
        Duration::from_secs(120),
    );
    let (stdout, stderr) = succeeded(&out);
    assert!(stdout.contains("300 of 300 devices connected"), "{stdout}");
    assert!(stdout.contains("in 2 worker process(es)"), "{stdout}");
    assert!(
        stderr.contains("300 of 300 devices connected, 0 failed"),
        "{stderr}"
    );

    let r = read_report(&json);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["scenario"]["processes"], 2);
    assert_eq!(r["scenario"]["max_inflight"], 5);
    let m = &r["messages"];
    for (k, v) in [
        ("planned", 1800),
        ("sent", 1800),
        ("unsent", 0),
        ("acked", 1800),
        ("unacked", 0),
        ("delivered", 1800),
        ("lost", 0),
        ("duplicates", 0),
    ] {
        assert_eq!(m[k], v, "{k}: {m}");
    }
    assert!(m["window_delayed"].is_u64(), "{m}");
    let g = &r["generator"];
    assert_eq!(g["processes"], 2, "{g}");
    let workers = g["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{g}");
    let mut worker_cpu = 0.0;
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["index"], i, "{w}");
        assert_eq!(w["devices"], 150, "{w}");
        assert_eq!(w["connected"], 150, "{w}");
        assert_eq!(w["sent"], 900, "{w}");
        assert!(w["memory"]["vm_rss"].as_u64().unwrap() > 0, "{w}");
        worker_cpu += w["cpu"]["user"].as_f64().unwrap() + w["cpu"]["system"].as_f64().unwrap();
    }
    let total_cpu = g["cpu"]["user"].as_f64().unwrap() + g["cpu"]["system"].as_f64().unwrap();
    let coordinator = &g["coordinator_cpu"];
    let coordinator_cpu =
        coordinator["user"].as_f64().unwrap() + coordinator["system"].as_f64().unwrap();
    assert!(
        (total_cpu - worker_cpu - coordinator_cpu).abs() < 1e-6,
        "the generator's CPU is the sum over its processes: {g}"
    );
    check_generator(&r);
    for k in ["latency_us", "schedule_latency_us"] {
        let l = &r[k];
        assert_eq!(l["count"], 1800, "{k}: {l}");
        assert!(l["p50"].as_u64() <= l["p99"].as_u64(), "{k}: {l}");
    }
    check_series(&r);
    let series = r["series"].as_array().unwrap();
    let sent: u64 = series.iter().map(|p| p["sent"].as_u64().unwrap_or(0)).sum();
    assert_eq!(sent, 1800);
    for p in series {
        assert!(p["p50_us"].as_u64() <= p["p99_us"].as_u64(), "{p}");
        if p["delivered"].as_u64().unwrap_or(0) > 0 {
            assert!(p["p50_us"].as_u64().unwrap() > 0, "{p}");
        }
    }
}

/// Starts `telemetry --worker 0/1` with an init line whose deadline is `deadline_secs`.
fn lone_worker(deadline_secs: u64) -> std::process::Child {
    let s = TelemetryScenario::parse(
        "target = \"127.0.0.1:9\"\ncount = 1\nrate = 1\nduration_secs = 1\n",
    )
    .unwrap();
    let init = WorkerInit {
        job: Job::Telemetry(s),
        deadline_secs,
    };
    let mut child = Command::new(LOADTEST)
        .args(["telemetry", "--worker", "0/1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(stdin, "{}", serde_json::to_string(&init).unwrap()).unwrap();
    stdin.flush().unwrap();
    child
}

/// Waits (bounded) for a worker to exit; returns its event lines.
fn finish(mut child: std::process::Child, limit: Duration) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("the worker did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    BufReader::new(stdout).lines().map(Result::unwrap).collect()
}

#[test]
fn a_worker_stops_when_its_pipe_closes() {
    let mut child = lone_worker(300);
    drop(child.stdin.take());
    let lines = finish(child, Duration::from_secs(15));
    assert!(
        lines.last().is_some_and(|l| l.starts_with("{\"final\":")),
        "{lines:?}"
    );
}

#[test]
fn a_worker_stops_at_its_deadline() {
    // The pipe stays open: only the deadline ends the worker.
    let child = lone_worker(1);
    let lines = finish(child, Duration::from_secs(15));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("{\"fatal\":") && l.contains("deadline")),
        "{lines:?}"
    );
}
