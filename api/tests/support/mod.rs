//! Helpers for the end-to-end MQTT tests: a provisioned `fleetgate` server on a throw-away data
//! directory ([`TestServer`]), device credentials ([`Device`]), and the external clients —
//! `mosquitto_pub`/`mosquitto_sub` and `paho_client.py` — each run under a hard deadline and
//! killed when it passes it ([`Proc`]). Nothing here waits without a deadline.

#![allow(clippy::unwrap_used, dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleetgate_model::Timestamp;
use fleetgate_model::device::DeviceSecret;
use serde_json::{Value, json};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_fleetgate");
/// The Python MQTT client.
pub(crate) const PAHO_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
/// The paho-mqtt version the client is written for.
const PAHO_VERSION: &str = "2.2.0";
/// How long a server may take to start or stop.
const SERVER_DEADLINE: Duration = Duration::from_secs(30);

const SETUP_HINT: &str = "run `.ci/deps test` (it installs mosquitto-clients and creates \
     $HOME/.cache/fleetgate/venv with paho-mqtt==2.2.0), or point FG_TEST_PYTHON at a Python \
     that has paho-mqtt 2.2.0";

// --- external processes ----------------------------------------------------------------------

/// A line collector for one output stream of a child process.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stream: impl Read + Send + 'static, lines: &Lines) -> JoinHandle<()> {
    let lines = Arc::clone(lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    })
}

/// What a finished process left.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// What ran, for messages.
    pub(crate) name: String,
    /// The exit code (`None` when killed by a signal).
    pub(crate) code: Option<i32>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Finished {
    /// Standard output's lines that are JSON objects (the events of `paho_client.py`).
    pub(crate) fn events(&self) -> Vec<Value> {
        parse_events(self.stdout.lines())
    }

    /// The events with this `event` name.
    pub(crate) fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// The only event with this name; fails otherwise.
    pub(crate) fn event(&self, name: &str) -> Value {
        let found = self.events_named(name);
        assert_eq!(
            found.len(),
            1,
            "{}: expected exactly one {name:?} event\n{self}",
            self.name
        );
        found.into_iter().next().unwrap()
    }

    /// The payloads of the `message` events, in order.
    pub(crate) fn payloads(&self) -> Vec<String> {
        self.events_named("message")
            .iter()
            .map(|m| m["payload"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- {} exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.name, self.code, self.stdout, self.stderr
        )
    }
}

fn parse_events<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Value> {
    lines
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// A running external process whose output is collected as it comes. It is killed when it
/// outlives its deadline and when it is dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` with piped output; `name` labels it in failure messages.
    pub(crate) fn spawn(name: impl Into<String>, cmd: Command) -> Proc {
        let name = name.into();
        let shown = format!("{cmd:?}");
        Proc::try_spawn(name.clone(), cmd)
            .unwrap_or_else(|e| panic!("cannot start {name} ({shown}): {e}"))
    }

    /// Starts `cmd` with piped output, or says why it cannot.
    pub(crate) fn try_spawn(name: impl Into<String>, mut cmd: Command) -> std::io::Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (stdout, stderr) = (Lines::default(), Lines::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), &stdout),
            collect(child.stderr.take().unwrap(), &stderr),
        ];
        Ok(Proc {
            name: name.into(),
            child,
            stdout,
            stderr,
            readers,
        })
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The JSON events printed so far.
    pub(crate) fn events(&self) -> Vec<Value> {
        let lines = self.stdout.lock().unwrap();
        parse_events(lines.iter().map(String::as_str))
    }

    fn snapshot(&self) -> String {
        format!(
            "--- {} (still running)\n--- stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Waits (at most `timeout`) for an event that satisfies `pred`, and returns it.
    pub(crate) fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            let exited = self.child.try_wait().unwrap().is_some();
            if exited || Instant::now() >= deadline {
                // Let the readers catch up with a process that just ended.
                if exited {
                    std::thread::sleep(Duration::from_millis(50));
                    if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                        return e;
                    }
                }
                let why = if exited { "exited" } else { "timed out" };
                panic!(
                    "{}: {why} waiting for {what} ({timeout:?})\n{}",
                    self.name,
                    self.snapshot()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the event named `name`.
    pub(crate) fn wait_named(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait_event(&format!("a {name:?} event"), timeout, |e| {
            e["event"] == name
        })
    }

    /// Sends SIGKILL (the process dies without a word, like a crashed device).
    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
    }

    /// Waits for the process to end (at most `timeout`; past it the process is killed and the
    /// test fails) and returns what it left.
    pub(crate) fn wait_exit(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {timeout:?}; killed\n{}",
                    self.name,
                    self.snapshot()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        Finished {
            name: self.name.clone(),
            code: status.code(),
            stdout: self.stdout.lock().unwrap().join("\n"),
            stderr: self.stderr.lock().unwrap().join("\n"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end within `timeout` (killed and failed past it).
pub(crate) fn run(name: impl Into<String>, cmd: Command, timeout: Duration) -> Finished {
    Proc::spawn(name, cmd).wait_exit(timeout)
}

/// Sends a signal with kill(1); a process that has ended already is not an error here.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
}

// --- the tools and their setup ----------------------------------------------------------------

fn python_works(python: &Path) -> Result<(), String> {
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import sys, paho.mqtt; v = paho.mqtt.__version__; print(v); sys.exit(0 if v == sys.argv[1] else 1)",
        PAHO_VERSION,
    ]);
    let name = python.display().to_string();
    let proc =
        Proc::try_spawn(name.clone(), cmd).map_err(|e| format!("{name}: cannot run: {e}"))?;
    let done = proc.wait_exit(Duration::from_secs(30));
    if done.code == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "{name}: paho-mqtt {PAHO_VERSION} is not importable (found {:?}; {})",
            done.stdout.trim(),
            done.stderr.lines().last().unwrap_or_default()
        ))
    }
}

/// The Python interpreter with paho-mqtt 2.2.0: `$FG_TEST_PYTHON`, else
/// `$HOME/.cache/fleetgate/venv/bin/python`. Fails the test (never skips) when neither works.
pub(crate) fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("FG_TEST_PYTHON").filter(|p| !p.is_empty()) {
            candidates.push(PathBuf::from(p));
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(Path::new(&home).join(".cache/fleetgate/venv/bin/python"));
        }
        let mut problems = Vec::new();
        for c in candidates {
            match python_works(&c) {
                Ok(()) => return Ok(c),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            problems.push("neither FG_TEST_PYTHON nor HOME is set".into());
        }
        Err(problems.join("\n  "))
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => panic!(
            "no Python with paho-mqtt {PAHO_VERSION} for the MQTT tests:\n  {e}\n{SETUP_HINT}"
        ),
    }
}

/// Fails the test unless the mosquitto command-line clients are installed.
fn require_mosquitto() {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        for tool in ["mosquitto_pub", "mosquitto_sub"] {
            let ok = Command::new(tool)
                .arg("--help")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !ok {
                return Err(format!(
                    "{tool} is not installed (Debian package mosquitto-clients)"
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = found {
        panic!("{e}\n{SETUP_HINT}");
    }
}

/// A `paho_client.py` command: `python paho_client.py SUBCOMMAND ARGS...`.
pub(crate) fn paho_command<S: AsRef<std::ffi::OsStr>>(
    sub: &str,
    args: impl IntoIterator<Item = S>,
) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg("-u").arg(PAHO_CLIENT).arg(sub).args(args);
    cmd
}

/// A `mosquitto_pub` or `mosquitto_sub` command.
pub(crate) fn mosquitto_command<S: AsRef<std::ffi::OsStr>>(
    tool: &str,
    args: impl IntoIterator<Item = S>,
) -> Command {
    require_mosquitto();
    let mut cmd = Command::new(tool);
    cmd.args(args);
    cmd
}

/// The CONNACK code `mosquitto_pub -d` / `mosquitto_sub -d` printed ("received CONNACK (N)").
pub(crate) fn printed_connack(out: &Finished) -> Option<u8> {
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let at = text.find("received CONNACK (")? + "received CONNACK (".len();
    let end = text[at..].find(')')?;
    text[at..at + end].parse().ok()
}

/// The SUBACK codes `mosquitto_sub -d` printed ("Subscribed (mid: 1): 128").
pub(crate) fn printed_suback(out: &Finished) -> Option<Vec<u8>> {
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let line = text.lines().find(|l| l.starts_with("Subscribed (mid:"))?;
    let (_, codes) = line.split_once("):")?;
    codes.split(',').map(|c| c.trim().parse().ok()).collect()
}

// --- devices and provisioning -----------------------------------------------------------------

/// The `YYYYMMDDHH` of now (UTC), as in a client id.
pub(crate) fn current_hour() -> String {
    Timestamp::now().to_auth_hour()
}

/// The `YYYYMMDDHH` of `hours` hours ago.
pub(crate) fn hours_ago(hours: i64) -> String {
    Timestamp::now()
        .plus_millis(-hours * 3_600_000)
        .to_auth_hour()
}

/// A device and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// `product_node`.
    pub(crate) product: String,
    /// The node id.
    pub(crate) node: String,
    /// The device id.
    pub(crate) id: String,
    /// The device secret.
    pub(crate) secret: String,
}

impl Device {
    /// A device of `product` with node id `node`; its id is `{product}_{node}`.
    pub(crate) fn new(product: &str, node: &str) -> Device {
        Device {
            product: product.to_owned(),
            node: node.to_owned(),
            id: format!("{product}_{node}"),
            secret: format!("s3cret-{product}-{node}"),
        }
    }

    /// Its provisioning record.
    pub(crate) fn spec(&self) -> Value {
        json!({"product_id": self.product, "node_id": self.node, "secret": self.secret})
    }

    /// The MQTT client id for sign type `sign` and timestamp `hour`.
    pub(crate) fn client_id(&self, sign: u8, hour: &str) -> String {
        format!("{}_0_{sign}_{hour}", self.id)
    }

    /// The password for timestamp `hour`: hex HMAC-SHA256 keyed by `hour` over the secret.
    pub(crate) fn password(&self, hour: &str) -> String {
        password(&self.secret, hour)
    }

    /// `--client-id`, `--username`, `--password` for `paho_client.py` (sign type 0, now).
    pub(crate) fn paho(&self) -> Vec<String> {
        let hour = current_hour();
        vec![
            "--client-id".into(),
            self.client_id(0, &hour),
            "--username".into(),
            self.id.clone(),
            "--password".into(),
            self.password(&hour),
        ]
    }

    /// `-i`, `-u`, `-P` for the mosquitto clients (sign type 0, now).
    pub(crate) fn mosquitto(&self) -> Vec<String> {
        let hour = current_hour();
        vec![
            "-i".into(),
            self.client_id(0, &hour),
            "-u".into(),
            self.id.clone(),
            "-P".into(),
            self.password(&hour),
        ]
    }

    /// Its uplink topic for messages.
    pub(crate) fn messages_up(&self) -> String {
        format!("$oc/devices/{}/sys/messages/up", self.id)
    }
}

/// The device password for `secret` at `hour`, computed by the model crate.
pub(crate) fn password(secret: &str, hour: &str) -> String {
    let secret = DeviceSecret::new(secret).expect("a valid device secret");
    fleetgate_model::auth::password(&secret, hour)
}

/// An MQTT product; `flow` is `(messages_per_sec, bytes_per_sec)`.
pub(crate) fn product(id: &str, flow: Option<(u32, u32)>) -> Value {
    let mut p = json!({
        "product_id": id,
        "app_id": "default",
        "name": format!("product-{id}"),
        "protocol_type": "MQTT",
        "data_format": "json",
    });
    if let Some((messages, bytes)) = flow {
        p["flow_control"] = json!({"messages_per_sec": messages, "bytes_per_sec": bytes});
    }
    p
}

/// An ACL rule letting `device` subscribe to every device's `messages/up`.
pub(crate) fn monitor_rule(device: &Device) -> Value {
    json!({
        "acl_rule_id": format!("monitor-{}", device.id),
        "app_id": "default",
        "scope": {"type": "device_id", "value": device.id},
        "topic": "$oc/devices/+/sys/messages/up",
        "action": "subscribe",
        "access": "allow",
        "priority": 0,
    })
}

// --- the application API ---------------------------------------------------------------------

/// A product of the caller's application as the API takes it: a water meter with a `level`
/// property (0–100, read-write) and an `ON_OFF` command.
pub(crate) fn product_body(id: &str) -> Value {
    json!({
        "product_id": id,
        "name": format!("product-{id}"),
        "protocol_type": "MQTT",
        "data_format": "json",
        "device_type": "WaterMeter",
        "service_capabilities": [{
            "service_id": "WaterMeter",
            "properties": [
                {"property_name": "level", "data_type": "int", "required": false,
                 "min": "0", "max": "100", "method": "RW"},
            ],
            "commands": [{
                "command_name": "ON_OFF",
                "paras": [{"para_name": "value", "data_type": "string", "required": true,
                           "enum_list": ["ON", "OFF"]}],
            }],
        }],
    })
}

/// Asserts an API answer is the error `expected` with a JSON `{error_code, error_msg}` body,
/// and returns the body.
pub(crate) fn assert_error(what: &str, (status, body): (u16, Value), expected: u16) -> Value {
    assert_eq!(status, expected, "{what}: {body}");
    assert!(
        body["error_code"].as_str().is_some_and(|c| !c.is_empty())
            && body["error_msg"].as_str().is_some(),
        "{what}: not a JSON error: {body}"
    );
    body
}

// --- the server -------------------------------------------------------------------------------

/// A `fleetgate` command with none of the caller's `FLEETGATE_*` variables: fleetgate reads
/// every one of them as configuration (`FLEETGATE_CONFIG`, `FLEETGATE_ENGINE__...`), and refuses
/// to start on one that names no key.
pub(crate) fn fleetgate_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FLEETGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A `fleetgate` server on its own data directory, provisioned before it starts, with only the
/// plain MQTT listener and the API open on ephemeral loopback ports.
#[derive(Debug)]
pub(crate) struct TestServer {
    child: Child,
    lines: Lines,
    /// The driver it was asked for (and runs on).
    pub(crate) driver: String,
    /// The MQTT port.
    pub(crate) mqtt_port: u16,
    /// The CoAP port, when the listener is open.
    pub(crate) coap_port: Option<u16>,
    /// `http://addr` of the API.
    pub(crate) api: String,
    agent: ureq::Agent,
    stopped: bool,
    args: Vec<OsString>,
    // Last: the directory goes after the process.
    data: tempfile::TempDir,
}

impl TestServer {
    /// Provisions `provision` (a provisioning file's JSON) into a fresh data directory and
    /// starts the server on `driver` with the extra `--set KEY=VALUE` settings.
    pub(crate) fn start(driver: &str, provision: &Value, settings: &[&str]) -> TestServer {
        let data = tempfile::Builder::new()
            .prefix("fleetgate-mqtt-")
            .tempdir()
            .expect("temporary directory");
        let file = data.path().join("provision.json");
        std::fs::write(&file, serde_json::to_vec_pretty(provision).unwrap()).unwrap();
        let store = data.path().join("store");
        let mut cmd = fleetgate_command();
        cmd.arg("--data-dir")
            .arg(&store)
            .arg("provision")
            .arg(&file);
        let out = run("fleetgate provision", cmd, SERVER_DEADLINE);
        assert_eq!(out.code, Some(0), "provisioning failed\n{out}");
        let report: Value =
            serde_json::from_str(&out.stdout).expect("provision prints a JSON report");
        assert_eq!(report["errors"], json!([]), "provisioning errors\n{out}");

        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            store.into_os_string(),
            "--api-listen".into(),
            "127.0.0.1:0".into(),
            "--log-format".into(),
            "json".into(),
        ];
        let mut set = vec![
            "engine.mqtt.listen=127.0.0.1:0".to_owned(),
            format!("engine.driver={driver}"),
        ];
        for listener in [
            "mqtts",
            "mqtt_ws",
            "coap",
            "coaps",
            "device_https",
            "app_mqtt",
        ] {
            set.push(format!("engine.{listener}.enabled=false"));
        }
        set.extend(settings.iter().map(|s| (*s).to_owned()));
        for s in set {
            args.push("--set".into());
            args.push(s.into());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let (child, lines) = spawn_server(&args);
        let mut server = TestServer {
            child,
            lines,
            driver: driver.to_owned(),
            mqtt_port: 0,
            coap_port: None,
            api: String::new(),
            agent,
            stopped: false,
            args,
            data,
        };
        server.wait_started();
        server
    }

    /// Like [`TestServer::start`] with the CoAP/LwM2M listener open on a fixed loopback port
    /// (kept across [`TestServer::kill_and_restart`], as devices expect).
    pub(crate) fn start_with_coap(
        driver: &str,
        provision: &Value,
        settings: &[&str],
    ) -> TestServer {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let listen = format!("engine.coap.listen=127.0.0.1:{port}");
        let mut all = vec!["engine.coap.enabled=true", listen.as_str()];
        all.extend_from_slice(settings);
        let mut server = TestServer::start(driver, provision, &all);
        server.coap_port = Some(port);
        server.wait_log("coap/lwm2m listening");
        server
    }

    /// Kills the server with SIGKILL (no orderly shutdown) and starts it again on the same
    /// data directory and settings.
    pub(crate) fn kill_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        let (child, lines) = spawn_server(&self.args);
        self.child = child;
        self.lines = lines;
        self.wait_started();
        if self.coap_port.is_some() {
            self.wait_log("coap/lwm2m listening");
        }
    }

    fn wait_started(&mut self) {
        let mqtt = self.wait_log("mqtt listening");
        assert_eq!(
            mqtt["driver"], self.driver,
            "the server runs on another driver: {mqtt}"
        );
        let addr: std::net::SocketAddr = mqtt["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("socket address");
        self.mqtt_port = addr.port();
        let api = self.wait_log("api listening");
        self.api = format!("http://{}", api["addr"].as_str().expect("addr"));
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Waits for the JSON log line whose `message` is `message`, and returns it.
    pub(crate) fn wait_log(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == message);
            if let Some(v) = found {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "fleetgate exited ({status}) before logging {message:?}\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log line\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The administrator API key written at first start.
    pub(crate) fn admin_key(&self) -> String {
        let path = self.data.path().join("store").join("admin-api-key");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// Calls the application API: `method` on `path` (after `/v5/iot/test`) with `key` as
    /// bearer (none when empty) and `body` as JSON. Returns the status and the JSON answer
    /// (`null` for an empty one); fails on an answer that is not JSON.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let raw = body.map(|b| b.to_string());
        self.call_raw(method, path, key, "application/json", raw.as_deref())
    }

    /// Like [`TestServer::call`] with a body sent as is, with `content_type`.
    pub(crate) fn call_raw(
        &self,
        method: &str,
        path: &str,
        key: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}/v5/iot/test{path}", self.api);
        let auth = format!("Bearer {key}");
        let with_auth = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            if key.is_empty() {
                r
            } else {
                r.header("Authorization", &auth)
            }
        };
        let without_body = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
            if key.is_empty() {
                r
            } else {
                r.header("Authorization", &auth)
            }
        };
        let result = match (method, body) {
            ("GET", _) => without_body(self.agent.get(&url)).call(),
            ("DELETE", _) => without_body(self.agent.delete(&url)).call(),
            ("POST", Some(b)) => with_auth(self.agent.post(&url))
                .content_type(content_type)
                .send(b.as_bytes()),
            ("POST", None) => with_auth(self.agent.post(&url)).send_empty(),
            ("PUT", Some(b)) => with_auth(self.agent.put(&url))
                .content_type(content_type)
                .send(b.as_bytes()),
            ("PUT", None) => with_auth(self.agent.put(&url)).send_empty(),
            _ => panic!("unsupported call {method}"),
        };
        let mut res = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().expect("answer body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{method} {path} answered {status} non-JSON ({e}): {text}")
            })
        };
        (status, json)
    }

    /// Everything the server logged so far.
    pub(crate) fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The `/metrics` text.
    pub(crate) fn metrics_text(&self) -> String {
        let mut res = self
            .agent
            .get(format!("{}/metrics", self.api))
            .call()
            .expect("GET /metrics");
        assert_eq!(res.status().as_u16(), 200, "GET /metrics");
        res.body_mut().read_to_string().expect("metrics body")
    }

    /// The value of one series, named with its labels exactly as Prometheus text shows them,
    /// e.g. `fleetgate_mqtt_acl_denied_total{action="subscribe"}`. Fails when it is absent.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text();
        metric_value(&text, series)
            .unwrap_or_else(|| panic!("/metrics has no series {series}\n{text}"))
    }

    /// Polls `series` until `pred` holds (at most 10 s) and returns the value; fails with the
    /// last value otherwise. Counters of the engine are updated by its threads a moment after
    /// the client saw the result.
    pub(crate) fn wait_metric(&self, series: &str, what: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(series);
            if pred(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{series} = {v}, expected {what} [{}]",
                self.driver
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `series` equals `expected`.
    pub(crate) fn expect_metric(&self, series: &str, expected: f64) {
        self.wait_metric(series, &format!("{expected}"), |v| v == expected);
    }

    /// A `paho_client.py SUB --port PORT ARGS...` command for this server.
    pub(crate) fn paho<S: AsRef<std::ffi::OsStr>>(
        &self,
        sub: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut cmd = paho_command(sub, ["--port".to_owned(), self.mqtt_port.to_string()]);
        cmd.args(args);
        cmd
    }

    /// `mosquitto_pub`/`mosquitto_sub -h 127.0.0.1 -p PORT ARGS...` for this server.
    pub(crate) fn mosquitto<S: AsRef<std::ffi::OsStr>>(
        &self,
        tool: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut cmd = mosquitto_command(
            tool,
            [
                "-h".to_owned(),
                "127.0.0.1".into(),
                "-p".into(),
                self.mqtt_port.to_string(),
            ],
        );
        cmd.args(args);
        cmd
    }

    /// Stops the server with SIGTERM and checks that it stops cleanly.
    pub(crate) fn stop(mut self) {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + SERVER_DEADLINE;
        let status: ExitStatus = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "fleetgate did not stop on SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.stopped = true;
        assert!(
            status.success(),
            "fleetgate stopped with {status}\n{}",
            self.log()
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- fleetgate ({}) log, last lines:\n{}",
                    self.driver,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// Starts `fleetgate` with `args`, collecting its output.
fn spawn_server(args: &[OsString]) -> (Child, Lines) {
    let mut child = fleetgate_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fleetgate");
    let lines = Lines::default();
    collect(child.stdout.take().unwrap(), &lines);
    collect(child.stderr.take().unwrap(), &lines);
    (child, lines)
}

/// The value of `series` in Prometheus text.
pub(crate) fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
