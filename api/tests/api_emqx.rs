//! End-to-end tests of the EMQX-style integration operations (spec/app-side.md §10): the real
//! `fleetgate` binary, its HTTP API, and real MQTT 5 devices (`paho_client.py`) whose
//! sessions the API lists, kicks, subscribes, publishes to and locks out.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Device, Proc, TestServer, assert_error, run};

const QUICK: Duration = Duration::from_secs(15);

fn ok(what: &str, (status, body): (u16, Value), expected: u16) -> Value {
    assert_eq!(status, expected, "{what}: {body}");
    body
}

/// A product `wm` and devices `wm_n1`, `wm_n2` registered through the API.
fn setup(server: &TestServer, key: &str) -> (Device, Device) {
    let product = json!({
        "product_id": "wm", "name": "product-wm", "protocol_type": "MQTT",
        "data_format": "json", "device_type": "WaterMeter",
    });
    ok(
        "product",
        server.call("POST", "/products", key, Some(&product)),
        201,
    );
    let (a, b) = (Device::new("wm", "n1"), Device::new("wm", "n2"));
    for d in [&a, &b] {
        let body =
            json!({"product_id": "wm", "node_id": d.node, "auth_info": {"secret": d.secret}});
        ok(
            "device",
            server.call("POST", "/devices", key, Some(&body)),
            201,
        );
    }
    (a, b)
}

/// A connected MQTT 5 device that reports every downlink.
fn online(server: &TestServer, d: &Device) -> Proc {
    let mut args = d.paho();
    args.extend(["--version", "5", "--wait", "60"].map(String::from));
    let mut p = Proc::spawn(format!("device {}", d.id), server.paho("device", args));
    p.wait_named("ready", QUICK);
    p
}

/// The CONNACK code a one-shot MQTT 5 connect with `d`'s credentials gets.
fn connack(server: &TestServer, d: &Device) -> i64 {
    let mut args = d.paho();
    args.extend(["--version", "5"].map(String::from));
    let out = run("connect", server.paho("connect", args), QUICK);
    out.event("connack")["rc"].as_i64().unwrap()
}

fn messages_on(p: &Proc, topic: &str) -> Vec<String> {
    p.events()
        .into_iter()
        .filter(|e| e["event"] == "message" && e["topic"] == topic)
        .map(|e| e["payload"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn publish(server: &TestServer, key: &str, body: Value) -> Value {
    ok(
        "publish",
        server.call("POST", "/publish", key, Some(&body)),
        200,
    )
}

/// Polls `GET path` until `pred` holds (10 s at most).
fn wait_for(server: &TestServer, key: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = server.call("GET", path, key, None);
        if status == 200 && pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "GET {path}: {status} {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sessions_subscriptions_publications_and_acl_rules() {
    let server = TestServer::start("io_uring", &json!({}), &[]);
    let key = server.admin_key();
    let (d1, _d2) = setup(&server, &key);
    let mut dev = online(&server, &d1);

    // Listing and lookup.
    let clients = ok("clients", server.call("GET", "/clients", &key, None), 200);
    let list = clients["clients"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{clients}");
    let c = &list[0];
    assert_eq!(
        (
            &c["device_id"],
            &c["product_id"],
            &c["proto_ver"],
            &c["ip_address"]
        ),
        (
            &json!("wm_n1"),
            &json!("wm"),
            &json!(5),
            &json!("127.0.0.1")
        ),
        "{c}"
    );
    assert!(c["client_id"].as_str().unwrap().starts_with("wm_n1_0_0_"));
    assert!(c["connected_at"].as_i64().unwrap() > 0);
    for (query, n) in [
        ("?product_id=wm&ip=127.0.0.1", 1),
        ("?client_id=wm_n1", 1),
        ("?ip=10.1.2.3", 0),
        ("?marker=wm_n1", 0),
        ("?status=online&limit=1", 1),
    ] {
        let page = ok(
            query,
            server.call("GET", &format!("/clients{query}"), &key, None),
            200,
        );
        assert_eq!(
            page["clients"].as_array().unwrap().len(),
            n,
            "{query}: {page}"
        );
    }
    assert_error(
        "bad ip",
        server.call("GET", "/clients?ip=nope", &key, None),
        400,
    );
    assert_error(
        "bad status",
        server.call("GET", "/clients?status=offline", &key, None),
        400,
    );
    assert_error(
        "unknown filter",
        server.call("GET", "/clients?x=1", &key, None),
        400,
    );
    let conn = ok(
        "connection",
        server.call("GET", "/devices/wm_n1/connection", &key, None),
        200,
    );
    assert_eq!(
        (&conn["online"], &conn["keepalive"]),
        (&json!(true), &json!(60)),
        "{conn}"
    );
    let off = ok(
        "offline connection",
        server.call("GET", "/devices/wm_n2/connection", &key, None),
        200,
    );
    assert_eq!(off["online"], false, "{off}");

    // Statistics.
    let stats = ok("stats", server.call("GET", "/stats", &key, None), 200);
    assert_eq!(
        (
            &stats["connections"],
            &stats["online_devices"],
            &stats["per_product"]
        ),
        (&json!(1), &json!(1), &json!({"wm": 1})),
        "{stats}"
    );
    assert!(stats["messages_sent"].is_u64() && stats["bytes_received"].as_u64().unwrap() > 0);

    // A custom topic reaches the device only once it is subscribed on its behalf.
    let custom = "$oc/devices/wm_n1/user/cfg";
    let p = publish(
        &server,
        &key,
        json!({"topic": custom, "payload": "early", "qos": 1}),
    );
    assert_eq!(p["deliveries"], 0, "{p}");
    let sub = ok(
        "subscribe",
        server.call(
            "POST",
            "/devices/wm_n1/subscriptions",
            &key,
            Some(&json!({"topic": "$oc/devices/wm_n1/user/#", "qos": 1})),
        ),
        200,
    );
    assert_eq!(
        (&sub["qos"], &sub["replaced"]),
        (&json!(1), &json!(false)),
        "{sub}"
    );
    let p = publish(
        &server,
        &key,
        json!({"topic": custom, "payload": "aGVsbG8=", "encoding": "base64", "qos": 1}),
    );
    assert_eq!(p["deliveries"], 1, "{p}");
    dev.wait_event("the custom-topic message", QUICK, |e| {
        e["event"] == "message" && e["topic"] == custom && e["payload"] == "hello"
    });
    let stats = ok("stats", server.call("GET", "/stats", &key, None), 200);
    assert_eq!(stats["subscriptions"], 1, "{stats}");
    ok(
        "unsubscribe",
        server.call(
            "DELETE",
            "/devices/wm_n1/subscriptions?topic=%24oc%2Fdevices%2Fwm_n1%2Fuser%2F%23",
            &key,
            None,
        ),
        204,
    );
    assert_error(
        "unsubscribed twice",
        server.call(
            "DELETE",
            "/devices/wm_n1/subscriptions?topic=%24oc%2Fdevices%2Fwm_n1%2Fuser%2F%23",
            &key,
            None,
        ),
        404,
    );
    let p = publish(&server, &key, json!({"topic": custom, "payload": "late"}));
    assert_eq!(p["deliveries"], 0, "{p}");

    // The ACL refuses another device's tree; invalid filters and offline devices are told apart.
    let foreign = json!({"topic": "$oc/devices/wm_n2/sys/messages/up", "qos": 0});
    assert_error(
        "acl",
        server.call("POST", "/devices/wm_n1/subscriptions", &key, Some(&foreign)),
        403,
    );
    assert_error(
        "invalid filter",
        server.call(
            "POST",
            "/devices/wm_n1/subscriptions",
            &key,
            Some(&json!({"topic": "a/#/b"})),
        ),
        400,
    );
    assert_error(
        "bad qos",
        server.call(
            "POST",
            "/devices/wm_n1/subscriptions",
            &key,
            Some(&json!({"topic": "$oc/devices/wm_n1/user/x", "qos": 3})),
        ),
        400,
    );
    let body = assert_error(
        "offline",
        server.call("POST", "/devices/wm_n2/subscriptions", &key, Some(&foreign)),
        409,
    );
    assert_eq!(body["error_code"], "FLEETGATE.DEVICE_OFFLINE");
    let batch = ok(
        "subscribe batch",
        server.call(
            "POST",
            "/devices/wm_n1/subscriptions/batch",
            &key,
            Some(&json!([{"topic": "$oc/devices/wm_n1/user/a/#"}, foreign, {"nope": 1}])),
        ),
        200,
    );
    assert_eq!(
        (&batch["succeeded"], &batch["failed"]),
        (&json!(1), &json!(2)),
        "{batch}"
    );
    assert_eq!(
        batch["results"][1]["error_code"], "FLEETGATE.FORBIDDEN",
        "{batch}"
    );

    // An ACL rule added through the API applies to the live session at once.
    let rule = ok(
        "acl rule",
        server.call(
            "POST",
            "/acl-rules",
            &key,
            Some(&json!({
                "scope": {"type": "device_id", "value": "wm_n1"},
                "topic": "$oc/devices/+/sys/messages/up",
                "action": "subscribe", "access": "allow", "priority": 5,
            })),
        ),
        201,
    );
    let rule_id = rule["acl_rule_id"].as_str().unwrap().to_owned();
    assert_eq!(rule["app_id"], "default");
    ok(
        "granted by the rule",
        server.call("POST", "/devices/wm_n1/subscriptions", &key, Some(&foreign)),
        200,
    );
    let up = "$oc/devices/wm_n2/sys/messages/up";
    let p = publish(&server, &key, json!({"topic": up, "payload": "routed"}));
    assert_eq!(p["deliveries"], 1, "{p}");
    dev.wait_event("the routed message", QUICK, |e| {
        e["event"] == "message" && e["topic"] == up
    });
    let rules = ok(
        "acl rules",
        server.call("GET", "/acl-rules", &key, None),
        200,
    );
    assert_eq!(rules["acl_rules"].as_array().unwrap().len(), 1, "{rules}");
    let path = format!("/acl-rules/{rule_id}");
    ok("read rule", server.call("GET", &path, &key, None), 200);
    let changed = ok(
        "replace rule",
        server.call(
            "PUT",
            &path,
            &key,
            Some(&json!({
                "scope": {"type": "device_id", "value": "wm_n1"},
                "topic": "$oc/devices/+/sys/messages/up",
                "action": "subscribe", "access": "deny", "priority": 5,
            })),
        ),
        200,
    );
    assert_eq!(changed["access"], "deny");
    assert_error(
        "denied by the replaced rule",
        server.call("POST", "/devices/wm_n1/subscriptions", &key, Some(&foreign)),
        403,
    );
    assert_error(
        "invalid rule",
        server.call(
            "POST",
            "/acl-rules",
            &key,
            Some(&json!({"scope": {"type": "all"}, "topic": "a/#/b", "action": "all", "access": "allow"})),
        ),
        400,
    );
    ok("delete rule", server.call("DELETE", &path, &key, None), 204);
    assert_error("deleted rule", server.call("GET", &path, &key, None), 404);

    // Batch publication: results item by item.
    let batch = ok(
        "publish batch",
        server.call(
            "POST",
            "/publish/batch",
            &key,
            Some(&json!([
                {"topic": "$oc/devices/wm_n1/sys/messages/down", "payload": "one"},
                {"topic": "elsewhere/topic", "payload": "two"},
                {"topic": "$oc/devices/wm_n1/sys/messages/down", "payload": "x", "retain": true},
                {"topic": "$oc/devices/wm_n1/sys/messages/down", "payload": "%", "encoding": "base64"},
            ])),
        ),
        200,
    );
    assert_eq!(
        (&batch["succeeded"], &batch["failed"]),
        (&json!(1), &json!(3)),
        "{batch}"
    );
    assert_eq!(batch["results"][0]["deliveries"], 1, "{batch}");
    assert_eq!(
        batch["results"][1]["error_code"], "FLEETGATE.FORBIDDEN",
        "{batch}"
    );
    assert_eq!(
        batch["results"][2]["error_code"], "FLEETGATE.BAD_REQUEST",
        "{batch}"
    );
    dev.wait_event("the batch message", QUICK, |e| {
        e["event"] == "message" && e["payload"] == "one"
    });
    assert_error(
        "retain",
        server.call(
            "POST",
            "/publish",
            &key,
            Some(&json!({"topic": "$oc/devices/wm_n1/sys/messages/down", "retain": true})),
        ),
        400,
    );
    assert_error(
        "unknown field",
        server.call(
            "POST",
            "/publish",
            &key,
            Some(&json!({"topic": "t", "bogus": 1})),
        ),
        400,
    );
    assert_error(
        "empty batch",
        server.call("POST", "/publish/batch", &key, Some(&json!([]))),
        400,
    );
    assert_eq!(
        messages_on(&dev, custom),
        ["hello"],
        "nothing after the unsubscription"
    );

    // Kick: the device hears "administrative action", the connection is gone.
    ok(
        "kick",
        server.call("DELETE", "/devices/wm_n1/connection", &key, None),
        204,
    );
    let gone = dev.wait_named("disconnect", QUICK);
    assert_eq!(gone["rc"], 152, "{gone}");
    wait_for(&server, &key, "/devices/wm_n1/connection", |v| {
        v["online"] == false
    });
    assert_error(
        "kick offline",
        server.call("DELETE", "/devices/wm_n1/connection", &key, None),
        404,
    );
}

#[test]
fn credentials_and_other_applications() {
    let server = TestServer::start("io_uring", &json!({}), &[]);
    let key = server.admin_key();
    let (d1, _) = setup(&server, &key);
    let mut dev = online(&server, &d1);

    // Another application sees none of it.
    let created = ok(
        "app",
        server.call("POST", "/apps", &key, Some(&json!({"name": "tenant-b"}))),
        201,
    );
    let other = created["api_key"]["api_key"].as_str().unwrap().to_owned();
    let clients = ok("clients", server.call("GET", "/clients", &other, None), 200);
    assert_eq!(clients["clients"], json!([]), "{clients}");
    for (method, path, body) in [
        ("GET", "/devices/wm_n1/connection", None),
        ("DELETE", "/devices/wm_n1/connection", None),
        (
            "POST",
            "/devices/wm_n1/subscriptions",
            Some(json!({"topic": "$oc/devices/wm_n1/user/#"})),
        ),
        ("DELETE", "/devices/wm_n1/subscriptions?topic=x", None),
        ("GET", "/devices/wm_n1/credential", None),
        (
            "PUT",
            "/devices/wm_n1/credential",
            Some(json!({"secret": "stolen-secret-1"})),
        ),
        ("DELETE", "/devices/wm_n1/credential", None),
    ] {
        assert_error(path, server.call(method, path, &other, body.as_ref()), 404);
    }
    assert_error(
        "foreign publish",
        server.call(
            "POST",
            "/publish",
            &other,
            Some(&json!({"topic": "$oc/devices/wm_n1/sys/messages/down", "payload": "x"})),
        ),
        403,
    );
    let stats = ok("stats", server.call("GET", "/stats", &other, None), 200);
    assert_eq!(
        (&stats["online_devices"], &stats["per_product"]),
        (&json!(0), &json!({})),
        "{stats}"
    );
    let rule = ok(
        "admin's rule",
        server.call(
            "POST",
            "/acl-rules",
            &key,
            Some(&json!({"acl_rule_id": "mine", "scope": {"type": "all"},
                         "topic": "x/#", "action": "all", "access": "allow"})),
        ),
        201,
    );
    assert_eq!(rule["acl_rule_id"], "mine");
    let theirs = ok(
        "their rules",
        server.call("GET", "/acl-rules", &other, None),
        200,
    );
    assert_eq!(theirs["acl_rules"], json!([]), "{theirs}");
    assert_error(
        "their view",
        server.call("GET", "/acl-rules/mine", &other, None),
        404,
    );
    assert_error(
        "their delete",
        server.call("DELETE", "/acl-rules/mine", &other, None),
        404,
    );
    assert!(dev.running(), "the device is untouched");
    ok(
        "still online",
        server.call("GET", "/devices/wm_n1/connection", &key, None),
        200,
    );

    // The credential: never shown back; a new secret kicks, and the old one no longer works.
    let cred = ok(
        "credential",
        server.call("GET", "/devices/wm_n1/credential", &key, None),
        200,
    );
    assert_eq!(
        cred,
        json!({"device_id": "wm_n1", "auth_type": "SECRET", "credential_set": true})
    );
    let set = ok(
        "new secret",
        server.call(
            "PUT",
            "/devices/wm_n1/credential",
            &key,
            Some(&json!({"secret": "brand-new-secret"})),
        ),
        200,
    );
    assert_eq!(set["kicked"], true, "{set}");
    assert!(
        set.get("secret").is_none(),
        "a given secret is not echoed: {set}"
    );
    dev.wait_named("disconnect", QUICK);
    assert_ne!(connack(&server, &d1), 0, "the old secret");
    let mut renewed = d1.clone();
    renewed.secret = "brand-new-secret".into();
    assert_eq!(connack(&server, &renewed), 0, "the new secret");
    let generated = ok(
        "generated secret, no kick",
        server.call("PUT", "/devices/wm_n1/credential?kick=false", &key, None),
        200,
    );
    assert_eq!(generated["kicked"], false, "{generated}");
    renewed.secret = generated["secret"].as_str().unwrap().to_owned();
    assert_eq!(connack(&server, &renewed), 0, "the generated secret");
    assert_error(
        "short secret",
        server.call(
            "PUT",
            "/devices/wm_n1/credential",
            &key,
            Some(&json!({"secret": "short"})),
        ),
        400,
    );

    // Revoked: the device cannot connect at all.
    ok(
        "revoke",
        server.call("DELETE", "/devices/wm_n1/credential", &key, None),
        204,
    );
    assert_ne!(connack(&server, &renewed), 0, "no credential");
    let cred = ok(
        "revoked credential",
        server.call("GET", "/devices/wm_n1/credential", &key, None),
        200,
    );
    assert_eq!(cred["credential_set"], false, "{cred}");
    assert_error(
        "revoked twice",
        server.call("DELETE", "/devices/wm_n1/credential", &key, None),
        404,
    );
}
