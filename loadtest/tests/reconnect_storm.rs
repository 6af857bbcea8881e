//! End-to-end: `fleetgate-loadtest reconnect-storm` against the real `fleetgate` binary — a
//! small fleet connects, every connection drops at once, every device comes back with
//! CONNACK 0, and the report is complete and well-formed. Speed is never asserted.
//!
//! The `fleetgate` binary is looked up beside this package's binary in the target directory
//! (`cargo build -p fleetgate-api` builds it), or taken from `LOADTEST_FLEETGATE_BIN`: see
//! `tests/common/mod.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{LOADTEST, read_report, run_bounded, run_scenario, start_server, succeeded};

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
    let out = run_scenario(
        "reconnect-storm",
        scenario(dir.path(), &server.mqtt, 200),
        &[],
        server.child.id(),
        &json,
        Duration::from_secs(240),
    );
    let (stdout, stderr) = succeeded(&out);
    assert!(
        stdout.contains("200 reconnected of 200 dropped"),
        "{stdout}"
    );
    // stderr is not a terminal here: progress comes as plain lines, each phase ending in one.
    for line in [
        "connecting [",
        "200/200 200 established, 0 failed in",
        "dropping 200 connections at once",
        "storm [",
        "200/200 over after",
        "200 back of 200 dropped",
        "holding [",
    ] {
        assert!(stderr.contains(line), "{line:?} not in\n{stderr}");
    }

    let r: serde_json::Value = read_report(&json);
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
