//! End-to-end: `fleetgate-loadtest idle-connections` against the real `fleetgate` binary on
//! each driver — every connection authenticates (on io_uring also subscribing to its own
//! command topic, which fleetgate grants at QoS 1), the report is produced with the server's
//! memory at each checkpoint — and wrong secrets are refused with CONNACK 4.
//!
//! The `fleetgate` binary is not a target of this package, so it is looked up beside this
//! package's binary in the target directory (`cargo test --workspace` builds it, because
//! `fleetgate-api` has integration tests), or taken from `LOADTEST_FLEETGATE_BIN`: see
//! `tests/common/mod.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{LOADTEST, read_report, run_bounded, run_scenario, start_server};

fn scenario(dir: &Path, target: &str, seed: u64, count: u64) -> PathBuf {
    let path = dir.join("scenario.toml");
    let text = format!(
        "target = \"{target}\"\nproduct = \"lt\"\nseed = {seed}\ncount = {count}\nrate = 2000\nsources = 4\nprocesses = 2\nkeepalive_secs = 10\nhold_secs = 1\ncheckpoints = [100]\nsettle_secs = 1\nslope_from = 100\nconnect_timeout_secs = 20\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn idle_run(driver: &str, subscribe: bool) {
    let server = start_server(driver, 200, 7);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let path = scenario(dir.path(), &server.mqtt, 7, 200);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("subscribe = {subscribe}\n"));
    std::fs::write(&path, text).unwrap();
    let out = run_scenario(
        "idle-connections",
        &path,
        &[],
        server.child.id(),
        &json,
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{driver}: exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("200 established of 200 requested (0 failed)"),
        "{stdout}"
    );
    // stderr is not a terminal here: progress comes as plain lines, each phase ending in one.
    for line in [
        "step 100: 100 established, 0 failed",
        "checkpoint 100: 100 open, server VmRSS",
        "connecting [",
        "200/200 200 established, 0 failed in",
        "holding [",
        "200 open after 1 s",
    ] {
        assert!(stderr.contains(line), "{line:?} not in\n{stderr}");
    }

    let report: serde_json::Value = read_report(&json);
    assert_eq!(report["ok"], true);
    let c = &report["connections"];
    assert_eq!(c["established"], 200, "{c}");
    assert_eq!(c["failed"], 0, "{c}");
    assert_eq!(c["alive_after_hold"], 200, "{c}");
    assert_eq!(report["connect_latency_us"]["count"], 200);
    assert_eq!(report["scenario"]["subscribe"], subscribe);
    let subs = &report["subscriptions"];
    if subscribe {
        // fleetgate allows a device its own command topic, at the QoS asked for.
        assert_eq!(subs["granted_qos"], serde_json::json!({"1": 200}), "{subs}");
        assert_eq!(subs["latency_us"]["count"], 200, "{subs}");
        assert!(
            stdout.contains("subscriptions: 200 granted (200 at QoS 1)"),
            "{stdout}"
        );
    } else {
        assert!(subs.is_null(), "{subs}");
    }
    let server_report = &report["server"];
    assert_eq!(server_report["pid"], server.child.id());
    let checkpoints = server_report["checkpoints"].as_array().unwrap();
    let targets: Vec<u64> = checkpoints
        .iter()
        .map(|c| c["target"].as_u64().unwrap())
        .collect();
    assert_eq!(targets, [0, 100, 200]);
    assert_eq!(checkpoints[2]["connections"], 200);
    assert!(
        checkpoints
            .iter()
            .all(|c| c["memory"]["vm_rss"].as_u64().unwrap() > 0)
    );
    assert!(
        server_report["slope"]["vm_rss_bytes_per_connection"].is_f64(),
        "{server_report}"
    );
    assert_eq!(report["generator"]["workers"].as_array().unwrap().len(), 2);
}

#[test]
fn idle_connections_authenticate_on_epoll() {
    idle_run("epoll", false);
}

#[test]
fn idle_connections_authenticate_and_subscribe_on_io_uring() {
    idle_run("io_uring", true);
}

#[test]
fn wrong_secrets_are_refused_with_connack_4() {
    let server = start_server("epoll", 20, 7);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let path = scenario(dir.path(), &server.mqtt, 8, 20);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("checkpoints = [100]", "checkpoints = []");
    std::fs::write(&path, text).unwrap();
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("idle-connections")
            .arg("--scenario")
            .arg(&path)
            .arg("--json")
            .arg(&json),
        Duration::from_secs(120),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = read_report(&json);
    assert_eq!(report["ok"], false);
    assert_eq!(report["connections"]["established"], 0);
    assert_eq!(
        report["connections"]["failures"]["connack 4"], 20,
        "{report}"
    );
}

#[test]
fn invalid_scenarios_are_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "target = \"192.0.2.1:1883\"\ncount = 0\nrate = 10\nspeed = 3\n",
    )
    .unwrap();
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("idle-connections")
            .arg("--scenario")
            .arg(&path),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(err.contains("speed: unknown key"), "{err}");
    assert!(err.contains("not an IPv4 loopback address"), "{err}");
    assert!(
        err.contains("count: must be an integer in 1..=1000000, got 0"),
        "{err}"
    );
}
