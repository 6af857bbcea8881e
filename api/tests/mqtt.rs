//! End-to-end MQTT tests: the real `fleetgate` binary, provisioned with `fleetgate provision`,
//! driven by real clients — `mosquitto_pub`/`mosquitto_sub` and `paho_client.py` (paho-mqtt
//! 2.2.0, plus a raw-socket mode) — over MQTT 3.1.1 and 5.0. Every scenario runs on both I/O
//! drivers (`mod epoll`, `mod io_uring`) and checks the protocol results and the matching
//! `/metrics` counters.
//!
//! Needs `mosquitto-clients` and a Python with paho-mqtt 2.2.0 (`$FG_TEST_PYTHON`, else
//! `$HOME/.cache/fleetgate/venv/bin/python`): `.ci/deps test` installs both. Without them the
//! tests fail with that hint; they never skip.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Device, Finished, Proc, TestServer, current_hour, hours_ago, monitor_rule, printed_connack,
    product, run,
};

/// Deadline for a client that should finish promptly.
const QUICK: Duration = Duration::from_secs(15);

macro_rules! scenarios {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod epoll {
            $( $(#[$attr])* #[test] fn $name() { super::$name("epoll") } )*
        }
        mod io_uring {
            $( $(#[$attr])* #[test] fn $name() { super::$name("io_uring") } )*
        }
    };
}

scenarios!(
    auth_outcomes,
    keepalive_expiry,
    offline_delivery_and_redelivery_v5,
    offline_delivery_and_redelivery_v311,
    wills,
    takeover,
    acl_denials,
    byte_quota,
    throttle_message_rate,
    connection_limit,
    no_loss_across_reconnects,
);

fn provision(products: &[Value], devices: &[&Device], rules: &[Value]) -> Value {
    json!({
        "products": products,
        "devices": devices.iter().map(|d| d.spec()).collect::<Vec<_>>(),
        "acl_rules": rules,
    })
}

fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `paho_client.py` arguments: the device's credentials, then `rest`.
fn as_device(device: &Device, rest: &[&str]) -> Vec<String> {
    let mut args = device.paho();
    args.extend(strs(rest));
    args
}

/// A server with one product and two of its devices, `{node}5` for MQTT 5.0 and `{node}3` for
/// 3.1.1.
fn server_with_pair(
    driver: &str,
    product: Value,
    node: &str,
    settings: &[&str],
) -> (TestServer, Device, Device) {
    let id = product["product_id"].as_str().unwrap().to_owned();
    let (d5, d3) = (
        Device::new(&id, &format!("{node}5")),
        Device::new(&id, &format!("{node}3")),
    );
    let server = TestServer::start(driver, &provision(&[product], &[&d5, &d3], &[]), settings);
    (server, d5, d3)
}

/// A monitor device (MQTT 5) that subscribes to every device's message uplink at QoS 1 and
/// waits up to 15 s for `count` messages.
fn watch_uplinks(server: &TestServer, monitor: &Device, count: u32) -> Proc {
    let count = count.to_string();
    let args = [
        "--version",
        "5",
        "--topic",
        "$oc/devices/+/sys/messages/up",
        "--qos",
        "1",
        "--count",
        &count,
        "--wait",
        "15",
    ];
    Proc::spawn(
        "monitor",
        server.paho("subscribe", as_device(monitor, &args)),
    )
}

/// Runs two clients at once, `d5` over MQTT 5.0 and `d3` over 3.1.1, each a command (and a
/// label) made by `client(version, device)`; returns what they printed, MQTT 5 first.
fn on_both_versions(
    (d5, d3): (&Device, &Device),
    deadline: Duration,
    client: impl Fn(&'static str, &Device) -> (String, Command),
) -> Vec<(&'static str, Finished)> {
    let runs: Vec<_> = [("5", d5), ("311", d3)]
        .into_iter()
        .map(|(version, d)| (version, client(version, d)))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|(version, (name, cmd))| s.spawn(move || (version, run(name, cmd, deadline))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn connack(out: &Finished) -> (i64, bool) {
    let c = out.event("connack");
    (
        c["rc"].as_i64().unwrap(),
        c["session_present"].as_bool().unwrap(),
    )
}

// --- authentication -----------------------------------------------------------------------

/// CONNACK codes for every authentication outcome, on 3.1.1 and 5.0, as `mosquitto_pub` sees
/// them (its exit status is the CONNACK code, and `-d` prints it). The attempts run in parallel,
/// each as its own device (two connections of one device would take each other over).
fn auth_outcomes(driver: &str) {
    #[derive(Clone, Copy, Debug)]
    enum Case {
        Valid,
        WrongPassword,
        MalformedClientId,
        UnknownDevice,
        SignedStale,
        UnsignedStale,
        SignedNow,
        ForbiddenWill,
        ShortKeepAlive,
    }
    // (case, what, code on 3.1.1, code on 5.0)
    let cases = [
        (Case::Valid, "valid credentials", 0, 0),
        (Case::WrongPassword, "wrong password", 4, 134),
        (Case::MalformedClientId, "malformed client id", 2, 133),
        (Case::UnknownDevice, "unknown device", 4, 134),
        (
            Case::SignedStale,
            "sign type 1, timestamp 3 hours old",
            4,
            134,
        ),
        (
            Case::UnsignedStale,
            "sign type 0, timestamp 3 hours old (not checked)",
            0,
            0,
        ),
        (Case::SignedNow, "sign type 1, current hour", 0, 0),
        (
            Case::ForbiddenWill,
            "will on another device's topic",
            5,
            135,
        ),
        // Outside [10, 1200]: 3.1.1 is refused, 5.0 is told the server's keep-alive.
        (Case::ShortKeepAlive, "keep-alive 5 s", 2, 0),
    ];
    let other = Device::new("wm", "other");
    let mut runs = Vec::new();
    for (i, (case, what, v311, v5)) in cases.iter().enumerate() {
        for (version, code) in [("mqttv311", *v311), ("mqttv5", *v5)] {
            runs.push((
                Device::new("wm", &format!("a{i}{}", &version[4..])),
                *case,
                format!("{what} ({version})"),
                version,
                code,
            ));
        }
    }
    let mut devices: Vec<&Device> = runs.iter().map(|r| &r.0).collect();
    devices.push(&other);
    // The unknown devices are not provisioned.
    let unknown: Vec<String> = runs
        .iter()
        .filter(|r| matches!(r.1, Case::UnknownDevice))
        .map(|r| r.0.id.clone())
        .collect();
    devices.retain(|d| !unknown.contains(&d.id));
    let server = TestServer::start(
        driver,
        &provision(&[product("wm", None)], &devices, &[]),
        &[],
    );

    let (now, stale) = (current_hour(), hours_ago(3));
    let results: Vec<(String, u8, Finished)> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(d, case, what, version, code)| {
                let (mut client, mut pass) = (d.client_id(0, &now), d.password(&now));
                let mut extra = strs(&["-q", "1"]);
                match case {
                    Case::Valid | Case::UnknownDevice => {}
                    Case::WrongPassword => pass = other.password(&now),
                    Case::MalformedClientId => client = d.id.clone(),
                    Case::SignedStale => {
                        (client, pass) = (d.client_id(1, &stale), d.password(&stale))
                    }
                    Case::UnsignedStale => {
                        (client, pass) = (d.client_id(0, &stale), d.password(&stale))
                    }
                    Case::SignedNow => client = d.client_id(1, &now),
                    Case::ForbiddenWill => extra.extend(strs(&[
                        "--will-topic",
                        &other.messages_up(),
                        "--will-payload",
                        "w",
                    ])),
                    Case::ShortKeepAlive => extra = strs(&["-k", "5"]),
                }
                let mut args =
                    strs(&["-d", "-V", version, "-i", &client, "-u", &d.id, "-P", &pass]);
                args.extend(strs(&["-t", &d.messages_up(), "-m", "hello"]));
                args.extend(extra);
                let cmd = server.mosquitto("mosquitto_pub", args);
                s.spawn(move || (what.clone(), *code, run(what.clone(), cmd, QUICK)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (what, code, out) in &results {
        assert_eq!(
            printed_connack(out),
            Some(*code),
            "{what} [{driver}]: CONNACK\n{out}"
        );
        assert_eq!(
            out.code,
            Some(i32::from(*code)),
            "{what} [{driver}]: exit status\n{out}"
        );
    }

    let failures =
        |reason: &str| format!("fleetgate_mqtt_auth_failures_total{{reason=\"{reason}\"}}");
    // Wrong password, unknown device, stale sign-type-1 timestamp; on both versions.
    server.expect_metric(&failures("bad_credentials"), 6.0);
    server.expect_metric(&failures("malformed_client_id"), 2.0);
    server.expect_metric(&failures("not_authorized"), 2.0);
    server.expect_metric(&failures("keepalive_out_of_range"), 1.0);
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"auth_failed\"}",
        11.0,
    );
    // The refused will counts as a refused publication.
    server.expect_metric("fleetgate_mqtt_acl_denied_total{action=\"publish\"}", 2.0);
    // The seven accepted connections published and left with DISCONNECT.
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"client_disconnect\"}",
        7.0,
    );
    server.expect_metric(
        "fleetgate_mqtt_packets_received_total{type=\"publish\"}",
        7.0,
    );
    server.stop();
}

// --- keep-alive ---------------------------------------------------------------------------

/// A silent client is closed after 1.5 × its keep-alive; MQTT 5 hears DISCONNECT 0x8D first.
fn keepalive_expiry(driver: &str) {
    let (server, d5, d3) = server_with_pair(
        driver,
        product("wm", None),
        "k",
        &["engine.session.keepalive_min_secs=1"],
    );
    let outs = on_both_versions((&d5, &d3), QUICK, |version, d| {
        let args = ["--version", version, "--keepalive", "2", "--wait", "10"];
        (
            format!("raw keep-alive 2 s, MQTT {version}"),
            server.paho("raw", as_device(d, &args)),
        )
    });
    for (version, out) in &outs {
        assert_eq!(connack(out).0, 0, "MQTT {version} [{driver}]\n{out}");
        let closed = out.event("closed");
        let after = closed["after"].as_f64().unwrap();
        assert!(
            (2.9..4.5).contains(&after),
            "MQTT {version} [{driver}]: closed after {after} s, expected about 3 s (1.5 × 2 s)\n{out}"
        );
        let expected = if *version == "5" {
            json!(0x8D)
        } else {
            Value::Null
        };
        assert_eq!(
            closed["disconnect_rc"], expected,
            "MQTT {version} [{driver}]: DISCONNECT reason\n{out}"
        );
    }
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"keepalive_timeout\"}",
        2.0,
    );
    server.expect_metric(
        "fleetgate_mqtt_packets_sent_total{type=\"disconnect\"}",
        1.0,
    );
    server.stop();
}

// --- persistent sessions --------------------------------------------------------------------

fn offline_delivery_and_redelivery_v5(driver: &str) {
    offline_delivery_and_redelivery(driver, "5");
}

fn offline_delivery_and_redelivery_v311(driver: &str) {
    offline_delivery_and_redelivery(driver, "311");
}

/// A monitor with a persistent session and a QoS 1 subscription granted by an ACL rule:
/// (a) a message published while it is offline is delivered when it comes back; (b) a message
/// it received and never acknowledged before its connection dropped is sent again with DUP.
fn offline_delivery_and_redelivery(driver: &str, version: &str) {
    let monitor = Device::new("wm", "monitor");
    let watcher = Device::new("wm", "watcher");
    let meter = Device::new("wm", "n1");
    let server = TestServer::start(
        driver,
        &provision(
            &[product("wm", None)],
            &[&monitor, &watcher, &meter],
            &[monitor_rule(&monitor), monitor_rule(&watcher)],
        ),
        &[],
    );
    let topic = meter.messages_up();
    let session = [
        "--version",
        version,
        "--persistent",
        "--session-expiry",
        "600",
    ];
    let monitor_args = |rest: &[&str]| {
        let mut a = as_device(&monitor, &session);
        a.extend(strs(rest));
        a
    };
    let publish = |payload: &str| {
        let args = as_device(
            &meter,
            &[
                "--version",
                version,
                "--topic",
                &topic,
                "--qos",
                "1",
                "--payload",
                payload,
            ],
        );
        let out = run(
            format!("publish {payload}"),
            server.paho("publish", args),
            QUICK,
        );
        assert_eq!(
            out.event("done")["puback_codes"],
            json!([0]),
            "[{driver}] publish {payload}\n{out}"
        );
    };

    // The monitor subscribes at QoS 1 with a persistent session, then leaves.
    let out = run(
        "monitor subscribes",
        server.paho(
            "subscribe",
            monitor_args(&["--topic", &topic, "--qos", "1", "--wait", "0"]),
        ),
        QUICK,
    );
    assert_eq!(connack(&out), (0, false), "[{driver}]\n{out}");
    assert_eq!(
        out.event("suback")["codes"],
        json!([1]),
        "[{driver}]\n{out}"
    );
    server.expect_metric("fleetgate_mqtt_detached_sessions", 1.0);

    // (a) Published while the monitor is offline. A live watcher on the same topic tells when
    // the publication has been routed (to both sessions), so the monitor's return does not race
    // the routing (a message routed while its session changes hands is lost: see
    // no_loss_across_reconnects).
    let mut watch = Proc::spawn(
        "watcher",
        server.paho(
            "subscribe",
            as_device(
                &watcher,
                &[
                    "--version",
                    version,
                    "--topic",
                    &topic,
                    "--count",
                    "1",
                    "--wait",
                    "10",
                ],
            ),
        ),
    );
    watch.wait_named("suback", QUICK);
    publish("while-offline");
    let watched = watch.wait_exit(QUICK);
    assert_eq!(
        watched.payloads(),
        ["while-offline"],
        "[{driver}]\n{watched}"
    );

    let out = run(
        "monitor returns",
        server.paho("subscribe", monitor_args(&["--count", "1", "--wait", "10"])),
        QUICK,
    );
    assert_eq!(
        connack(&out),
        (0, true),
        "[{driver}] the session is resumed\n{out}"
    );
    let m = out.event("message");
    assert_eq!(
        (
            m["topic"].as_str(),
            m["payload"].as_str(),
            m["qos"].as_i64(),
            m["dup"].as_bool()
        ),
        (
            Some(topic.as_str()),
            Some("while-offline"),
            Some(1),
            Some(false)
        ),
        "[{driver}] queued message\n{out}"
    );
    server.expect_metric("fleetgate_mqtt_sessions_resumed_total", 1.0);

    // (b) Received, never acknowledged, connection dropped without DISCONNECT.
    let mut unacked = Proc::spawn(
        "monitor without acknowledgements",
        server.paho(
            "subscribe",
            monitor_args(&[
                "--manual-ack",
                "--count",
                "1",
                "--wait",
                "10",
                "--finish",
                "abrupt",
            ]),
        ),
    );
    let c = unacked.wait_named("connack", QUICK);
    assert_eq!(
        (&c["rc"], &c["session_present"]),
        (&json!(0), &json!(true)),
        "[{driver}]"
    );
    publish("unacknowledged");
    let out = unacked.wait_exit(QUICK);
    let m = out.event("message");
    assert_eq!(
        (m["payload"].as_str(), m["qos"].as_i64(), m["dup"].as_bool()),
        (Some("unacknowledged"), Some(1), Some(false)),
        "[{driver}]\n{out}"
    );
    assert!(
        out.events_named("disconnect").is_empty(),
        "[{driver}] the connection was dropped, not closed\n{out}"
    );

    let out = run(
        "monitor returns again",
        server.paho("subscribe", monitor_args(&["--count", "1", "--wait", "10"])),
        QUICK,
    );
    assert_eq!(connack(&out), (0, true), "[{driver}]\n{out}");
    let m = out.event("message");
    assert_eq!(
        (m["payload"].as_str(), m["qos"].as_i64(), m["dup"].as_bool()),
        (Some("unacknowledged"), Some(1), Some(true)),
        "[{driver}] the unacknowledged message is sent again with DUP\n{out}"
    );
    // Acknowledged this time: nothing is left in flight.
    server.expect_metric("fleetgate_mqtt_inflight_messages", 0.0);
    server.expect_metric("fleetgate_mqtt_sessions_resumed_total", 3.0);
    server.expect_metric("fleetgate_mqtt_detached_sessions", 1.0);
    server.stop();
}

// --- wills ----------------------------------------------------------------------------------

/// A device that vanishes (SIGKILL) has its will published to the monitor; one that sends
/// DISCONNECT does not.
fn wills(driver: &str) {
    let monitor = Device::new("wm", "monitor");
    let (d5, d3) = (Device::new("wm", "w5"), Device::new("wm", "w3"));
    let server = TestServer::start(
        driver,
        &provision(
            &[product("wm", None)],
            &[&monitor, &d5, &d3],
            &[monitor_rule(&monitor)],
        ),
        &[],
    );
    let mut watch = watch_uplinks(&server, &monitor, 2);
    assert_eq!(
        watch.wait_named("suback", QUICK)["codes"],
        json!([1]),
        "[{driver}]"
    );

    // Clean DISCONNECT first: the raw client waits until the server has closed the connection,
    // so a will (wrongly) published for it would reach the monitor before the others.
    for (version, d) in [("5", &d5), ("311", &d3)] {
        let payload = format!("clean-will-{version}");
        let args = as_device(
            d,
            &[
                "--version",
                version,
                "--will-topic",
                &d.messages_up(),
                "--will-payload",
                &payload,
                "--then",
                "disconnect",
                "--wait",
                "10",
            ],
        );
        let out = run(
            format!("clean DISCONNECT, MQTT {version}"),
            server.paho("raw", args),
            QUICK,
        );
        assert_eq!(connack(&out).0, 0, "[{driver}]\n{out}");
        out.event("closed");
    }
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"client_disconnect\"}",
        2.0,
    );

    // Then two devices whose client process is killed.
    for (version, d) in [("5", &d5), ("311", &d3)] {
        let payload = format!("killed-will-{version}");
        let args = as_device(
            d,
            &[
                "--version",
                version,
                "--will-topic",
                &d.messages_up(),
                "--will-payload",
                &payload,
                "--hold",
                "-1",
            ],
        );
        let mut device = Proc::spawn(
            format!("device killed, MQTT {version}"),
            server.paho("connect", args),
        );
        assert_eq!(device.wait_named("connack", QUICK)["rc"], 0, "[{driver}]");
        device.kill9();
        let out = device.wait_exit(QUICK);
        assert_eq!(out.code, None, "killed by a signal\n{out}");
    }
    let out = watch.wait_exit(QUICK);
    let mut got = out.payloads();
    got.sort();
    assert_eq!(
        got,
        ["killed-will-311", "killed-will-5"],
        "[{driver}] wills received by the monitor\n{out}"
    );
    for m in out.events_named("message") {
        let from = if m["payload"] == "killed-will-5" {
            &d5
        } else {
            &d3
        };
        assert_eq!(
            m["topic"].as_str(),
            Some(from.messages_up().as_str()),
            "[{driver}]\n{out}"
        );
    }
    server.expect_metric("fleetgate_mqtt_wills_published_total", 2.0);
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"client_gone\"}",
        2.0,
    );
    server.stop();
}

// --- takeover -------------------------------------------------------------------------------

/// A second connection of a device closes the first: MQTT 5 hears DISCONNECT 0x8E, MQTT 3.1.1
/// is just closed. The newcomer stays connected.
fn takeover(driver: &str) {
    let (server, d5, d3) = server_with_pair(driver, product("wm", None), "t", &[]);
    let takeover_of = |version: &str, d: &Device| {
        let mut first = Proc::spawn(
            format!("first connection, MQTT {version}"),
            server.paho(
                "connect",
                as_device(d, &["--version", version, "--hold", "20"]),
            ),
        );
        assert_eq!(first.wait_named("connack", QUICK)["rc"], 0, "[{driver}]");
        // The newcomer holds its connection a moment, then leaves by itself.
        let second = run(
            format!("second connection, MQTT {version}"),
            server.paho(
                "connect",
                as_device(d, &["--version", version, "--hold", "0.5"]),
            ),
            QUICK,
        );
        assert_eq!(connack(&second).0, 0, "[{driver}]\n{second}");
        let left = second.event("disconnect");
        assert_eq!(
            (&left["rc"], &left["from_server"]),
            (&json!(0), &json!(false)),
            "[{driver}] the newcomer keeps its connection until it leaves\n{second}"
        );
        let out = first.wait_exit(QUICK);
        let gone = out.event("disconnect");
        if version == "5" {
            assert_eq!(
                (&gone["rc"], &gone["from_server"]),
                (&json!(0x8E), &json!(true)),
                "[{driver}] session taken over\n{out}"
            );
        } else {
            assert_eq!(gone["from_server"], false, "[{driver}]\n{out}");
            assert_ne!(
                gone["rc"], 0,
                "[{driver}] the connection was lost, not closed by the client\n{out}"
            );
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| takeover_of("5", &d5));
        s.spawn(|| takeover_of("311", &d3));
    });
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"taken_over\"}",
        2.0,
    );
    server.expect_metric(
        "fleetgate_mqtt_packets_sent_total{type=\"disconnect\"}",
        1.0,
    );
    server.stop();
}

// --- ACL ------------------------------------------------------------------------------------

/// Subscribing to another device's commands is refused per filter (0x80 on 3.1.1, 0x87 on
/// 5.0); publishing on another device's topic gets PUBACK 0x87 on 5.0 and is acknowledged and
/// dropped on 3.1.1.
fn acl_denials(driver: &str) {
    let (me, victim, monitor) = (
        Device::new("wm", "n1"),
        Device::new("wm", "n2"),
        Device::new("wm", "monitor"),
    );
    let server = TestServer::start(
        driver,
        &provision(
            &[product("wm", None)],
            &[&me, &victim, &monitor],
            &[monitor_rule(&monitor)],
        ),
        &[],
    );
    let theirs = format!("$oc/devices/{}/sys/commands/#", victim.id);
    let mine = format!("$oc/devices/{}/sys/commands/#", me.id);

    // mosquitto_sub, one filter.
    for (version, code) in [("mqttv311", 0x80), ("mqttv5", 0x87)] {
        let mut args = strs(&["-d", "-V", version, "-t", &theirs, "-q", "1", "-W", "5"]);
        args.extend(me.mosquitto());
        let out = run(
            format!("mosquitto_sub {version}"),
            server.mosquitto("mosquitto_sub", args),
            QUICK,
        );
        assert_eq!(printed_connack(&out), Some(0), "[{driver}]\n{out}");
        assert_eq!(
            support::printed_suback(&out),
            Some(vec![code]),
            "[{driver}] {version}\n{out}"
        );
    }
    // paho, a refused filter next to an allowed one.
    for (version, code) in [("311", 0x80), ("5", 0x87)] {
        let args = as_device(
            &me,
            &[
                "--version",
                version,
                "--topic",
                &theirs,
                "--topic",
                &mine,
                "--qos",
                "1",
                "--wait",
                "0",
            ],
        );
        let out = run(
            format!("paho subscribe {version}"),
            server.paho("subscribe", args),
            QUICK,
        );
        assert_eq!(
            out.event("suback")["codes"],
            json!([code, 1]),
            "[{driver}] MQTT {version}\n{out}"
        );
    }
    server.expect_metric("fleetgate_mqtt_acl_denied_total{action=\"subscribe\"}", 4.0);

    // Publications on another device's uplink topic, watched by a monitor that would see them
    // if they went through.
    let mut watch = watch_uplinks(&server, &monitor, 1);
    watch.wait_named("suback", QUICK);
    for (version, code) in [("5", 0x87), ("311", 0)] {
        let args = as_device(
            &me,
            &[
                "--version",
                version,
                "--topic",
                &victim.messages_up(),
                "--qos",
                "1",
                "--payload",
                "forged",
            ],
        );
        let out = run(
            format!("forged publication {version}"),
            server.paho("publish", args),
            QUICK,
        );
        assert_eq!(
            out.event("done")["puback_codes"],
            json!([code]),
            "[{driver}] MQTT {version}\n{out}"
        );
    }
    // Then one on its own topic: the first (and only) message the monitor sees.
    let args = as_device(
        &me,
        &[
            "--version",
            "311",
            "--topic",
            &me.messages_up(),
            "--qos",
            "1",
            "--payload",
            "genuine",
        ],
    );
    let out = run("genuine publication", server.paho("publish", args), QUICK);
    assert_eq!(
        out.event("done")["puback_codes"],
        json!([0]),
        "[{driver}]\n{out}"
    );
    let out = watch.wait_exit(QUICK);
    assert_eq!(
        out.payloads(),
        ["genuine"],
        "[{driver}] refused publications are dropped\n{out}"
    );
    server.expect_metric("fleetgate_mqtt_acl_denied_total{action=\"publish\"}", 2.0);
    server.stop();
}

// --- flow control ---------------------------------------------------------------------------

/// A QoS 1 publication over the device's byte quota gets PUBACK 0x97 on MQTT 5 (the connection
/// stays); MQTT 3.1.1 cannot be told, so its connection is closed.
fn byte_quota(driver: &str) {
    // 100 bytes/s: the burst keeps the configured 4:1 burst-to-rate proportion (4 MiB at 1 MiB/s)
    // = 400 bytes, and the bucket may go 400 bytes into debt. 1000 bytes is beyond both.
    let (server, d5, d3) = server_with_pair(driver, product("thin", Some((1000, 100))), "q", &[]);
    let big = |d: &Device, version: &str| {
        let args = as_device(
            d,
            &[
                "--version",
                version,
                "--topic",
                &d.messages_up(),
                "--qos",
                "1",
                "--payload-size",
                "1000",
                "--timeout",
                "5",
            ],
        );
        run(
            format!("1000 bytes, MQTT {version}"),
            server.paho("publish", args),
            QUICK,
        )
    };
    let out = big(&d5, "5");
    assert_eq!(
        out.event("done")["puback_codes"],
        json!([0x97]),
        "[{driver}]\n{out}"
    );
    let gone = out.event("disconnect");
    assert_eq!(
        (&gone["rc"], &gone["from_server"]),
        (&json!(0), &json!(false)),
        "[{driver}] the client closed\n{out}"
    );

    let out = big(&d3, "311");
    assert_eq!(out.event("done")["acked"], 0, "[{driver}]\n{out}");
    let gone = out.event("disconnect");
    assert_ne!(
        gone["rc"], 0,
        "[{driver}] the server closed the connection\n{out}"
    );

    server.expect_metric(
        "fleetgate_mqtt_throttled_total{kind=\"refused_quota\"}",
        2.0,
    );
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"throttled\"}",
        1.0,
    );
    server.stop();
}

/// A device that keeps sending over its product's message rate is first slowed down (its socket
/// is not read), then, after `engine.flow.max_throttle_secs`, disconnected: MQTT 5 with
/// DISCONNECT 0x96 (message rate too high), MQTT 3.1.1 by closing the connection.
fn throttle_message_rate(driver: &str) {
    let (server, d5, d3) = server_with_pair(
        driver,
        product("slow", Some((2, 1_000_000))),
        "r",
        &["engine.flow.max_throttle_secs=2"],
    );
    let outs = on_both_versions((&d5, &d3), Duration::from_secs(30), |version, d| {
        let topic = d.messages_up();
        let args = [
            "--version",
            version,
            "--topic",
            &topic,
            "--qos",
            "0",
            "--count",
            "200",
            "--wait-disconnect",
            "10",
        ];
        (
            format!("200 messages, MQTT {version}"),
            server.paho("publish", as_device(d, &args)),
        )
    });
    for (version, out) in &outs {
        let gone = out.event("disconnect");
        if *version == "5" {
            assert_eq!(
                (&gone["rc"], &gone["from_server"]),
                (&json!(0x96), &json!(true)),
                "[{driver}]\n{out}"
            );
        } else {
            assert_ne!(
                gone["rc"], 0,
                "[{driver}] the server closed the connection\n{out}"
            );
        }
    }
    server.wait_metric(
        "fleetgate_mqtt_throttled_total{kind=\"refused_rate\"}",
        "> 0",
        |v| v > 0.0,
    );
    server.expect_metric(
        "fleetgate_mqtt_connections_closed_total{reason=\"throttled\"}",
        2.0,
    );
    server.stop();
}

/// Beyond `engine.max_connections` a client is answered, not dropped: CONNACK "server busy"
/// (0x89) on MQTT 5, "server unavailable" (3) on 3.1.1; once a connection ends there is room
/// again.
fn connection_limit(driver: &str) {
    let devices: Vec<Device> = ["h1", "h2", "x5", "x3", "later"]
        .iter()
        .map(|n| Device::new("wm", n))
        .collect();
    let server = TestServer::start(
        driver,
        &provision(
            &[product("wm", None)],
            &devices.iter().collect::<Vec<_>>(),
            &[],
        ),
        &["engine.max_connections=2"],
    );
    let mut holders: Vec<Proc> = devices[..2]
        .iter()
        .map(|d| {
            let mut p = Proc::spawn(
                format!("holder {}", d.id),
                server.paho("connect", as_device(d, &["--version", "5", "--hold", "-1"])),
            );
            assert_eq!(p.wait_named("connack", QUICK)["rc"], 0, "[{driver}]");
            p
        })
        .collect();
    // paho reports a 3.1.1 return code as its MQTT 5 equivalent: 3 ("server unavailable") as
    // 0x88.
    for (d, version, code) in [(&devices[2], "5", 0x89), (&devices[3], "311", 0x88)] {
        let out = run(
            format!("over the limit, MQTT {version}"),
            server.paho("connect", as_device(d, &["--version", version])),
            QUICK,
        );
        assert_eq!(connack(&out).0, code, "[{driver}]\n{out}");
    }
    server.expect_metric(
        "fleetgate_mqtt_throttled_total{kind=\"max_connections\"}",
        2.0,
    );
    holders[0].kill9();
    // The server notices the closed socket and frees the place.
    let deadline = std::time::Instant::now() + QUICK;
    loop {
        let text = server.metrics_text();
        let open: f64 = text
            .lines()
            .filter(|l| l.starts_with("fleetgate_mqtt_connections{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if open <= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "[{driver}] still {open} connections\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run(
        "after one left",
        server.paho("connect", as_device(&devices[4], &["--version", "5"])),
        QUICK,
    );
    assert_eq!(connack(&out).0, 0, "[{driver}]\n{out}");
    holders[1].kill9();
    server.stop();
}

// --- QoS 1 across reconnects ------------------------------------------------------------------

/// Every QoS 1 message acknowledged to its publisher reaches a persistent QoS 1 subscriber
/// that keeps reconnecting meanwhile (at least once, [MQTT-4.3.2]).
fn no_loss_across_reconnects(driver: &str) {
    let (monitor, meter) = (Device::new("wm", "monitor"), Device::new("wm", "n1"));
    let server = TestServer::start(
        driver,
        &provision(
            &[product("wm", None)],
            &[&monitor, &meter],
            &[monitor_rule(&monitor)],
        ),
        &[],
    );
    let session = ["--version", "5", "--persistent", "--session-expiry", "600"];
    let monitor_args = |rest: &[&str]| {
        let mut a = as_device(&monitor, &session);
        a.extend(strs(rest));
        a
    };
    let out = run(
        "monitor subscribes",
        server.paho(
            "subscribe",
            monitor_args(&["--topic", &meter.messages_up(), "--qos", "1", "--wait", "0"]),
        ),
        QUICK,
    );
    assert_eq!(
        out.event("suback")["codes"],
        json!([1]),
        "[{driver}]\n{out}"
    );

    // 400 messages at about 100 a second (the default device rate) while the monitor comes and
    // goes.
    let total = 400;
    let args = as_device(
        &meter,
        &[
            "--version",
            "5",
            "--topic",
            &meter.messages_up(),
            "--qos",
            "1",
            "--count",
            &total.to_string(),
            "--interval",
            "0.01",
            "--payload",
            "m",
        ],
    );
    let mut publisher = Proc::spawn("publisher", server.paho("publish", args));
    let mut received = std::collections::BTreeSet::new();
    let mut reconnects = 0;
    while publisher.running() {
        let out = run(
            "monitor visit",
            server.paho(
                "subscribe",
                monitor_args(&["--count", "100000", "--wait", "0.1"]),
            ),
            QUICK,
        );
        received.extend(out.payloads());
        reconnects += 1;
    }
    let published = publisher.wait_exit(QUICK);
    assert_eq!(
        published.event("done")["acked"],
        total,
        "[{driver}]\n{published}"
    );
    let out = run(
        "monitor drains",
        server.paho(
            "subscribe",
            monitor_args(&["--count", "100000", "--wait", "2"]),
        ),
        QUICK,
    );
    received.extend(out.payloads());
    let missing: Vec<String> = (0..total)
        .map(|i| format!("m-{i}"))
        .filter(|p| !received.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "[{driver}] {} of {total} acknowledged QoS 1 messages never reached the persistent \
         subscriber ({reconnects} reconnects; undeliverable_total = {}): {missing:?}",
        missing.len(),
        server.metric("fleetgate_mqtt_undeliverable_total"),
    );
    server.stop();
}
