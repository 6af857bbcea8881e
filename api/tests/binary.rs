//! The real `fleetgate` binary: command line, configuration errors, health and metrics over
//! HTTP, orderly shutdown on SIGTERM/SIGINT, and the storage lock between two processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fleetgate");

fn fleetgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("FLEETGATE_CONFIG")
        .output()
        .expect("run fleetgate")
}

/// A running server whose JSON log lines are collected as they arrive.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "--data-dir",
                data.to_str().expect("utf-8 path"),
                "--api-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(["--set", "engine.mqtt.enabled=false"])
            .env_remove("FLEETGATE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fleetgate");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Server { child, lines }
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no log line with {needle:?}; got {:#?}",
            self.lines.lock().expect("lines")
        );
    }

    fn api(&self) -> String {
        let line = self.wait_for("\"api listening\"");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        format!("http://{}", v["addr"].as_str().expect("addr field"))
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "fleetgate did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut res = agent.get(url).call().expect("request");
    let status = res.status().as_u16();
    (status, res.body_mut().read_to_string().expect("body"))
}

#[test]
fn help_documents_every_flag() {
    let out = fleetgate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--data-dir",
        "--api-listen",
        "--log-level",
        "--log-format",
        "--shards",
        "--set",
        "--version",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    for command in ["run", "config", "storage"] {
        assert!(help.contains(command), "--help does not mention {command}");
    }
}

#[test]
fn the_printed_example_is_a_valid_configuration() {
    let out = fleetgate(&["config", "example"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleetgate.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let check = fleetgate(&["--config", file.to_str().unwrap(), "config", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let show = fleetgate(&[
        "--config",
        file.to_str().unwrap(),
        "--shards",
        "3",
        "config",
        "show",
    ]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("shards = 3"));
}

#[test]
fn configuration_problems_are_all_reported_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[storage]\nmax_pending_commands = 0\nshoe_size = 9\n[api]\nworkers = \"two\"\n",
    )
    .unwrap();
    let out = fleetgate(&[
        "--config",
        file.to_str().unwrap(),
        "--set",
        "log.level=[[[",
        "config",
        "check",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "storage.max_pending_commands",
        "storage.shoe_size",
        "api.workers",
        "log.level",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    let run = fleetgate(&["--config", file.to_str().unwrap()]);
    assert_eq!(
        run.status.code(),
        Some(2),
        "fleetgate refuses to start on an invalid configuration"
    );
}

#[test]
fn serves_health_and_metrics_and_stops_in_order() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let api = server.api();

    let (status, body) = get(&format!("{api}/healthz"));
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let (status, metrics) = get(&format!("{api}/metrics"));
    assert_eq!(status, 200);
    for series in [
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "fleetgate_storage_cf{cf=\"devices\",stat=\"keys\"}",
        "fleetgate_storage_block_cache_bytes ",
        "fleetgate_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
        "fleetgate_build_info{version=",
    ] {
        assert!(metrics.contains(series), "/metrics lacks {series}");
    }

    let (status, body) = get(&format!("{api}/no/such/thing"));
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error_code"], "FLEETGATE.NO_ROUTE");

    server.signal("TERM");
    assert!(server.wait_exit().success());
    server.wait_for("storage flushed; stopped");

    // The data directory is released and usable by the next process.
    let mut again = Server::start(data.path());
    let api = again.api();
    assert_eq!(get(&format!("{api}/healthz")).0, 200);
    again.signal("INT");
    assert!(again.wait_exit().success());
    let check = fleetgate(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "storage",
        "check",
    ]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("storage is consistent"));
}

#[test]
fn a_second_process_on_the_same_data_directory_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start(data.path());
    first.api();
    let mut second = Server::start(data.path());
    let status = second.wait_exit();
    assert!(!status.success());
    second.wait_for("cannot open storage");
}
