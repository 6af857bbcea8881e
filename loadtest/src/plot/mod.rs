//! PNG charts of scenario reports, for `fleetgate-loadtest plot NAME=REPORT.json …` and a
//! scenario's `--plots DIR`. Reports are read as JSON values, not as the report structs, so
//! reports of older runs still draw; several reports of one scenario kind share a chart, one
//! line per named server (fleetgate on epoll and io_uring, Mosquitto, rumqttd, …).
//!
//! Reading ([`charts`], in `extract.rs`) turns reports into [`Chart`]s of plain points and is
//! tested without drawing; drawing (`draw.rs`) renders a chart with `plotters` into a PNG of
//! [`WIDTH`] × [`HEIGHT`] with an embedded font. A field that is missing (or `null`) draws
//! nothing and a chart with nothing to draw is left out; a field of the wrong type is an error
//! naming the file and the field, e.g. `epoll.json: field series[3].p99_us: expected a number,
//! found "x"`.
//!
//! | scenario_kind | charts |
//! |---|---|
//! | `idle-connections` | `rss`: server VmRSS against open connections (the checkpoints) |
//! | `telemetry` | `rate`: delivered (and sent, dashed) per second; `latency`: p99 (and p50, dashed) per second |
//! | `command-roundtrip` | `rate`: ok (and errors, dashed) per second; `latency`: as `telemetry` |
//! | `reconnect-storm` | `recovery`: devices back since the drop; `cpu`: server cores busy during the storm |
//! | `coap-sleepers` | `rate`: registered, wakes (dashed), commands (dotted) per second; `rss`: server VmRSS against registered devices; `latency`: p99 per second |

mod draw;
mod extract;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

pub use draw::{HEIGHT, WIDTH, render_png};
pub use extract::{KINDS, charts};

/// A report and the server it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The server's name, shown in legends and titles (may be empty: a run's own report).
    pub name: String,
    /// Where the report came from (its file), named in errors.
    pub source: String,
    /// The report as read.
    pub value: Value,
}

impl Report {
    /// Reads and parses the JSON report at `path`.
    pub fn read(name: &str, path: &Path) -> anyhow::Result<Report> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Report {
            name: name.to_owned(),
            source: path.display().to_string(),
            value,
        })
    }

    /// Its `scenario_kind`.
    pub fn kind(&self) -> anyhow::Result<&str> {
        match self.value.get("scenario_kind") {
            Some(Value::String(kind)) => Ok(kind),
            Some(other) => anyhow::bail!(
                "{}: field scenario_kind: expected a string, found {}",
                self.source,
                extract::show(other)
            ),
            None => anyhow::bail!(
                "{}: field scenario_kind: missing (is this a fleetgate-loadtest report?)",
                self.source
            ),
        }
    }
}

/// How a line is stroked: the metric it shows (e.g. `sent` dashed beside `delivered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    /// A plain line.
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dots.
    Dotted,
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Its legend entry (none when empty).
    pub label: String,
    /// Index into the palette: the server when several are compared, else the metric.
    pub colour: usize,
    /// Its stroke.
    pub stroke: Stroke,
    /// Whether each point gets a marker (few points, e.g. checkpoints).
    pub markers: bool,
    /// Runs of points `(x, y)`; a missing reading ends a run, so gaps are not bridged.
    pub segments: Vec<Vec<(f64, f64)>>,
}

impl Line {
    /// Its points, all runs together.
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.segments.iter().flatten().copied()
    }
}

/// One chart: what to draw and how to label it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Its name in file names: `{prefix}-{name}.png`.
    pub name: &'static str,
    /// The caption.
    pub title: String,
    /// The x axis, with its unit.
    pub x_label: &'static str,
    /// The y axis, with its unit.
    pub y_label: String,
    /// Whether the y axis is logarithmic (latencies spanning orders of magnitude).
    pub y_log: bool,
    /// The lines, each with at least one point.
    pub lines: Vec<Line>,
}

/// The one scenario kind of `reports`; an error when they differ or there are none.
pub fn common_kind(reports: &[Report]) -> anyhow::Result<&str> {
    let first = reports.first().context("no report to plot")?;
    let kind = first.kind()?;
    for r in &reports[1..] {
        let other = r.kind()?;
        anyhow::ensure!(
            other == kind,
            "reports of different scenario kinds cannot share a chart: {} is {kind:?}, {} is {other:?}",
            first.source,
            r.source
        );
    }
    Ok(kind)
}

/// Draws every chart of `reports` (all of one scenario kind) into `dir` (created if missing) as
/// `{prefix}-{chart}.png`, `prefix` defaulting to the scenario kind; returns the files written,
/// in chart order. Charts with no data are left out, so the list may be empty.
pub fn write_charts(
    reports: &[Report],
    dir: &Path,
    prefix: Option<&str>,
) -> anyhow::Result<Vec<PathBuf>> {
    let kind = common_kind(reports)?;
    if let Some(p) = prefix {
        anyhow::ensure!(
            !p.is_empty() && !p.contains(['/', '\\']) && p != "." && p != "..",
            "--prefix {p:?} must be a non-empty file name part without a path separator"
        );
    }
    let mut names = BTreeSet::new();
    for r in reports {
        anyhow::ensure!(
            names.insert(r.name.as_str()),
            "two reports are named {:?}: names tell the lines apart",
            r.name
        );
    }
    let prefix = prefix.unwrap_or(kind).to_owned();
    let charts = charts(reports)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::with_capacity(charts.len());
    for chart in &charts {
        let path = dir.join(format!("{prefix}-{}.png", chart.name));
        render_png(chart, &path).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Reads `NAME=FILE` reports and draws their charts: [`write_charts`] on files.
pub fn plot_files(
    named: &[(String, PathBuf)],
    dir: &Path,
    prefix: Option<&str>,
) -> anyhow::Result<Vec<PathBuf>> {
    let reports = named
        .iter()
        .map(|(name, path)| Report::read(name, path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    write_charts(&reports, dir, prefix)
}

#[cfg(test)]
mod tests;
