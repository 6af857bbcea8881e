//! Per-application token buckets on the application API (`[api.rate_limit]`): one bucket for
//! every authenticated call, checked by the [`Caller`] extractor, and one for the calls that
//! send to a device, checked by [`Limits::downlink`] in the handlers of `interact.rs` and in
//! the EMQX-style publications of `emqx.rs` (one token per message) before they send. An empty bucket answers 429 `FLEETGATE.RATE_LIMITED` with `Retry-After`, and the
//! refusal is counted in `fleetgate_api_rate_limited_total{kind}`.
//!
//! The buckets live in one map keyed by application. A bucket that has refilled to its burst
//! is the same as a new one, so such entries are dropped whenever the map grows past a
//! threshold (which then doubles from what is left): the map holds at most the applications
//! that called within the last burst-refill time, plus that slack.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fleetgate_model::AppId;
use parking_lot::Mutex;
use prometheus::IntCounterVec;

use super::Caller;
use crate::config::RateLimitConfig;
use crate::error::ApiError;

/// The map size at which idle entries are first swept.
const SWEEP_AT: usize = 1024;

/// A refill rate and capacity; `None` where the rate is 0 (unlimited).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    per_sec: f64,
    burst: f64,
}

impl Rate {
    /// The rate of a configuration pair; 0 per second means unlimited.
    pub(crate) fn new(per_sec: u32, burst: u32) -> Option<Rate> {
        (per_sec > 0).then(|| Rate {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
        })
    }
}

/// One token bucket: the tokens it held at `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.at = self.at.max(now);
    }

    /// Takes one token, or says how long until one is there.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_sec))
        }
    }

    /// Whether the bucket is full at `now`, i.e. indistinguishable from a new one.
    pub(crate) fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= rate.burst
    }
}

/// What a bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Every authenticated call.
    Calls,
    /// Calls that send to a device.
    Downlinks,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Calls => "calls",
            Kind::Downlinks => "downlinks",
        }
    }
}

#[derive(Debug)]
struct Entry {
    calls: Option<Bucket>,
    downlinks: Option<Bucket>,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<AppId, Entry>,
    sweep_at: usize,
}

/// The buckets of every application.
#[derive(Debug)]
pub struct Limits {
    calls: Option<Rate>,
    downlinks: Option<Rate>,
    table: Mutex<Table>,
    refused: Option<IntCounterVec>,
}

impl Limits {
    /// Buckets for `config`; refusals are counted in `refused` (labelled by kind) when given.
    pub fn new(config: &RateLimitConfig, refused: Option<IntCounterVec>) -> Limits {
        Limits {
            calls: Rate::new(config.calls_per_sec, config.calls_burst),
            downlinks: Rate::new(config.downlinks_per_sec, config.downlinks_burst),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
            refused,
        }
    }

    /// Counts an authenticated call of `caller` (429 when its bucket is empty).
    pub fn call(&self, caller: &Caller) -> Result<(), ApiError> {
        self.check(caller.app_id(), Kind::Calls, Instant::now())
    }

    /// Counts a call of `caller` that sends to a device (429 when its bucket is empty).
    pub fn downlink(&self, caller: &Caller) -> Result<(), ApiError> {
        self.check(caller.app_id(), Kind::Downlinks, Instant::now())
    }

    /// Takes a token of `kind` for `app` at `now`.
    pub(crate) fn check(&self, app: &AppId, kind: Kind, now: Instant) -> Result<(), ApiError> {
        let Some(rate) = (match kind {
            Kind::Calls => self.calls,
            Kind::Downlinks => self.downlinks,
        }) else {
            return Ok(());
        };
        let outcome = {
            let mut table = self.table.lock();
            if !table.entries.contains_key(app) && table.entries.len() >= table.sweep_at {
                self.sweep(&mut table, now);
            }
            let entry = table.entries.entry(app.clone()).or_insert(Entry {
                calls: None,
                downlinks: None,
            });
            let slot = match kind {
                Kind::Calls => &mut entry.calls,
                Kind::Downlinks => &mut entry.downlinks,
            };
            slot.get_or_insert_with(|| Bucket::full(rate, now))
                .take(rate, now)
        };
        outcome.map_err(|wait| {
            if let Some(c) = &self.refused {
                c.with_label_values(&[kind.label()]).inc();
            }
            ApiError::rate_limited(kind.label(), wait)
        })
    }

    /// Drops the entries whose buckets are all full, and sets the next sweep threshold.
    fn sweep(&self, table: &mut Table, now: Instant) {
        let idle = |b: &Option<Bucket>, r: Option<Rate>| match (b, r) {
            (Some(b), Some(r)) => b.is_full(r, now),
            _ => true,
        };
        table
            .entries
            .retain(|_, e| !(idle(&e.calls, self.calls) && idle(&e.downlinks, self.downlinks)));
        table.sweep_at = (table.entries.len() * 2).max(SWEEP_AT);
    }

    /// How many applications have an entry (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn app(n: usize) -> AppId {
        AppId::new(format!("app{n}")).unwrap()
    }

    fn config(calls: (u32, u32), downlinks: (u32, u32)) -> RateLimitConfig {
        RateLimitConfig {
            calls_per_sec: calls.0,
            calls_burst: calls.1,
            downlinks_per_sec: downlinks.0,
            downlinks_burst: downlinks.1,
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let rate = Rate::new(2, 3).unwrap();
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            b.take(rate, t0).unwrap();
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        b.take(rate, t1).unwrap();
        assert!(b.take(rate, t1).is_err());
        // Never more than the burst, however long it waits.
        let t2 = t1 + Duration::from_secs(60);
        assert!(b.is_full(rate, t2));
        for _ in 0..3 {
            b.take(rate, t2).unwrap();
        }
        assert!(b.take(rate, t2).is_err());
    }

    #[test]
    fn zero_is_unlimited() {
        assert_eq!(Rate::new(0, 10), None);
        let limits = Limits::new(&config((0, 0), (0, 0)), None);
        let now = Instant::now();
        for _ in 0..10_000 {
            limits.check(&app(1), Kind::Calls, now).unwrap();
        }
        assert_eq!(limits.len(), 0);
    }

    #[test]
    fn applications_and_kinds_have_separate_buckets() {
        let limits = Limits::new(&config((1, 1), (1, 2)), None);
        let now = Instant::now();
        limits.check(&app(1), Kind::Calls, now).unwrap();
        let err = limits.check(&app(1), Kind::Calls, now).unwrap_err();
        assert_eq!(err.status.as_u16(), 429);
        assert_eq!(err.code, "FLEETGATE.RATE_LIMITED");
        assert_eq!(err.retry_after, Some(1));
        limits.check(&app(2), Kind::Calls, now).unwrap();
        limits.check(&app(1), Kind::Downlinks, now).unwrap();
        limits.check(&app(1), Kind::Downlinks, now).unwrap();
        assert!(limits.check(&app(1), Kind::Downlinks, now).is_err());
        limits
            .check(&app(1), Kind::Calls, now + Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn refusals_are_counted_by_kind() {
        let counter =
            IntCounterVec::new(prometheus::Opts::new("refused", "test"), &["kind"]).unwrap();
        let limits = Limits::new(&config((1, 1), (1, 1)), Some(counter.clone()));
        let now = Instant::now();
        limits.check(&app(1), Kind::Downlinks, now).unwrap();
        assert!(limits.check(&app(1), Kind::Downlinks, now).is_err());
        assert!(limits.check(&app(1), Kind::Downlinks, now).is_err());
        assert_eq!(counter.with_label_values(&["downlinks"]).get(), 2);
        assert_eq!(counter.with_label_values(&["calls"]).get(), 0);
    }

    #[test]
    fn idle_entries_are_dropped_so_the_map_stays_bounded() {
        let limits = Limits::new(&config((10, 10), (1, 1)), None);
        let t0 = Instant::now();
        for n in 0..SWEEP_AT {
            limits.check(&app(n), Kind::Calls, t0).unwrap();
        }
        assert_eq!(limits.len(), SWEEP_AT);
        // A second later every bucket is full again: the next new application sweeps them.
        let t1 = t0 + Duration::from_secs(1);
        limits.check(&app(SWEEP_AT), Kind::Calls, t1).unwrap();
        assert_eq!(limits.len(), 1);
        // Busy applications are kept.
        for n in 0..SWEEP_AT {
            limits.check(&app(n), Kind::Calls, t1).unwrap();
        }
        limits.check(&app(SWEEP_AT + 1), Kind::Calls, t1).unwrap();
        assert_eq!(limits.len(), SWEEP_AT + 2);
        // Many applications active at once are all kept; once idle they go at the next sweep.
        let t2 = t1 + Duration::from_secs(2);
        for n in 0..10 * SWEEP_AT {
            limits.check(&app(n), Kind::Calls, t2).unwrap();
        }
        assert_eq!(limits.len(), 10 * SWEEP_AT);
        // New applications two seconds later: the first sweep drops every idle one.
        let t3 = t2 + Duration::from_secs(2);
        let mut n = 10 * SWEEP_AT;
        let mut before = limits.len();
        loop {
            limits.check(&app(n), Kind::Calls, t3).unwrap();
            let now = limits.len();
            if now < before {
                assert_eq!(now, n + 1 - 10 * SWEEP_AT);
                break;
            }
            assert!(now <= 21 * SWEEP_AT, "the map grew to {now}");
            before = now;
            n += 1;
        }
    }
}
