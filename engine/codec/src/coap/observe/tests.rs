//! Tests of the Observe option and the freshness rule of RFC 7641 §3.4.

use super::*;
use crate::coap::message;
use coap_lite::{MessageType, RequestType};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[test]
fn option_values() -> TestResult {
    let cases: [(u32, &[u8]); 6] = [
        (REGISTER, &[]),
        (DEREGISTER, &[0x01]),
        (12, &[0x0C]),
        (0x1000, &[0x10, 0x00]),
        (MAX_VALUE, &[0xFF, 0xFF, 0xFF]),
        (0x0001_0203, &[0x01, 0x02, 0x03]),
    ];
    for (value, bytes) in cases {
        assert_eq!(encode(value), bytes);
        assert_eq!(decode(bytes)?, value);
    }
    // Sequence numbers wrap at 24 bits.
    assert_eq!(encode(MAX_VALUE + 1), Vec::<u8>::new());
    assert_eq!(encode(0x0100_002A), [0x2A]);
    assert_eq!(decode(&[0x00, 0x00, 0x07])?, 7);
    assert_eq!(decode(&[1, 2, 3, 4]), Err(ObserveError { len: 4 }));
    Ok(())
}

/// RFC 7641 figure 2: `GET /temperature, Token 0x4a, Observe 0` and a notification with
/// `Observe 12`.
#[test]
fn observe_on_packets() -> TestResult {
    let mut register = message::request(MessageType::Confirmable, RequestType::Get, 1, &[0x4a])?;
    set(&mut register, REGISTER);
    message::set_uri_path(&mut register, &["temperature"]);
    let bytes = message::encode(&register)?;
    assert_eq!(bytes[..7], [0x41, 0x01, 0x00, 0x01, 0x4a, 0x60, 0x5B]);
    assert_eq!(get(&message::decode(&bytes)?)?, Some(REGISTER));

    let notification = [0x51, 0x45, 0x00, 0x02, 0x4a, 0x61, 12, 0xFF, b'2', b'2'];
    let packet = message::decode(&notification)?;
    assert_eq!(get(&packet)?, Some(12));
    assert_eq!(message::encode(&packet)?, notification);
    assert_eq!(get(&message::empty_ack(1))?, None);
    Ok(())
}

#[test]
fn freshness_by_sequence_number() {
    let t = Instant::now();
    assert!(is_newer(12, t, 44, t));
    assert!(!is_newer(44, t, 12, t));
    assert!(!is_newer(44, t, 44, t));
    // Across the 24-bit wrap.
    assert!(is_newer(0xFF_FFF0, t, 5, t));
    assert!(!is_newer(5, t, 0xFF_FFF0, t));
    // Exactly half the space apart: neither way.
    assert!(!is_newer(0, t, 1 << 23, t));
    assert!(!is_newer(1 << 23, t, 0, t));
    assert!(is_newer(0, t, (1 << 23) - 1, t));
    assert!(!is_newer(1 << 23, t, 1, t));
    assert!(is_newer((1 << 23) + 2, t, 1, t));
    // Values are taken modulo 2^24.
    assert!(is_newer(0x0100_0001, t, 2, t));
}

#[test]
fn freshness_after_128_seconds() {
    let t1 = Instant::now();
    let t2 = t1 + FRESHNESS_WINDOW;
    assert!(!is_newer(44, t1, 12, t2));
    assert!(is_newer(44, t1, 12, t2 + Duration::from_millis(1)));
    assert!(is_newer(44, t1, 44, t1 + Duration::from_secs(300)));
    // A t2 before t1 never counts as elapsed time.
    assert!(!is_newer(44, t2, 12, t1));
}
