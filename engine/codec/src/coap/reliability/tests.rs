//! Tests of the RFC 7252 §4 reliability parameters and state, with a simulated clock.

use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn derived_times_of_the_default_parameters() {
    let params = TransmissionParams::default();
    assert_eq!(params.validate(), Ok(()));
    assert_eq!(params.max_transmit_span(), secs(45));
    assert_eq!(params.max_transmit_wait(), secs(93));
    assert_eq!(params.max_rtt(), secs(202));
    assert_eq!(params.exchange_lifetime(), secs(247));
    assert_eq!(params.non_lifetime(), secs(145));
    assert_eq!(params.processing_delay(), secs(2));
}

#[test]
fn derived_times_follow_the_parameters() {
    let params = TransmissionParams {
        ack_timeout: secs(3),
        ack_random_factor: 1.0,
        max_retransmit: 2,
        nstart: 1,
    };
    assert_eq!(params.max_transmit_span(), secs(9));
    assert_eq!(params.max_transmit_wait(), secs(21));
    assert_eq!(params.exchange_lifetime(), secs(9 + 200 + 3));
    let none = TransmissionParams {
        max_retransmit: 0,
        ..TransmissionParams::default()
    };
    assert_eq!(none.max_transmit_span(), Duration::ZERO);
    assert_eq!(none.max_transmit_wait(), secs(3));
}

#[test]
fn validation() {
    let ok = TransmissionParams::default();
    let cases = [
        (
            TransmissionParams {
                ack_timeout: Duration::ZERO,
                ..ok
            },
            ParamsError::AckTimeout,
        ),
        (
            TransmissionParams {
                ack_random_factor: 0.9,
                ..ok
            },
            ParamsError::AckRandomFactor,
        ),
        (
            TransmissionParams {
                ack_random_factor: f64::NAN,
                ..ok
            },
            ParamsError::AckRandomFactor,
        ),
        (
            TransmissionParams {
                ack_random_factor: f64::INFINITY,
                ..ok
            },
            ParamsError::AckRandomFactor,
        ),
        (
            TransmissionParams {
                max_retransmit: MAX_MAX_RETRANSMIT + 1,
                ..ok
            },
            ParamsError::MaxRetransmit,
        ),
        (TransmissionParams { nstart: 0, ..ok }, ParamsError::Nstart),
    ];
    for (params, error) in cases {
        assert_eq!(params.validate(), Err(error), "{params:?}");
    }
}

#[test]
fn invalid_parameters_never_panic() {
    let params = TransmissionParams {
        ack_timeout: Duration::MAX,
        ack_random_factor: f64::NAN,
        max_retransmit: u32::MAX,
        nstart: 0,
    };
    assert_eq!(params.max_transmit_span(), Duration::MAX);
    assert_eq!(params.exchange_lifetime(), Duration::MAX);
    let now = Instant::now();
    let mut state = Retransmission::start(&params, now, f64::NAN);
    assert!(state.next_deadline() >= now);
    for _ in 0..100 {
        assert_eq!(state.on_timeout(now), RetransmitAction::Resend);
    }
}

#[test]
fn initial_timeout_is_drawn_between_ack_timeout_and_its_random_factor() {
    let params = TransmissionParams::default();
    assert_eq!(params.initial_timeout(0.0), secs(2));
    assert_eq!(params.initial_timeout(0.5), Duration::from_millis(2500));
    assert_eq!(params.initial_timeout(1.0), secs(3));
    assert_eq!(params.initial_timeout(-1.0), secs(2));
    assert_eq!(params.initial_timeout(7.0), secs(3));
    assert_eq!(params.initial_timeout(f64::NAN), secs(2));
}

/// With the largest initial timeout, the last retransmission happens at `MAX_TRANSMIT_SPAN`
/// and the sender gives up at `MAX_TRANSMIT_WAIT` (RFC 7252 §4.8.2).
#[test]
fn retransmissions_double_then_give_up() {
    let params = TransmissionParams::default();
    let t0 = Instant::now();
    let mut state = Retransmission::start(&params, t0, 1.0);
    assert_eq!(state.next_deadline(), t0 + secs(3));
    let mut sent_at = Vec::new();
    loop {
        let now = state.next_deadline();
        match state.on_timeout(now) {
            RetransmitAction::Resend => sent_at.push(now - t0),
            RetransmitAction::GiveUp => {
                assert_eq!(now - t0, params.max_transmit_wait());
                break;
            }
        }
    }
    assert_eq!(sent_at, [secs(3), secs(9), secs(21), secs(45)]);
    assert_eq!(sent_at.last(), Some(&params.max_transmit_span()));
    assert_eq!(state.retransmissions(), 4);
    assert_eq!(state.timeout(), secs(48));
    assert_eq!(state.on_timeout(t0 + secs(1000)), RetransmitAction::GiveUp);
}

#[test]
fn a_late_timer_counts_from_when_it_fired() {
    let params = TransmissionParams::default();
    let t0 = Instant::now();
    let mut state = Retransmission::start(&params, t0, 0.0);
    assert_eq!(state.on_timeout(t0 + secs(10)), RetransmitAction::Resend);
    assert_eq!(state.next_deadline(), t0 + secs(14));
}

#[test]
fn dedup_replays_the_stored_answer() {
    let t0 = Instant::now();
    let mut cache = DedupCache::new(16, secs(247));
    assert!(cache.is_empty());
    assert_eq!(cache.receive("peer-a", 7, t0), Received::New);
    assert_eq!(
        cache.receive("peer-a", 7, t0 + secs(1)),
        Received::Duplicate(None)
    );
    assert_eq!(cache.get(&"peer-a", 7, t0), Some(None));
    assert!(cache.set_answer(&"peer-a", 7, vec![0x60, 0x45, 0, 7]));
    assert_eq!(
        cache.receive("peer-a", 7, t0 + secs(2)),
        Received::Duplicate(Some(&[0x60, 0x45, 0, 7][..]))
    );
    // Another peer, or another message id, is a new message.
    assert_eq!(cache.receive("peer-b", 7, t0 + secs(2)), Received::New);
    assert_eq!(cache.receive("peer-a", 8, t0 + secs(2)), Received::New);
    assert_eq!(cache.len(), 3);
    assert!(!cache.set_answer(&"peer-c", 7, vec![]));
    assert_eq!(cache.get(&"peer-c", 7, t0), None);
}

#[test]
fn dedup_entries_expire_after_the_exchange_lifetime() {
    let t0 = Instant::now();
    let lifetime = TransmissionParams::default().exchange_lifetime();
    let mut cache = DedupCache::new(16, lifetime);
    assert_eq!(cache.receive(1u32, 7, t0), Received::New);
    assert_eq!(cache.receive(1u32, 8, t0 + secs(10)), Received::New);
    assert_eq!(
        cache.receive(1u32, 7, t0 + lifetime - secs(1)),
        Received::Duplicate(None)
    );
    assert_eq!(cache.get(&1, 7, t0 + lifetime), None);
    assert_eq!(cache.purge(t0 + lifetime), 1);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.receive(1u32, 7, t0 + lifetime), Received::New);
    assert_eq!(cache.purge(t0 + lifetime * 3), 2);
    assert!(cache.is_empty());
}

#[test]
fn dedup_evicts_the_oldest_beyond_its_capacity() {
    let t0 = Instant::now();
    let mut cache = DedupCache::new(3, secs(247));
    for mid in 0..5u16 {
        assert_eq!(
            cache.receive((), mid, t0 + secs(u64::from(mid))),
            Received::New
        );
        assert!(cache.len() <= 3);
    }
    assert_eq!(cache.get(&(), 0, t0), None);
    assert_eq!(cache.get(&(), 1, t0), None);
    assert_eq!(cache.get(&(), 4, t0), Some(None));
    let mut tiny = DedupCache::new(0, secs(1));
    assert_eq!(tiny.receive((), 1, t0), Received::New);
    assert_eq!(tiny.receive((), 1, t0), Received::Duplicate(None));
    assert_eq!(tiny.receive((), 2, t0), Received::New);
    assert_eq!(tiny.len(), 1);
}

#[test]
fn dedup_stays_bounded_under_churn() {
    let t0 = Instant::now();
    let mut cache = DedupCache::new(8, secs(1));
    for i in 0..10_000u64 {
        let now = t0 + Duration::from_millis(i * 10);
        let _ = cache.receive(i % 3, (i % 20) as u16, now);
        assert!(cache.len() <= 8);
        assert!(cache.order.len() <= 2 * 8 + 16 + 1);
    }
}

#[test]
fn message_ids_wrap() {
    let mut ids = MessageIdAllocator::new(65_534);
    assert_eq!(ids.allocate(), 65_534);
    assert_eq!(ids.allocate(), 65_535);
    assert_eq!(ids.allocate(), 0);
    assert_eq!(ids.allocate(), 1);
}

#[test]
fn tokens_from_random_numbers() {
    let random = 0x0102_0304_0506_0708;
    assert_eq!(token_from_random(random, 4), [1, 2, 3, 4]);
    assert_eq!(token_from_random(random, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(token_from_random(random, 20).len(), 8);
    assert!(token_from_random(random, 0).is_empty());
}
