//! `fleetgate-loadtest perf-report`: writes docs/perf.md from one run of `loadtest/compare.sh`.
//!
//! The script runs the same scenarios against fleetgate on each of its drivers and against
//! Mosquitto and rumqttd, keeps every JSON report and a run-info file (date, machine, versions,
//! the commands and scenario files, each run's outcome) in one directory, and calls this. The
//! document has one Markdown table per scenario with a column per server and, where the peers
//! ran the same scenario, the ratio of each fleetgate driver to each peer with its direction
//! and who wins; every loss is listed again at the top. Reports are read leniently (as JSON
//! values), so a figure that a generator version does not report shows as "–".
//!
//! Called by the `fleetgate-loadtest` binary (`src/main.rs`) through [`main`]. This file holds
//! the entry points and the run-info types; the rest is split by responsibility:
//!
//! - `figures`: which figures each scenario's table shows, read out of its JSON reports, and
//!   what an incomplete run missed;
//! - `render`: the Markdown document — tables, ratios and the win/lose wording, the losses
//!   and goals at the top, notes, embedded plots, the servers' settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

mod figures;
mod render;
#[cfg(test)]
mod tests;

pub use figures::Better;
pub use render::{Verdict, markdown, ratio_cell, verdict};

/// fleetgate's servers as `loadtest/compare.sh` names them.
pub const FLEETGATE: [&str; 2] = ["fleetgate-epoll", "fleetgate-io_uring"];
/// The peers fleetgate is compared with.
pub const PEERS: [&str; 2] = ["mosquitto", "rumqttd"];

/// What `loadtest/compare.sh` records about a run besides the reports. File names are
/// relative to the run-info file's directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// Start of the run, UTC.
    pub date: String,
    /// Wall-clock seconds of the whole run.
    pub duration_secs: Option<u64>,
    /// A smoke run (tiny counts): its figures prove the pipeline, not the servers.
    pub smoke: bool,
    /// The command that ran, with the settings that differ from the defaults.
    pub command: String,
    /// Every setting of the run (`NAME=value`).
    pub settings: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// Versions of everything measured and of the compiler.
    pub versions: Versions,
    /// The servers measured, in column order.
    pub servers: Vec<String>,
    /// How each server was started.
    pub server_commands: BTreeMap<String, String>,
    /// Each peer's configuration file, by server.
    pub server_configs: BTreeMap<String, String>,
    /// Every run of a scenario against a server.
    pub runs: Vec<Run>,
}

/// The machine of the run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// CPU cores (`nproc`).
    pub cores: u64,
    /// The CPU model.
    pub cpu: String,
    /// Memory, KiB.
    pub memory_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Open-file limit per process.
    pub open_files: String,
}

/// Versions of the run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Versions {
    /// `fleetgate --version`.
    pub fleetgate: String,
    /// The commit built, with a note when the tree had uncommitted changes.
    pub commit: String,
    /// Mosquitto's version line.
    pub mosquitto: String,
    /// `rumqttd --version`.
    pub rumqttd: String,
    /// `rustc --version`.
    pub rustc: String,
}

/// How one run ended, as the script saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The generator exited 0.
    Ok,
    /// The generator finished but something was missed (exit 1): the report still counts.
    Incomplete,
    /// No usable report: see the reason.
    Failed,
    /// The server cannot run the scenario.
    NotApplicable,
    /// Not run.
    #[default]
    NotRun,
}

/// One scenario run against one server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Run {
    /// The variant (`idle-connections`, `telemetry-saturation`, …).
    pub variant: String,
    /// The server.
    pub server: String,
    /// How it ended.
    pub status: Status,
    /// Why it failed or was not applicable.
    pub reason: String,
    /// The JSON report.
    pub report: Option<String>,
    /// The scenario file.
    pub scenario_file: Option<String>,
    /// The generator's command line.
    pub command: String,
}

/// Everything the document is made from, already read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The run-info file.
    pub info: RunInfo,
    /// Reports by `(variant, server)`.
    pub reports: BTreeMap<(String, String), Value>,
    /// Each peer's configuration text, by server.
    pub configs: BTreeMap<String, String>,
    /// PNG files (names) in the plots directory.
    pub plots: Vec<String>,
    /// The reports' directory, relative to the document's.
    pub results_link: String,
    /// The plots' directory, relative to the document's.
    pub plots_link: String,
}

/// `to` relative to the directory `from_dir` (both absolute), as a link.
pub fn relative(from_dir: &Path, to: &Path) -> String {
    let from: Vec<_> = from_dir.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for c in &to[common..] {
        p.push(c);
    }
    let s = p.to_string_lossy().into_owned();
    if s.is_empty() { ".".to_owned() } else { s }
}

/// `p` as an absolute path, symbolic links resolved where it exists.
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .with_context(|| format!("resolving {}", p.display()))
}

/// Reads the run-info file and the reports beside it and writes the document to `out`; PNG
/// plots are looked up in `plots` (default: `perf/` beside `out`).
pub fn main(run_info: &Path, out: &Path, plots: Option<&Path>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(run_info)
        .with_context(|| format!("reading {}", run_info.display()))?;
    let mut info: RunInfo =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", run_info.display()))?;
    let results = absolute(run_info.parent().unwrap_or(Path::new(".")))?;
    let out_dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let out_dir = out_dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = absolute(out_dir)?;
    let plots = plots.map_or_else(|| out_dir.join("perf"), Path::to_path_buf);
    let plots = absolute(&plots)?;

    let mut reports = BTreeMap::new();
    // A file the run-info names but the run did not leave behind is no link.
    let exists = |f: &String| results.join(f).is_file();
    for run in &mut info.runs {
        run.report = run.report.take().filter(exists);
        run.scenario_file = run.scenario_file.take().filter(exists);
        let Some(file) = &run.report else { continue };
        let parsed = std::fs::read_to_string(results.join(file))
            .map_err(anyhow::Error::from)
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(anyhow::Error::from));
        match parsed {
            Ok(v) => {
                reports.insert((run.variant.clone(), run.server.clone()), v);
            }
            Err(e) => {
                run.status = Status::Failed;
                run.reason = format!("unreadable report: {e}");
            }
        }
    }
    let mut configs = BTreeMap::new();
    for (server, file) in &info.server_configs {
        if let Ok(text) = std::fs::read_to_string(results.join(file)) {
            configs.insert(server.clone(), text);
        }
    }
    let mut png = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&plots) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".png") {
                png.push(name);
            }
        }
    }
    let inputs = Inputs {
        results_link: relative(&out_dir, &results),
        plots_link: relative(&out_dir, &plots),
        info,
        reports,
        configs,
        plots: png,
    };
    std::fs::write(out, markdown(&inputs)).with_context(|| format!("writing {}", out.display()))
}
