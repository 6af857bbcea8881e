//! Shared by the end-to-end tests (`idle_connections`, `reconnect_storm`, `telemetry`,
//! `command_roundtrip`, `peers`): a real `fleetgate` on a temporary data directory with
//! load-test devices provisioned, a real Mosquitto broker with their passwords, bounded child
//! processes, and report readers.
//!
//! The `fleetgate` binary is not a target of this package, so it is looked up beside this
//! package's binary in the target directory (`cargo build -p fleetgate-api`; `cargo test
//! --workspace` builds it), or taken from `LOADTEST_FLEETGATE_BIN`.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const LOADTEST: &str = env!("CARGO_BIN_EXE_fleetgate-loadtest");

pub(crate) fn fleetgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOADTEST_FLEETGATE_BIN") {
        return PathBuf::from(p);
    }
    let beside = Path::new(LOADTEST).with_file_name("fleetgate");
    assert!(
        beside.exists(),
        "{} not found: build it with `cargo build -p fleetgate-api` (cargo test --workspace does) or set LOADTEST_FLEETGATE_BIN",
        beside.display()
    );
    beside
}

/// A fleetgate process on a temporary data directory; killed by its pid on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) mqtt: String,
    pub(crate) api: String,
    pub(crate) data: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The administrator's API key, written at first start.
    pub(crate) fn admin_key_file(&self) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for p in [
                self.data.join("store").join("admin-api-key"),
                self.data.join("admin-api-key"),
            ] {
                if p.exists() {
                    return p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no admin-api-key under {}",
                self.data.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Registers devices 1..=`count` (and the monitor, device 0) of product `lt` with secrets from
/// `seed`, then starts fleetgate on `driver` with its MQTT and API listeners on free ports.
pub(crate) fn start_server(driver: &str, count: u64, seed: u64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.json");
    let out = run_bounded(
        Command::new(LOADTEST)
            .args([
                "credentials",
                "--count",
                &count.to_string(),
                "--product",
                "lt",
            ])
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(&devices),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "credentials: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let out = run_bounded(
        Command::new(fleetgate_bin())
            .arg("--data-dir")
            .arg(&data)
            .arg("provision")
            .arg(&devices),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "provision: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("\"errors\":[\""),
        "provision reported errors: {stdout}"
    );

    launch(data, dir, &[], &[format!("engine.driver={driver}")], &[]).0
}

/// The device listeners `launch` turns off unless asked for.
const LISTENERS: [&str; 6] = [
    "mqtts",
    "mqtt_ws",
    "coap",
    "coaps",
    "device_https",
    "app_mqtt",
];

/// Starts fleetgate on `data` with its API and MQTT listeners on free loopback ports, every
/// other device listener off except `enable`, and `sets` as further `--set` values; a thread
/// reads its every log line (so the pipe never fills). Waits (60 s at most) until it has
/// logged its MQTT and API listeners and each of `logged` (e.g. "coap/lwm2m listening"). The
/// returned [`Server`] owns `dir` and kills the process on drop; the addresses of `logged`
/// come in that order.
pub(crate) fn launch(
    data: PathBuf,
    dir: tempfile::TempDir,
    enable: &[&str],
    sets: &[String],
    logged: &[&str],
) -> (Server, Vec<String>) {
    let mut cmd = Command::new(fleetgate_bin());
    cmd.arg("--data-dir").arg(&data).args([
        "--api-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--set",
        "engine.mqtt.listen=127.0.0.1:0",
    ]);
    for off in LISTENERS.iter().filter(|l| !enable.contains(l)) {
        cmd.args(["--set", &format!("engine.{off}.enabled=false")]);
    }
    for set in sets {
        cmd.args(["--set", set]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(message) = v["message"].as_str()
                && message.ends_with(" listening")
            {
                let addr = v["addr"].as_str().unwrap_or_default().to_owned();
                let _ = tx.send((message.to_owned(), addr));
            }
        }
    });
    // Killed by its pid on drop, whatever happens below.
    let mut server = Server {
        child,
        mqtt: String::new(),
        api: String::new(),
        data,
        dir,
    };
    let wanted: Vec<&str> = ["mqtt listening", "api listening"]
        .into_iter()
        .chain(logged.iter().copied())
        .collect();
    let mut found = std::collections::HashMap::new();
    while wanted.iter().any(|w| !found.contains_key(*w)) {
        let (message, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("fleetgate did not log its listeners within 60 s");
        found.insert(message, addr);
    }
    server.mqtt = found["mqtt listening"].clone();
    server.api = found["api listening"].clone();
    let addrs = logged.iter().map(|w| found[*w].clone()).collect();
    (server, addrs)
}

/// A peer program installed by `.ci/deps test` (looked up on `PATH`, then in `/usr/sbin`,
/// where Debian puts the broker). Fails the test, never skips it, when it is missing.
pub(crate) fn peer_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run `.ci/deps test` (it installs the Mosquitto broker and the other test peers)")
        })
}

/// A loopback TCP port free now.
pub(crate) fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker on a free 127.0.0.1 port that admits only devices 0..=`count` of
/// product `lt` with the passwords of `auth = "password"` (from `credentials --passwords`,
/// hashed with `mosquitto_passwd -U`); stopped by its pid on drop, also when the test fails.
pub(crate) struct Mosquitto {
    pub(crate) child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    /// Its configuration, password file and log (taken back when a start is retried).
    dir: Option<tempfile::TempDir>,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// Its log (errors and warnings), for failure messages.
    pub(crate) fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("mosquitto.log")).ok())
            .unwrap_or_default()
    }
}

/// Starts Mosquitto with `allow_anonymous false`, the password file of devices 0..=`count` of
/// product `lt` with secrets from `seed`, `persistence false` and `max_connections -1`, and
/// waits until it accepts connections.
pub(crate) fn start_mosquitto(count: u64, seed: u64) -> Mosquitto {
    let broker = peer_bin("mosquitto");
    let passwd = peer_bin("mosquitto_passwd");
    let mut dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let out = run_bounded(
        Command::new(LOADTEST)
            .args([
                "credentials",
                "--count",
                &count.to_string(),
                "--product",
                "lt",
            ])
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(dir.path().join("devices.json"))
            .arg("--passwords")
            .arg(&passwords),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "credentials --passwords: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_bounded(
        Command::new(passwd).arg("-U").arg(&passwords),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "mosquitto_passwd -U: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A port free now may be taken before the broker binds it: a few tries.
    let mut failures = Vec::new();
    for _ in 0..3 {
        let port = free_tcp_port();
        let conf = dir.path().join("mosquitto.conf");
        // Started as root, Mosquitto switches to the user `mosquitto` before reading the
        // password file, which cannot read this private directory: `user root` keeps the
        // test's own user (a non-root user is never switched).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nmax_connections -1\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\nconnection_messages false\n",
                passwords.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new(&broker)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut m = Mosquitto {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            if TcpStream::connect(&m.addr).is_ok() {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        failures.push(format!("port {port}: {}", m.log()));
        dir = m.dir.take().unwrap();
        // `m` is dropped here: the broker is stopped by its pid.
    }
    panic!("mosquitto did not start:\n{}", failures.join("\n---\n"));
}

/// Runs a command to completion, killing it past `limit`.
pub(crate) fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs `fleetgate-loadtest SUBCOMMAND --scenario FILE [EXTRA…] --server-pid PID --json JSON`
/// within `limit`.
pub(crate) fn run_scenario(
    subcommand: &str,
    scenario: impl AsRef<std::ffi::OsStr>,
    extra: &[&std::ffi::OsStr],
    server_pid: u32,
    json: &Path,
    limit: Duration,
) -> Output {
    run_bounded(
        Command::new(LOADTEST)
            .arg(subcommand)
            .arg("--scenario")
            .arg(scenario)
            .args(extra)
            .arg("--server-pid")
            .arg(server_pid.to_string())
            .arg("--json")
            .arg(json),
        limit,
    )
}

/// Asserts that a run exited 0 (showing its output otherwise); returns its stdout and stderr.
pub(crate) fn succeeded(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Reads a JSON report.
pub(crate) fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks the per-second series: points numbered from 0, each with `t` and `p99_us`.
pub(crate) fn check_series(report: &serde_json::Value) {
    let series = report["series"].as_array().unwrap();
    assert!(!series.is_empty(), "{report}");
    for (i, p) in series.iter().enumerate() {
        assert_eq!(p["t"], i as u64, "{p}");
        assert!(p["p99_us"].is_u64(), "{p}");
    }
}

/// Checks the generator's CPU block.
pub(crate) fn check_generator(report: &serde_json::Value) {
    let g = &report["generator"];
    assert!(g["wall_secs"].as_f64().unwrap() > 0.0, "{g}");
    assert!(
        g["cpu"]["user"].is_f64() && g["cpu"]["system"].is_f64(),
        "{g}"
    );
}
