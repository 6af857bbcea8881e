//! The result of an `idle-connections` run: what was opened and how fast (and with `subscribe`,
//! what each connection's subscription got), what the server's memory did at each checkpoint
//! and per connection, and what the generator itself cost.
//! Written as JSON (`--json`) for scripts and printed as text for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::procfs::{CpuSecs, Memory};
use crate::scenario::{Auth, IdleScenario};
use crate::stats::{Fit, Percentiles, linear_fit};

/// The server's memory at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    /// The connection count the run paused at (0 = before the first connection).
    pub target: u64,
    /// Connections open when the sample was taken.
    pub connections: u64,
    /// Seconds since the run started.
    pub at_secs: f64,
    /// The server's memory.
    pub memory: Memory,
}

/// Memory per connection: least-squares lines through the checkpoints at or above `from`.
#[derive(Debug, Clone, Serialize)]
pub struct Slope {
    /// Smallest checkpoint used.
    pub from: u64,
    /// VmRSS over connections (bytes per connection = `slope`).
    pub vm_rss: Option<Fit>,
    /// RssAnon over connections.
    pub rss_anon: Option<Fit>,
    /// `vm_rss.slope`, bytes per connection (convenience for scripts).
    pub vm_rss_bytes_per_connection: Option<f64>,
}

impl Slope {
    /// Fits the checkpoints at or above `from` connections.
    pub fn fit(checkpoints: &[Checkpoint], from: u64) -> Slope {
        let used: Vec<&Checkpoint> = checkpoints
            .iter()
            .filter(|c| c.target >= from && c.target > 0)
            .collect();
        let line = |f: fn(&Memory) -> u64| {
            linear_fit(
                &used
                    .iter()
                    .map(|c| (c.connections as f64, f(&c.memory) as f64))
                    .collect::<Vec<_>>(),
            )
        };
        let vm_rss = line(|m| m.vm_rss);
        Slope {
            from,
            vm_rss,
            rss_anon: line(|m| m.rss_anon),
            vm_rss_bytes_per_connection: vm_rss.map(|f| f.slope),
        }
    }
}

/// The server under test.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Its process id.
    pub pid: u32,
    /// Memory before the first connection and at each checkpoint.
    pub checkpoints: Vec<Checkpoint>,
    /// Memory at the end of the hold.
    pub after_hold: Option<Checkpoint>,
    /// Memory per connection.
    pub slope: Slope,
    /// CPU time the server used during the run.
    pub cpu: CpuSecs,
}

/// One generator process.
#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    /// 0-based.
    pub index: u32,
    /// Connections it established.
    pub established: u64,
    /// Its CPU time.
    pub cpu: CpuSecs,
    /// Its memory at the end (VmHWM = its peak).
    pub memory: Memory,
}

/// The generator's own cost, to show whether it kept up.
#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    /// Processes (the coordinator not counted).
    pub processes: u32,
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
    /// CPU of the coordinator and all workers.
    pub cpu: CpuSecs,
    /// `cpu.total() / wall_secs`: cores busy on average (2 cores here, shared with the server).
    pub cores_busy: f64,
    /// CPU seconds spent while opening connections, per established connection, microseconds
    /// (whole-run CPU / connections: an upper bound).
    pub cpu_us_per_connection: f64,
    /// Each worker.
    pub workers: Vec<Worker>,
}

/// The one subscription of every connection (`subscribe = true`).
#[derive(Debug, Clone, Serialize)]
pub struct Subscriptions {
    /// The filter, `{device_id}` standing for each connection's own device id.
    pub filter: String,
    /// The QoS requested.
    pub requested_qos: u8,
    /// Established connections by the QoS their SUBACK granted (0 or 1). Refusals (0x80) are
    /// failed attempts: `connections.failures["suback 0x80"]`.
    pub granted_qos: BTreeMap<u8, u64>,
    /// SUBSCRIBE to SUBACK of the established connections, microseconds.
    pub latency_us: Percentiles,
}

/// Connection outcomes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    /// Connections the scenario asked for.
    pub requested: u64,
    /// Attempts made.
    pub attempted: u64,
    /// CONNACK 0, and with `subscribe` a SUBACK granting QoS 0 or 1.
    pub established: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Failed attempts by reason.
    pub failures: BTreeMap<String, u64>,
    /// Open at the end of the hold.
    pub alive_after_hold: u64,
    /// Established connections lost before the stop, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// PINGREQs sent during the run.
    pub pings_sent: u64,
    /// PINGRESPs received.
    pub pingresps: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// `idle-connections`.
    pub scenario_kind: &'static str,
    /// The scenario as run.
    pub scenario: IdleScenario,
    /// Unix time the run started.
    pub started_unix: u64,
    /// Whether every requested connection was established and none was lost.
    pub ok: bool,
    /// Outcomes.
    pub connections: Connections,
    /// Seconds spent opening connections (checkpoint pauses excluded).
    pub ramp_secs: f64,
    /// Established connections per second of ramp.
    pub connect_rate_per_sec: f64,
    /// connect() to CONNACK, microseconds.
    pub connect_latency_us: Percentiles,
    /// With `subscribe`: what the subscriptions got; `null` without.
    pub subscriptions: Option<Subscriptions>,
    /// The server, when its pid was given.
    pub server: Option<Server>,
    /// The generator.
    pub generator: Generator,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The scenario's `auth` value.
pub fn auth_name(auth: Auth) -> &'static str {
    match auth {
        Auth::Device => "device",
        Auth::Password => "password",
        Auth::Anonymous => "anonymous",
    }
}

impl IdleReport {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let c = &self.connections;
        let _ = writeln!(
            o,
            "idle-connections against {} ({})",
            self.scenario.target,
            if self.ok { "ok" } else { "FAILED" }
        );
        let _ = writeln!(
            o,
            "  sessions: auth {}, {}",
            auth_name(self.scenario.auth),
            match &self.subscriptions {
                Some(s) => format!(
                    "1 subscription each ({} at QoS {})",
                    s.filter, s.requested_qos
                ),
                None => "no subscription (subscribe = false)".to_owned(),
            }
        );
        let _ = writeln!(
            o,
            "  connections: {} established of {} requested ({} failed), {} alive after a {} s hold",
            c.established, c.requested, c.failed, c.alive_after_hold, self.scenario.hold_secs
        );
        for (why, n) in &c.failures {
            let _ = writeln!(o, "    failed {n}: {why}");
        }
        for (why, n) in &c.dropped {
            let _ = writeln!(o, "    dropped {n}: {why}");
        }
        let l = &self.connect_latency_us;
        let _ = writeln!(
            o,
            "  connect rate {:.0}/s over {:.2} s; CONNACK latency µs p50 {} p90 {} p99 {} p99.9 {} max {}",
            self.connect_rate_per_sec, self.ramp_secs, l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let Some(s) = &self.subscriptions {
            let granted: Vec<String> = s
                .granted_qos
                .iter()
                .map(|(qos, n)| format!("{n} at QoS {qos}"))
                .collect();
            let l = &s.latency_us;
            let _ = writeln!(
                o,
                "  subscriptions: {} granted ({}); SUBACK latency µs p50 {} p90 {} p99 {} max {}",
                s.granted_qos.values().sum::<u64>(),
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                },
                l.p50,
                l.p90,
                l.p99,
                l.max
            );
        }
        let _ = writeln!(
            o,
            "  pings: {} PINGREQ sent, {} PINGRESP received",
            c.pings_sent, c.pingresps
        );
        if let Some(s) = &self.server {
            let _ = writeln!(
                o,
                "  server pid {} (CPU {:.2} s user + {:.2} s system):",
                s.pid, s.cpu.user, s.cpu.system
            );
            for cp in s.checkpoints.iter().chain(s.after_hold.iter()) {
                let _ = writeln!(
                    o,
                    "    {:>7} connections: VmRSS {:8.1} MiB  RssAnon {:8.1} MiB  RssFile {:6.1} MiB  threads {}",
                    cp.connections,
                    mib(cp.memory.vm_rss),
                    mib(cp.memory.rss_anon),
                    mib(cp.memory.rss_file),
                    cp.memory.threads
                );
            }
            match (&s.slope.vm_rss, &s.slope.rss_anon) {
                (Some(v), Some(a)) => {
                    let _ = writeln!(
                        o,
                        "    per connection (checkpoints >= {}): VmRSS {:.0} B ({:.2} KiB, r² {:.4}), RssAnon {:.0} B",
                        s.slope.from,
                        v.slope,
                        v.slope / 1024.0,
                        v.r2,
                        a.slope
                    );
                }
                _ => {
                    let _ = writeln!(
                        o,
                        "    per connection: fewer than two checkpoints >= {}",
                        s.slope.from
                    );
                }
            }
        }
        let g = &self.generator;
        let _ = writeln!(
            o,
            "  generator: {} process(es), CPU {:.2} s user + {:.2} s system over {:.1} s ({:.2} cores busy, {:.0} µs CPU per connection)",
            g.processes,
            g.cpu.user,
            g.cpu.system,
            g.wall_secs,
            g.cores_busy,
            g.cpu_us_per_connection
        );
        for w in &g.workers {
            let _ = writeln!(
                o,
                "    worker {}: {} connections, CPU {:.2} s, peak RSS {:.1} MiB",
                w.index,
                w.established,
                w.cpu.total(),
                mib(w.memory.vm_hwm)
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(target: u64, connections: u64, rss: u64) -> Checkpoint {
        Checkpoint {
            target,
            connections,
            at_secs: 0.0,
            memory: Memory {
                vm_rss: rss,
                rss_anon: rss / 2,
                ..Memory::default()
            },
        }
    }

    #[test]
    fn slope_uses_checkpoints_from_the_threshold() {
        let cps = vec![
            cp(0, 0, 1_000_000),
            cp(2000, 2000, 9_000_000), // start-up noise, ignored
            cp(5000, 5000, 20_000_000),
            cp(10_000, 10_000, 25_000_000),
            cp(19_000, 19_000, 34_000_000),
        ];
        let s = Slope::fit(&cps, 5000);
        assert!((s.vm_rss_bytes_per_connection.unwrap() - 1000.0).abs() < 1e-6);
        assert!((s.rss_anon.unwrap().slope - 500.0).abs() < 1e-6);
        assert_eq!(s.vm_rss.unwrap().points, 3);
    }

    #[test]
    fn slope_uses_connections_actually_open() {
        // The run paused at 10,000 but only 9,000 were open.
        let cps = vec![cp(5000, 5000, 5_000_000), cp(10_000, 9000, 9_000_000)];
        let s = Slope::fit(&cps, 5000);
        assert!((s.vm_rss_bytes_per_connection.unwrap() - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn one_checkpoint_has_no_slope() {
        let s = Slope::fit(&[cp(0, 0, 1), cp(19_000, 19_000, 2)], 5000);
        assert!(s.vm_rss.is_none());
        assert!(s.vm_rss_bytes_per_connection.is_none());
    }
}
