//! The engine's clock: monotonic milliseconds since the engine started. Session logic never
//! reads a clock; the shard reads this one once per loop turn and passes `now` down.

use std::time::{Duration, Instant};

/// Milliseconds on the engine's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 when `earlier` is later).
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The origin of [`Millis`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Millis {
        Millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Time until `at` (zero when it has passed).
    pub fn until(&self, at: Millis) -> Duration {
        Duration::from_millis(at.since(self.now()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
