//! End-to-end tests of the per-application token buckets (`[api.rate_limit]`): the real
//! `fleetgate` binary with tiny limits, answering 429 `FLEETGATE.RATE_LIMITED` with
//! `Retry-After` to an application over its budget while another application goes on, and
//! serving the first one again once the wait is over.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestServer;

/// A GET with `key` as bearer: the status, the `Retry-After` header and the JSON body.
fn get(server: &TestServer, path: &str, key: &str) -> (u16, Option<String>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut res = agent
        .get(format!("{}/v5/iot/test{path}", server.api))
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.body_mut().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, retry, body)
}

/// Calls `GET path` until it answers 429 (at most `tries` times) and returns that answer.
fn exhaust(server: &TestServer, path: &str, key: &str, tries: usize) -> (String, Value) {
    for _ in 0..tries {
        let (status, retry, body) = get(server, path, key);
        if status == 429 {
            return (retry.expect("a 429 carries Retry-After"), body);
        }
        assert_eq!(status, 200, "{body}");
    }
    panic!("no 429 after {tries} calls of GET {path}");
}

fn product(id: &str) -> Value {
    json!({
        "product_id": id,
        "name": format!("product-{id}"),
        "protocol_type": "MQTT",
        "data_format": "json",
    })
}

#[test]
fn an_application_over_its_budget_gets_429_and_others_do_not() {
    let server = TestServer::start(
        "epoll",
        &json!({}),
        &[
            "api.rate_limit.calls_per_sec=1",
            "api.rate_limit.calls_burst=5",
            "api.rate_limit.downlinks_per_sec=1",
            "api.rate_limit.downlinks_burst=1",
        ],
    );
    let admin = server.admin_key();
    let (status, created) =
        server.call("POST", "/apps", &admin, Some(&json!({"name": "tenant-b"})));
    assert_eq!(status, 201, "{created}");
    let other = created["api_key"]["api_key"].as_str().unwrap().to_owned();

    // The administrator application spends its burst; the refusal is a JSON error with a
    // whole number of seconds to wait.
    let (retry, body) = exhaust(&server, "/products", &admin, 20);
    let secs: u64 = retry.parse().expect("Retry-After is whole seconds");
    assert!((1..=2).contains(&secs), "Retry-After: {retry}");
    assert_eq!(body["error_code"], "FLEETGATE.RATE_LIMITED", "{body}");
    assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));

    // Another application has its own bucket.
    let (status, _, body) = get(&server, "/products", &other);
    assert_eq!(status, 200, "{body}");

    // Calls that send to a device have a bucket of their own: the first message down is
    // allowed (and refused by the offline device), the second is over the budget.
    let (status, body) = server.call("POST", "/products", &other, Some(&product("lim")));
    assert_eq!(status, 201, "{body}");
    let (status, device) = server.call(
        "POST",
        "/devices",
        &other,
        Some(&json!({"product_id": "lim", "node_id": "n1"})),
    );
    assert_eq!(status, 201, "{device}");
    let id = device["device_id"].as_str().unwrap();
    let message = json!({"message": "hello"});
    let path = format!("/devices/{id}/messages");
    let (status, body) = server.call("POST", &path, &other, Some(&message));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], "FLEETGATE.DEVICE_OFFLINE");
    let (status, body) = server.call("POST", &path, &other, Some(&message));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error_code"], "FLEETGATE.RATE_LIMITED");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("downlinks")),
        "{body}"
    );

    assert!(server.metric(r#"fleetgate_api_rate_limited_total{kind="calls"}"#) >= 1.0);
    assert!(server.metric(r#"fleetgate_api_rate_limited_total{kind="downlinks"}"#) >= 1.0);

    // After the wait the administrator is served again.
    let waited = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (status, _, body) = get(&server, "/products", &admin);
    assert_eq!(status, 200, "after {:?}: {body}", waited.elapsed());
    server.stop();
}

#[test]
fn publications_take_downlink_tokens_one_per_message_sent() {
    let server = TestServer::start(
        "epoll",
        &json!({}),
        &[
            "api.rate_limit.calls_per_sec=0",
            "api.rate_limit.downlinks_per_sec=1",
            "api.rate_limit.downlinks_burst=2",
        ],
    );
    let key = server.admin_key();
    let (status, body) = server.call("POST", "/products", &key, Some(&product("pub")));
    assert_eq!(status, 201, "{body}");
    let (status, device) = server.call(
        "POST",
        "/devices",
        &key,
        Some(&json!({"product_id": "pub", "node_id": "n1"})),
    );
    assert_eq!(status, 201, "{device}");
    let topic = format!(
        "$oc/devices/{}/sys/messages/down",
        device["device_id"].as_str().unwrap()
    );

    // A refused item costs nothing; the two tokens go to the next two items, and the last
    // one fails in its result.
    let (status, batch) = server.call(
        "POST",
        "/publish/batch",
        &key,
        Some(&json!([
            {"topic": topic, "payload": "x", "retain": true},
            {"topic": topic, "payload": "one"},
            {"topic": topic, "payload": "two"},
            {"topic": topic, "payload": "three"},
        ])),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        (&batch["succeeded"], &batch["failed"]),
        (&json!(2), &json!(2)),
        "{batch}"
    );
    assert_eq!(batch["results"][0]["error_code"], "FLEETGATE.BAD_REQUEST");
    assert_eq!(batch["results"][3]["error_code"], "FLEETGATE.RATE_LIMITED");

    // A single publication over the budget is a 429.
    let (status, body) = server.call(
        "POST",
        "/publish",
        &key,
        Some(&json!({"topic": topic, "payload": "four"})),
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error_code"], "FLEETGATE.RATE_LIMITED");
    server.stop();
}
