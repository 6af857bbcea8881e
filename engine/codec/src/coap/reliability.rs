//! Message-layer reliability of RFC 7252 §4: transmission parameters and the times derived from
//! them (§4.8), retransmission of one confirmable message (§4.2), deduplication of received
//! confirmable messages (§4.5), message ids (§4.4) and tokens (§5.3.1).
//!
//! Nothing here reads a clock or a random number generator: the caller passes `now` and its
//! random values, so the server's timers can be tested without sleeping.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// `MAX_LATENCY` (RFC 7252 §4.8.2): the longest a datagram is assumed to travel.
pub const MAX_LATENCY: Duration = Duration::from_secs(100);

/// The largest `max_retransmit` [`TransmissionParams::validate`] accepts: with doubling
/// timeouts, more would wait for weeks.
pub const MAX_MAX_RETRANSMIT: u32 = 16;

/// Why transmission parameters were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// `ack_timeout` is zero.
    #[error("ack_timeout must be positive")]
    AckTimeout,
    /// `ack_random_factor` is below 1.0 or not finite (RFC 7252 §4.8).
    #[error("ack_random_factor must be a finite number of at least 1.0")]
    AckRandomFactor,
    /// `max_retransmit` exceeds [`MAX_MAX_RETRANSMIT`].
    #[error("max_retransmit must be at most {MAX_MAX_RETRANSMIT}")]
    MaxRetransmit,
    /// `nstart` is zero.
    #[error("nstart must be at least 1")]
    Nstart,
}

/// The transmission parameters of RFC 7252 §4.8 (`[engine.coap]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmissionParams {
    /// `ACK_TIMEOUT`: the base timeout of the first retransmission (default 2 s).
    pub ack_timeout: Duration,
    /// `ACK_RANDOM_FACTOR`: the first timeout is drawn from `ack_timeout` to
    /// `ack_timeout * ack_random_factor` (default 1.5).
    pub ack_random_factor: f64,
    /// `MAX_RETRANSMIT`: retransmissions before giving up (default 4).
    pub max_retransmit: u32,
    /// `NSTART`: outstanding interactions per peer (default 1).
    pub nstart: u32,
}

impl Default for TransmissionParams {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
        }
    }
}

/// `secs` as a duration, saturating at [`Duration::MAX`] (and 0 for negative or NaN input).
fn secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// `now + d`, or as far as `Instant` reaches.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

impl TransmissionParams {
    /// Checks the parameters against RFC 7252 §4.8 and fleetgate's bounds.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.ack_timeout.is_zero() {
            return Err(ParamsError::AckTimeout);
        }
        if !self.ack_random_factor.is_finite() || self.ack_random_factor < 1.0 {
            return Err(ParamsError::AckRandomFactor);
        }
        if self.max_retransmit > MAX_MAX_RETRANSMIT {
            return Err(ParamsError::MaxRetransmit);
        }
        if self.nstart == 0 {
            return Err(ParamsError::Nstart);
        }
        Ok(())
    }

    fn factor(&self) -> f64 {
        if self.ack_random_factor.is_finite() && self.ack_random_factor >= 1.0 {
            self.ack_random_factor
        } else {
            1.0
        }
    }

    /// `ack_timeout * (2^n - 1) * ack_random_factor`.
    fn doubled(&self, n: u32) -> Duration {
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        secs(self.ack_timeout.as_secs_f64() * (2f64.powi(n) - 1.0) * self.factor())
    }

    /// `MAX_TRANSMIT_SPAN`: from the first transmission to the last retransmission (45 s by
    /// default).
    #[must_use]
    pub fn max_transmit_span(&self) -> Duration {
        self.doubled(self.max_retransmit)
    }

    /// `MAX_TRANSMIT_WAIT`: from the first transmission until the sender gives up (93 s by
    /// default; also the default awake window of queue-mode devices).
    #[must_use]
    pub fn max_transmit_wait(&self) -> Duration {
        self.doubled(self.max_retransmit.saturating_add(1))
    }

    /// `PROCESSING_DELAY`, taken as `ack_timeout` as RFC 7252 §4.8.2 suggests.
    #[must_use]
    pub const fn processing_delay(&self) -> Duration {
        self.ack_timeout
    }

    /// `MAX_RTT`: `2 * MAX_LATENCY + PROCESSING_DELAY` (202 s by default).
    #[must_use]
    pub fn max_rtt(&self) -> Duration {
        (2 * MAX_LATENCY).saturating_add(self.processing_delay())
    }

    /// `EXCHANGE_LIFETIME`: `MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY` (247 s by
    /// default), how long a message id stays in the deduplication cache.
    #[must_use]
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span().saturating_add(self.max_rtt())
    }

    /// `NON_LIFETIME`: `MAX_TRANSMIT_SPAN + MAX_LATENCY` (145 s by default).
    #[must_use]
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span().saturating_add(MAX_LATENCY)
    }

    /// The first retransmission timeout: `ack_timeout * (1 + fraction * (ack_random_factor - 1))`
    /// for a random `fraction` in 0..=1 (clamped; NaN counts as 0).
    #[must_use]
    pub fn initial_timeout(&self, random_fraction: f64) -> Duration {
        let fraction = if random_fraction.is_nan() {
            0.0
        } else {
            random_fraction.clamp(0.0, 1.0)
        };
        secs(self.ack_timeout.as_secs_f64() * (1.0 + fraction * (self.factor() - 1.0)))
    }
}

/// What to do when a confirmable message's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetransmitAction {
    /// Send the message again; the next deadline is [`Retransmission::next_deadline`].
    Resend,
    /// `MAX_RETRANSMIT` retransmissions went unacknowledged: give up (the device is asleep).
    GiveUp,
}

/// The retransmission state of one outgoing confirmable message (RFC 7252 §4.2): a random
/// initial timeout, doubled after each retransmission, until `max_retransmit` retransmissions
/// have gone unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retransmission {
    timeout: Duration,
    deadline: Instant,
    retransmissions: u32,
    max_retransmit: u32,
}

impl Retransmission {
    /// The state right after the first transmission at `now`; `random_fraction` (0..=1) draws
    /// the initial timeout ([`TransmissionParams::initial_timeout`]).
    #[must_use]
    pub fn start(params: &TransmissionParams, now: Instant, random_fraction: f64) -> Self {
        let timeout = params.initial_timeout(random_fraction);
        Self {
            timeout,
            deadline: later(now, timeout),
            retransmissions: 0,
            max_retransmit: params.max_retransmit,
        }
    }

    /// When the timer fires next, unless an ACK or RST arrives first.
    #[must_use]
    pub const fn next_deadline(&self) -> Instant {
        self.deadline
    }

    /// The current timeout (doubled after each retransmission).
    #[must_use]
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Retransmissions so far.
    #[must_use]
    pub const fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// The timer fired at `now` (at or after [`Retransmission::next_deadline`]): resend with a
    /// doubled timeout counted from `now`, or give up after `max_retransmit` retransmissions.
    /// Once it has answered [`RetransmitAction::GiveUp`] it keeps answering so.
    pub fn on_timeout(&mut self, now: Instant) -> RetransmitAction {
        if self.retransmissions >= self.max_retransmit {
            return RetransmitAction::GiveUp;
        }
        self.retransmissions += 1;
        self.timeout = self.timeout.saturating_mul(2);
        self.deadline = later(now, self.timeout);
        RetransmitAction::Resend
    }
}

/// What the deduplication cache knew about a received message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// First time within the exchange lifetime: process the message, then store the answer
    /// with [`DedupCache::set_answer`].
    New,
    /// A duplicate: do not process it again; send the stored answer again if there is one
    /// (`None` while the first copy is still being processed).
    Duplicate(Option<&'a [u8]>),
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    expires: Instant,
    answer: Option<Vec<u8>>,
}

/// Remembers the confirmable messages received from each peer for `EXCHANGE_LIFETIME`, with
/// the answer sent to each, so that a retransmitted request is answered again and not processed
/// twice (RFC 7252 §4.5).
///
/// Keyed by `(peer, message id)`; `K` is whatever identifies the peer (its address). At most
/// `capacity` entries are kept: beyond that the oldest is evicted. Expired entries are removed
/// by [`DedupCache::purge`], which [`DedupCache::receive`] also runs.
#[derive(Debug, Clone)]
pub struct DedupCache<K> {
    lifetime: Duration,
    capacity: usize,
    entries: HashMap<(K, u16), Entry>,
    order: VecDeque<((K, u16), u64)>,
    next_seq: u64,
}

impl<K: Hash + Eq + Clone> DedupCache<K> {
    /// An empty cache of at most `capacity` entries (at least 1), each kept for `lifetime`
    /// ([`TransmissionParams::exchange_lifetime`]).
    #[must_use]
    pub fn new(capacity: usize, lifetime: Duration) -> Self {
        Self {
            lifetime,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Number of entries, expired ones not yet purged included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a received message id, or reports it as a duplicate when it was received from
    /// the same peer less than `lifetime` ago.
    pub fn receive(&mut self, peer: K, message_id: u16, now: Instant) -> Received<'_> {
        self.purge(now);
        let key = (peer, message_id);
        let live = self.entries.get(&key).is_some_and(|e| e.expires > now);
        if !live {
            self.insert(key, None, now);
            return Received::New;
        }
        Received::Duplicate(self.entries.get(&key).and_then(|e| e.answer.as_deref()))
    }

    /// Stores the answer to replay for a received message id; `false` when the id is not in
    /// the cache (never received, expired or evicted).
    pub fn set_answer(&mut self, peer: &K, message_id: u16, answer: Vec<u8>) -> bool {
        match self.entries.get_mut(&(peer.clone(), message_id)) {
            Some(entry) => {
                entry.answer = Some(answer);
                true
            }
            None => false,
        }
    }

    /// The stored state of a message id: `None` when unknown or expired, `Some(None)` when
    /// received but not answered yet.
    #[must_use]
    pub fn get(&self, peer: &K, message_id: u16, now: Instant) -> Option<Option<&[u8]>> {
        self.entries
            .get(&(peer.clone(), message_id))
            .filter(|e| e.expires > now)
            .map(|e| e.answer.as_deref())
    }

    fn insert(&mut self, key: (K, u16), answer: Option<Vec<u8>>, now: Instant) {
        while self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            if !self.pop_oldest() {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            key.clone(),
            Entry {
                seq,
                expires: later(now, self.lifetime),
                answer,
            },
        );
        self.order.push_back((key, seq));
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Removes the oldest live entry (skipping stale queue items); `false` when none is left.
    fn pop_oldest(&mut self) -> bool {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&key);
                return true;
            }
        }
        false
    }

    /// Removes the entries that expired at `now`; returns how many.
    pub fn purge(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some((key, seq)) = self.order.front() {
            match self.entries.get(key) {
                Some(e) if e.seq == *seq && e.expires > now => break,
                Some(e) if e.seq == *seq => {
                    let key = key.clone();
                    self.entries.remove(&key);
                    removed += 1;
                }
                _ => {}
            }
            self.order.pop_front();
        }
        removed
    }
}

/// Message ids for outgoing confirmable and non-confirmable messages: consecutive from a random
/// start, wrapping at 65535 (RFC 7252 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageIdAllocator {
    next: u16,
}

impl MessageIdAllocator {
    /// An allocator whose first id is `random_start`.
    #[must_use]
    pub const fn new(random_start: u16) -> Self {
        Self { next: random_start }
    }

    /// The next message id.
    pub fn allocate(&mut self) -> u16 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// A token of `len` bytes (at most 8; longer asks get 8) taken from a caller-supplied random
/// number (RFC 7252 §5.3.1 asks for at least 32 random bits on the open Internet: use 4 or
/// more bytes).
#[must_use]
pub fn token_from_random(random: u64, len: usize) -> Vec<u8> {
    random.to_be_bytes()[..len.min(8)].to_vec()
}
