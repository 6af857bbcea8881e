//! `fleetgate-loadtest summary NAME=REPORT.json …`: a Markdown table comparing
//! `idle-connections` reports of several servers run on the same machine (used by
//! `loadtest/compare-idle.sh` and pasted into docs/perf.md). Each row says how the sessions
//! authenticated and how many subscriptions each held (`scenario.auth`, `scenario.subscribe`),
//! since both change the memory per session. Reads the JSON leniently (as values), so reports
//! written by older versions still summarize (their unknown settings show as `–`).

use std::fmt::Write as _;

use serde_json::Value;

fn mib(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "–".to_owned(),
        |b| format!("{:.1}", b as f64 / 1_048_576.0),
    )
}

/// The server's checkpoint paused at `target` connections.
fn checkpoint(report: &Value, target: u64) -> Option<&Value> {
    report["server"]["checkpoints"]
        .as_array()?
        .iter()
        .find(|c| c["target"].as_u64() == Some(target))
}

/// The `sessions` cell: authentication and subscriptions per connection, e.g.
/// `password, 1 sub`.
fn sessions(report: &Value) -> String {
    let auth = report["scenario"]["auth"].as_str().unwrap_or("–");
    let subs = match report["scenario"]["subscribe"].as_bool() {
        Some(true) => "1 sub",
        Some(false) => "0 subs",
        None => "– subs",
    };
    format!("{auth}, {subs}")
}

/// One table row per `(name, report)`.
pub fn markdown(reports: &[(String, Value)]) -> String {
    let mut o = String::new();
    let mut mid = None;
    let mut last = None;
    if let Some((_, r)) = reports.first() {
        mid = r["scenario"]["slope_from"].as_u64();
        last = r["scenario"]["count"].as_u64();
    }
    let (mid, last) = (mid.unwrap_or(5000), last.unwrap_or(0));
    let _ = writeln!(
        o,
        "| server | sessions (auth, subscriptions each) | connections (established / requested) | RSS at 0 (MiB) | RSS at {mid} (MiB) | RSS at {last} (MiB) | after hold (MiB) | KiB per connection (slope ≥ {mid}) | r² | connects/s | CONNACK p99 (ms) | server CPU (s) | generator CPU (s) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in reports {
        let c = &r["connections"];
        let rss = |t: u64| {
            checkpoint(r, t).map_or_else(|| "–".to_owned(), |c| mib(&c["memory"]["vm_rss"]))
        };
        let after = mib(&r["server"]["after_hold"]["memory"]["vm_rss"]);
        let fit = &r["server"]["slope"]["vm_rss"];
        let per_conn = fit["slope"]
            .as_f64()
            .map_or_else(|| "–".to_owned(), |s| format!("**{:.2}**", s / 1024.0));
        let r2 = fit["r2"]
            .as_f64()
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.4}"));
        let cpu = |v: &Value| {
            format!(
                "{:.1}",
                v["user"].as_f64().unwrap_or(0.0) + v["system"].as_f64().unwrap_or(0.0)
            )
        };
        let mut failures = String::new();
        if let Some(f) = c["failures"].as_object() {
            for (why, n) in f {
                let _ = write!(failures, "; {n} × {why}");
            }
        }
        let _ = writeln!(
            o,
            "| {name} | {} | {} / {}{failures} | {} | {} | {} | {after} | {per_conn} | {r2} | {:.0} | {:.1} | {} | {} |",
            sessions(r),
            c["established"],
            c["requested"],
            rss(0),
            rss(mid),
            rss(last),
            r["connect_rate_per_sec"].as_f64().unwrap_or(0.0),
            r["connect_latency_us"]["p99"].as_f64().unwrap_or(0.0) / 1000.0,
            cpu(&r["server"]["cpu"]),
            cpu(&r["generator"]["cpu"]),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_per_report() {
        let report = json!({
            "scenario": {"count": 19000, "slope_from": 5000, "auth": "password", "subscribe": true},
            "connections": {"established": 19000, "requested": 19000, "failures": {}},
            "connect_rate_per_sec": 3950.4,
            "connect_latency_us": {"p99": 2500},
            "server": {
                "checkpoints": [
                    {"target": 0, "memory": {"vm_rss": 1_048_576}},
                    {"target": 5000, "memory": {"vm_rss": 6_291_456}},
                    {"target": 19000, "memory": {"vm_rss": 20_971_520}}
                ],
                "after_hold": {"memory": {"vm_rss": 20_971_520}},
                "slope": {"vm_rss": {"slope": 1024.0, "r2": 0.99991}},
                "cpu": {"user": 1.0, "system": 2.25}
            },
            "generator": {"cpu": {"user": 0.5, "system": 1.0}}
        });
        let mut failed = report.clone();
        failed["connections"]["established"] = json!(18597);
        failed["connections"]["failures"] = json!({"connack 3": 403});
        failed["scenario"]["auth"] = json!("device");
        failed["scenario"]["subscribe"] = json!(false);
        let mut old = report.clone();
        old["scenario"] = json!({"count": 19000, "slope_from": 5000});
        let md = markdown(&[
            ("a".into(), report),
            ("b".into(), failed),
            ("c".into(), old),
        ]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5);
        let columns = |line: &str| line.matches('|').count();
        assert!(
            lines.iter().all(|l| columns(l) == columns(lines[0])),
            "{md}"
        );
        assert!(
            lines[0].contains("RSS at 5000 (MiB) | RSS at 19000 (MiB)"),
            "{md}"
        );
        assert_eq!(
            lines[2],
            "| a | password, 1 sub | 19000 / 19000 | 1.0 | 6.0 | 20.0 | 20.0 | **1.00** | 0.9999 | 3950 | 2.5 | 3.2 | 1.5 |"
        );
        assert!(
            lines[3].starts_with("| b | device, 0 subs | 18597 / 19000; 403 × connack 3 |"),
            "{md}"
        );
        // A report from before `auth` and `subscribe` existed.
        assert!(
            lines[4].starts_with("| c | –, – subs | 19000 / 19000 |"),
            "{md}"
        );
    }
}
