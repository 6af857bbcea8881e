//! What the `telemetry` and `command-roundtrip` coordinators and their worker processes say to
//! each other: JSON lines over the worker's standard input and output, through
//! [`crate::pool`] as in `idle-connections` (whose
//! [`WorkerShare`](crate::idle::protocol::WorkerShare) names a worker's share). The first line
//! to a worker is a [`WorkerInit`]; then [`Command`]s, answered by [`Event`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::procfs::{CpuSecs, Memory};
use crate::scenario::{CommandScenario, Fleet, TelemetryScenario};

/// What the workers' devices do once connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Publish property reports (`telemetry`).
    Telemetry(TelemetryScenario),
    /// Answer commands (`command-roundtrip`).
    CommandRoundtrip(CommandScenario),
}

impl Job {
    /// The devices and their connections.
    pub fn fleet(&self) -> &Fleet {
        match self {
            Job::Telemetry(s) => &s.fleet,
            Job::CommandRoundtrip(s) => &s.fleet,
        }
    }
}

/// The first line sent to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    /// The validated scenario.
    pub job: Job,
    /// Seconds after which the worker gives up and exits whatever happens.
    pub deadline_secs: u64,
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Connect every device of this worker at its share of `connect_rate` (in
    /// `command-roundtrip`, also subscribe each to its commands); answer [`Event::Online`]
    /// (`command-roundtrip`) and then [`Event::Connected`] when every attempt has resolved.
    Connect,
    /// `telemetry`: publish this worker's share of the reports, report `g` being due at
    /// `t0 + g / rate`; answer [`Event::Published`] when every device has sent its share (or
    /// run out of time) and had its PUBACKs (or waited `drain_secs` for them).
    Publish {
        /// `t0`, Unix microseconds (the same clock in every process).
        t0_unix_us: u64,
    },
    /// Answer [`Event::Status`].
    Status,
    /// Disconnect everything, answer [`Event::Final`] and exit.
    Stop,
}

/// A worker's counters (summed over the workers by the coordinator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Devices connected (CONNACK 0, and SUBACK when they subscribe).
    pub connected: u64,
    /// Devices that failed to connect.
    pub failed: u64,
    /// Connected devices whose connection was lost before the stop.
    pub dropped: u64,
    /// Reports written to the socket.
    pub sent: u64,
    /// PUBACKs received for reports.
    pub acked: u64,
    /// Reports sent late because their device's window of `max_inflight` unacknowledged
    /// reports was full when they were due (QoS 1).
    pub window_delayed: u64,
    /// Commands the devices received and answered.
    pub answered: u64,
    /// The worker's own user CPU so far, clock ticks.
    pub cpu_user_ticks: u64,
    /// The worker's own system CPU so far, clock ticks.
    pub cpu_system_ticks: u64,
}

impl Counts {
    /// Field-wise sum.
    pub fn add(&mut self, o: &Counts) {
        self.connected += o.connected;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.sent += o.sent;
        self.acked += o.acked;
        self.window_delayed += o.window_delayed;
        self.answered += o.answered;
        self.cpu_user_ticks += o.cpu_user_ticks;
        self.cpu_system_ticks += o.cpu_system_ticks;
    }

    /// The CPU between an earlier reading and this one.
    pub fn cpu_since(&self, earlier: &Counts) -> CpuSecs {
        CpuSecs::from_ticks(
            self.cpu_user_ticks.saturating_sub(earlier.cpu_user_ticks),
            self.cpu_system_ticks
                .saturating_sub(earlier.cpu_system_ticks),
        )
    }

    /// Whether anything but the CPU differs (a new progress event is worth sending).
    pub fn moved_since(&self, o: &Counts) -> bool {
        let strip = |c: &Counts| Counts {
            cpu_user_ticks: 0,
            cpu_system_ticks: 0,
            ..*c
        };
        strip(self) != strip(o)
    }
}

/// Everything a worker measured, sent once at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Final counters.
    pub counts: Counts,
    /// Devices this worker owns.
    pub devices: u64,
    /// Failed connections by reason (`connack 4`, `timeout`, `suback …`).
    pub failures: BTreeMap<String, u64>,
    /// Connections lost before the stop, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Reports sent per second since `t0` (`telemetry`).
    pub sent_per_sec: Vec<u64>,
    /// The worker's CPU while publishing: from the publish command until every device was
    /// done (`telemetry`).
    pub cpu_publishing: CpuSecs,
    /// The worker's CPU over its whole life.
    pub cpu: CpuSecs,
    /// The worker's memory at the end (`VmHWM` is its peak).
    pub memory: Memory,
}

/// Worker → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Counters, at most four times a second when they changed.
    Progress(Counts),
    /// `command-roundtrip`: the devices of this worker that are online (1-based numbers),
    /// sent just before [`Event::Connected`].
    Online(Vec<u64>),
    /// Every connection attempt has resolved.
    Connected(Counts),
    /// Every device has published its share.
    Published(Counts),
    /// Answer to [`Command::Status`].
    Status(Counts),
    /// The final report; the worker exits after it.
    Final(Box<WorkerReport>),
    /// The worker cannot go on.
    Fatal(String),
}

crate::pool::worker_protocol!(
    Event,
    Counts,
    WorkerReport,
    [Progress, Connected, Published, Status]
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::WorkerEvent;

    #[test]
    fn commands_and_events_are_one_json_line_each() {
        let cmd = Command::Publish { t0_unix_us: 42 };
        let line = serde_json::to_string(&cmd).unwrap();
        assert_eq!(line, r#"{"publish":{"t0_unix_us":42}}"#);
        assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), cmd);
        assert_eq!(serde_json::to_string(&Command::Stop).unwrap(), r#""stop""#);
        let c = Counts {
            connected: 3,
            sent: 10,
            ..Counts::default()
        };
        let back: Event =
            serde_json::from_str(&serde_json::to_string(&Event::Published(c)).unwrap()).unwrap();
        assert_eq!(back.counts(), Some(c));
        let online: Event = serde_json::from_str(r#"{"online":[1,3]}"#).unwrap();
        assert!(matches!(&online, Event::Online(v) if v == &[1, 3]));
        assert_eq!(online.counts(), None);
        assert!(!online.is_final());
    }

    #[test]
    fn counts_add_and_progress_ignores_the_cpu() {
        let a = Counts {
            connected: 2,
            answered: 5,
            cpu_user_ticks: 10,
            ..Counts::default()
        };
        let mut t = a;
        t.add(&a);
        assert_eq!((t.connected, t.answered, t.cpu_user_ticks), (4, 10, 20));
        let later = Counts {
            cpu_user_ticks: 110,
            cpu_system_ticks: 5,
            ..a
        };
        assert!(!later.moved_since(&a));
        assert!(t.moved_since(&a));
        let cpu = later.cpu_since(&a);
        assert!(cpu.user > 0.0 && cpu.system > 0.0, "{cpu:?}");
    }

    #[test]
    fn the_init_line_carries_either_scenario() {
        let s = crate::scenario::TelemetryScenario::parse(
            "target = \"127.0.0.1:1883\"\ncount = 300\nrate = 100\nprocesses = 2\n",
        )
        .unwrap();
        let init = WorkerInit {
            job: Job::Telemetry(s.clone()),
            deadline_secs: 9,
        };
        let back: WorkerInit =
            serde_json::from_str(&serde_json::to_string(&init).unwrap()).unwrap();
        assert_eq!(back.job, Job::Telemetry(s));
        assert_eq!(back.job.fleet().processes, 2);
    }
}
