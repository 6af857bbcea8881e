//! Tests of `perf-report`: verdicts, ratios and numbers, then whole documents rendered from
//! hand-built reports, and `main` on a run directory.

use serde_json::json;

use super::figures::{Fmt, Src::Ms, fmt_num};
use super::*;

fn run(variant: &str, server: &str, status: Status, reason: &str) -> Run {
    Run {
        variant: variant.to_owned(),
        server: server.to_owned(),
        status,
        reason: reason.to_owned(),
        report: Some(format!("{variant}-{server}.json")),
        scenario_file: Some(format!("{variant}-{server}.toml")),
        command: format!("fleetgate-loadtest x --json {variant}-{server}.json"),
    }
}

fn idle(kib: f64, p99_us: u64) -> Value {
    json!({
        "connections": {"established": 100, "requested": 100, "alive_after_hold": 100},
        "connect_rate_per_sec": 1000.0,
        "connect_latency_us": {"p50": 500, "p99": p99_us},
        "server": {
            "checkpoints": [
                {"target": 0, "connections": 0, "memory": {"vm_rss": 10_485_760}},
                {"target": 100, "memory": {"vm_rss": 20_971_520}}
            ],
            "slope": {"vm_rss": {"slope": kib * 1024.0, "r2": 0.999}},
            "cpu": {"user": 0.5, "system": 0.25}
        },
        "generator": {"cores_busy": 0.1}
    })
}

fn fixed(per_cpu: f64, p99_us: u64, busy: f64) -> Value {
    json!({
        "scenario": {"rate": 10000},
        "messages": {"sent": 100, "planned": 100, "delivered": 100, "lost": 0},
        "delivered_per_sec": 10000.0,
        "latency_us": {"p50": 800, "p99": p99_us},
        "server": {"cpu": {"user": 1.0, "system": 1.0}, "delivered_per_cpu_sec": per_cpu},
        "generator": {"cores_busy_publishing": busy}
    })
}

/// Two fleetgate drivers and two peers: fleetgate wins idle memory against rumqttd, loses
/// it to Mosquitto on io_uring, loses messages per CPU-second to Mosquitto on both.
fn inputs() -> Inputs {
    let servers = [
        "fleetgate-epoll",
        "fleetgate-io_uring",
        "mosquitto",
        "rumqttd",
    ];
    let mut runs = Vec::new();
    let mut reports = BTreeMap::new();
    let idle_kib = [0.74, 1.5, 0.84, 43.8];
    let per_cpu = [15_000.0, 12_000.0, 20_000.0, 5_000.0];
    for (i, s) in servers.iter().enumerate() {
        runs.push(run("idle-connections", s, Status::Ok, ""));
        reports.insert(
            ("idle-connections".to_owned(), (*s).to_owned()),
            idle(idle_kib[i], 2000),
        );
        runs.push(run("telemetry-fixed", s, Status::Ok, ""));
        let busy = if *s == "rumqttd" { 0.97 } else { 0.5 };
        reports.insert(
            ("telemetry-fixed".to_owned(), (*s).to_owned()),
            fixed(per_cpu[i], 4000, busy),
        );
    }
    runs.push(run(
        "telemetry-saturation",
        "rumqttd",
        Status::Failed,
        "exit 2: subscription refused | see log",
    ));
    runs.push(run("command-roundtrip", "fleetgate-epoll", Status::Ok, ""));
    reports.insert(
        ("command-roundtrip".to_owned(), "fleetgate-epoll".to_owned()),
        json!({"commands": {"sent": 10, "ok": 10, "errors": 0}, "latency_us": {"p99": 3000}}),
    );
    Inputs {
        info: RunInfo {
            date: "2026-11-23T10:00Z".to_owned(),
            command: "loadtest/compare.sh".to_owned(),
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            runs,
            ..RunInfo::default()
        },
        reports,
        plots: vec![
            "idle-connections-rss.png".to_owned(),
            "idle-subscribed-rss.png".to_owned(),
            "idle-connections-rss.txt".to_owned(),
        ],
        results_link: "../loadtest/results/compare".to_owned(),
        plots_link: "perf".to_owned(),
        ..Inputs::default()
    }
}

#[test]
fn verdicts_follow_the_direction() {
    assert_eq!(verdict(0.74, 0.84, Better::Lower), Some(Verdict::Wins));
    assert_eq!(verdict(1.5, 0.84, Better::Lower), Some(Verdict::Loses));
    assert_eq!(verdict(12.0, 20.0, Better::Higher), Some(Verdict::Loses));
    assert_eq!(verdict(30.0, 20.0, Better::Higher), Some(Verdict::Wins));
    assert_eq!(verdict(1000.0, 1003.0, Better::Higher), Some(Verdict::Even));
    assert_eq!(verdict(0.0, 0.0, Better::Lower), Some(Verdict::Even));
    assert_eq!(verdict(3.0, 0.0, Better::Lower), Some(Verdict::Loses));
    assert_eq!(verdict(0.0, 3.0, Better::Lower), Some(Verdict::Wins));
    assert_eq!(verdict(1.0, 2.0, Better::Neither), None);
    assert_eq!(verdict(f64::NAN, 2.0, Better::Lower), None);
}

#[test]
fn ratio_cells_say_who_wins() {
    assert_eq!(
        ratio_cell(Some(0.74), Some(0.84), Better::Lower),
        "0.88× wins"
    );
    assert_eq!(
        ratio_cell(Some(12_000.0), Some(20_000.0), Better::Higher),
        "0.60× **loses**"
    );
    assert_eq!(
        ratio_cell(Some(0.74), Some(43.8), Better::Lower),
        "0.017× wins"
    );
    assert_eq!(
        ratio_cell(Some(5.0), Some(0.0), Better::Lower),
        "∞ **loses**"
    );
    assert_eq!(
        ratio_cell(Some(0.0), Some(0.0), Better::Lower),
        "1.00× even"
    );
    assert_eq!(ratio_cell(Some(2.0), Some(1.0), Better::Neither), "2.00×");
    assert_eq!(ratio_cell(None, Some(1.0), Better::Lower), "–");
}

#[test]
fn numbers_are_grouped() {
    assert_eq!(fmt_num(1_234_567.4, Fmt::Int), "1,234,567");
    assert_eq!(fmt_num(999.4, Fmt::Int), "999");
    assert_eq!(fmt_num(12_345.678, Fmt::Dec(2)), "12,346");
    assert_eq!(fmt_num(0.745, Fmt::Dec(2)), "0.74");
    assert_eq!(fmt_num(-1500.0, Fmt::Int), "-1,500");
}

#[test]
fn the_table_gives_ratios_and_says_where_fleetgate_loses() {
    let md = markdown(&inputs());
    let row = |label: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label:?} in\n{md}"))
            .to_owned()
    };
    // Header: a column per server, then epoll and io_uring against each peer.
    assert!(
        md.contains("| figure | better | fleetgate (epoll) | fleetgate (io_uring) | Mosquitto | rumqttd | epoll ÷ Mosquitto | epoll ÷ rumqttd | io_uring ÷ Mosquitto | io_uring ÷ rumqttd |"),
        "{md}"
    );
    assert_eq!(
        row("**KiB of RSS per connection** (slope)"),
        "| **KiB of RSS per connection** (slope) | lower | 0.74 | 1.50 | 0.84 | 43.80 | 0.88× wins | 0.017× wins | 1.79× **loses** | 0.034× wins |"
    );
    assert_eq!(
        row("**delivered per server CPU-second**"),
        "| **delivered per server CPU-second** | higher | 15,000 | 12,000 | 20,000 | 5,000 | 0.75× **loses** | 3.00× wins | 0.60× **loses** | 2.40× wins |"
    );
    // Context rows have no ratio.
    assert_eq!(
        row("r² of that slope"),
        "| r² of that slope |  | 0.9990 | 0.9990 | 0.9990 | 0.9990 | | | | |"
    );
    // Losses are listed again at the top, plainly, one line per figure.
    let top = md.split("## Goals").next().unwrap_or_default();
    assert!(
        top.contains("- Telemetry at QoS 1 — (c) one fixed rate for every server — delivered per server CPU-second (higher is better): fleetgate (epoll) 15,000 against Mosquitto 20,000 (0.75×); fleetgate (io_uring) 12,000 against Mosquitto 20,000 (0.60×).\n"),
        "{top}"
    );
    assert!(
        top.contains("- Idle MQTT sessions — idle connections — KiB of RSS per connection (slope) (lower is better): fleetgate (io_uring) 1.50 against Mosquitto 0.84 (1.79×).\n"),
        "{top}"
    );
    assert!(
        !top.contains("against rumqttd"),
        "fleetgate beat rumqttd everywhere: {top}"
    );
    // Goals, met and missed.
    assert!(md.contains("≤ 1 KiB of RSS per idle connection, fleetgate (epoll): 0.74 KiB — met."));
    assert!(md.contains("fleetgate (io_uring): 1.50 KiB — **missed**."));
    assert!(md.contains("fleetgate (epoll): 15,000 against 20,000 (0.75×) — **missed**."));
}

#[test]
fn failures_and_inapplicable_runs_are_named() {
    let md = markdown(&inputs());
    assert!(
        md.contains("| **(a) saturation**: outcome | | not run | not run | not run | failed: exit 2: subscription refused \\| see log |"),
        "{md}"
    );
    assert!(
        md.contains("| **commands**: outcome | | ok | not run | not applicable | not applicable |"),
        "{md}"
    );
    // No ratio columns where the peers cannot run the scenario.
    assert!(md.contains(
        "| figure | better | fleetgate (epoll) | fleetgate (io_uring) | Mosquitto | rumqttd |\n"
    ));
    // Sections without any run are left out.
    assert!(!md.contains("## Reconnect storm"));
    assert!(
        md.contains("- **The generator was the bottleneck** in (c) one fixed rate for every server against rumqttd: 0.97 cores busy")
    );
}

#[test]
fn incomplete_runs_show_what_was_missed() {
    let mut i = inputs();
    let r = i
        .info
        .runs
        .iter_mut()
        .find(|r| r.variant == "idle-connections" && r.server == "mosquitto");
    if let Some(r) = r {
        r.status = Status::Incomplete;
    }
    if let Some(v) = i
        .reports
        .get_mut(&("idle-connections".to_owned(), "mosquitto".to_owned()))
    {
        v["connections"]["established"] = json!(97);
    }
    let md = markdown(&i);
    assert!(
        md.contains(
            "| incomplete: 97 of 100 connections established, 100 still open after the hold |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| connections established |  | 100 | 100 | 97 | 100 |"),
        "{md}"
    );
}

#[test]
fn a_run_that_established_nothing_gives_no_figures() {
    let mut i = inputs();
    if let Some(r) = i.info.runs.iter_mut().find(|r| r.server == "rumqttd") {
        r.status = Status::Incomplete;
    }
    if let Some(v) = i
        .reports
        .get_mut(&("idle-connections".to_owned(), "rumqttd".to_owned()))
    {
        v["connections"]["established"] = json!(0);
        v["connect_latency_us"] = json!({"count": 0, "p50": 0, "p99": 0});
    }
    let md = markdown(&i);
    assert!(
        md.contains("| CONNACK latency p99 (ms) | lower | 2.00 | 2.00 | 2.00 | – | 1.00× even | – | 1.00× even | – |"),
        "{md}"
    );
    assert!(!md.contains('∞'), "{md}");
}

#[test]
fn empty_histograms_are_no_figure() {
    let v = json!({"latency_us": {"count": 0, "p99": 0}, "l2": {"count": 3, "p99": 1500}});
    assert_eq!(Ms("/latency_us/p99").get(&v), None);
    assert_eq!(Ms("/l2/p99").get(&v), Some(1.5));
    assert_eq!(Ms("/missing/p99").get(&v), None);
}

#[test]
fn plots_links_and_the_closing_link() {
    let md = markdown(&inputs());
    assert!(md.contains("(perf/idle-connections-rss.png)"), "{md}");
    assert!(
        !md.contains("idle-subscribed-rss.png"),
        "no idle-subscribed run: {md}"
    );
    assert!(!md.contains("rss.txt"));
    assert!(md.contains(
        "[report](../loadtest/results/compare/idle-connections-mosquitto.json), [scenario](../loadtest/results/compare/idle-connections-mosquitto.toml)"
    ));
    assert!(
        md.trim_end()
            .ends_with("[Further measurements](perf-notes.md)."),
        "{md}"
    );
}

#[test]
fn relative_links() {
    assert_eq!(
        relative(
            Path::new("/r/docs"),
            Path::new("/r/loadtest/results/compare")
        ),
        "../loadtest/results/compare"
    );
    assert_eq!(
        relative(Path::new("/r/docs"), Path::new("/r/docs/perf")),
        "perf"
    );
    assert_eq!(relative(Path::new("/r/docs"), Path::new("/r/docs")), ".");
}

#[test]
fn main_reads_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("loadtest/results/compare");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::create_dir_all(dir.path().join("docs/perf")).unwrap();
    std::fs::write(
        dir.path().join("docs/perf/idle-connections-rss.png"),
        b"png",
    )
    .unwrap();
    std::fs::write(
        results.join("idle-connections-mosquitto.json"),
        idle(0.8, 1000).to_string(),
    )
    .unwrap();
    std::fs::write(results.join("idle-connections-rumqttd.json"), "{not json").unwrap();
    std::fs::write(results.join("mosquitto.conf"), "listener 1 127.0.0.1\n").unwrap();
    let info = json!({
        "date": "2026-11-23T10:00Z",
        "smoke": true,
        "servers": ["mosquitto", "rumqttd"],
        "server_configs": {"mosquitto": "mosquitto.conf"},
        "runs": [
            {"variant": "idle-connections", "server": "mosquitto", "status": "ok",
             "report": "idle-connections-mosquitto.json", "scenario_file": "missing.toml"},
            {"variant": "idle-connections", "server": "rumqttd", "status": "ok",
             "report": "idle-connections-rumqttd.json"}
        ]
    });
    std::fs::write(results.join("run-info.json"), info.to_string()).unwrap();
    let out = dir.path().join("docs/perf.md");
    main(&results.join("run-info.json"), &out, None).unwrap();
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("**Smoke run**"));
    assert!(md.contains("| 0.80 | – |"), "{md}");
    assert!(md.contains("failed: unreadable report"), "{md}");
    assert!(md.contains("(perf/idle-connections-rss.png)"), "{md}");
    assert!(md.contains("[report](../loadtest/results/compare/idle-connections-mosquitto.json)"));
    assert!(!md.contains("missing.toml"));
    assert!(md.contains("listener 1 127.0.0.1"));
}
