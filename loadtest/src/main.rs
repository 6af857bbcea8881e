//! `fleetgate-loadtest`: the command line of fleetgate's load generator. One subcommand per
//! scenario; see `fleetgate-loadtest --help` and `loadtest/scenarios/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetgate_loadtest::credentials::{password_lines, provision_file, valid_product};
use fleetgate_loadtest::idle::{self, protocol::WorkerShare};
use fleetgate_loadtest::scenario::IdleScenario;
use fleetgate_loadtest::scenario::{CommandScenario, TelemetryScenario};
use fleetgate_loadtest::{command, telemetry, traffic};
use fleetgate_loadtest::{reconnect, scenario::ReconnectScenario};
use fleetgate_loadtest::{sleepers, sleepers::SleepersScenario};

/// Load generator for fleetgate. Every run is bounded in count and time and targets only
/// 127.0.0.0/8.
#[derive(Debug, Parser)]
#[command(name = "fleetgate-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Writes a `fleetgate provision` file for devices 1..=COUNT of a product, with secrets
    /// derived from the seed (so generators recompute them without reading the file).
    Credentials {
        /// Devices to register.
        #[arg(long)]
        count: u64,
        /// Product id (devices are `{product}_n000001`, …).
        #[arg(long, default_value = "lt")]
        product: String,
        /// Resource space of the product.
        #[arg(long, default_value = "default")]
        app_id: String,
        /// Seed of the secrets.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Also writes `device_id:secret` lines for devices 0..=COUNT here: the user names and
        /// passwords of scenarios with `auth = "password"`, for a plain broker's password list.
        #[arg(long)]
        passwords: Option<PathBuf>,
    },
    /// Opens COUNT authenticated MQTT connections at a paced rate, holds them idle, samples the
    /// server's memory at checkpoints. Exits 1 if fewer than COUNT were established or any was
    /// lost.
    IdleConnections {
        /// Scenario file (see loadtest/scenarios/idle-connections.toml).
        #[arg(long, required_unless_present = "worker")]
        scenario: Option<PathBuf>,
        #[command(flatten)]
        out: Outputs,
        /// Internal: run as worker INDEX/PROCESSES of a coordinator.
        #[arg(long, hide = true)]
        worker: Option<WorkerShare>,
    },
    /// Connects COUNT authenticated devices, holds them, then drops every connection at once
    /// and reconnects them all; reports the time to recover, the auth rate and the server's
    /// CPU. Exits 1 unless every device came back.
    ReconnectStorm {
        /// Scenario file (see loadtest/scenarios/reconnect-storm.toml).
        #[arg(long, required_unless_present = "worker")]
        scenario: Option<PathBuf>,
        #[command(flatten)]
        out: Outputs,
        /// Internal: run as worker INDEX/PROCESSES of a coordinator.
        #[arg(long, hide = true)]
        worker: Option<WorkerShare>,
    },
    /// COUNT devices publish property reports at RATE per second in total; one subscriber
    /// (device 0, allowed by the ACL rule `credentials` provisions) receives them. Reports the
    /// delivered rate, end-to-end latency percentiles, losses, server and generator CPU. Exits
    /// 1 unless every device connected, every report was sent and (at QoS 1) none was lost.
    Telemetry {
        /// Scenario file (see loadtest/scenarios/telemetry.toml).
        #[arg(long, required_unless_present = "worker")]
        scenario: Option<PathBuf>,
        #[command(flatten)]
        out: Outputs,
        /// Internal: run as worker INDEX/PROCESSES of a coordinator.
        #[arg(long, hide = true)]
        worker: Option<WorkerShare>,
    },
    /// COUNT online devices answer commands sent through the HTTP API at RATE per second with
    /// bounded concurrency. Reports round-trip latency percentiles and errors by status. Exits
    /// 1 unless every command was answered.
    CommandRoundtrip {
        /// Scenario file (see loadtest/scenarios/command-roundtrip.toml).
        #[arg(long, required_unless_present = "worker")]
        scenario: Option<PathBuf>,
        /// File holding the API key (overrides the file's `api_key_file`).
        #[arg(long)]
        api_key_file: Option<PathBuf>,
        #[command(flatten)]
        out: Outputs,
        /// Internal: run as worker INDEX/PROCESSES of a coordinator.
        #[arg(long, hide = true)]
        worker: Option<WorkerShare>,
    },
    /// DEVICES LwM2M devices register over CoAP at a paced rate and fall asleep; once the
    /// server has hibernated them, reports its memory per sleeping device; then queues delayed
    /// commands for WAKE devices, wakes them and times the commands. Exits 1 unless every
    /// device registered, all hibernated and every queued command arrived.
    CoapSleepers {
        /// Scenario file (see loadtest/scenarios/coap-sleepers.toml).
        #[arg(long)]
        scenario: PathBuf,
        /// File holding the API key (overrides the file's `api_key_file`).
        #[arg(long)]
        api_key_file: Option<PathBuf>,
        #[command(flatten)]
        out: Outputs,
    },
    /// Prints a Markdown table comparing idle-connections reports (NAME=REPORT.json …).
    Summary {
        /// `NAME=FILE` pairs, one row each, in order.
        #[arg(required = true, value_parser = parse_named)]
        reports: Vec<(String, PathBuf)>,
    },
    /// Writes docs/perf.md from a run of loadtest/compare.sh: its run-info file and the
    /// reports beside it, one table per scenario with fleetgate's ratios to each peer.
    PerfReport {
        /// The run-info JSON the script wrote (reports are read from its directory).
        #[arg(long)]
        run_info: PathBuf,
        /// The Markdown file to write.
        #[arg(long)]
        out: PathBuf,
        /// Directory of the PNG plots to embed (default: `perf/` beside --out).
        #[arg(long)]
        plots: Option<PathBuf>,
    },
    /// Draws PNG charts of reports of one scenario kind (NAME=REPORT.json …), one line per
    /// named server, into OUT_DIR as `{PREFIX}-{chart}.png`; prints each file written. Reports
    /// of different kinds exit 2.
    Plot {
        /// Directory of the PNG files (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// File name prefix (default: the reports' `scenario_kind`).
        #[arg(long)]
        prefix: Option<String>,
        /// `NAME=FILE` pairs, one line each, in legend order.
        #[arg(required = true, value_parser = parse_named)]
        reports: Vec<(String, PathBuf)>,
    },
}

/// The outputs and the server every scenario subcommand shares.
#[derive(Debug, clap::Args)]
struct Outputs {
    /// Writes the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// After the run, draws the report's charts into DIR as `{scenario_kind}-{chart}.png`
    /// (the report is kept there as `{scenario_kind}.json` unless --json names a file).
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// The server's pid (overrides the file's `server_pid`).
    #[arg(long)]
    server_pid: Option<u32>,
}

impl Outputs {
    /// Runs a scenario that writes its report to the given JSON file; with `--plots DIR`, the
    /// report goes to `DIR/{kind}.json` unless `--json` names a file, and its charts are drawn
    /// into DIR afterwards (also after a failed run: its report says why).
    fn run(
        self,
        kind: &str,
        run: impl FnOnce(Option<&Path>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let Some(dir) = self.plots else {
            return run(self.json.as_deref());
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = self
            .json
            .unwrap_or_else(|| dir.join(format!("{kind}.json")));
        let ok = run(Some(&json))?;
        for path in fleetgate_loadtest::plot::plot_files(&[(String::new(), json)], &dir, None)? {
            eprintln!("wrote {}", path.display());
        }
        Ok(ok)
    }
}

/// The `--scenario` file of a coordinator (clap requires it unless `--worker` is given).
fn scenario_path(scenario: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    scenario.context("--scenario is required")
}

fn parse_named(s: &str) -> Result<(String, PathBuf), String> {
    s.split_once('=')
        .filter(|(name, file)| !name.is_empty() && !file.is_empty())
        .map(|(name, file)| (name.to_owned(), PathBuf::from(file)))
        .ok_or_else(|| format!("expected NAME=FILE, got {s:?}"))
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Cmd::Credentials {
            count,
            product,
            app_id,
            seed,
            out,
            passwords,
        } => {
            anyhow::ensure!(
                valid_product(&product),
                "--product {product:?} must be 1-32 characters of [A-Za-z0-9-]"
            );
            anyhow::ensure!(
                (1..=1_000_000).contains(&count),
                "--count must be in 1..=1000000"
            );
            let file = provision_file(&product, &app_id, seed, count);
            let text = serde_json::to_string(&file)?;
            std::fs::write(&out, text + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
            if let Some(path) = passwords {
                std::fs::write(&path, password_lines(&product, seed, count))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!(
                "wrote {count} devices of product {product} (seed {seed}) to {}",
                out.display()
            );
            Ok(true)
        }
        Cmd::IdleConnections {
            worker: Some(share),
            ..
        } => idle::worker::run(share).map(|()| true),
        Cmd::IdleConnections {
            scenario,
            out,
            worker: None,
        } => {
            let mut s = IdleScenario::load(&scenario_path(scenario)?)?;
            s.server_pid = out.server_pid.or(s.server_pid);
            out.run("idle-connections", |json| idle::main(&s, json))
        }
        Cmd::ReconnectStorm {
            worker: Some(share),
            ..
        } => reconnect::worker::run(share).map(|()| true),
        Cmd::ReconnectStorm {
            scenario,
            out,
            worker: None,
        } => {
            let mut s = ReconnectScenario::load(&scenario_path(scenario)?)?;
            s.server_pid = out.server_pid.or(s.server_pid);
            out.run("reconnect-storm", |json| reconnect::main(&s, json))
        }
        Cmd::Telemetry {
            worker: Some(share),
            ..
        } => traffic::worker::run(share).map(|()| true),
        Cmd::Telemetry {
            scenario,
            out,
            worker: None,
        } => {
            let mut s = TelemetryScenario::load(&scenario_path(scenario)?)?;
            s.fleet.server_pid = out.server_pid.or(s.fleet.server_pid);
            out.run("telemetry", |json| telemetry::main(&s, json))
        }
        Cmd::CommandRoundtrip {
            worker: Some(share),
            ..
        } => traffic::worker::run(share).map(|()| true),
        Cmd::CommandRoundtrip {
            scenario,
            api_key_file,
            out,
            worker: None,
        } => {
            let mut s = CommandScenario::load(&scenario_path(scenario)?)?;
            s.fleet.server_pid = out.server_pid.or(s.fleet.server_pid);
            out.run("command-roundtrip", |json| {
                command::main(&s, api_key_file.as_deref(), json)
            })
        }
        Cmd::CoapSleepers {
            scenario,
            api_key_file,
            out,
        } => {
            let mut s = SleepersScenario::load(&scenario)?;
            s.server_pid = out.server_pid.or(s.server_pid);
            out.run("coap-sleepers", |json| {
                sleepers::main(&s, api_key_file.as_deref(), json)
            })
        }
        Cmd::Summary { reports } => {
            let mut rows = Vec::new();
            for (name, path) in reports {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let value = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                rows.push((name, value));
            }
            print!("{}", fleetgate_loadtest::summary::markdown(&rows));
            Ok(true)
        }
        Cmd::PerfReport {
            run_info,
            out,
            plots,
        } => {
            fleetgate_loadtest::perf_report::main(&run_info, &out, plots.as_deref())?;
            eprintln!("wrote {}", out.display());
            Ok(true)
        }
        Cmd::Plot {
            out_dir,
            prefix,
            reports,
        } => {
            let written =
                fleetgate_loadtest::plot::plot_files(&reports, &out_dir, prefix.as_deref())?;
            if written.is_empty() {
                eprintln!("no chart had data: nothing written");
            }
            for path in written {
                println!("{}", path.display());
            }
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fleetgate-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
