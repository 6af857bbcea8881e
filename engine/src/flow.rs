//! Token buckets for flow control (docs/architecture.md, "The engine"): per device for
//! uplink messages and bytes, per listener for new connections. A bucket may run into debt
//! down to minus its burst: a device in debt is slowed by not reading its socket until the
//! debt is paid; one that would go deeper is refused.

use crate::time::Millis;

/// A rate and a burst; a rate of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: u32,
    /// Largest balance, and largest debt.
    pub burst: u32,
}

impl Rate {
    /// Unlimited.
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// Whether the rate limits anything.
    pub fn is_limited(self) -> bool {
        self.per_sec > 0
    }
}

/// What a take decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Within budget.
    Ok,
    /// Taken on credit: stop reading until this time, when the debt is paid.
    PauseUntil(Millis),
    /// Over budget even on credit: refuse.
    Refused,
}

/// One bucket. 16 bytes; the rate is passed in so that it can change (per product) without
/// touching every bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: i64,
    last: Millis,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Millis) -> Self {
        TokenBucket {
            tokens: i64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Millis) {
        let elapsed = now.since(self.last);
        let add = elapsed.saturating_mul(u64::from(rate.per_sec)) / 1000;
        if add > 0 {
            self.tokens = (self
                .tokens
                .saturating_add(i64::try_from(add).unwrap_or(i64::MAX)))
            .min(i64::from(rate.burst));
            // Advance by the time the added tokens account for, keeping the remainder.
            self.last = self
                .last
                .plus(add.saturating_mul(1000) / u64::from(rate.per_sec));
            if self.tokens == i64::from(rate.burst) {
                self.last = now;
            }
        }
    }

    /// Takes `n` tokens only if they are there (no credit).
    pub fn try_take(&mut self, n: u64, rate: Rate, now: Millis) -> bool {
        if !rate.is_limited() {
            return true;
        }
        self.refill(rate, now);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens at `now`.
    pub fn take(&mut self, n: u64, rate: Rate, now: Millis) -> Take {
        if !rate.is_limited() {
            return Take::Ok;
        }
        self.refill(rate, now);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let after = self.tokens.saturating_sub(n);
        if after < -i64::from(rate.burst) {
            return Take::Refused;
        }
        self.tokens = after;
        if after >= 0 {
            Take::Ok
        } else {
            let wait = (-after as u64)
                .saturating_mul(1000)
                .div_ceil(u64::from(rate.per_sec));
            Take::PauseUntil(now.plus(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate {
        per_sec: 10,
        burst: 5,
    };

    #[test]
    fn burst_then_credit_then_refusal() {
        let t0 = Millis(1000);
        let mut b = TokenBucket::full(R, t0);
        for _ in 0..5 {
            assert_eq!(b.take(1, R, t0), Take::Ok);
        }
        // On credit: one token short means 100 ms of pause at 10/s.
        assert_eq!(b.take(1, R, t0), Take::PauseUntil(Millis(1100)));
        for _ in 0..4 {
            assert!(matches!(b.take(1, R, t0), Take::PauseUntil(_)));
        }
        assert_eq!(b.take(1, R, t0), Take::Refused);
    }

    #[test]
    fn refills_at_the_rate_and_caps_at_the_burst() {
        let mut b = TokenBucket::full(R, Millis(0));
        assert_eq!(b.take(5, R, Millis(0)), Take::Ok);
        // 250 ms at 10/s = 2 tokens.
        assert_eq!(b.take(2, R, Millis(250)), Take::Ok);
        assert_eq!(b.take(1, R, Millis(250)), Take::PauseUntil(Millis(350)));
        // A long idle period refills to the burst only.
        assert_eq!(b.take(5, R, Millis(100_000)), Take::Ok);
        assert!(matches!(b.take(1, R, Millis(100_000)), Take::PauseUntil(_)));
    }

    #[test]
    fn fractions_are_not_lost() {
        let r = Rate {
            per_sec: 3,
            burst: 1,
        };
        let mut b = TokenBucket::full(r, Millis(0));
        assert_eq!(b.take(1, r, Millis(0)), Take::Ok);
        // 333 ms is one token at 3/s; three such steps must yield three tokens.
        let mut ok = 0;
        for step in 1..=3 {
            if b.take(1, r, Millis(step * 334)) == Take::Ok {
                ok += 1;
            }
        }
        assert_eq!(ok, 3);
    }

    #[test]
    fn unlimited_never_limits() {
        let mut b = TokenBucket::full(Rate::UNLIMITED, Millis(0));
        assert_eq!(b.take(u64::MAX, Rate::UNLIMITED, Millis(0)), Take::Ok);
    }
}
