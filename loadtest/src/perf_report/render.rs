//! The Markdown of `perf-report`: the header (run, machine, versions), the losses and the goals
//! at the top, then one section per scenario that was run — its table with a column per server
//! and the ratio of each fleetgate driver to each peer with the verdict, the notes where the
//! generator was the bottleneck, the embedded plots, the commands and files of each run — and
//! the servers' settings at the end.
//!
//! Called through [`markdown`] by the module's `main` and by the tests; the figures come from
//! `figures`.

use std::fmt::Write as _;

use super::figures::{
    Better, FIXED_METRICS, Fmt, IDLE_METRICS, Part, SECTIONS, Section, fmt_num, num,
};
use super::{FLEETGATE, Inputs, PEERS, Status};

/// fleetgate's figure against a peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// fleetgate's is better.
    Wins,
    /// The peer's is better.
    Loses,
    /// Within half a percent.
    Even,
}

/// The verdict for fleetgate's figure against a peer's where `better` is better; `None` for
/// context figures and non-finite values.
pub fn verdict(fleetgate: f64, peer: f64, better: Better) -> Option<Verdict> {
    if better == Better::Neither || !fleetgate.is_finite() || !peer.is_finite() {
        return None;
    }
    let even = if peer == 0.0 {
        fleetgate == 0.0
    } else {
        (fleetgate / peer - 1.0).abs() < 0.005
    };
    if even {
        return Some(Verdict::Even);
    }
    Some(match (better, fleetgate > peer) {
        (Better::Higher, true) | (Better::Lower, false) => Verdict::Wins,
        _ => Verdict::Loses,
    })
}

/// The ratio `fleetgate ÷ peer` with its verdict, as a table cell ("0.74× wins",
/// "2.10× **loses**").
pub fn ratio_cell(fleetgate: Option<f64>, peer: Option<f64>, better: Better) -> String {
    let (Some(f), Some(p)) = (fleetgate, peer) else {
        return "–".to_owned();
    };
    let ratio = if p != 0.0 {
        let r = f / p;
        if r.abs() < 0.1 {
            format!("{r:.3}×")
        } else {
            format!("{r:.2}×")
        }
    } else if f == 0.0 {
        "1.00×".to_owned()
    } else {
        "∞".to_owned()
    };
    match verdict(f, p, better) {
        None => ratio,
        Some(Verdict::Wins) => format!("{ratio} wins"),
        Some(Verdict::Loses) => format!("{ratio} **loses**"),
        Some(Verdict::Even) => format!("{ratio} even"),
    }
}

/// Why the peers are configured as they are; printed under "Servers and their settings".
const SETTINGS_TEXT: &str = "\
Every server listens on 127.0.0.1 only, on a port of its own, and is started afresh for every run (fleetgate on a copy of the same freshly provisioned store), and all are measured with the same generator and the same clients. Persistence is off for the peers; fleetgate keeps its RocksDB store (its device registry, presence and sessions) as it always does.

- **Authentication.** fleetgate authenticates every device with its own scheme (an HMAC of the client id, checked against the device registry). The peers check a plain user name and password from a list (client id = user name = device id, password = the device's secret): Mosquitto from a `password_file` hashed with `mosquitto_passwd -U`, rumqttd from its `connections.auth` table. Neither peer accepts anonymous clients.
- **Slow subscriber.** A QoS 1 message queued for a subscriber that cannot keep up is the one place where servers differ by policy rather than speed: Mosquitto 2.0.11 keeps at most `max_queued_messages` 1000 beyond `max_inflight_messages` 20 and drops newer ones; fleetgate keeps `engine.session.max_queued_messages` 1000 beyond `receive_maximum` 32 and drops the oldest; rumqttd reads every subscriber from its commit log (`max_segment_size` × `max_segment_count`, 1 GB) and drops only when a segment it still needs is recycled. So that the telemetry figures compare throughput and not drop policies, nothing is dropped below a backlog no run reaches: Mosquitto gets `max_queued_messages 0` (no limit) and fleetgate `engine.session.max_queued_messages=1000000` (its maximum); the in-flight window is 32 for both (fleetgate's default, Mosquitto `max_inflight_messages 32`). rumqttd's `max_inflight_count` is not a QoS window (it bounds a read batch) and keeps its default 100.
- **Work per message.** The peers route bytes. For every property report fleetgate also parses the JSON, validates it against the product model, writes the reported values into the device's shadow in RocksDB (buffered, not synced) and tells its observers, before routing it to the subscriber: the telemetry figures include that work.
- **Sockets.** fleetgate sets `TCP_NODELAY` on every connection, so Mosquitto gets `set_tcp_nodelay true` (off by default: Nagle's algorithm would add delay to the latency figures). rumqttd 0.20.0 has no such setting and keeps Nagle's algorithm.
- **Limits.** Mosquitto: `max_connections -1`. rumqttd: `next_connection_delay_ms = 0` (its default 1 ms caps accepts near 1,000/s) and `router.max_connections` below the open-file limit (at that limit it logs in a tight loop). fleetgate: its defaults (100 messages/s per device: the telemetry runs keep below it), except the command round trip, which lifts the HTTP API's per-application rate limits (`api.rate_limit.calls_per_sec` and `downlinks_per_sec` = 0) so that the generator's rate, not a 50/s budget, is what is measured.
- **Topics.** The scenarios publish and subscribe on fleetgate's device topics (`$oc/devices/{id}/…`), on Mosquitto too. rumqttd 0.20.0 refuses every subscription whose filter begins with `$` (other than `$share/`; `InvalidFilterPrefix`), so its runs use the same topics without the `$` (`oc/devices/{id}/…`, the scenario key `topic_root`): the same levels and lengths but one character.
- **Logging.** fleetgate logs JSON at `info` (nothing per connection); Mosquitto logs errors and warnings only (`log_type error`, `log_type warning`, `connection_messages false`); rumqttd logs at its lowest setting, warnings, which still writes an error per connection that closes (its level cannot be lowered from the command line), so in the reconnect storm it pays for that logging.
";

/// A comparison fleetgate lost, for the list at the top.
struct Loss {
    /// Section, part and figure.
    what: String,
    better: Better,
    /// fleetgate's server and figure.
    fleetgate: String,
    f: String,
    /// The peer's, and the ratio.
    peer: String,
    p: String,
    ratio: String,
}

/// The losses, one line per figure: "what (lower is better): fleetgate (epoll) 1.30 against
/// Mosquitto 0.80 (1.62×); …".
fn losses_text(losses: &[Loss]) -> String {
    let mut o = String::new();
    let mut i = 0;
    while i < losses.len() {
        let what = &losses[i].what;
        let n = losses[i..].iter().take_while(|l| &l.what == what).count();
        let items: Vec<String> = losses[i..i + n]
            .iter()
            .map(|l| {
                format!(
                    "{} {} against {} {} ({})",
                    l.fleetgate, l.f, l.peer, l.p, l.ratio
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "- {what} ({} is better): {}.",
            better_text(losses[i].better),
            items.join("; ")
        );
        i += n;
    }
    o
}

/// A server's name in the document.
fn display_name(server: &str) -> &str {
    match server {
        "mosquitto" => "Mosquitto",
        "fleetgate-epoll" => "fleetgate (epoll)",
        "fleetgate-io_uring" => "fleetgate (io_uring)",
        other => other,
    }
}

/// A fleetgate server's driver, as the ratio columns name it.
fn short_name(server: &str) -> &str {
    server.strip_prefix("fleetgate-").unwrap_or(server)
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// One of fleetgate's servers.
fn is_fleetgate(server: &str) -> bool {
    FLEETGATE.contains(&server)
}

/// One of the peers.
fn is_peer(server: &str) -> bool {
    PEERS.contains(&server)
}

/// The outcome cell of a part's run against `server`.
fn outcome(inputs: &Inputs, part: &Part, server: &str, fleetgate_only: bool) -> String {
    if fleetgate_only && !is_fleetgate(server) {
        return "not applicable".to_owned();
    }
    let Some(run) = inputs.run(part.variant, server) else {
        return "not run".to_owned();
    };
    let reason = cell(run.reason.trim());
    match (run.status, inputs.report(part.variant, server)) {
        (Status::Ok, Some(_)) => "ok".to_owned(),
        (Status::Incomplete, Some(r)) => {
            let mut s = format!("incomplete: {}", cell(&(part.shortfall)(r)));
            if !reason.is_empty() {
                let _ = write!(s, " ({reason})");
            }
            s
        }
        (Status::NotApplicable, _) if reason.is_empty() => "not applicable".to_owned(),
        (Status::NotApplicable, _) => format!("not applicable: {reason}"),
        (Status::NotRun, _) => "not run".to_owned(),
        (_, None) if reason.is_empty() => "failed: no report".to_owned(),
        (_, _) => format!("failed: {reason}"),
    }
}

/// The `(fleetgate, peer)` pairs compared, in column order.
fn pairs(servers: &[String]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for f in servers.iter().filter(|s| is_fleetgate(s)) {
        for p in servers.iter().filter(|s| is_peer(s)) {
            out.push((f.as_str(), p.as_str()));
        }
    }
    out
}

/// The *better* column's word for a direction.
fn better_text(b: Better) -> &'static str {
    match b {
        Better::Lower => "lower",
        Better::Higher => "higher",
        Better::Neither => "",
    }
}

/// A section's table; the comparisons fleetgate lost are added to `losses`.
fn section_table(inputs: &Inputs, s: &Section, losses: &mut Vec<Loss>) -> String {
    let servers = &inputs.info.servers;
    let pairs = if s.fleetgate_only {
        Vec::new()
    } else {
        pairs(servers)
    };
    let mut o = String::from("| figure | better |");
    for server in servers {
        let _ = write!(o, " {} |", display_name(server));
    }
    for (f, p) in &pairs {
        let _ = write!(o, " {} ÷ {} |", short_name(f), display_name(p));
    }
    o.push_str("\n|---|---|");
    o.push_str(&"---:|".repeat(servers.len() + pairs.len()));
    o.push('\n');
    for part in parts_run(inputs, s) {
        let _ = write!(o, "| **{}**: outcome | |", part.title);
        for server in servers {
            let _ = write!(o, " {} |", outcome(inputs, part, server, s.fleetgate_only));
        }
        o.push_str(&" |".repeat(pairs.len()));
        o.push('\n');
        for m in part.metrics {
            let _ = write!(o, "| {} | {} |", m.label, better_text(m.better));
            for server in servers {
                let v = inputs.value(part, m, server);
                let _ = write!(
                    o,
                    " {} |",
                    v.map_or_else(|| "–".to_owned(), |v| fmt_num(v, m.fmt))
                );
            }
            for (f, p) in &pairs {
                if m.better == Better::Neither {
                    o.push_str(" |");
                    continue;
                }
                let (fv, pv) = (inputs.value(part, m, f), inputs.value(part, m, p));
                let ratio = ratio_cell(fv, pv, m.better);
                if let (Some(a), Some(b)) = (fv, pv)
                    && verdict(a, b, m.better) == Some(Verdict::Loses)
                {
                    losses.push(Loss {
                        what: format!(
                            "{} — {} — {}",
                            s.title,
                            part.title,
                            m.label.replace("**", "")
                        ),
                        fleetgate: display_name(f).to_owned(),
                        peer: display_name(p).to_owned(),
                        f: fmt_num(a, m.fmt),
                        p: fmt_num(b, m.fmt),
                        ratio: ratio.replace(" **loses**", ""),
                        better: m.better,
                    });
                }
                let _ = write!(o, " {ratio} |");
            }
            o.push('\n');
        }
    }
    o
}

/// Notes under a table: the generator as the bottleneck, per part.
fn bottleneck_notes(inputs: &Inputs, s: &Section) -> String {
    let mut o = String::new();
    for part in parts_run(inputs, s) {
        for server in &inputs.info.servers {
            let Some(r) = inputs.report(part.variant, server) else {
                continue;
            };
            let Some(busy) = num(r, part.generator_busy) else {
                continue;
            };
            let processes = num(r, "/scenario/processes").unwrap_or(1.0).max(1.0);
            if busy >= 0.9 * processes {
                let _ = writeln!(
                    o,
                    "- **The generator was the bottleneck** in {} against {}: {busy:.2} cores busy for {processes:.0} generator process(es). The server may do more than this shows.",
                    part.title,
                    display_name(server)
                );
            }
        }
    }
    o
}

/// The PNG charts of a variant (`{variant}-{chart}.png`), sorted.
fn plots_of(inputs: &Inputs, variant: &str) -> Vec<String> {
    let prefix = format!("{variant}-");
    let mut out: Vec<String> = inputs
        .plots
        .iter()
        .filter(|f| {
            f.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".png"))
                .is_some_and(|chart| {
                    !chart.is_empty()
                        && chart
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// A link to `file` in the directory `dir` (relative to the document).
fn link(dir: &str, file: &str) -> String {
    if dir.is_empty() || dir == "." {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    }
}

/// The parts of a section that were run against at least one server.
fn parts_run<'a>(inputs: &'a Inputs, s: &'a Section) -> impl Iterator<Item = &'a Part> + 'a {
    s.parts.iter().filter(|p| {
        inputs
            .info
            .runs
            .iter()
            .any(|r| r.variant == p.variant && r.status != Status::NotRun)
    })
}

/// A section: heading, introduction, notes, table, charts and runs; `None` when none of
/// its parts was run.
fn section(inputs: &Inputs, s: &Section, losses: &mut Vec<Loss>) -> Option<String> {
    parts_run(inputs, s).next()?;
    let mut o = format!("## {}\n\n{}\n\n", s.title, s.intro);
    let mut notes = 0;
    for part in parts_run(inputs, s).filter(|p| !p.note.is_empty()) {
        let _ = writeln!(o, "- {}: {}", part.title, part.note);
        notes += 1;
    }
    if notes > 0 {
        o.push('\n');
    }
    o.push_str(&section_table(inputs, s, losses));
    o.push('\n');
    let notes = bottleneck_notes(inputs, s);
    if !notes.is_empty() {
        o.push_str(&notes);
        o.push('\n');
    }
    for part in parts_run(inputs, s) {
        for png in plots_of(inputs, part.variant) {
            let chart = png
                .trim_start_matches(part.variant)
                .trim_start_matches('-')
                .trim_end_matches(".png");
            let _ = writeln!(
                o,
                "![{} — {}: {chart}]({})\n",
                s.title,
                part.title,
                link(&inputs.plots_link, &png)
            );
        }
    }
    let mut runs = String::new();
    for part in parts_run(inputs, s) {
        for run in inputs
            .info
            .runs
            .iter()
            .filter(|r| r.variant == part.variant)
        {
            let mut files = Vec::new();
            if let Some(f) = &run.report {
                files.push(format!("[report]({})", link(&inputs.results_link, f)));
            }
            if let Some(f) = &run.scenario_file {
                files.push(format!("[scenario]({})", link(&inputs.results_link, f)));
            }
            if run.command.is_empty() && files.is_empty() {
                continue;
            }
            let _ = writeln!(
                runs,
                "- {} against {}: `{}` {}",
                part.title,
                display_name(&run.server),
                run.command,
                files.join(", ")
            );
        }
    }
    if !runs.is_empty() {
        let _ = write!(o, "Commands, reports and scenario files:\n\n{runs}\n");
    }
    Some(o)
}

/// The goals, met or missed per fleetgate driver.
fn goals(inputs: &Inputs) -> String {
    let mut o = String::new();
    let fleetgate = || inputs.info.servers.iter().filter(|s| is_fleetgate(s));
    for f in fleetgate() {
        let idle = &SECTIONS[0].parts[0];
        if let Some(kib) = inputs.value(idle, &IDLE_METRICS[0], f) {
            let met = if kib <= 1.0 { "met" } else { "**missed**" };
            let _ = writeln!(
                o,
                "- ≤ 1 KiB of RSS per idle connection, {}: {kib:.2} KiB — {met}.",
                display_name(f)
            );
        }
    }
    for f in fleetgate() {
        let fixed = &SECTIONS[1].parts[2];
        let per_cpu = &FIXED_METRICS[2];
        if let (Some(a), Some(b)) = (
            inputs.value(fixed, per_cpu, f),
            inputs.value(fixed, per_cpu, "mosquitto"),
        ) && b > 0.0
        {
            let met = if a >= 2.0 * b { "met" } else { "**missed**" };
            let _ = writeln!(
                o,
                "- ≥ 2× Mosquitto's delivered QoS 1 messages per server CPU-second, {}: {} against {} ({:.2}×) — {met}.",
                display_name(f),
                fmt_num(a, Fmt::Int),
                fmt_num(b, Fmt::Int),
                a / b
            );
        }
    }
    o
}

/// The title, the run, the machine and the versions, and how to read the tables.
fn header(inputs: &Inputs) -> String {
    let i = &inputs.info;
    let m = &i.machine;
    let v = &i.versions;
    let mut o = String::from(
        "# fleetgate performance\n\n<!-- Generated by loadtest/compare.sh (fleetgate-loadtest perf-report): do not edit, re-run the script. -->\n\n",
    );
    o.push_str("fleetgate on each of its I/O drivers (epoll, io_uring) next to Mosquitto and rumqttd, measured in one run on one machine with the same load generator (`fleetgate-loadtest`) and the same clients. Scenarios that only fleetgate can run (device commands through its API, CoAP/LwM2M sleepers) are measured on fleetgate alone.\n\n");
    if i.smoke {
        o.push_str("> **Smoke run** (`SMOKE=1`): tiny counts and a few seconds per scenario. It proves that the pipeline works end to end; its figures say nothing about the servers.\n\n");
    }
    let minutes = i.duration_secs.map_or_else(String::new, |s| {
        format!(", took {:.1} min", s as f64 / 60.0)
    });
    let _ = writeln!(o, "- **Run:** {}{minutes}: `{}`", i.date, i.command);
    if !i.settings.is_empty() {
        let _ = writeln!(o, "- **Settings:** `{}`", i.settings.join(" "));
    }
    let _ = writeln!(
        o,
        "- **Machine:** {} cores ({}), {:.1} GiB, kernel {}, open files {} per process. Servers and generator share the cores.",
        m.cores,
        if m.cpu.is_empty() { "?" } else { &m.cpu },
        m.memory_kib as f64 / 1_048_576.0,
        m.kernel,
        m.open_files
    );
    let _ = writeln!(
        o,
        "- **Versions:** {} (commit {}, release build, {}); {}; rumqttd {}.",
        v.fleetgate, v.commit, v.rustc, v.mosquitto, v.rumqttd
    );
    o.push_str("\nHow to read the tables: a column per server; then, per fleetgate driver and peer, the ratio **fleetgate ÷ peer** with the verdict for fleetgate. Where the *better* column says *lower* (memory, latency, CPU, time) a ratio below 1 wins; where it says *higher* (rates, messages per CPU-second) a ratio above 1 wins; within half a percent is *even*. Rows without a direction are context. \"failed: …\" is a run that gave no report, with the reason; \"incomplete: …\" a run that finished but missed something (its figures are shown).\n\n");
    o
}

/// How the servers were set up and started, with the peers' configurations.
fn settings_section(inputs: &Inputs) -> String {
    let mut o = format!("## Servers and their settings\n\n{SETTINGS_TEXT}\n");
    for (server, command) in &inputs.info.server_commands {
        let _ = writeln!(
            o,
            "{}:\n\n```sh\n{}\n```\n",
            display_name(server),
            command.trim()
        );
    }
    for (server, text) in &inputs.configs {
        let _ = writeln!(
            o,
            "{} configuration:\n\n```\n{}\n```\n",
            display_name(server),
            text.trim()
        );
    }
    o
}

/// The whole document.
pub fn markdown(inputs: &Inputs) -> String {
    let mut losses = Vec::new();
    let sections: Vec<String> = SECTIONS
        .iter()
        .filter_map(|s| section(inputs, s, &mut losses))
        .collect();
    let mut o = header(inputs);
    o.push_str("## Where fleetgate loses\n\n");
    if losses.is_empty() {
        o.push_str("Nowhere in this run: every compared figure is even or better.\n\n");
    } else {
        o.push_str(&losses_text(&losses));
        o.push('\n');
    }
    let goals = goals(inputs);
    if !goals.is_empty() {
        let _ = writeln!(o, "## Goals\n\n{goals}");
    }
    for s in sections {
        o.push_str(&s);
    }
    o.push_str(&settings_section(inputs));
    o.push_str("## Further measurements\n\nLonger runs, profiles and what changed and why (among them the 1,000,000-device sleepers run and the micro-benchmarks): [Further measurements](perf-notes.md).\n");
    o
}
