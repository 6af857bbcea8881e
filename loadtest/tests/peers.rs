//! Smoke tests against a real peer broker: `fleetgate-loadtest` runs `idle-connections` (with
//! one subscription per session) and `reconnect-storm` against Mosquitto with
//! `auth = "password"`, the broker admitting only the devices of `credentials --passwords`
//! (hashed with `mosquitto_passwd -U`), and a wrong seed gets every connection refused with
//! CONNACK 5. Small counts; speed and memory figures are never asserted.
//!
//! Mosquitto comes from `.ci/deps test`; without it these tests fail saying so (they never
//! skip). Each test starts its own broker on a free 127.0.0.1 port and stops it by its pid,
//! also when the test fails: see `tests/common/mod.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{LOADTEST, Mosquitto, read_report, run_bounded, start_mosquitto};

const SEED: u64 = 11;
const COUNT: u64 = 300;

/// An `idle-connections` scenario with `auth = "password"` and `subscribe = true`.
fn idle_scenario(dir: &Path, target: &str, seed: u64, count: u64) -> PathBuf {
    let path = dir.join("idle.toml");
    let text = format!(
        "target = \"{target}\"\nproduct = \"lt\"\nseed = {seed}\ncount = {count}\nrate = 3000\nsources = 4\nprocesses = 2\nkeepalive_secs = 10\nhold_secs = 1\ncheckpoints = [{}]\nsettle_secs = 1\nslope_from = 1\nconnect_timeout_secs = 20\nauth = \"password\"\nsubscribe = true\n",
        count / 2
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a subcommand with `--scenario`, `--server-pid` and `--json`; returns the output and
/// the report.
fn run(
    subcommand: &str,
    scenario: &Path,
    broker: &Mosquitto,
    json: &Path,
) -> (Output, serde_json::Value) {
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg(subcommand)
            .arg("--scenario")
            .arg(scenario)
            .arg("--server-pid")
            .arg(broker.child.id().to_string())
            .arg("--json")
            .arg(json),
        Duration::from_secs(120),
    );
    assert!(
        json.exists(),
        "no report: exit {:?}\n{}\n{}\nmosquitto log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let report = read_report(json);
    (out, report)
}

#[test]
fn idle_sessions_with_one_subscription_each_on_mosquitto() {
    let broker = start_mosquitto(COUNT, SEED);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("idle.json");
    let scenario = idle_scenario(dir.path(), &broker.addr, SEED, COUNT);
    let (out, r) = run("idle-connections", &scenario, &broker, &json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}\nmosquitto log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(
        stdout.contains("300 established of 300 requested (0 failed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "auth password, 1 subscription each ($oc/devices/{device_id}/sys/commands/# at QoS 1)"
        ),
        "{stdout}"
    );

    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["scenario"]["auth"], "password");
    assert_eq!(r["scenario"]["subscribe"], true);
    let c = &r["connections"];
    assert_eq!(c["attempted"], COUNT, "{c}");
    assert_eq!(c["established"], COUNT, "{c}");
    assert_eq!(c["failed"], 0, "{c}");
    assert_eq!(c["failures"], serde_json::json!({}), "{c}");
    assert_eq!(c["alive_after_hold"], COUNT, "{c}");
    assert_eq!(c["dropped"], serde_json::json!({}), "{c}");
    assert_eq!(r["connect_latency_us"]["count"], COUNT);
    let subs = &r["subscriptions"];
    assert_eq!(
        subs["filter"], "$oc/devices/{device_id}/sys/commands/#",
        "{subs}"
    );
    assert_eq!(subs["requested_qos"], 1, "{subs}");
    // Mosquitto grants the QoS asked for.
    assert_eq!(
        subs["granted_qos"],
        serde_json::json!({"1": COUNT}),
        "{subs}"
    );
    assert_eq!(subs["latency_us"]["count"], COUNT, "{subs}");

    let server = &r["server"];
    assert_eq!(server["pid"], broker.child.id());
    let targets: Vec<u64> = server["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["target"].as_u64().unwrap())
        .collect();
    assert_eq!(targets, [0, COUNT / 2, COUNT]);
    assert_eq!(server["after_hold"]["connections"], COUNT, "{server}");
    assert_eq!(r["generator"]["workers"].as_array().unwrap().len(), 2);
}

#[test]
fn a_password_fleet_reconnects_after_a_storm_on_mosquitto() {
    let broker = start_mosquitto(COUNT, SEED);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("storm.json");
    let scenario = dir.path().join("storm.toml");
    std::fs::write(
        &scenario,
        format!(
            "target = \"{}\"\nproduct = \"lt\"\nseed = {SEED}\ncount = {COUNT}\nrate = 3000\nsources = 4\nprocesses = 2\nkeepalive_secs = 10\nhold_secs = 1\nhold_after_secs = 1\nconnect_timeout_secs = 20\nstorm_timeout_secs = 60\nretry_delay_ms = 50\nauth = \"password\"\n",
            broker.addr
        ),
    )
    .unwrap();
    let (out, r) = run("reconnect-storm", &scenario, &broker, &json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}\nmosquitto log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(stdout.contains(", auth password (ok)"), "{stdout}");
    assert!(
        stdout.contains("300 reconnected of 300 dropped"),
        "{stdout}"
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["scenario"]["auth"], "password");
    let initial = &r["initial"];
    assert_eq!(initial["established"], COUNT, "{initial}");
    assert_eq!(initial["failed"], 0, "{initial}");
    assert_eq!(initial["alive_before_storm"], COUNT, "{initial}");
    let storm = &r["storm"];
    assert_eq!(storm["dropped"], COUNT, "{storm}");
    assert_eq!(storm["reconnected"], COUNT, "{storm}");
    assert_eq!(storm["recovered"], true, "{storm}");
    assert_eq!(storm["gave_up"], serde_json::json!({}), "{storm}");
    assert_eq!(storm["refusals"], serde_json::json!({}), "{storm}");
    assert_eq!(storm["connack_latency_us"]["count"], COUNT, "{storm}");
    assert!(storm["milestones"]["p100"].is_f64(), "{storm}");
    assert_eq!(r["alive_after"], COUNT);
    assert_eq!(r["lost"], serde_json::json!({}));
    assert_eq!(r["server"]["pid"], broker.child.id());
}

#[test]
fn a_wrong_seed_is_refused_with_connack_5_on_mosquitto() {
    const FEW: u64 = 40;
    let broker = start_mosquitto(FEW, SEED);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("refused.json");
    let scenario = idle_scenario(dir.path(), &broker.addr, SEED + 1, FEW);
    let (out, r) = run("idle-connections", &scenario, &broker, &json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(FAILED)"), "{stdout}");
    assert!(stdout.contains("failed 40: connack 5"), "{stdout}");
    assert_eq!(r["ok"], false, "{r}");
    let c = &r["connections"];
    assert_eq!(c["attempted"], FEW, "{c}");
    assert_eq!(c["established"], 0, "{c}");
    assert_eq!(c["failed"], FEW, "{c}");
    // Mosquitto 2 answers a wrong password with 5 (not authorized), and nothing else happens.
    assert_eq!(c["failures"], serde_json::json!({"connack 5": FEW}), "{c}");
    let subs = &r["subscriptions"];
    assert_eq!(subs["granted_qos"], serde_json::json!({}), "{subs}");
    assert_eq!(subs["latency_us"]["count"], 0, "{subs}");
}

#[test]
fn a_missing_peer_fails_saying_how_to_install_it() {
    let missing = std::panic::catch_unwind(|| common::peer_bin("mosquitto-not-installed"))
        .expect_err("a missing program is a failure, never a skip");
    let message = missing
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("mosquitto-not-installed is not installed: run `.ci/deps test`"),
        "{message}"
    );
}
