//! NB-IoT devices over CoAP/LwM2M against the real binary, on both drivers: registration and
//! the observe/notify report path into the shadow, asynchronous commands (immediate and
//! cached) through the API with their statuses, the durable command cache across a SIGKILL,
//! supersede and idempotency keys, hostile datagrams, and interop with libcoap's
//! `coap-client-notls` and aiocoap. Devices are the simulator of `fleetgate-loadtest`.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use fleetgate_loadtest::lwm2m::{CommandBehaviour, DeviceOptions, Report, SimDevice};
use serde_json::{Value, json};
use support::{TestServer, assert_error, python, run};

const DRIVERS: [&str; 2] = ["io_uring", "epoll"];

fn coap_product() -> Value {
    json!({
        "product_id": "nbwm",
        "name": "nb-water-meter",
        "protocol_type": "CoAP",
        "data_format": "binary",
        "codec": "watermeter-v1",
        "device_type": "WaterMeter",
        "service_capabilities": [{
            "service_id": "WaterMeter",
            "properties": [
                {"property_name": "battery_level", "data_type": "int", "required": false, "min": "0", "max": "100", "method": "R"},
                {"property_name": "signal_strength", "data_type": "int", "required": false, "min": "-140", "max": "0", "method": "R"},
                {"property_name": "meter_reading", "data_type": "int", "required": false, "min": "0", "max": "4294967295", "method": "R"},
                {"property_name": "valve", "data_type": "string", "required": false, "enum_list": ["OPEN", "CLOSED"], "method": "R"},
            ],
            "commands": [
                {"command_name": "SET_VALVE",
                 "paras": [{"para_name": "valve", "data_type": "string", "required": true, "enum_list": ["OPEN", "CLOSED"]}]},
                {"command_name": "SET_INTERVAL",
                 "paras": [{"para_name": "interval", "data_type": "int", "required": true, "min": "60", "max": "86400"}]},
            ],
        }],
    })
}

struct Setup {
    server: TestServer,
    admin: String,
    coap: SocketAddr,
}

fn setup(driver: &str, nodes: &[&str], settings: &[&str]) -> Setup {
    let server = TestServer::start_with_coap(driver, &json!({}), settings);
    let admin = server.admin_key();
    let (status, p) = server.call("POST", "/products", &admin, Some(&coap_product()));
    assert_eq!(status, 201, "{p}");
    for node in nodes {
        let (status, d) = server.call(
            "POST",
            "/devices",
            &admin,
            Some(&json!({"product_id": "nbwm", "node_id": node})),
        );
        assert_eq!(status, 201, "{d}");
    }
    let coap = SocketAddr::from(([127, 0, 0, 1], server.coap_port.unwrap()));
    Setup {
        server,
        admin,
        coap,
    }
}

fn command(s: &Setup, device: &str, body: Value) -> (u16, Value) {
    s.server.call(
        "POST",
        &format!("/devices/{device}/async-commands"),
        &s.admin,
        Some(&body),
    )
}

fn valve(open: bool, strategy: &str) -> Value {
    json!({"service_id": "WaterMeter", "command_name": "SET_VALVE",
           "paras": {"valve": if open { "OPEN" } else { "CLOSED" }},
           "send_strategy": strategy})
}

fn interval(secs: u32, strategy: &str) -> Value {
    json!({"service_id": "WaterMeter", "command_name": "SET_INTERVAL",
           "paras": {"interval": secs}, "send_strategy": strategy})
}

/// Polls a command until `pred` holds (at most 15 s) and returns it.
fn wait_command(
    s: &Setup,
    device: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, c) = s.server.call(
            "GET",
            &format!("/devices/{device}/async-commands/{id}"),
            &s.admin,
            None,
        );
        assert_eq!(status, 200, "{c}");
        if pred(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "{what}: {c}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |c| c["status"] == want
}

#[test]
fn a_device_registers_reports_and_answers_commands() {
    for driver in DRIVERS {
        let s = setup(driver, &["860000000000001"], &[]);
        let dev = SimDevice::register(s.coap, "860000000000001", DeviceOptions::fast())
            .unwrap_or_else(|e| panic!("[{driver}] register: {e:?}"));
        assert!(
            dev.wait_observed(Duration::from_secs(10)),
            "[{driver}] fleetgate observes /19/0/0 after the registration"
        );
        // A notification is a property report: it reaches the shadow.
        dev.notify(Report {
            battery: 87,
            signal: -95,
            reading: 12_345,
            valve_open: false,
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, shadow) = s.server.call(
                "GET",
                "/devices/nbwm_860000000000001/shadow",
                &s.admin,
                None,
            );
            let reported = &shadow["shadow"][0]["reported"]["properties"];
            if reported["meter_reading"] == 12_345 {
                assert_eq!(reported["valve"], "CLOSED", "[{driver}] {shadow}");
                assert_eq!(reported["battery_level"], 87, "[{driver}] {shadow}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{driver}] no report in the shadow: {shadow}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, d) = s
            .server
            .call("GET", "/devices/nbwm_860000000000001", &s.admin, None);
        assert_eq!(d["status"], "ONLINE", "[{driver}] {d}");

        // An immediate command to the awake device: SENT, then SUCCESSFUL from the
        // piggybacked response, decoded by the codec.
        let (status, c) = command(&s, "nbwm_860000000000001", valve(true, "immediately"));
        assert_eq!(status, 200, "[{driver}] {c}");
        let id = c["command_id"].as_str().unwrap().to_owned();
        let done = wait_command(
            &s,
            "nbwm_860000000000001",
            &id,
            "piggybacked result",
            status_is("SUCCESSFUL"),
        );
        assert_eq!(done["result"]["resultCode"], "SUCCESSFUL", "{done}");
        assert_eq!(
            done["result"]["resultDetail"]["paras"]["result"], "success",
            "{done}"
        );
        assert!(
            !done["delivered_time"].as_str().unwrap().is_empty(),
            "{done}"
        );
        let got = dev.wait_for_commands(1, Duration::from_secs(5)).unwrap();
        assert_eq!(got.len(), 1, "[{driver}]");
        assert_eq!(
            got[0].frame,
            vec![0x81, 1],
            "[{driver}] SET_VALVE OPEN on the wire"
        );
        assert_eq!(got[0].content_format, Some(42));

        // An empty ACK makes it DELIVERED; the separate response SUCCESSFUL or FAILED.
        dev.set_command_behaviour(CommandBehaviour::Separate {
            delay: Duration::from_millis(1500),
            result: 3,
        });
        let (_, c) = command(&s, "nbwm_860000000000001", interval(3600, "immediately"));
        let id = c["command_id"].as_str().unwrap().to_owned();
        wait_command(
            &s,
            "nbwm_860000000000001",
            &id,
            "empty ACK",
            status_is("DELIVERED"),
        );
        let failed = wait_command(
            &s,
            "nbwm_860000000000001",
            &id,
            "separate response",
            status_is("FAILED"),
        );
        assert_eq!(
            failed["result"]["resultDetail"]["result_code"], 3,
            "{failed}"
        );

        // A reset is FAILED.
        dev.set_command_behaviour(CommandBehaviour::Reset);
        let (_, c) = command(&s, "nbwm_860000000000001", valve(false, "immediately"));
        let id = c["command_id"].as_str().unwrap().to_owned();
        wait_command(
            &s,
            "nbwm_860000000000001",
            &id,
            "reset",
            status_is("FAILED"),
        );

        // Synchronous commands are for MQTT devices: a clear 400.
        assert_error(
            "sync command to a CoAP device",
            s.server.call(
                "POST",
                "/devices/nbwm_860000000000001/commands",
                &s.admin,
                Some(&json!({"service_id": "WaterMeter", "command_name": "SET_VALVE", "paras": {"valve": "OPEN"}})),
            ),
            400,
        );
        // A command the codec cannot encode is refused before it is queued.
        assert_error(
            "out-of-range para",
            command(&s, "nbwm_860000000000001", interval(5, "delay")),
            400,
        );
        dev.deregister().unwrap();
        s.server.stop();
    }
}

#[test]
fn cached_commands_survive_a_crash_and_go_out_in_order_when_the_device_wakes() {
    for driver in DRIVERS {
        let mut s = setup(
            driver,
            &["860000000000002"],
            &["engine.lwm2m.awake_window_secs=1"],
        );
        let dev = SimDevice::register(s.coap, "860000000000002", DeviceOptions::fast()).unwrap();
        assert!(dev.wait_observed(Duration::from_secs(10)));
        dev.sleep();
        // The awake window (1 s) passes: the device is asleep for fleetgate too.
        std::thread::sleep(Duration::from_millis(2500));
        let id = "nbwm_860000000000002";
        let (status, c) = command(&s, id, valve(true, "immediately"));
        assert_eq!(status, 200, "{c}");
        assert_eq!(
            c["status"], "FAILED",
            "[{driver}] immediate to a sleeping device: {c}"
        );

        let mut queued = Vec::new();
        for body in [
            valve(false, "delay"),
            interval(600, "delay"),
            valve(true, "delay"),
        ] {
            let (status, c) = command(&s, id, body);
            assert_eq!(status, 200, "{c}");
            assert_eq!(c["status"], "PENDING", "[{driver}] {c}");
            queued.push(c["command_id"].as_str().unwrap().to_owned());
        }
        let mut short = interval(7200, "delay");
        short["expire_time"] = json!(1);
        let (_, c) = command(&s, id, short);
        let expiring = c["command_id"].as_str().unwrap().to_owned();
        wait_command(&s, id, &expiring, "expiry", status_is("EXPIRED"));

        // SIGKILL: nothing is flushed on the way out. The three are in storage.
        s.server.kill_and_restart();
        let (_, list) = s.server.call(
            "GET",
            &format!("/devices/{id}/async-commands?status=PENDING"),
            &s.admin,
            None,
        );
        let pending: Vec<&str> = list["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["command_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            pending, queued,
            "[{driver}] pending after the restart: {list}"
        );

        // The device wakes from a new port (as after a NAT rebinding): the three go out one
        // at a time, in order, and the expired one never does.
        dev.wake().unwrap();
        for cid in &queued {
            wait_command(
                &s,
                id,
                cid,
                "delivered after the wake",
                status_is("SUCCESSFUL"),
            );
        }
        let got = dev.wait_for_commands(3, Duration::from_secs(10)).unwrap();
        let frames: Vec<Vec<u8>> = got.iter().map(|c| c.frame.clone()).collect();
        assert_eq!(
            frames,
            vec![vec![0x81, 0], vec![0x82, 0, 0, 2, 0x58], vec![0x81, 1]],
            "[{driver}] three commands, in order, nothing else"
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            dev.commands_received().len(),
            3,
            "[{driver}] the expired one was never sent"
        );
        let (_, e) = s.server.call(
            "GET",
            &format!("/devices/{id}/async-commands/{expiring}"),
            &s.admin,
            None,
        );
        assert_eq!(e["status"], "EXPIRED", "{e}");
        assert!(e["sent_time"].as_str().unwrap().is_empty(), "{e}");
        s.server.stop();
    }
}

#[test]
fn supersede_idempotency_cancel_and_limits() {
    let s = setup(
        "io_uring",
        &["860000000000003"],
        &["storage.max_pending_commands=3"],
    );
    let id = "nbwm_860000000000003";
    // The device never registered: delayed commands wait.
    let mut first = valve(true, "delay");
    first["supersede_key"] = json!("valve");
    let (_, a) = command(&s, id, first.clone());
    let (_, b) = command(&s, id, first);
    assert_eq!(b["status"], "PENDING");
    let a_id = a["command_id"].as_str().unwrap();
    let (_, a_now) = s.server.call(
        "GET",
        &format!("/devices/{id}/async-commands/{a_id}"),
        &s.admin,
        None,
    );
    assert_eq!(a_now["status"], "CANCELED", "superseded: {a_now}");

    let mut keyed = interval(900, "delay");
    keyed["idempotency_key"] = json!("req-42");
    let (_, x) = command(&s, id, keyed.clone());
    let (status, y) = command(&s, id, keyed);
    assert_eq!(status, 200);
    assert_eq!(
        x["command_id"], y["command_id"],
        "a repeated request returns the first command"
    );

    // Two pending now (the superseding one and the keyed one); the limit is 3.
    let (_, third) = command(&s, id, valve(false, "delay"));
    assert_eq!(third["status"], "PENDING");
    let body = assert_error(
        "beyond the pending limit",
        command(&s, id, valve(true, "delay")),
        409,
    );
    assert_eq!(body["error_code"], "FLEETGATE.TOO_MANY_PENDING_COMMANDS");

    let third_id = third["command_id"].as_str().unwrap();
    let (status, c) = s.server.call(
        "POST",
        &format!("/devices/{id}/async-commands/{third_id}/cancel"),
        &s.admin,
        None,
    );
    assert_eq!(
        (status, c["status"].as_str()),
        (200, Some("CANCELED")),
        "{c}"
    );
    assert_error(
        "cancel twice",
        s.server.call(
            "POST",
            &format!("/devices/{id}/async-commands/{third_id}/cancel"),
            &s.admin,
            None,
        ),
        409,
    );
    let (_, list) = s.server.call(
        "GET",
        &format!("/devices/{id}/async-commands?status=CANCELED"),
        &s.admin,
        None,
    );
    assert_eq!(list["commands"].as_array().unwrap().len(), 2, "{list}");
    for bad in [
        json!({"command_name": "SET_VALVE", "paras": {"valve": "OPEN"}, "send_strategy": "later"}),
        json!({"command_name": "SET_VALVE", "paras": {"valve": "OPEN"}, "send_strategy": "delay", "expire_time": 172801}),
        json!({"command_name": "SET_VALVE", "paras": {"valve": "OPEN"}, "send_strategy": "delay", "expire_time": 0}),
        json!({"command_name": "NOPE", "send_strategy": "delay"}),
        json!({"command_name": "SET_VALVE", "paras": {"valve": "OPEN"}, "send_strategy": "delay", "idempotency_key": "no spaces"}),
    ] {
        assert_error("bad request", command(&s, id, bad), 400);
    }
    assert_error(
        "unknown command id",
        s.server.call(
            "GET",
            &format!("/devices/{id}/async-commands/nope"),
            &s.admin,
            None,
        ),
        404,
    );
    s.server.stop();
}

#[test]
fn garbage_and_unknown_endpoints_get_clear_answers() {
    let s = setup("epoll", &["860000000000004"], &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // A confirmable header with a token length of 9: RST with the same message id.
    sock.send_to(&[0x49, 0x01, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9], s.coap)
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[0x70, 0x00, 0x12, 0x34], "RST for mid 0x1234");
    // Not CoAP at all, and not confirmable: dropped, counted.
    sock.send_to(b"\xff\xff", s.coap).unwrap();
    s.server.wait_metric(
        "fleetgate_coap_datagrams_rejected_total{reason=\"token_length\"}",
        "1",
        |v| v >= 1.0,
    );
    // An unknown endpoint and a frozen device are refused with 4.03.
    let err = SimDevice::register(s.coap, "999999999999999", DeviceOptions::fast()).unwrap_err();
    // 131 = 0x83 = 4.03 Forbidden.
    assert!(
        format!("{err:?}").contains("Code(131)") && format!("{err:?}").contains("unknown endpoint"),
        "{err:?}"
    );
    let (status, _) = s.server.call(
        "POST",
        "/devices/nbwm_860000000000004/freeze",
        &s.admin,
        None,
    );
    assert!(status == 200 || status == 204, "freeze: {status}");
    let err = SimDevice::register(s.coap, "860000000000004", DeviceOptions::fast()).unwrap_err();
    assert!(
        format!("{err:?}").contains("Code(131)") && format!("{err:?}").contains("frozen"),
        "{err:?}"
    );
    s.server.stop();
}

#[test]
fn libcoap_and_aiocoap_interoperate() {
    let s = setup("io_uring", &["860000000000005", "860000000000006"], &[]);
    let port = s.coap.port();
    // libcoap: discovery, then an LwM2M registration with a link-format body.
    let out = run(
        "coap-client-notls discovery",
        {
            let mut c = std::process::Command::new("coap-client-notls");
            c.args([
                "-m",
                "get",
                "-B",
                "5",
                &format!("coap://127.0.0.1:{port}/.well-known/core"),
            ]);
            c
        },
        Duration::from_secs(15),
    );
    assert!(out.stdout.contains("</rd>;rt=\"core.rd\""), "{out}");
    let out = run(
        "coap-client-notls register",
        {
            let mut c = std::process::Command::new("coap-client-notls");
            c.args([
                "-m",
                "post",
                "-B",
                "5",
                "-t",
                "40",
                "-e",
                "</1/0>,</3/0>,</19/0>,</19/1>",
                &format!("coap://127.0.0.1:{port}/rd?ep=860000000000005&lt=300&lwm2m=1.1&b=U"),
            ]);
            c
        },
        Duration::from_secs(15),
    );
    assert_eq!(out.code, Some(0), "{out}");
    s.server.wait_metric(
        "fleetgate_lwm2m_registrations_total{outcome=\"accepted\"}",
        "1",
        |v| v >= 1.0,
    );
    // aiocoap: a scripted register, update and de-register.
    let script = r#"
import asyncio, sys
from aiocoap import Context, Message, POST, DELETE
async def main(port):
    ctx = await Context.create_client_context()
    reg = Message(code=POST, uri=f"coap://127.0.0.1:{port}/rd?ep=860000000000006&lt=120&lwm2m=1.0&b=UQ",
                  payload=b"</1/0>,</3/0>,</19/0>", content_format=40)
    r = await ctx.request(reg).response
    print("register", r.code, "/".join(r.opt.location_path))
    loc = list(r.opt.location_path)
    u = await ctx.request(Message(code=POST, uri=f"coap://127.0.0.1:{port}/" + "/".join(loc))).response
    print("update", u.code)
    d = await ctx.request(Message(code=DELETE, uri=f"coap://127.0.0.1:{port}/" + "/".join(loc))).response
    print("deregister", d.code)
    # A long object list goes in Block1 blocks (aiocoap splits bodies over 1024 bytes).
    body = ",".join(f"</{o}/0>" for o in range(3, 400)).encode()
    big = Message(code=POST, uri=f"coap://127.0.0.1:{port}/rd?ep=860000000000006&lt=120&lwm2m=1.1&b=U",
                  payload=body[:4000], content_format=40)
    r = await ctx.request(big).response
    print("blockwise", len(body[:4000]), r.code)
    bad = await ctx.request(Message(code=POST, uri=f"coap://127.0.0.1:{port}/rd?lt=60")).response
    print("missing-ep", bad.code, bad.payload.decode())
asyncio.run(main(int(sys.argv[1])))
"#;
    let out = run(
        "aiocoap lwm2m script",
        {
            let mut c = std::process::Command::new(python());
            c.args(["-c", script, &port.to_string()]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("register 2.01 Created rd/"), "{out}");
    assert!(out.stdout.contains("update 2.04 Changed"), "{out}");
    assert!(out.stdout.contains("deregister 2.02 Deleted"), "{out}");
    assert!(out.stdout.contains("blockwise 3468 2.01 Created"), "{out}");
    assert!(out.stdout.contains("missing-ep 4.00 Bad Request"), "{out}");
    s.server.stop();
}
