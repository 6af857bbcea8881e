//! End-to-end tests of the application HTTP API: the real `fleetgate` binary, a real HTTP
//! client, and real MQTT devices (`mosquitto_pub`) connecting with the credentials the API
//! handed out. Needs `mosquitto-clients` (`.ci/deps test` installs it).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Device, Proc, TestServer, assert_error, printed_connack, product_body, run};

const QUICK: Duration = Duration::from_secs(15);

/// The CONNACK a device gets for a one-shot publish with its credentials.
fn connack(server: &TestServer, d: &Device) -> Option<u8> {
    let mut args: Vec<String> = ["-d", "-V", "mqttv311"].map(String::from).to_vec();
    args.extend(d.mosquitto());
    args.extend(["-t".into(), d.messages_up(), "-m".into(), "hi".into()]);
    let out = run(
        "mosquitto_pub",
        server.mosquitto("mosquitto_pub", args),
        QUICK,
    );
    printed_connack(&out)
}

/// Polls a device until `pred` holds on it (10 s at most).
fn wait_device(
    server: &TestServer,
    key: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, d) = server.call("GET", &format!("/devices/{id}"), key, None);
        assert_eq!(status, 200, "{d}");
        if pred(&d) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {d}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn authentication_is_required_and_checked() {
    let server = TestServer::start("io_uring", &json!({}), &[]);
    assert_error("no key", server.call("GET", "/products", "", None), 401);
    assert_error(
        "malformed key",
        server.call("GET", "/products", "nonsense", None),
        401,
    );
    let admin = server.admin_key();
    let forged = format!("{}x", &admin[..admin.len() - 1]);
    assert_error(
        "forged key",
        server.call("GET", "/products", &forged, None),
        401,
    );
    let (status, body) = server.call("GET", "/products", &admin, None);
    assert_eq!((status, &body["products"]), (200, &json!([])), "{body}");
    // Unknown routes and malformed ids answer JSON too.
    assert_error(
        "no route",
        server.call("GET", "/nothing-here", &admin, None),
        404,
    );
    assert_error(
        "bad id",
        server.call("GET", "/devices/a%20b", &admin, None),
        400,
    );
}

#[test]
fn products_devices_and_the_lifecycle() {
    let server = TestServer::start("io_uring", &json!({}), &[]);
    let admin = server.admin_key();

    // Products: created, validated, read back, listed, updated.
    let (status, p) = server.call("POST", "/products", &admin, Some(&product_body("wm")));
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["app_id"], "default");
    let mut bad = product_body("bad");
    bad["protocol_type"] = json!("CARRIER_PIGEON");
    assert_error(
        "bad product",
        server.call("POST", "/products", &admin, Some(&bad)),
        400,
    );
    assert_error(
        "duplicate product",
        server.call("POST", "/products", &admin, Some(&product_body("wm"))),
        409,
    );
    assert_error(
        "malformed body",
        server.call_raw(
            "POST",
            "/products",
            &admin,
            "application/json",
            Some("{\"product_id\":"),
        ),
        400,
    );
    assert_error(
        "not JSON",
        server.call_raw("POST", "/products", &admin, "text/plain", Some("hello")),
        415,
    );
    let (status, p) = server.call(
        "PUT",
        "/products/wm",
        &admin,
        Some(&json!({"description": "meters of the north"})),
    );
    assert_eq!(
        (status, &p["description"]),
        (200, &json!("meters of the north")),
        "{p}"
    );
    assert_eq!(p["service_capabilities"][0]["service_id"], "WaterMeter");

    // A device registered with a generated secret connects with the derived credentials.
    let (status, reg) = server.call(
        "POST",
        "/devices",
        &admin,
        Some(&json!({"product_id": "wm", "node_id": "n1", "device_name": "first"})),
    );
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["device_id"], "wm_n1");
    assert_eq!(reg["status"], "INACTIVE");
    let secret = reg["auth_info"]["secret"].as_str().unwrap().to_owned();
    let mut d = Device::new("wm", "n1");
    d.secret = secret;
    assert_eq!(connack(&server, &d), Some(0));
    wait_device(&server, &admin, "wm_n1", "status after a connect", |v| {
        v["status"] != "INACTIVE"
    });

    // A batch: good rows registered, bad rows reported, row by row.
    let (status, batch) = server.call(
        "POST",
        "/devices/batch",
        &admin,
        Some(&json!({"devices": [
            {"product_id": "wm", "node_id": "n2"},
            {"product_id": "wm", "node_id": "n1"},
            {"product_id": "nope", "node_id": "n3"},
            {"product_id": "wm", "node_id": "bad node!"},
            {"product_id": "wm", "node_id": "n4", "auth_info": {"secret": "s3cret-wm-n4"}},
        ]})),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        (batch["succeeded"].as_u64(), batch["failed"].as_u64()),
        (Some(2), Some(3)),
        "{batch}"
    );
    let codes: Vec<Value> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error_code"].clone())
        .collect();
    assert_eq!(
        codes,
        [
            Value::Null,
            json!("FLEETGATE.ALREADY_EXISTS"),
            json!("FLEETGATE.NOT_FOUND"),
            json!("FLEETGATE.BAD_REQUEST"),
            Value::Null
        ],
        "{batch}"
    );
    assert!(
        batch["results"][4]["device"]["auth_info"].is_null(),
        "a given secret is not echoed"
    );

    // Listing with filters.
    let ids = |q: &str| -> Vec<String> {
        let (status, body) = server.call("GET", &format!("/devices{q}"), &admin, None);
        assert_eq!(status, 200, "{q}: {body}");
        body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("?product_id=wm"), ["wm_n1", "wm_n2", "wm_n4"]);
    assert_eq!(ids("?node_id=n4"), ["wm_n4"]);
    assert_eq!(ids("?status=INACTIVE"), ["wm_n2", "wm_n4"]);
    assert_error(
        "bad status",
        server.call("GET", "/devices?status=ASLEEP", &admin, None),
        400,
    );
    let (_, page) = server.call("GET", "/devices?limit=2", &admin, None);
    let marker = page["next_marker"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, rest) = server.call(
        "GET",
        &format!("/devices?limit=2&marker={marker}"),
        &admin,
        None,
    );
    assert_eq!(rest["devices"][0]["device_id"], "wm_n4", "{rest}");

    // Freeze: disconnected and refused; unfreeze: back.
    let (status, frozen) = server.call("POST", "/devices/wm_n1/freeze", &admin, None);
    assert_eq!(
        (status, &frozen["status"]),
        (200, &json!("FROZEN")),
        "{frozen}"
    );
    assert_eq!(connack(&server, &d), Some(5));
    let (status, again) = server.call("POST", "/devices/wm_n1/freeze", &admin, None);
    assert_eq!(
        (status, &again["status"]),
        (200, &json!("FROZEN")),
        "freezing is idempotent"
    );
    let (status, _) = server.call("POST", "/devices/wm_n1/unfreeze", &admin, None);
    assert_eq!(status, 200);
    assert_error(
        "unfreeze a device that is not frozen",
        server.call("POST", "/devices/wm_n1/unfreeze", &admin, None),
        409,
    );
    assert_eq!(connack(&server, &d), Some(0));

    // Reset secret: the old one stops working at once.
    let (status, reset) = server.call(
        "POST",
        "/devices/wm_n1/action?action_id=resetSecret",
        &admin,
        Some(&json!({"secret": "brand-new-secret"})),
    );
    assert_eq!(status, 200, "{reset}");
    assert_eq!(connack(&server, &d), Some(4));
    d.secret = "brand-new-secret".into();
    assert_eq!(connack(&server, &d), Some(0));

    // Update, then delete; a product with devices cannot go.
    let (status, upd) = server.call(
        "PUT",
        "/devices/wm_n1",
        &admin,
        Some(&json!({"device_name": "renamed", "tags": [{"tag_key": "floor", "tag_value": "3"}]})),
    );
    assert_eq!(
        (status, &upd["device_name"]),
        (200, &json!("renamed")),
        "{upd}"
    );
    assert_eq!(ids("?tag_key=floor&tag_value=3"), ["wm_n1"]);
    assert_error(
        "unknown field",
        server.call(
            "PUT",
            "/devices/wm_n1",
            &admin,
            Some(&json!({"product_id": "x"})),
        ),
        400,
    );
    assert_error(
        "product in use",
        server.call("DELETE", "/products/wm", &admin, None),
        409,
    );
    let (status, _) = server.call("DELETE", "/devices/wm_n1", &admin, None);
    assert_eq!(status, 204);
    assert_error(
        "deleted",
        server.call("GET", "/devices/wm_n1", &admin, None),
        404,
    );
    assert_eq!(connack(&server, &d), Some(4));
}

#[test]
fn applications_see_only_their_own_resources() {
    let server = TestServer::start("io_uring", &json!({}), &[]);
    let admin = server.admin_key();
    let (status, created) =
        server.call("POST", "/apps", &admin, Some(&json!({"name": "tenant-b"})));
    assert_eq!(status, 201, "{created}");
    let other = created["api_key"]["api_key"].as_str().unwrap().to_owned();
    let other_app = created["app"]["app_id"].as_str().unwrap().to_owned();
    assert_error(
        "same name",
        server.call("POST", "/apps", &admin, Some(&json!({"name": "tenant-b"}))),
        409,
    );

    let (status, _) = server.call("POST", "/products", &admin, Some(&product_body("wm")));
    assert_eq!(status, 201);
    let (status, _) = server.call(
        "POST",
        "/devices",
        &admin,
        Some(&json!({"product_id": "wm", "node_id": "n1"})),
    );
    assert_eq!(status, 201);

    // The other application sees nothing of ours and cannot touch it.
    let (_, list) = server.call("GET", "/devices", &other, None);
    assert_eq!(list["devices"], json!([]), "{list}");
    assert_error(
        "read",
        server.call("GET", "/devices/wm_n1", &other, None),
        404,
    );
    assert_error(
        "product",
        server.call("GET", "/products/wm", &other, None),
        404,
    );
    assert_error(
        "register on our product",
        server.call(
            "POST",
            "/devices",
            &other,
            Some(&json!({"product_id": "wm", "node_id": "x"})),
        ),
        404,
    );
    assert_error(
        "freeze",
        server.call("POST", "/devices/wm_n1/freeze", &other, None),
        404,
    );
    assert_error(
        "delete",
        server.call("DELETE", "/devices/wm_n1", &other, None),
        404,
    );
    assert_error(
        "claim another app_id",
        server.call(
            "POST",
            "/products",
            &other,
            Some(&{
                let mut p = product_body("theirs");
                p["app_id"] = json!("default");
                p
            }),
        ),
        403,
    );
    assert_error("admin only", server.call("GET", "/apps", &other, None), 403);
    assert_error(
        "not its keys",
        server.call("GET", "/apps/default/keys", &other, None),
        404,
    );

    // Its own world works, and its keys are its own to manage.
    let (status, p) = server.call("POST", "/products", &other, Some(&product_body("theirs")));
    assert_eq!((status, &p["app_id"]), (201, &json!(other_app)), "{p}");
    let (_, ours) = server.call("GET", "/products", &admin, None);
    assert_eq!(ours["products"].as_array().unwrap().len(), 1, "{ours}");
    let (status, second) = server.call("POST", &format!("/apps/{other_app}/keys"), &other, None);
    assert_eq!(status, 201, "{second}");
    let second_key = second["api_key"].as_str().unwrap().to_owned();
    let key_id = second["key_id"].as_str().unwrap().to_owned();
    let (status, _) = server.call("GET", "/products", &second_key, None);
    assert_eq!(status, 200);
    let (status, _) = server.call(
        "DELETE",
        &format!("/apps/{other_app}/keys/{key_id}"),
        &other,
        None,
    );
    assert_eq!(status, 204);
    assert_error(
        "revoked",
        server.call("GET", "/products", &second_key, None),
        401,
    );
    // Listing keys never shows their text.
    let (_, keys) = server.call("GET", &format!("/apps/{other_app}/keys"), &admin, None);
    assert!(!keys.to_string().contains(&other), "{keys}");
}

/// A device (paho) that reports and answers, driven through the API: the shadow follows its
/// reports, commands and property calls come back with its answers, desired values and
/// messages reach it, and an offline or silent device gives distinct errors.
#[test]
fn a_device_reports_and_answers_the_platform() {
    let server = TestServer::start("io_uring", &json!({}), &["api.sync_timeout_secs=2"]);
    let admin = server.admin_key();
    let (status, _) = server.call("POST", "/products", &admin, Some(&product_body("wm")));
    assert_eq!(status, 201);
    let (d, quiet) = (Device::new("wm", "n1"), Device::new("wm", "n2"));
    for dev in [&d, &quiet] {
        let (status, body) = server.call(
            "POST",
            "/devices",
            &admin,
            Some(&json!({"product_id": "wm", "node_id": dev.node, "auth_info": {"secret": dev.secret}})),
        );
        assert_eq!(status, 201, "{body}");
    }
    let command =
        json!({"service_id": "WaterMeter", "command_name": "ON_OFF", "paras": {"value": "ON"}});
    let body = assert_error(
        "offline",
        server.call("POST", "/devices/wm_n1/commands", &admin, Some(&command)),
        409,
    );
    assert_eq!(body["error_code"], "FLEETGATE.DEVICE_OFFLINE");

    let mut args = d.paho();
    args.extend([
        "--report".to_owned(),
        json!({"services": [{"service_id": "WaterMeter", "properties": {"level": 42}}]})
            .to_string(),
        "--properties".to_owned(),
        json!({"WaterMeter": {"level": 42}}).to_string(),
    ]);
    let mut device = Proc::spawn("paho device", server.paho("device", args));
    device.wait_named("ready", QUICK);

    // The report lands in the shadow.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, shadow) = server.call("GET", "/devices/wm_n1/shadow", &admin, None);
        assert_eq!(status, 200, "{shadow}");
        if shadow["shadow"][0]["reported"]["properties"]["level"] == 42 {
            break;
        }
        assert!(Instant::now() < deadline, "no reported level in {shadow}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A command, checked against the model, answered by the device.
    let (status, answer) = server.call("POST", "/devices/wm_n1/commands", &admin, Some(&command));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["result_code"], 0, "{answer}");
    assert_eq!(
        answer["response"]["paras"]["command_name"], "ON_OFF",
        "{answer}"
    );
    assert!(answer["command_id"].as_str().is_some_and(|c| !c.is_empty()));
    let mut bad = command.clone();
    bad["paras"]["value"] = json!("MAYBE");
    assert_error(
        "not in enum_list",
        server.call("POST", "/devices/wm_n1/commands", &admin, Some(&bad)),
        400,
    );
    let mut unknown = command.clone();
    unknown["command_name"] = json!("SELF_DESTRUCT");
    assert_error(
        "unknown command",
        server.call("POST", "/devices/wm_n1/commands", &admin, Some(&unknown)),
        400,
    );

    // Property set, then get, both answered by the device.
    let set = json!({"services": [{"service_id": "WaterMeter", "properties": {"level": 55}}]});
    let (status, answer) = server.call("PUT", "/devices/wm_n1/properties", &admin, Some(&set));
    assert_eq!(
        (status, &answer["response"]["result_code"]),
        (200, &json!(0)),
        "{answer}"
    );
    let out_of_range =
        json!({"services": [{"service_id": "WaterMeter", "properties": {"level": 500}}]});
    assert_error(
        "range",
        server.call(
            "PUT",
            "/devices/wm_n1/properties",
            &admin,
            Some(&out_of_range),
        ),
        400,
    );
    let (status, answer) = server.call(
        "GET",
        "/devices/wm_n1/properties?service_id=WaterMeter",
        &admin,
        None,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["response"]["services"][0]["properties"]["level"], 55,
        "{answer}"
    );

    // Desired values are pushed to the online device as a property set.
    let desired = json!({"shadow": [{"service_id": "WaterMeter", "desired": {"level": 77}}]});
    let (status, shadow) = server.call("PUT", "/devices/wm_n1/shadow", &admin, Some(&desired));
    assert_eq!(status, 200, "{shadow}");
    assert_eq!(
        shadow["shadow"][0]["desired"]["properties"]["level"], 77,
        "{shadow}"
    );
    device.wait_event("the desired push", QUICK, |e| {
        e["topic"]
            .as_str()
            .is_some_and(|t| t.contains("/sys/properties/set/request_id="))
            && e["payload"].as_str().is_some_and(|p| p.contains("77"))
    });
    let stale =
        json!({"shadow": [{"service_id": "WaterMeter", "desired": {"level": 1}, "version": 0}]});
    assert_error(
        "stale version",
        server.call("PUT", "/devices/wm_n1/shadow", &admin, Some(&stale)),
        409,
    );
    let bad_key = json!({"shadow": [{"service_id": "WaterMeter", "desired": {"a.b": 1}}]});
    assert_error(
        "bad key",
        server.call("PUT", "/devices/wm_n1/shadow", &admin, Some(&bad_key)),
        400,
    );

    // A message down reaches it.
    let (status, sent) = server.call(
        "POST",
        "/devices/wm_n1/messages",
        &admin,
        Some(&json!({"name": "greeting", "message": "HelloWorld"})),
    );
    assert_eq!(status, 201, "{sent}");
    device.wait_event("the message", QUICK, |e| {
        e["topic"] == "$oc/devices/wm_n1/sys/messages/down"
            && e["payload"]
                .as_str()
                .is_some_and(|p| p.contains("HelloWorld"))
    });

    // A device that never answers: a timeout, distinct from offline.
    let mut args = quiet.paho();
    args.push("--silent".into());
    let mut silent = Proc::spawn("silent device", server.paho("device", args));
    silent.wait_named("ready", QUICK);
    let body = assert_error(
        "timeout",
        server.call("POST", "/devices/wm_n2/commands", &admin, Some(&command)),
        504,
    );
    assert_eq!(body["error_code"], "FLEETGATE.DEVICE_TIMEOUT");
    silent.kill9();
    device.kill9();
}

#[test]
fn cached_commands_reach_an_mqtt_device_when_it_connects() {
    let server = TestServer::start("epoll", &json!({}), &[]);
    let admin = server.admin_key();
    let (status, _) = server.call("POST", "/products", &admin, Some(&product_body("wm")));
    assert_eq!(status, 201);
    let d = Device::new("wm", "n1");
    let (status, body) = server.call(
        "POST",
        "/devices",
        &admin,
        Some(&json!({"product_id": "wm", "node_id": d.node, "auth_info": {"secret": d.secret}})),
    );
    assert_eq!(status, 201, "{body}");
    // Offline: an immediate command fails at once, delayed ones wait.
    let command = |strategy: &str, value: &str| {
        json!({"service_id": "WaterMeter", "command_name": "ON_OFF", "paras": {"value": value},
               "send_strategy": strategy})
    };
    let (status, now) = server.call(
        "POST",
        "/devices/wm_n1/async-commands",
        &admin,
        Some(&command("immediately", "ON")),
    );
    assert_eq!(
        (status, now["status"].as_str()),
        (200, Some("FAILED")),
        "{now}"
    );
    let mut ids = Vec::new();
    for value in ["ON", "OFF"] {
        let (status, c) = server.call(
            "POST",
            "/devices/wm_n1/async-commands",
            &admin,
            Some(&command("delay", value)),
        );
        assert_eq!(
            (status, c["status"].as_str()),
            (200, Some("PENDING")),
            "{c}"
        );
        ids.push(c["command_id"].as_str().unwrap().to_owned());
    }
    // The device connects: both go out, one after the other, and its answers settle them.
    let mut device = Proc::spawn("paho device", server.paho("device", d.paho()));
    device.wait_named("ready", QUICK);
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, c) = server.call(
                "GET",
                &format!("/devices/wm_n1/async-commands/{id}"),
                &admin,
                None,
            );
            if c["status"] == "SUCCESSFUL" {
                assert_eq!(c["result"]["resultDetail"]["result_code"], 0, "{c}");
                break;
            }
            assert!(Instant::now() < deadline, "not answered: {c}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let values: Vec<String> = device
        .events()
        .iter()
        .filter(|e| {
            e["event"] == "message"
                && e["topic"]
                    .as_str()
                    .is_some_and(|t| t.contains("/sys/commands/request_id="))
        })
        .filter_map(|e| serde_json::from_str::<Value>(e["payload"].as_str()?).ok())
        .map(|p| p["paras"]["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        values,
        ["ON", "OFF"],
        "in creation order: {:?}",
        device.events()
    );
    device.kill9();
    server.stop();
}
