//! `fleetgate-loadtest`: the command line of fleetgate's load generator. One subcommand per
//! scenario; see `fleetgate-loadtest --help` and `loadtest/scenarios/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetgate_loadtest::credentials::{provision_file, valid_product};
use fleetgate_loadtest::idle::{self, protocol::WorkerShare};
use fleetgate_loadtest::scenario::IdleScenario;

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
    },
    /// Opens COUNT authenticated MQTT connections at a paced rate, holds them idle, samples the
    /// server's memory at checkpoints. Exits 1 if fewer than COUNT were established or any was
    /// lost.
    IdleConnections {
        /// Scenario file (see loadtest/scenarios/idle-connections.toml).
        #[arg(long, required_unless_present = "worker")]
        scenario: Option<PathBuf>,
        /// Writes the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The server's pid (overrides the file's `server_pid`).
        #[arg(long)]
        server_pid: Option<u32>,
        /// Internal: run as worker INDEX/PROCESSES of a coordinator.
        #[arg(long, hide = true)]
        worker: Option<WorkerShare>,
    },
    /// Prints a Markdown table comparing idle-connections reports (NAME=REPORT.json …).
    Summary {
        /// `NAME=FILE` pairs, one row each, in order.
        #[arg(required = true, value_parser = parse_named)]
        reports: Vec<(String, PathBuf)>,
    },
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
            json,
            server_pid,
            worker: None,
        } => {
            let path = scenario.context("--scenario is required")?;
            let mut s = IdleScenario::load(&path)?;
            if server_pid.is_some() {
                s.server_pid = server_pid;
            }
            idle::main(&s, json.as_deref())
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
