//! What the `idle-connections` coordinator and its worker processes say to each other: JSON
//! lines, the coordinator writing to a worker's standard input and reading its standard output.
//! The first line to a worker is a [`WorkerInit`]; then [`Command`]s, answered by [`Event`]s.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::procfs::{CpuSecs, Memory};
use crate::scenario::IdleScenario;

/// Which share of the connections a worker process opens: `index` of `processes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerShare {
    /// 0-based.
    pub index: u32,
    /// How many workers.
    pub processes: u32,
}

impl FromStr for WorkerShare {
    type Err = String;

    /// Parses `INDEX/PROCESSES`, e.g. `0/2`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected INDEX/PROCESSES with INDEX < PROCESSES, got {s:?}");
        let (i, p) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.parse().map_err(|_| bad())?;
        let processes: u32 = p.parse().map_err(|_| bad())?;
        if index >= processes {
            return Err(bad());
        }
        Ok(WorkerShare { index, processes })
    }
}

impl std::fmt::Display for WorkerShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.processes)
    }
}

/// The first line sent to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    /// The validated scenario.
    pub scenario: IdleScenario,
    /// Seconds after which the worker gives up and exits whatever happens.
    pub deadline_secs: u64,
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Attempt connections until this worker has attempted `until` of its own, at its share
    /// of the rate; answer [`Event::Reached`] when every attempt has succeeded or failed.
    Open {
        /// This worker's attempts in total after the step.
        until: u64,
    },
    /// Answer [`Event::Status`].
    Status,
    /// Disconnect everything, answer [`Event::Final`] and exit.
    Stop,
}

/// A worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Connection attempts started.
    pub attempted: u64,
    /// Attempts answered with CONNACK 0 (and with `subscribe`, a SUBACK granting QoS 0 or 1).
    pub established: u64,
    /// Attempts that failed (refused, timed out, I/O error, SUBSCRIBE refused).
    pub failed: u64,
    /// Established connections still open.
    pub alive: u64,
    /// PINGREQs sent.
    pub pings_sent: u64,
    /// PINGRESPs received.
    pub pingresps: u64,
}

impl Counts {
    /// Attempts not yet resolved.
    pub fn inflight(&self) -> u64 {
        self.attempted - self.established - self.failed
    }

    /// Field-wise sum.
    pub fn add(&mut self, o: &Counts) {
        self.attempted += o.attempted;
        self.established += o.established;
        self.failed += o.failed;
        self.alive += o.alive;
        self.pings_sent += o.pings_sent;
        self.pingresps += o.pingresps;
    }
}

/// Everything a worker measured, sent once at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Final counters.
    pub counts: Counts,
    /// Failed attempts by reason (`connack 4`, `suback 0x80`, `connect: connection refused`,
    /// `timeout waiting for CONNACK`, …).
    pub failures: BTreeMap<String, u64>,
    /// Established connections lost before the stop, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Connect latency (connect() to CONNACK), microseconds: `(value, count)` pairs of the
    /// worker's histogram.
    pub latency_us: Vec<(u64, u64)>,
    /// With `subscribe`: SUBSCRIBE to SUBACK of the established connections, microseconds,
    /// as above.
    pub suback_latency_us: Vec<(u64, u64)>,
    /// With `subscribe`: established connections by the QoS their SUBACK granted (0 or 1).
    pub granted_qos: BTreeMap<u8, u64>,
    /// The worker's own CPU time.
    pub cpu: CpuSecs,
    /// The worker's own memory at the end.
    pub memory: Memory,
}

/// Worker → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Every quarter second while a step runs.
    Progress(Counts),
    /// The step is done.
    Reached(Counts),
    /// Answer to [`Command::Status`].
    Status(Counts),
    /// Answer to [`Command::Stop`].
    Final(Box<WorkerReport>),
    /// The worker cannot go on.
    Fatal(String),
}

crate::pool::worker_protocol!(Event, Counts, WorkerReport, [Progress, Reached, Status]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse() {
        assert_eq!(
            "1/3".parse(),
            Ok(WorkerShare {
                index: 1,
                processes: 3
            })
        );
        assert!("3/3".parse::<WorkerShare>().is_err());
        assert!("x/3".parse::<WorkerShare>().is_err());
        assert!("1".parse::<WorkerShare>().is_err());
        assert_eq!(
            WorkerShare {
                index: 0,
                processes: 2
            }
            .to_string(),
            "0/2"
        );
    }

    #[test]
    fn messages_are_one_json_line_each() {
        let line = serde_json::to_string(&Command::Open { until: 5 }).unwrap();
        assert_eq!(line, r#"{"open":{"until":5}}"#);
        assert_eq!(serde_json::to_string(&Command::Stop).unwrap(), r#""stop""#);
        let ev = Event::Reached(Counts {
            attempted: 2,
            established: 1,
            failed: 1,
            ..Counts::default()
        });
        let back: Event = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert!(matches!(back, Event::Reached(c) if c.inflight() == 0));
    }
}
