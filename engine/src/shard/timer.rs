//! The shard's timer wheel: one entry per connection at most, no timer object per session
//! (docs/architecture.md, "The engine"). Entries are lazy: when one fires
//! the shard asks the session for its real deadline and re-arms if it moved later, so a
//! keep-alive that is refreshed by every packet costs nothing until it is due.

use crate::time::Millis;

/// Granularity of the wheel, milliseconds.
pub(crate) const TICK_MS: u64 = 50;
const SLOTS: usize = 4096;

/// A hashed wheel of `SLOTS` buckets of `TICK_MS`; deadlines beyond one turn wait in their bucket
/// for later turns.
#[derive(Debug)]
pub(crate) struct TimerWheel<K> {
    buckets: Vec<Vec<(K, Millis)>>,
    /// The next tick to process.
    next_tick: u64,
    len: usize,
}

impl<K: Copy> TimerWheel<K> {
    pub(crate) fn new(now: Millis) -> Self {
        TimerWheel {
            buckets: (0..SLOTS).map(|_| Vec::new()).collect(),
            next_tick: now.0 / TICK_MS,
            len: 0,
        }
    }

    /// Schedules `key` at `at` (rounded up to the next tick).
    pub(crate) fn insert(&mut self, key: K, at: Millis) {
        let tick = at.0.div_ceil(TICK_MS).max(self.next_tick);
        self.buckets[(tick % SLOTS as u64) as usize].push((key, at));
        self.len += 1;
    }

    /// Entries scheduled.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Moves every entry due at `now` into `due`.
    pub(crate) fn advance(&mut self, now: Millis, due: &mut Vec<K>) {
        let target = now.0 / TICK_MS;
        // After a long stall, one full turn visits every bucket.
        let last = target.min(self.next_tick + SLOTS as u64 - 1);
        while self.next_tick <= last {
            let bucket = &mut self.buckets[(self.next_tick % SLOTS as u64) as usize];
            let before = bucket.len();
            bucket.retain(|(k, at)| {
                if *at <= now {
                    due.push(*k);
                    false
                } else {
                    true
                }
            });
            self.len -= before - bucket.len();
            self.next_tick += 1;
        }
        self.next_tick = self.next_tick.max(target + 1);
    }

    /// The time of the next tick that may hold a due entry (for the driver's wait).
    pub(crate) fn next_wake(&self) -> Option<Millis> {
        (self.len > 0).then_some(Millis(self.next_tick * TICK_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_not_early() {
        let mut w = TimerWheel::new(Millis(0));
        w.insert(1u32, Millis(120));
        w.insert(2, Millis(40));
        w.insert(3, Millis(1_000_000)); // more than one turn away
        let mut due = Vec::new();
        w.advance(Millis(30), &mut due);
        assert!(due.is_empty());
        w.advance(Millis(60), &mut due);
        assert_eq!(due, vec![2]);
        w.advance(Millis(200), &mut due);
        assert_eq!(due, vec![2, 1]);
        assert_eq!(w.len(), 1);
        due.clear();
        w.advance(Millis(999_999), &mut due);
        assert!(
            due.is_empty(),
            "the far entry survived its bucket's earlier turns"
        );
        w.advance(Millis(1_000_050), &mut due);
        assert_eq!(due, vec![3]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_wake(), None);
    }

    #[test]
    fn a_long_stall_visits_every_bucket_once() {
        let mut w = TimerWheel::new(Millis(0));
        for i in 0..100u32 {
            w.insert(i, Millis(u64::from(i) * 997));
        }
        let mut due = Vec::new();
        w.advance(Millis(10_000_000), &mut due);
        due.sort();
        assert_eq!(due, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let mut w = TimerWheel::new(Millis(10_000));
        w.insert(7u32, Millis(5));
        let mut due = Vec::new();
        w.advance(Millis(10_001), &mut due);
        assert_eq!(due, vec![7]);
    }
}
