//! End-to-end: `fleetgate-loadtest coap-sleepers` against the real `fleetgate` binary with its
//! CoAP listener and a 2-second awake window — 200 LwM2M devices register and hibernate, the
//! server's memory is sampled, 20 of them wake and receive the delayed command queued for
//! them, and the report is well-formed. Small counts; never asserts speed or memory figures.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::{
    LOADTEST, check_generator, check_series, fleetgate_bin, read_report, run_bounded, run_scenario,
    succeeded,
};

const DEVICES: u64 = 200;
const WAKE: u64 = 20;

/// A loopback UDP port free now (the scenario needs the CoAP address before the run).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sleepers_register_hibernate_and_get_their_commands_on_waking() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.json");
    std::fs::write(
        &file,
        fleetgate_loadtest::sleepers::provision_file("nbwm", 1, DEVICES).to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = run_bounded(
        Command::new(fleetgate_bin())
            .arg("--data-dir")
            .arg(&data)
            .arg("provision")
            .arg(&file),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "provision: {stdout}");
    assert!(!stdout.contains("\"errors\":[\""), "{stdout}");

    let coap = format!("127.0.0.1:{}", free_udp_port());
    let (server, _) = common::launch(
        data,
        dir,
        &["coap"],
        &[
            "engine.coap.enabled=true".to_owned(),
            format!("engine.coap.listen={coap}"),
            "engine.lwm2m.awake_window_secs=2".to_owned(),
        ],
        &["coap/lwm2m listening"],
    );
    let api = server.api.clone();

    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("coap-sleepers.toml");
    std::fs::write(
        &scenario,
        format!(
            "target = \"{coap}\"\napi = \"{api}\"\nproject = \"smoke\"\ndevices = {DEVICES}\nsockets = 100\nsources = 4\nregister_rate = 400\ndevice_awake_ms = 1000\nserver_awake_window_secs = 2\nsocket_reuse_secs = 3\nhibernate_timeout_secs = 20\nsettle_secs = 1\nwake = {WAKE}\ncommands_per_device = 1\nwake_rate = 100\ncommand_timeout_secs = 10\nduration_secs = 60\nseed = 3\n"
        ),
    )
    .unwrap();
    let json = work.path().join("report.json");
    let out = run_scenario(
        "coap-sleepers",
        &scenario,
        &["--api-key-file".as_ref(), server.admin_key_file().as_ref()],
        server.child.id(),
        &json,
        Duration::from_secs(90),
    );
    let (_, stderr) = succeeded(&out);
    // stderr is not a terminal here: each phase's progress ends in one plain line.
    for line in [
        "registering [",
        "200/200 200 registered, 0 failed, 0 unfinished",
        "hibernating [",
        "queueing [",
        "20/20 20 commands queued for 20 devices",
        "waking [",
        "20/20 20 of 20 commands received",
    ] {
        assert!(stderr.contains(line), "{line:?} not in\n{stderr}");
    }

    let r = read_report(&json);
    assert_eq!(r["scenario_kind"], "coap-sleepers");
    assert_eq!(r["ok"], true, "{r}");
    let reg = &r["register"];
    assert_eq!(reg["phase"]["ok"], DEVICES, "{reg}");
    assert_eq!(reg["phase"]["failed"], 0, "{reg}");
    assert_eq!(reg["latency_us"]["count"], DEVICES, "{reg}");
    assert!(reg["latency_us"]["p50"].as_u64().unwrap() > 0, "{reg}");
    assert_eq!(r["hibernation"]["reached"], true, "{r}");
    assert_eq!(r["hibernation"]["awake_devices"], 0, "{r}");
    assert!(
        r["hibernation"]["hibernations_total"].as_u64().unwrap() >= DEVICES,
        "{r}"
    );
    let m = &r["memory"];
    for k in ["before", "after_register", "after_hibernation"] {
        assert!(m[k]["memory"]["vm_rss"].as_u64().unwrap() > 0, "{m}");
    }
    assert!(m["vm_rss_bytes_per_device"].is_f64(), "{m}");
    let w = &r["wake"];
    assert_eq!(w["devices"], WAKE, "{w}");
    assert_eq!(w["commands_queued"], WAKE, "{w}");
    assert_eq!(w["commands_received"], WAKE, "{w}");
    assert_eq!(w["queue_errors"], serde_json::json!({}), "{w}");
    assert_eq!(w["wake_to_command_us"]["count"], WAKE, "{w}");
    assert_eq!(r["server"]["pid"], server.child.id());
    assert!(r["scenario"].get("api_key_file").is_none());
    check_generator(&r);
    check_series(&r);
    let registered: u64 = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["registered"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(registered, DEVICES);
}

#[test]
fn the_scenario_refuses_non_loopback_targets() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "target = \"192.168.1.1:5683\"\napi = \"127.0.0.1:8080\"\ndevices = 10\nsockets = 10\nregister_rate = 10\nserver_awake_window_secs = 2\n",
    )
    .unwrap();
    let out = run_bounded(
        Command::new(LOADTEST)
            .arg("coap-sleepers")
            .arg("--scenario")
            .arg(&scenario),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target:"));
}
