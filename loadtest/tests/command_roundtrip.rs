//! End-to-end: `fleetgate-loadtest command-roundtrip` against the real `fleetgate` binary —
//! devices come online and answer, sync commands sent through the HTTP API come back with
//! their answers, and the report is well-formed. Small counts; never asserts speed.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    LOADTEST, check_generator, check_series, read_report, run_bounded, run_scenario, start_server,
    succeeded,
};

fn scenario_text(server: &common::Server, command_qos: u8) -> String {
    format!(
        "target = \"{}\"\napi = \"{}\"\nproduct = \"lt\"\nseed = 9\ncount = 20\nrate = 40\nconcurrency = 4\nduration_secs = 3\nrequest_timeout_secs = 10\ncommand_qos = {command_qos}\nsources = 4\n",
        server.mqtt, server.api
    )
}

fn roundtrip(command_qos: u8) {
    let server = start_server("epoll", 20, 9);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("command-roundtrip.toml");
    std::fs::write(&scenario, scenario_text(&server, command_qos)).unwrap();
    let json = dir.path().join("report.json");
    let out = run_scenario(
        "command-roundtrip",
        &scenario,
        &["--api-key-file".as_ref(), server.admin_key_file().as_ref()],
        server.child.id(),
        &json,
        Duration::from_secs(120),
    );
    succeeded(&out);

    let r = read_report(&json);
    assert_eq!(r["scenario_kind"], "command-roundtrip");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["devices"]["connected"], 20, "{r}");
    let c = &r["commands"];
    assert_eq!(c["planned"], 120, "{c}");
    assert_eq!(c["sent"], 120, "{c}");
    assert_eq!(c["ok"], 120, "{c}");
    assert_eq!(c["errors"], 0, "{c}");
    assert_eq!(c["errors_by_status"], serde_json::json!({}), "{c}");
    assert_eq!(c["answered_by_devices"], 120, "{c}");
    let l = &r["latency_us"];
    assert_eq!(l["count"], 120, "{l}");
    assert!(
        l["p50"].as_u64().unwrap() > 0 && l["p50"].as_u64() <= l["max"].as_u64(),
        "{l}"
    );
    assert_eq!(r["server"]["pid"], server.child.id());
    assert!(r["scenario"].to_string().find("Bearer").is_none());
    check_generator(&r);
    check_series(&r);
    let ok: u64 = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ok"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ok, 120);
}

#[test]
fn commands_round_trip_with_qos_1_subscriptions() {
    roundtrip(1);
}

#[test]
fn commands_round_trip_on_the_implicit_subscription() {
    roundtrip(0);
}

#[test]
fn a_wrong_api_key_is_counted_by_status() {
    let server = start_server("epoll", 3, 9);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("command-roundtrip.toml");
    let text = scenario_text(&server, 1)
        .replace("count = 20", "count = 3")
        .replace("rate = 40", "rate = 5")
        .replace("duration_secs = 3", "duration_secs = 1");
    std::fs::write(&scenario, text).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "not-the-key\n").unwrap();
    let json = dir.path().join("report.json");
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("command-roundtrip")
            .arg("--scenario")
            .arg(&scenario)
            .arg("--api-key-file")
            .arg(&key)
            .arg("--json")
            .arg(&json),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_report(&json);
    assert_eq!(r["ok"], false);
    let c = &r["commands"];
    assert_eq!(c["ok"], 0, "{c}");
    assert_eq!(c["errors"], 5, "{c}");
    let by_status = c["errors_by_status"].as_object().unwrap();
    assert_eq!(by_status.len(), 1, "{c}");
    assert!(by_status.keys().all(|k| k.starts_with("401")), "{c}");
}

#[test]
fn commands_reach_devices_in_two_processes() {
    // 300 devices in 2 worker processes; 120 commands go to devices 1..=120 (command g to
    // online device g mod 300), so each worker's devices answer 60.
    let server = start_server("epoll", 300, 9);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("command-roundtrip.toml");
    let text = scenario_text(&server, 1).replace(
        "count = 20",
        "count = 300\nprocesses = 2\nconnect_rate = 1000",
    );
    std::fs::write(&scenario, text).unwrap();
    let json = dir.path().join("report.json");
    let out = run_scenario(
        "command-roundtrip",
        &scenario,
        &["--api-key-file".as_ref(), server.admin_key_file().as_ref()],
        server.child.id(),
        &json,
        Duration::from_secs(120),
    );
    let (stdout, _) = succeeded(&out);
    assert!(stdout.contains("in 2 worker process(es)"), "{stdout}");

    let r = read_report(&json);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["scenario"]["processes"], 2);
    assert_eq!(r["devices"]["connected"], 300, "{r}");
    let c = &r["commands"];
    assert_eq!(c["sent"], 120, "{c}");
    assert_eq!(c["ok"], 120, "{c}");
    assert_eq!(c["answered_by_devices"], 120, "{c}");
    let g = &r["generator"];
    assert_eq!(g["processes"], 2, "{g}");
    let workers = g["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{g}");
    for w in workers {
        assert_eq!(w["devices"], 150, "{w}");
        assert_eq!(w["connected"], 150, "{w}");
        assert_eq!(w["answered"], 60, "{w}");
        assert_eq!(w["sent"], 0, "{w}");
    }
    let cpu = |v: &serde_json::Value| v["user"].as_f64().unwrap() + v["system"].as_f64().unwrap();
    let sum: f64 = workers.iter().map(|w| cpu(&w["cpu"])).sum::<f64>() + cpu(&g["coordinator_cpu"]);
    assert!((cpu(&g["cpu"]) - sum).abs() < 1e-6, "{g}");
    check_generator(&r);
    check_series(&r);
    let series = r["series"].as_array().unwrap();
    let ok: u64 = series.iter().map(|p| p["ok"].as_u64().unwrap_or(0)).sum();
    assert_eq!(ok, 120);
    for p in series {
        assert!(p["p50_us"].as_u64() <= p["p99_us"].as_u64(), "{p}");
    }
}
