//! Per-second time series for reports (counts and latency percentiles per second since the
//! start of a run), kept for plots. A second's latencies go into a small low-precision
//! histogram that is reduced to its p50 and p99 when the second is over, so a long run holds
//! two numbers per second. Percentiles are exact (to the histogram's two significant digits)
//! only for latencies recorded into one series: [`Series::merge`] can only bound them.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the start (this point covers `[t, t+1)`).
    pub t: u64,
    /// Named counts (e.g. `sent`, `delivered`, `ok`, `errors`).
    #[serde(flatten)]
    pub counts: BTreeMap<&'static str, u64>,
    /// Median of the latencies recorded in this second, µs (0 when none).
    pub p50_us: u64,
    /// 99th percentile of the latencies recorded in this second, µs (0 when none).
    pub p99_us: u64,
}

/// Counts and latencies per second.
#[derive(Debug)]
pub struct Series {
    seconds: Vec<Second>,
    current: Option<(u64, Histogram<u64>)>,
}

fn second_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 2 significant digits: a few KiB.
    Histogram::new_with_bounds(1, 600_000_000, 2)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

impl Default for Series {
    fn default() -> Self {
        Series::new()
    }
}

impl Series {
    /// An empty series.
    pub fn new() -> Series {
        Series {
            seconds: Vec::new(),
            current: None,
        }
    }

    fn slot(&mut self, t: u64) -> &mut Second {
        let i = t as usize;
        while self.seconds.len() <= i {
            let t = self.seconds.len() as u64;
            self.seconds.push(Second {
                t,
                ..Second::default()
            });
        }
        &mut self.seconds[i]
    }

    /// Adds `n` to count `name` of second `t`.
    pub fn add(&mut self, t: u64, name: &'static str, n: u64) {
        *self.slot(t).counts.entry(name).or_default() += n;
    }

    /// Records a latency in second `t`. Seconds are expected in non-decreasing order (a
    /// latency for an earlier second than the last is counted in the current one).
    pub fn latency(&mut self, t: u64, us: u64) {
        let t = match &self.current {
            Some((cur, _)) if *cur > t => *cur,
            _ => t,
        };
        if self.current.as_ref().is_some_and(|(cur, _)| *cur != t) {
            self.flush();
        }
        let (_, h) = self.current.get_or_insert_with(|| (t, second_histogram()));
        let _ = h.record(us.max(1));
    }

    fn flush(&mut self) {
        if let Some((t, h)) = self.current.take()
            && !h.is_empty()
        {
            let slot = self.slot(t);
            slot.p50_us = h.value_at_quantile(0.50);
            slot.p99_us = h.value_at_quantile(0.99);
        }
    }

    /// Merges another series (counts add; each percentile of a second is the larger of the
    /// two, an upper bound of the merged one: where exact per-second percentiles matter, record
    /// every latency into one series instead).
    pub fn merge(&mut self, mut other: Series) {
        other.flush();
        self.flush();
        for s in other.seconds {
            let mine = self.slot(s.t);
            for (k, v) in s.counts {
                *mine.counts.entry(k).or_default() += v;
            }
            mine.p50_us = mine.p50_us.max(s.p50_us);
            mine.p99_us = mine.p99_us.max(s.p99_us);
        }
    }

    /// The finished series, one point per second from 0 to the last second with data.
    pub fn finish(mut self) -> Vec<Second> {
        self.flush();
        self.seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentiles_per_second() {
        let mut s = Series::new();
        s.add(0, "sent", 3);
        s.add(2, "sent", 1);
        for us in 1..=100 {
            s.latency(0, us);
        }
        s.latency(2, 5000);
        s.latency(1, 7); // late: counted in second 2
        let mut other = Series::new();
        other.add(2, "sent", 4);
        other.latency(3, 10);
        s.merge(other);
        let v = s.finish();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].counts["sent"], 3);
        assert_eq!(v[0].p50_us, 50);
        assert_eq!(v[0].p99_us, 99);
        assert_eq!((v[1].p50_us, v[1].p99_us), (0, 0));
        assert_eq!(v[2].counts["sent"], 5);
        // Second 2 holds 5000 and 7: the median is the lower, the p99 the higher.
        assert_eq!(v[2].p50_us, 7, "{:?}", v[2]);
        assert!(v[2].p99_us >= 4900, "{:?}", v[2]);
        assert_eq!((v[3].p50_us, v[3].p99_us), (10, 10));
        let json = serde_json::to_value(&v[0]).unwrap();
        assert_eq!(json["sent"], 3);
        assert_eq!(json["t"], 0);
        assert_eq!(json["p50_us"], 50);
        assert_eq!(json["p99_us"], 99);
    }

    #[test]
    fn the_median_follows_the_bulk_and_the_p99_the_tail() {
        let mut s = Series::new();
        for _ in 0..980 {
            s.latency(0, 200);
        }
        for _ in 0..20 {
            s.latency(0, 90_000);
        }
        let v = s.finish();
        assert_eq!(v[0].p50_us, 200, "{:?}", v[0]);
        assert!((89_000..=91_000).contains(&v[0].p99_us), "{:?}", v[0]);
    }

    #[test]
    fn merging_bounds_each_percentile() {
        let mut a = Series::new();
        a.latency(0, 100);
        let mut b = Series::new();
        b.latency(0, 200);
        b.latency(0, 200);
        a.merge(b);
        let v = a.finish();
        assert_eq!((v[0].p50_us, v[0].p99_us), (200, 200));
    }
}
