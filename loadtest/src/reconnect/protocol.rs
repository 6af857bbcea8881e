//! What the `reconnect-storm` coordinator and its worker processes say to each other: JSON
//! lines over the worker's standard input and output, as in `idle-connections` (whose
//! [`WorkerShare`](crate::idle::protocol::WorkerShare) names a worker's share). The first line
//! to a worker is a [`WorkerInit`]; then [`Command`]s, answered by [`Event`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::procfs::{CpuSecs, Memory};
use crate::scenario::ReconnectScenario;

/// The first line sent to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    /// The validated scenario.
    pub scenario: ReconnectScenario,
    /// Seconds after which the worker gives up and exits whatever happens.
    pub deadline_secs: u64,
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Connect every device of this worker at its share of the rate; answer
    /// [`Event::Reached`] when every attempt has succeeded or failed.
    Open,
    /// Answer [`Event::Status`].
    Status,
    /// At this Unix time (microseconds; the same clock in every process) close every
    /// connection at once and reconnect each device immediately; answer [`Event::Recovered`]
    /// when every dropped device is back or has given up.
    Storm {
        /// When to drop, Unix microseconds.
        at_unix_us: u64,
    },
    /// Disconnect everything, answer [`Event::Final`] and exit.
    Stop,
}

/// A worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Initial connection attempts started.
    pub attempted: u64,
    /// Initial attempts answered with CONNACK 0.
    pub established: u64,
    /// Initial attempts that failed.
    pub failed: u64,
    /// Connections open now.
    pub alive: u64,
    /// Connections closed by the storm.
    pub dropped: u64,
    /// Dropped devices back with CONNACK 0.
    pub reconnected: u64,
    /// Reconnect attempts that failed (refused, timed out, I/O error); retried.
    pub storm_failed_attempts: u64,
    /// Dropped devices that gave up (storm timeout or stop).
    pub gave_up: u64,
    /// Established connections lost other than by the storm (server closed, I/O error).
    pub lost: u64,
}

impl Counts {
    /// Initial attempts not yet resolved.
    pub fn inflight(&self) -> u64 {
        self.attempted - self.established - self.failed
    }

    /// Dropped devices neither back nor given up.
    pub fn out(&self) -> u64 {
        self.dropped - self.reconnected - self.gave_up
    }

    /// Field-wise sum.
    pub fn add(&mut self, o: &Counts) {
        self.attempted += o.attempted;
        self.established += o.established;
        self.failed += o.failed;
        self.alive += o.alive;
        self.dropped += o.dropped;
        self.reconnected += o.reconnected;
        self.storm_failed_attempts += o.storm_failed_attempts;
        self.gave_up += o.gave_up;
        self.lost += o.lost;
    }
}

/// Worker → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Counters, about four times a second while connecting or recovering.
    Progress(Counts),
    /// Every initial attempt has resolved.
    Reached(Counts),
    /// Answer to [`Command::Status`].
    Status(Counts),
    /// Every dropped device is back or has given up.
    Recovered(Counts),
    /// The final report; the worker exits after it.
    Final(Box<WorkerReport>),
    /// The worker cannot go on.
    Fatal(String),
}

/// Everything a worker measured, sent once at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Final counters.
    pub counts: Counts,
    /// Failed initial attempts by reason.
    pub failures: BTreeMap<String, u64>,
    /// Failed reconnect attempts by reason (`connack 3`, `timeout waiting for CONNACK`, …).
    pub storm_failures: BTreeMap<String, u64>,
    /// Devices that gave up, by the reason of their last failure.
    pub gave_up: BTreeMap<String, u64>,
    /// Established connections lost other than by the storm, by reason.
    pub lost: BTreeMap<String, u64>,
    /// Initial connect() to CONNACK, microseconds: `(value, count)` pairs of a histogram.
    pub connect_latency_us: Vec<(u64, u64)>,
    /// Reconnect attempts' connect() to CONNACK (successful ones), as above.
    pub storm_latency_us: Vec<(u64, u64)>,
    /// For each reconnected device, microseconds from the drop until its CONNACK 0.
    pub reconnected_at_us: Vec<u64>,
    /// The worker's CPU from the drop until its devices were back (or the stop).
    pub storm_cpu: CpuSecs,
    /// The worker's CPU over the whole run.
    pub cpu: CpuSecs,
    /// The worker's own memory at the end.
    pub memory: Memory,
}

crate::pool::worker_protocol!(
    Event,
    Counts,
    WorkerReport,
    [Progress, Reached, Status, Recovered]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_round_trip() {
        let cmd = Command::Storm { at_unix_us: 42 };
        let line = serde_json::to_string(&cmd).unwrap();
        assert_eq!(line, r#"{"storm":{"at_unix_us":42}}"#);
        assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), cmd);
        let c = Counts {
            dropped: 5,
            reconnected: 3,
            gave_up: 1,
            ..Counts::default()
        };
        let back: Event =
            serde_json::from_str(&serde_json::to_string(&Event::Recovered(c)).unwrap()).unwrap();
        assert!(matches!(back, Event::Recovered(c) if c.out() == 1));
    }
}
