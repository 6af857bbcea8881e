//! End-to-end: `fleetgate-loadtest telemetry` against the real `fleetgate` binary — devices
//! authenticate and publish property reports, the monitor (granted by the provisioned ACL
//! rule) receives them, and the report is well-formed. Small counts; never asserts speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{LOADTEST, check_generator, check_series, read_report, run_bounded, start_server};

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
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("telemetry")
            .arg("--scenario")
            .arg(&scenario)
            .arg("--server-pid")
            .arg(server.child.id().to_string())
            .arg("--json")
            .arg(&json),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
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
