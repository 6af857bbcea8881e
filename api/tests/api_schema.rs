//! The OpenAPI document against the real server: schemathesis (pinned by `.ci/deps test` in
//! the test venv) fuzzes every operation of `GET /openapi.json` with valid and invalid input
//! and fails on any 5xx and on any response that does not match the document.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{TestServer, python, run};

/// The schemathesis release `.ci/deps test` installs.
const SCHEMATHESIS: &str = "4.32.5";

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let server = TestServer::start(
        "epoll",
        &json!({}),
        &[
            "api.rate_limit.calls_per_sec=0",
            "api.rate_limit.downlinks_per_sec=0",
        ],
    );
    let key = server.admin_key();
    // Some data, so that reads and changes reach the handlers' deeper paths too.
    let product = json!({
        "product_id": "schema",
        "name": "schema",
        "protocol_type": "MQTT",
        "data_format": "json",
        "service_capabilities": [{
            "service_id": "Meter",
            "properties": [{"property_name": "level", "data_type": "int", "method": "RW"}],
            "commands": [{"command_name": "ON_OFF", "paras": []}],
        }],
    });
    let (status, body) = server.call("POST", "/products", &key, Some(&product));
    assert_eq!(status, 201, "{body}");
    let device = json!({"product_id": "schema", "node_id": "node-1", "device_id": "dev-1"});
    let (status, body) = server.call("POST", "/devices", &key, Some(&device));
    assert_eq!(status, 201, "{body}");

    let py = python();
    let mut version = Command::new(&py);
    version.args([
        "-c",
        "import importlib.metadata as m; print(m.version('schemathesis'))",
    ]);
    let out = run("schemathesis version", version, Duration::from_secs(30));
    assert_eq!(
        out.stdout.trim(),
        SCHEMATHESIS,
        "run `.ci/deps test` to install schemathesis {SCHEMATHESIS}\n{out}"
    );

    let mut cmd = Command::new(&py);
    cmd.args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/openapi.json", server.api))
        .args(["--url", &server.api])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "45",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--seed",
            "1",
            "--no-color",
        ])
        // Its report directory goes with the server's data, not into the source tree.
        .current_dir(server.data_dir())
        .env("SCHEMATHESIS_HOOKS", "")
        .env("PYTHONUNBUFFERED", "1");
    let out = run("schemathesis", cmd, Duration::from_secs(110));
    assert_eq!(
        out.code,
        Some(0),
        "schemathesis found problems\n{out}\n--- server log:\n{}",
        server.log()
    );
    server.stop();
}
