//! The `fleetgate` command line: run the platform (the default), print or check the
//! configuration, check the storage. Runtime knobs have their own flags; any configuration key
//! can be set with `--set`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, EXAMPLE, LogFormat, Sources};

/// fleetgate: a self-hosted IoT device-access platform (MQTT, CoAP/LwM2M, HTTPS devices;
/// device registry, shadows, commands, OTA; an HTTP API for applications).
#[derive(Debug, Parser)]
#[command(name = "fleetgate", version)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the defaults apply: data in ./data and the
    /// standard ports. See `fleetgate config example`.
    #[arg(
        short,
        long,
        global = true,
        env = "FLEETGATE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Data directory (storage.path).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address of the application HTTP API (api.listen), e.g. 127.0.0.1:8080.
    #[arg(long, global = true, value_name = "ADDR")]
    pub api_listen: Option<String>,

    /// Log filter (log.level), e.g. `info` or `info,fleetgate_engine=debug`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log format (log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Reactor threads for device sessions (engine.shards); 0 = one per core.
    #[arg(long, global = true, value_name = "N")]
    pub shards: Option<usize>,

    /// Sets any configuration key, e.g. `--set storage.max_pending_commands=50`. Repeatable.
    #[arg(short, long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,

    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the platform until SIGINT or SIGTERM.
    Run,
    /// Prints or checks the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Storage administration.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Registers the products, devices and ACL rules of a JSON file (fleetgate must not be
    /// running on the data directory). Existing records are left alone; the report, including
    /// any generated device secrets, is printed as JSON.
    Provision {
        /// The file, or `-` for standard input.
        file: PathBuf,
    },
}

/// `fleetgate config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Prints an example file with every key and its default.
    Example,
    /// Validates the configuration and reports every problem.
    Check,
    /// Prints the effective configuration (defaults, file, environment and flags merged).
    Show,
}

/// `fleetgate storage ...`.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Opens the database (fleetgate must not be running on it) and checks that every record
    /// decodes and that records and indexes agree.
    Check,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

impl Cli {
    /// The configuration sources this command line names, with the process environment.
    pub fn sources(&self) -> Sources {
        let mut overrides = Vec::new();
        let mut flag = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                // Flags are plain strings: quote them so TOML reads them as such.
                overrides.push((key.to_owned(), toml::Value::String(v).to_string()));
            }
        };
        flag(
            "storage.path",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag("api.listen", self.api_listen.clone());
        flag("log.level", self.log_level.clone());
        flag(
            "log.format",
            self.log_format.map(|f| match f {
                LogFormat::Text => "text".to_owned(),
                LogFormat::Json => "json".to_owned(),
            }),
        );
        if let Some(n) = self.shards {
            overrides.push(("engine.shards".to_owned(), n.to_string()));
        }
        overrides.extend(self.set.iter().cloned());
        Sources {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            overrides,
        }
    }
}

/// Runs the command line and returns the process exit code: 0 success, 1 failure,
/// 2 invalid configuration.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Config(ConfigCommand::Example)) = cli.command {
        print!("{EXAMPLE}");
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli.sources()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Config(ConfigCommand::Example) => unreachable!("handled above"),
        Command::Config(ConfigCommand::Check) => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Storage(StorageCommand::Check) => storage_check(&config),
        Command::Provision { file } => provision(&config, &file),
        Command::Run => {
            crate::logging::init(&config.log);
            let result = actix_web::rt::System::new().block_on(crate::server::run(config));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "fleetgate stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn provision(config: &Config, file: &std::path::Path) -> ExitCode {
    let spec = match crate::provision::read(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read {}: {e:#}", file.display());
            return ExitCode::from(2);
        }
    };
    let storage = match crate::server::open_storage(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let report = crate::provision::apply(storage.as_ref(), spec);
    let failed = !report.errors.is_empty();
    match serde_json::to_string_pretty(&report) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("cannot print the report: {e}"),
    }
    if let Err(e) = storage.flush() {
        eprintln!("flushing storage failed: {e}");
        return ExitCode::FAILURE;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn storage_check(config: &Config) -> ExitCode {
    let storage = match crate::server::open_storage(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match storage.check_integrity() {
        Ok(report) if report.problems.is_empty() => {
            println!("storage is consistent ({} entries checked)", report.checked);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "{} problem(s) in {} entries:",
                report.problems.len(),
                report.checked
            );
            for p in report.problems {
                println!("  - {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("the check could not run: {e}");
            ExitCode::FAILURE
        }
    }
}
