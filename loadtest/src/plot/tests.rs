//! Charts from small hand-built reports of each kind: what is read, what is skipped, which
//! errors name what, and that the PNG files come out whole.

use std::path::Path;

use plotters::style::RGBColor;
use serde_json::{Value, json};

use super::draw::{colour, log_ticks, render_rgb, tick};
use super::*;

fn report(name: &str, value: Value) -> Report {
    Report {
        name: name.to_owned(),
        source: format!("{name}.json"),
        value,
    }
}

fn chart<'c>(charts: &'c [Chart], name: &str) -> &'c Chart {
    charts
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no chart {name} in {charts:#?}"))
}

fn names(charts: &[Chart]) -> Vec<&str> {
    charts.iter().map(|c| c.name).collect()
}

/// The width and height in a PNG file's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn idle(vm_rss_mib: &[(u64, u64)]) -> Value {
    let checkpoints: Vec<Value> = vm_rss_mib
        .iter()
        .map(|&(connections, mib)| {
            json!({"target": connections, "connections": connections, "at_secs": 1.0,
                   "memory": {"vm_rss": mib << 20, "rss_anon": 0}})
        })
        .collect();
    json!({"scenario_kind": "idle-connections", "ok": true,
           "server": {"pid": 1, "checkpoints": checkpoints}})
}

fn telemetry(series: Value) -> Value {
    json!({"scenario_kind": "telemetry", "ok": true, "series": series})
}

#[test]
fn idle_rss_draws_one_line_per_server_in_mib() {
    let reports = [
        report("epoll", idle(&[(0, 20), (5000, 24), (10_000, 28)])),
        report("mosquitto", idle(&[(0, 8), (10_000, 16)])),
        // An older or pid-less run: no server readings, no line.
        report(
            "no-pid",
            json!({"scenario_kind": "idle-connections", "server": null}),
        ),
    ];
    let charts = charts(&reports).unwrap();
    assert_eq!(names(&charts), ["rss"]);
    let rss = &charts[0];
    let labels: Vec<&str> = rss.lines.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["epoll", "mosquitto"]);
    assert_eq!(rss.lines[1].colour, 1, "a colour per server");
    assert!(rss.lines.iter().all(|l| l.markers));
    let points: Vec<_> = rss.lines[0].points().collect();
    assert_eq!(points, [(0.0, 20.0), (5000.0, 24.0), (10_000.0, 28.0)]);
    assert!(!rss.y_log);
    assert!(rss.y_label.contains("MiB") && rss.x_label.contains("connections"));
}

#[test]
fn pngs_are_written_with_the_chart_size_and_named_by_prefix_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plots");
    let reports = [
        report("a", idle(&[(0, 20), (100, 21)])),
        report("b", idle(&[(0, 10), (100, 12)])),
    ];
    let written = write_charts(&reports, &out, None).unwrap();
    assert_eq!(written, [out.join("idle-connections-rss.png")]);
    assert_eq!(png_size(&written[0]), (WIDTH, HEIGHT));
    let written = write_charts(&reports, &out, Some("run7")).unwrap();
    assert_eq!(written, [out.join("run7-rss.png")]);
    assert_eq!(png_size(&written[0]), (WIDTH, HEIGHT));
}

#[test]
fn telemetry_rate_counts_missing_seconds_as_none_and_draws_sent_dashed() {
    let series = json!([
        {"t": 0, "sent": 100, "delivered": 90, "p99_us": 900},
        {"t": 1, "sent": 100, "p99_us": 0},
        {"t": 2, "sent": 100, "delivered": 200, "p99_us": 1500},
    ]);
    let charts = charts(&[report("", telemetry(series))]).unwrap();
    assert_eq!(names(&charts), ["rate", "latency"]);
    let rate = chart(&charts, "rate");
    let lines: Vec<_> = rate
        .lines
        .iter()
        .map(|l| (l.label.as_str(), l.stroke, l.colour))
        .collect();
    assert_eq!(
        lines,
        [("delivered", Stroke::Solid, 0), ("sent", Stroke::Dashed, 1)],
        "one report: a colour per metric"
    );
    let delivered: Vec<_> = rate.lines[0].points().collect();
    assert_eq!(delivered, [(0.0, 90.0), (1.0, 0.0), (2.0, 200.0)]);
    // A second without latencies (p99 0) is a gap in the line, not a drop to zero.
    let latency = chart(&charts, "latency");
    assert_eq!(latency.lines.len(), 1, "no p50_us field, no p50 line");
    assert_eq!(
        latency.lines[0].segments,
        [vec![(0.0, 0.9)], vec![(2.0, 1.5)]]
    );
    assert!(!latency.y_log);
    assert_eq!(latency.y_label, "latency (ms)");
}

#[test]
fn latency_draws_p50_when_present_and_goes_logarithmic_over_a_wide_range() {
    let series = json!([
        {"t": 0, "p50_us": 200, "p99_us": 900},
        {"t": 1, "p50_us": 300, "p99_us": 95_000},
    ]);
    let reports = [
        report("epoll", telemetry(series.clone())),
        report("io_uring", telemetry(series)),
    ];
    let charts = charts(&reports).unwrap();
    let latency = chart(&charts, "latency");
    let lines: Vec<_> = latency
        .lines
        .iter()
        .map(|l| (l.label.as_str(), l.stroke, l.colour))
        .collect();
    assert_eq!(
        lines,
        [
            ("epoll p99", Stroke::Solid, 0),
            ("epoll p50", Stroke::Dashed, 0),
            ("io_uring p99", Stroke::Solid, 1),
            ("io_uring p50", Stroke::Dashed, 1),
        ]
    );
    assert_eq!(latency.lines[1].points().next(), Some((0.0, 0.2)));
    assert!(latency.y_log, "0.2 ms to 95 ms");
    assert!(latency.y_label.contains("log"));
}

#[test]
fn command_roundtrip_draws_errors_only_when_counted() {
    let kind = "command-roundtrip";
    let clean = json!({"scenario_kind": kind, "series": [
        {"t": 0, "ok": 50, "p99_us": 4000}, {"t": 1, "ok": 50, "p99_us": 5000}]});
    let failing = json!({"scenario_kind": kind, "series": [
        {"t": 0, "ok": 40, "errors": 10, "p99_us": 4000}, {"t": 1, "ok": 50, "p99_us": 6000}]});
    let charts = charts(&[report("clean", clean), report("failing", failing)]).unwrap();
    assert_eq!(names(&charts), ["rate", "latency"]);
    let labels: Vec<&str> = chart(&charts, "rate")
        .lines
        .iter()
        .map(|l| l.label.as_str())
        .collect();
    assert_eq!(labels, ["clean ok", "failing ok", "failing errors"]);
    let errors: Vec<_> = chart(&charts, "rate").lines[2].points().collect();
    assert_eq!(errors, [(0.0, 10.0), (1.0, 0.0)]);
}

fn storm(with_server: bool) -> Value {
    let mut r = json!({"scenario_kind": "reconnect-storm", "storm": {"series": [
        {"t_ms": 0, "connected": 0, "reconnected": 0},
        {"t_ms": 100, "connected": 400, "reconnected": 400},
        {"t_ms": 200, "connected": 1000, "reconnected": 600}]}, "server": null});
    if with_server {
        r["server"] = json!({"pid": 7, "cpu_series": [
            {"t_ms": -200, "cpu_secs": 0.0},
            {"t_ms": 0, "cpu_secs": 0.02},
            {"t_ms": 100, "cpu_secs": 0.2},
            {"t_ms": 200, "cpu_secs": 0.35}]});
    }
    r
}

#[test]
fn reconnect_storm_draws_recovery_in_seconds_and_cpu_in_cores() {
    let charts = charts(&[report("fg", storm(true))]).unwrap();
    assert_eq!(names(&charts), ["recovery", "cpu"]);
    let back: Vec<_> = chart(&charts, "recovery").lines[0].points().collect();
    assert_eq!(back, [(0.0, 0.0), (0.1, 400.0), (0.2, 1000.0)]);
    let cpu: Vec<_> = chart(&charts, "cpu").lines[0].points().collect();
    assert_eq!(cpu.len(), 3);
    assert!((cpu[0].1 - 0.1).abs() < 1e-9, "{cpu:?}");
    assert!((cpu[1].1 - 1.8).abs() < 1e-9, "{cpu:?}");
    assert!((cpu[2].1 - 1.5).abs() < 1e-9, "{cpu:?}");
    assert_eq!(cpu[2].0, 0.2);
}

#[test]
fn a_chart_with_no_data_is_skipped() {
    // No server pid: no CPU readings, so no cpu chart and no cpu file.
    let dir = tempfile::tempdir().unwrap();
    let written = write_charts(&[report("fg", storm(false))], dir.path(), None).unwrap();
    assert_eq!(written, [dir.path().join("reconnect-storm-recovery.png")]);
    assert!(!dir.path().join("reconnect-storm-cpu.png").exists());
    // A telemetry report without latencies (all p99 0) and one without a series at all.
    let quiet = telemetry(json!([{"t": 0, "sent": 5, "delivered": 5, "p99_us": 0}]));
    assert_eq!(names(&charts(&[report("q", quiet)]).unwrap()), ["rate"]);
    let bare = json!({"scenario_kind": "telemetry", "ok": false});
    assert!(charts(&[report("b", bare.clone())]).unwrap().is_empty());
    let written = write_charts(&[report("b", bare)], dir.path(), Some("bare")).unwrap();
    assert!(written.is_empty());
}

#[test]
fn coap_sleepers_draws_rate_memory_by_registered_devices_and_latency() {
    let series = json!([
        {"t": 0, "p99_us": 0},
        {"t": 1, "registered": 100, "wakes": 100, "commands": 0, "server_rss_kib": 10240, "p99_us": 2000},
        {"t": 2, "registered": 100, "wakes": 100, "commands": 0, "p99_us": 3000},
        {"t": 3, "registered": 50, "wakes": 50, "commands": 0, "server_rss_kib": 12288, "p99_us": 2500},
        {"t": 4, "p99_us": 0},
        {"t": 5, "registered": 0, "wakes": 20, "commands": 20, "server_rss_kib": 11264, "p99_us": 4000},
    ]);
    let r = json!({"scenario_kind": "coap-sleepers", "series": series});
    let charts = charts(&[report("fg", r)]).unwrap();
    assert_eq!(names(&charts), ["rate", "rss", "latency"]);
    let rate = chart(&charts, "rate");
    let strokes: Vec<_> = rate
        .lines
        .iter()
        .map(|l| (l.label.as_str(), l.stroke))
        .collect();
    assert_eq!(
        strokes,
        [
            ("registered", Stroke::Solid),
            ("wakes", Stroke::Dashed),
            ("commands", Stroke::Dotted)
        ]
    );
    // x: devices registered so far; a second without a memory reading is a gap.
    let rss = chart(&charts, "rss");
    assert_eq!(
        rss.lines[0].segments,
        [
            vec![(100.0, 10.0)],
            vec![(250.0, 12.0)],
            vec![(250.0, 11.0)]
        ]
    );
    assert_eq!(rss.x_label, "registered devices");
    let latency = chart(&charts, "latency");
    assert_eq!(
        latency.lines[0].segments,
        [vec![(1.0, 2.0), (2.0, 3.0), (3.0, 2.5)], vec![(5.0, 4.0)]]
    );
    assert_eq!(
        latency.title,
        format!(
            "{} — fg",
            "coap-sleepers: latency per second (register, then wake to command)"
        )
    );
}

#[test]
fn reports_of_different_kinds_are_refused() {
    let reports = [
        report("epoll", idle(&[(0, 1)])),
        report("storm", storm(true)),
    ];
    let e = charts(&reports).unwrap_err().to_string();
    assert!(e.contains("different scenario kinds"), "{e}");
    assert!(e.contains("epoll.json") && e.contains("storm.json"), "{e}");
    assert!(e.contains("\"reconnect-storm\""), "{e}");
    let dir = tempfile::tempdir().unwrap();
    assert!(write_charts(&reports, dir.path(), None).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing drawn"
    );
}

#[test]
fn malformed_reports_are_errors_naming_the_file_and_the_field() {
    let cases = [
        (
            telemetry(json!([{"t": 0, "p99_us": 5}, {"t": 1, "p99_us": "x"}])),
            "field series[1].p99_us: expected a number, found \"x\"",
        ),
        (
            telemetry(json!([{"t": 0}, {"sent": 3}])),
            "field series[1].t: missing",
        ),
        (
            telemetry(json!({"t": 0})),
            "field series: expected an array",
        ),
        (
            json!({"scenario_kind": "idle-connections", "server": {"checkpoints": [
                {"connections": 1, "memory": 7}]}}),
            "field server.checkpoints[0].memory: expected an object, found 7",
        ),
        (
            json!({"scenario_kind": "reconnect-storm", "storm": 3}),
            "field storm: expected an object",
        ),
        (
            json!({"scenario_kind": 3}),
            "field scenario_kind: expected a string",
        ),
        (json!([1, 2]), "field scenario_kind: missing"),
        (
            json!({"scenario_kind": "soak"}),
            "scenario_kind \"soak\" has no charts",
        ),
    ];
    for (value, want) in cases {
        let e = charts(&[report("bad", value.clone())])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.json: "), "{e}");
        assert!(e.contains(want), "{value}: {e}");
    }
}

#[test]
fn unreadable_files_and_odd_names_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"scenario_kind\": ").unwrap();
    let e = plot_files(&[("a".into(), bad.clone())], dir.path(), None).unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!("parsing {}", bad.display())),
        "{e:#}"
    );
    let missing = dir.path().join("none.json");
    let e = plot_files(&[("a".into(), missing.clone())], dir.path(), None).unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!("reading {}", missing.display())),
        "{e:#}"
    );
    let two = [report("a", idle(&[(0, 1)])), report("a", idle(&[(0, 2)]))];
    let e = write_charts(&two, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("two reports are named \"a\""), "{e}");
    let one = [report("a", idle(&[(0, 1)]))];
    for prefix in ["", "../up", "a/b"] {
        let e = write_charts(&one, dir.path(), Some(prefix)).unwrap_err();
        assert!(e.to_string().contains("--prefix"), "{e}");
    }
}

#[test]
fn the_sample_reports_draw() {
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let named: Vec<(String, std::path::PathBuf)> =
        ["fleetgate-epoll", "fleetgate-io_uring", "mosquitto"]
            .iter()
            .map(|n| (n.to_string(), results.join(format!("idle-{n}.json"))))
            .collect();
    let reports: Vec<Report> = named
        .iter()
        .map(|(n, p)| Report::read(n, p).unwrap())
        .collect();
    let idle = charts(&reports).unwrap();
    assert_eq!(names(&idle), ["rss"]);
    assert_eq!(idle[0].lines.len(), 3);
    assert!(idle[0].lines.iter().all(|l| l.points().count() >= 2));
    let sleepers = Report::read("fleetgate", &results.join("sleepers-1000000.json")).unwrap();
    let charts = charts(&[sleepers]).unwrap();
    assert_eq!(names(&charts), ["rate", "rss", "latency"]);
    let max_x = chart(&charts, "rss").lines[0]
        .points()
        .map(|(x, _)| x)
        .fold(0.0, f64::max);
    assert_eq!(max_x, 1_000_000.0, "every registration counted");
}

/// Counts the pixels of `c` in an RGB buffer.
fn pixels_of(buf: &[u8], c: RGBColor) -> usize {
    buf.chunks_exact(3)
        .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
        .count()
}

#[test]
fn lines_and_text_reach_the_image() {
    let line = |colour, stroke| Line {
        label: format!("line {colour}"),
        colour,
        stroke,
        markers: false,
        segments: vec![vec![(0.0, 1.0), (5.0, 3.0), (10.0, 2.0)]],
    };
    let mut c = Chart {
        name: "t",
        title: "a title".into(),
        x_label: "x (s)",
        y_label: "y (ms)".into(),
        y_log: false,
        lines: vec![line(0, Stroke::Solid), line(3, Stroke::Dashed)],
    };
    let buf = render_rgb(&c).unwrap();
    let solid = pixels_of(&buf, colour(0));
    let dashed = pixels_of(&buf, colour(3));
    assert!(solid > 500, "{solid}");
    assert!(dashed > 300, "{dashed}");
    assert_eq!(pixels_of(&buf, colour(5)), 0, "no line of that colour");
    // The caption is drawn with the embedded font: dark pixels in the top band.
    let dark_top = buf[..(WIDTH * 40 * 3) as usize]
        .chunks_exact(3)
        .filter(|p| p.iter().all(|&v| v < 100))
        .count();
    assert!(dark_top > 50, "{dark_top}");
    // The same points on a log axis still draw.
    c.y_log = true;
    assert!(pixels_of(&render_rgb(&c).unwrap(), colour(0)) > 300);
}

#[test]
fn axis_labels_are_short_and_alike_along_one_axis() {
    assert_eq!(tick(0.0, 18_000.0), "0");
    assert_eq!(tick(1200.0, 5000.0), "1200");
    assert_eq!(tick(8000.0, 18_000.0), "8k");
    assert_eq!(tick(12_500.0, 18_000.0), "12.5k");
    assert_eq!(tick(500_000.0, 1_000_000.0), "0.5M");
    assert_eq!(tick(2_500_000.0, 3e6), "2.5M");
    assert_eq!(tick(0.25, 1.0), "0.25");
    assert_eq!(tick(1.5, 10.0), "1.5");
    assert_eq!(tick(250.4, 500.0), "250");
}

#[test]
fn log_axis_labels_take_the_unit_of_their_own_value() {
    // A log latency axis from 0.2 ms to seconds: 0.5 stays 0.5, not "0M".
    assert_eq!(tick(0.5, 0.0), "0.5");
    assert_eq!(tick(2.0, 0.0), "2");
    assert_eq!(tick(200.0, 0.0), "200");
    assert_eq!(tick(20_000.0, 0.0), "20k");
    assert_eq!(tick(2e6, 0.0), "2M");
}

#[test]
fn log_axes_get_one_two_five_ticks() {
    let t = log_ticks(0.4, 60.0, &[1.0, 2.0, 5.0]);
    let want = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0];
    assert_eq!(t.len(), want.len(), "{t:?}");
    assert!(
        t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
        "{t:?}"
    );
}
