//! Reading reports into [`Chart`]s: which fields each scenario kind's charts take, how a
//! missing reading is shown (a count absent from a second counted nothing; a gauge or latency
//! absent leaves a gap), and errors that name the file and the field. Called by
//! [`super::write_charts`]; drawing is `draw.rs`'s.

use anyhow::anyhow;
use serde_json::Value;

use super::{Chart, Line, Report, Stroke};

/// The scenario kinds that have charts.
pub const KINDS: &[&str] = &[
    "idle-connections",
    "telemetry",
    "command-roundtrip",
    "reconnect-storm",
    "coap-sleepers",
];

const MIB: f64 = 1024.0 * 1024.0;

/// The JSON of a value in an error message, cut short.
pub(super) fn show(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// A value inside a report, with the path that leads to it (for errors).
#[derive(Debug, Clone)]
struct At<'a> {
    source: &'a str,
    path: String,
    value: &'a Value,
}

type Result<T> = anyhow::Result<T>;

impl<'a> At<'a> {
    fn root(r: &'a Report) -> At<'a> {
        At {
            source: &r.source,
            path: String::new(),
            value: &r.value,
        }
    }

    fn wrong(&self, expected: &str) -> anyhow::Error {
        let path = if self.path.is_empty() {
            "(the whole report)"
        } else {
            &self.path
        };
        anyhow!(
            "{}: field {path}: expected {expected}, found {}",
            self.source,
            show(self.value)
        )
    }

    fn child(&self, path: String, value: &'a Value) -> At<'a> {
        At {
            source: self.source,
            path,
            value,
        }
    }

    /// Field `key` of this object; `None` when missing or `null`.
    fn field(&self, key: &str) -> Result<Option<At<'a>>> {
        let object = self
            .value
            .as_object()
            .ok_or_else(|| self.wrong("an object"))?;
        Ok(match object.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let path = if self.path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{}.{key}", self.path)
                };
                Some(self.child(path, v))
            }
        })
    }

    /// The field at `keys` under this object; `None` when any step is missing or `null`.
    fn path(&self, keys: &[&str]) -> Result<Option<At<'a>>> {
        let mut at = self.clone();
        for key in keys {
            match at.field(key)? {
                Some(next) => at = next,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// Field `key`, which a well-formed report has.
    fn required(&self, key: &str) -> Result<At<'a>> {
        self.field(key)?.ok_or_else(|| {
            let path = if self.path.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.path)
            };
            anyhow!("{}: field {path}: missing", self.source)
        })
    }

    /// The elements of this array.
    fn items(&self) -> Result<Vec<At<'a>>> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.wrong("an array"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| self.child(format!("{}[{i}]", self.path), v))
            .collect())
    }

    fn number(&self) -> Result<f64> {
        self.value.as_f64().ok_or_else(|| self.wrong("a number"))
    }

    /// Number `key`, which a well-formed report has.
    fn num(&self, key: &str) -> Result<f64> {
        self.required(key)?.number()
    }

    /// Number `key`, if present.
    fn opt_num(&self, key: &str) -> Result<Option<f64>> {
        self.field(key)?.map(|v| v.number()).transpose()
    }
}

/// Splits points at the missing ones (`None`) into runs.
fn runs(points: impl IntoIterator<Item = Option<(f64, f64)>>) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for p in points {
        match p {
            Some(p) => run.push(p),
            None if !run.is_empty() => out.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// How the lines of one chart are named and coloured: per server when several reports are
/// compared, per metric when one report is drawn.
struct Lines<'r> {
    reports: &'r [Report],
    metrics: usize,
    lines: Vec<Line>,
}

impl<'r> Lines<'r> {
    fn new(reports: &'r [Report], metrics: usize) -> Lines<'r> {
        Lines {
            reports,
            metrics,
            lines: Vec::new(),
        }
    }

    /// Adds report `i`'s line of metric `m` (named `metric`), unless it has no point.
    fn add(
        &mut self,
        i: usize,
        m: usize,
        metric: &str,
        stroke: Stroke,
        runs: Vec<Vec<(f64, f64)>>,
    ) {
        if runs.iter().all(Vec::is_empty) {
            return;
        }
        let several = self.reports.len() > 1;
        let name = &self.reports[i].name;
        let label = match (several, self.metrics > 1) {
            (true, true) => format!("{name} {metric}"),
            (false, true) => metric.to_owned(),
            (_, false) => name.clone(),
        };
        self.lines.push(Line {
            label,
            colour: if several { i } else { m },
            stroke,
            markers: false,
            segments: runs,
        });
    }
}

/// The chart's caption: what it shows, and the server when only one report is drawn.
fn title(what: &str, reports: &[Report]) -> String {
    match reports {
        [one] if !one.name.is_empty() => format!("{what} — {}", one.name),
        _ => what.to_owned(),
    }
}

/// The per-second `series` of a report: each second's `t` and its object (none when the report
/// has no series).
fn seconds<'a>(root: &At<'a>) -> Result<Vec<(f64, At<'a>)>> {
    let Some(series) = root.field("series")? else {
        return Ok(Vec::new());
    };
    series
        .items()?
        .into_iter()
        .map(|s| Ok((s.num("t")?, s)))
        .collect()
}

/// A count per second (`sent`, `ok`, …): a second without it counted none. `None` when no
/// second has it (the report does not count that).
fn counts(secs: &[(f64, At<'_>)], key: &str) -> Result<Option<Vec<(f64, f64)>>> {
    let mut any = false;
    let mut points = Vec::with_capacity(secs.len());
    for (t, s) in secs {
        let v = s.opt_num(key)?;
        any |= v.is_some();
        points.push((*t, v.unwrap_or(0.0)));
    }
    Ok(any.then_some(points))
}

/// A latency per second in ms (`p99_us`, `p50_us`): 0 or missing is a second without one, a
/// gap in the line.
fn latencies(secs: &[(f64, At<'_>)], key: &str) -> Result<Vec<Vec<(f64, f64)>>> {
    let mut points = Vec::with_capacity(secs.len());
    for (t, s) in secs {
        let v = s.opt_num(key)?.filter(|&us| us > 0.0);
        points.push(v.map(|us| (*t, us / 1000.0)));
    }
    Ok(runs(points))
}

/// Which per-second counts a `rate` chart draws.
struct RateSpec {
    what: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    metrics: &'static [(&'static str, Stroke)],
}

const TELEMETRY_X: &str = "time since publishing started (s)";
const COMMAND_X: &str = "time since the first command (s)";
const SLEEPERS_X: &str = "time since registrations started (s)";

fn rate(reports: &[Report], spec: &RateSpec) -> Result<Chart> {
    let mut lines = Lines::new(reports, spec.metrics.len());
    for (i, r) in reports.iter().enumerate() {
        let secs = seconds(&At::root(r))?;
        for (m, &(metric, stroke)) in spec.metrics.iter().enumerate() {
            if let Some(points) = counts(&secs, metric)? {
                lines.add(i, m, metric, stroke, vec![points]);
            }
        }
    }
    Ok(Chart {
        name: "rate",
        title: title(spec.what, reports),
        x_label: spec.x_label,
        y_label: spec.y_label.to_owned(),
        y_log: false,
        lines: lines.lines,
    })
}

/// Latencies over this ratio of the largest to the smallest get a logarithmic axis.
const LOG_RATIO: f64 = 20.0;

fn latency(reports: &[Report], what: &str, x_label: &'static str) -> Result<Chart> {
    const METRICS: [(&str, &str, Stroke); 2] = [
        ("p99_us", "p99", Stroke::Solid),
        ("p50_us", "p50", Stroke::Dashed),
    ];
    let mut lines = Lines::new(reports, METRICS.len());
    for (i, r) in reports.iter().enumerate() {
        let secs = seconds(&At::root(r))?;
        for (m, (key, metric, stroke)) in METRICS.into_iter().enumerate() {
            lines.add(i, m, metric, stroke, latencies(&secs, key)?);
        }
    }
    let lines = lines.lines;
    let (lo, hi) = lines
        .iter()
        .flat_map(Line::points)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, y)| {
            (lo.min(y), hi.max(y))
        });
    let y_log = hi / lo > LOG_RATIO;
    Ok(Chart {
        name: "latency",
        title: title(what, reports),
        x_label,
        y_label: if y_log {
            "latency (ms, log scale)".to_owned()
        } else {
            "latency (ms)".to_owned()
        },
        y_log,
        lines,
    })
}

fn idle_rss(reports: &[Report]) -> Result<Chart> {
    let mut lines = Lines::new(reports, 1);
    for (i, r) in reports.iter().enumerate() {
        let Some(checkpoints) = At::root(r).path(&["server", "checkpoints"])? else {
            continue;
        };
        let mut points = Vec::new();
        for c in checkpoints.items()? {
            let rss = c.required("memory")?.num("vm_rss")?;
            points.push((c.num("connections")?, rss / MIB));
        }
        lines.add(i, 0, "VmRSS", Stroke::Solid, vec![points]);
    }
    let mut lines = lines.lines;
    lines.iter_mut().for_each(|l| l.markers = true);
    Ok(Chart {
        name: "rss",
        title: title(
            "idle-connections: server memory by open connections",
            reports,
        ),
        x_label: "open connections",
        y_label: "server VmRSS (MiB)".to_owned(),
        y_log: false,
        lines,
    })
}

fn recovery(reports: &[Report]) -> Result<Chart> {
    let mut lines = Lines::new(reports, 1);
    for (i, r) in reports.iter().enumerate() {
        let Some(series) = At::root(r).path(&["storm", "series"])? else {
            continue;
        };
        let mut points = Vec::new();
        for p in series.items()? {
            points.push((p.num("t_ms")? / 1000.0, p.num("connected")?));
        }
        lines.add(i, 0, "devices back", Stroke::Solid, vec![points]);
    }
    Ok(Chart {
        name: "recovery",
        title: title("reconnect-storm: devices back after the drop", reports),
        x_label: "time since the drop (s)",
        y_label: "devices back (CONNACK 0)".to_owned(),
        y_log: false,
        lines: lines.lines,
    })
}

/// Server CPU between consecutive readings of its cumulative CPU seconds, in cores.
fn storm_cpu(reports: &[Report]) -> Result<Chart> {
    let mut lines = Lines::new(reports, 1);
    for (i, r) in reports.iter().enumerate() {
        let Some(series) = At::root(r).path(&["server", "cpu_series"])? else {
            continue;
        };
        let mut readings = Vec::new();
        for p in series.items()? {
            readings.push((p.num("t_ms")? / 1000.0, p.num("cpu_secs")?));
        }
        let points: Vec<_> = readings
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0)))
            .collect();
        lines.add(i, 0, "server CPU", Stroke::Solid, vec![points]);
    }
    Ok(Chart {
        name: "cpu",
        title: title("reconnect-storm: server CPU during the storm", reports),
        x_label: "time since the drop (s)",
        y_label: "server CPU (cores busy)".to_owned(),
        y_log: false,
        lines: lines.lines,
    })
}

/// Server VmRSS (`server_rss_kib`) against the devices registered so far (the running sum of
/// `registered`); a second without a memory reading draws no point.
fn sleepers_rss(reports: &[Report]) -> Result<Chart> {
    let mut lines = Lines::new(reports, 1);
    for (i, r) in reports.iter().enumerate() {
        let secs = seconds(&At::root(r))?;
        if counts(&secs, "registered")?.is_none() {
            continue;
        }
        let mut registered = 0.0;
        let mut points = Vec::with_capacity(secs.len());
        for (_, s) in &secs {
            registered += s.opt_num("registered")?.unwrap_or(0.0);
            let rss = s.opt_num("server_rss_kib")?;
            points.push(rss.map(|kib| (registered, kib / 1024.0)));
        }
        lines.add(i, 0, "VmRSS", Stroke::Solid, runs(points));
    }
    Ok(Chart {
        name: "rss",
        title: title(
            "coap-sleepers: server memory by registered devices",
            reports,
        ),
        x_label: "registered devices",
        y_label: "server VmRSS (MiB)".to_owned(),
        y_log: false,
        lines: lines.lines,
    })
}

/// The charts of `reports` (all of one scenario kind), those with nothing to draw left out.
pub fn charts(reports: &[Report]) -> anyhow::Result<Vec<Chart>> {
    let kind = super::common_kind(reports)?;
    let all = match kind {
        "idle-connections" => vec![idle_rss(reports)?],
        "telemetry" => vec![
            rate(
                reports,
                &RateSpec {
                    what: "telemetry: reports per second",
                    x_label: TELEMETRY_X,
                    y_label: "reports per second",
                    metrics: &[("delivered", Stroke::Solid), ("sent", Stroke::Dashed)],
                },
            )?,
            latency(
                reports,
                "telemetry: end-to-end latency per second",
                TELEMETRY_X,
            )?,
        ],
        "command-roundtrip" => vec![
            rate(
                reports,
                &RateSpec {
                    what: "command-roundtrip: commands per second",
                    x_label: COMMAND_X,
                    y_label: "commands per second",
                    metrics: &[("ok", Stroke::Solid), ("errors", Stroke::Dashed)],
                },
            )?,
            latency(
                reports,
                "command-roundtrip: round-trip latency per second",
                COMMAND_X,
            )?,
        ],
        "reconnect-storm" => vec![recovery(reports)?, storm_cpu(reports)?],
        "coap-sleepers" => vec![
            rate(
                reports,
                &RateSpec {
                    what: "coap-sleepers: events per second",
                    x_label: SLEEPERS_X,
                    y_label: "per second",
                    metrics: &[
                        ("registered", Stroke::Solid),
                        ("wakes", Stroke::Dashed),
                        ("commands", Stroke::Dotted),
                    ],
                },
            )?,
            sleepers_rss(reports)?,
            latency(
                reports,
                "coap-sleepers: latency per second (register, then wake to command)",
                SLEEPERS_X,
            )?,
        ],
        other => anyhow::bail!(
            "{}: scenario_kind {other:?} has no charts (known: {})",
            reports[0].source,
            KINDS.join(", ")
        ),
    };
    Ok(all.into_iter().filter(|c| !c.lines.is_empty()).collect())
}
