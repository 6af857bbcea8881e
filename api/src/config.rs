//! The configuration file: one TOML document whose sections belong to the crates that use
//! them (`[log]` and `[api]` here, `[engine]`, `[storage]`, `[rocksdb]` in their crates).
//!
//! Values are layered — defaults, then the file, then `FLEETGATE_<SECTION>__<KEY>` environment
//! variables, then command-line flags — and read raw first: every unknown key, every value of
//! the wrong type (one per section) and every failed validation is reported in one go.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fleetgate_engine::EngineConfig;
use fleetgate_storage::StorageConfig;
use fleetgate_storage_rocks::RocksConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "FLEETGATE_";
/// The example configuration, listing every key with its default.
pub const EXAMPLE: &str = include_str!("../../docs/config.example.toml");

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `[log]`.
    pub log: LogConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[rocksdb]`.
    pub rocksdb: RocksConfig,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `info,fleetgate_engine=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[api]`: the application HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Address and port (spec: 8080).
    pub listen: SocketAddr,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Seconds in-flight requests get to finish at shutdown.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most HTTP connections at once. Each is a file descriptor taken from the process
    /// limit the device connections share.
    pub max_connections: usize,
    /// Seconds a synchronous call (command, property set or get) waits for the device's
    /// answer before answering 504 (spec: 20).
    pub sync_timeout_secs: u64,
    /// `[api.rate_limit]`: per-application token buckets.
    pub rate_limit: RateLimitConfig,
}

/// `[api.rate_limit]`: token buckets per application, one for every authenticated call and
/// one for the calls that send to a device (commands, property set and get, messages, shadow
/// desired writes). A rate of 0 is unlimited; a refused call answers 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Authenticated calls per second, per application.
    pub calls_per_sec: u32,
    /// Calls an idle application may make at once.
    pub calls_burst: u32,
    /// Calls that send to a device, per second, per application.
    pub downlinks_per_sec: u32,
    /// Device-bound calls an idle application may make at once.
    pub downlinks_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            calls_per_sec: 200,
            calls_burst: 400,
            downlinks_per_sec: 50,
            downlinks_burst: 100,
        }
    }
}

impl RateLimitConfig {
    fn validate(&self, p: &mut Vec<String>) {
        const MAX: u32 = 1_000_000;
        for (name, rate, burst) in [
            ("calls", self.calls_per_sec, self.calls_burst),
            ("downlinks", self.downlinks_per_sec, self.downlinks_burst),
        ] {
            if rate > MAX {
                p.push(format!("api.rate_limit.{name}_per_sec: at most {MAX}"));
            }
            if rate > 0 && !(1..=MAX).contains(&burst) {
                p.push(format!(
                    "api.rate_limit.{name}_burst: must be between 1 and {MAX} when {name}_per_sec is set"
                ));
            }
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            workers: 0,
            shutdown_grace_secs: 30,
            max_body_bytes: 1 << 20,
            max_connections: 256,
            sync_timeout_secs: 20,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Every problem found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per problem, each starting with the key it concerns.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where configuration values come from, in increasing precedence after the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; only `FLEETGATE_*` ones are read).
    pub env: Vec<(String, String)>,
    /// `key.path=value` overrides from the command line.
    pub overrides: Vec<(String, String)>,
}

/// Environment variables that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["FLEETGATE_CONFIG"];

/// Reads a value the way TOML would (numbers, booleans, arrays, quoted strings), and any other
/// text as a plain string.
fn parse_value(text: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

fn set(table: &mut Table, path: &[String], value: Value, origin: &str, problems: &mut Vec<String>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if path.iter().any(String::is_empty) {
        problems.push(format!("{origin}: empty key segment"));
        return;
    }
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(inner) => t = inner,
            _ => {
                problems.push(format!("{}: is not a section ({origin})", path.join(".")));
                return;
            }
        }
    }
    t.insert(last.clone(), value);
}

fn section<T: DeserializeOwned + Default>(
    name: &str,
    raw: Option<Value>,
    problems: &mut Vec<String>,
) -> T {
    let Some(raw) = raw else { return T::default() };
    if !raw.is_table() {
        problems.push(format!("{name}: must be a table"));
        return T::default();
    }
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignored = serde_ignored::Deserializer::new(raw, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(ignored);
    for key in unknown {
        problems.push(format!("{name}.{key}: unknown key"));
    }
    match result {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let key = if path == "." {
                name.to_owned()
            } else {
                format!("{name}.{path}")
            };
            // Keep the first line: the rest repeats the key the path already names.
            let message = e.into_inner().to_string();
            let first = message.lines().next().unwrap_or_default().trim().to_owned();
            problems.push(format!("{key}: {first}"));
            T::default()
        }
    }
}

impl Config {
    /// Loads, merges and validates the configuration; all problems are reported together.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut table = match &sources.file {
            None => Table::new(),
            Some(path) => read_file(path).map_err(|p| ConfigError { problems: vec![p] })?,
        };
        for (key, value) in &sources.env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if ENV_NOT_KEYS.contains(&key.as_str()) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set(
                &mut table,
                &path,
                parse_value(value),
                &format!("environment variable {key}"),
                &mut problems,
            );
        }
        for (key, value) in &sources.overrides {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set(
                &mut table,
                &path,
                parse_value(value),
                &format!("--set {key}"),
                &mut problems,
            );
        }
        let config = Self::from_table(table, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Parses a TOML document on its own (no environment, no overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table: Table = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![format!("syntax: {}", e.message())],
        })?;
        let mut problems = Vec::new();
        let config = Self::from_table(table, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn from_table(mut table: Table, problems: &mut Vec<String>) -> Config {
        let config = Config {
            log: section("log", table.remove("log"), problems),
            api: section("api", table.remove("api"), problems),
            engine: section("engine", table.remove("engine"), problems),
            storage: section("storage", table.remove("storage"), problems),
            rocksdb: section("rocksdb", table.remove("rocksdb"), problems),
        };
        for key in table.keys() {
            problems.push(format!("{key}: unknown section"));
        }
        problems.extend(config.validate());
        config
    }

    /// Cross-section and per-section validation.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(format!("log.level: {e}"));
        }
        if self.api.max_body_bytes < 1024 {
            p.push("api.max_body_bytes: at least 1024".into());
        }
        if !(1..=100_000).contains(&self.api.max_connections) {
            p.push("api.max_connections: must be between 1 and 100000".into());
        }
        if !(1..=300).contains(&self.api.sync_timeout_secs) {
            p.push("api.sync_timeout_secs: must be between 1 and 300".into());
        }
        if self.api.workers > 1024 {
            p.push("api.workers: at most 1024".into());
        }
        self.api.rate_limit.validate(&mut p);
        p.extend(self.engine.validate(&[("api.listen", self.api.listen)]));
        p.extend(self.storage.validate());
        p.extend(self.rocksdb.validate());
        p
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

fn read_file(path: &Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].lines().count().max(1);
                format!(" (line {line})")
            })
            .unwrap_or_default();
        format!("{}: syntax error{at}: {}", path.display(), e.message())
    })
}

#[cfg(test)]
mod tests;
