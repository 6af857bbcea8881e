//! fleetgate's load generator. Each scenario is a subcommand described by a TOML file
//! (`loadtest/scenarios/`), bounded in count and time so that it stops by itself, and sends
//! traffic only to 127.0.0.0/8. It speaks the device wire protocols from the outside — it never
//! depends on fleetgate's own crates — so it measures the server as a device fleet sees it.
//!
//! - [`credentials`]: deterministic device secrets (seed + index), the provisioning file, and
//!   the MQTT authentication of spec/device-protocol.md §3.5;
//! - [`mqtt`]: the bits of MQTT 3.1.1 the scenarios send and read;
//! - [`scenario`]: scenario files, validated with every problem reported;
//! - [`idle`]: the `idle-connections` scenario (memory per idle authenticated session);
//! - [`reconnect`]: the `reconnect-storm` scenario (time to take back a fleet that drops at
//!   once);
//! - [`pool`]: the worker processes of `idle-connections` and `reconnect-storm` and their
//!   pipe protocol plumbing;
//! - [`conn`]: an active MQTT connection (publish, subscribe, framing) for the scenarios
//!   that move messages;
//! - [`telemetry`]: the `telemetry` scenario (property reports to a subscriber: rate, latency);
//! - [`command`]: the `command-roundtrip` scenario (sync commands through the HTTP API);
//! - [`traffic`]: the worker processes holding the devices of `telemetry` and
//!   `command-roundtrip` (connect, publish on schedule, answer commands);
//! - [`lwm2m`]: a CoAP/LwM2M device simulator — one device with a blocking API for tests,
//!   and a fleet of many devices sharing UDP sockets for load tests;
//! - [`sleepers`]: the `coap-sleepers` scenario (memory per registered, sleeping LwM2M device
//!   and wake-to-command latency);
//! - [`series`]: per-second time series of the reports;
//! - [`progress`]: progress bars (indicatif) while a scenario runs;
//! - [`procfs`], [`stats`]: server and generator readings, slopes and percentiles;
//! - [`summary`]: a Markdown table comparing the reports of several servers;
//! - [`plot`]: PNG charts of reports, several servers' reports of one scenario on one chart;
//! - [`perf_report`]: docs/perf.md from a run of `loadtest/compare.sh` (every scenario,
//!   fleetgate on both drivers next to Mosquitto and rumqttd).
//!
//! Called by the `fleetgate-loadtest` binary (`src/main.rs`) and by `loadtest/compare-idle.sh`.

pub mod command;
pub mod conn;
pub mod credentials;
pub mod idle;
pub mod lwm2m;
pub mod mqtt;
pub mod perf_report;
pub mod plot;
pub mod pool;
pub mod procfs;
pub mod progress;
pub mod reconnect;
pub mod scenario;
pub mod series;
pub mod sleepers;
pub mod stats;
pub mod summary;
pub mod telemetry;
pub mod traffic;
