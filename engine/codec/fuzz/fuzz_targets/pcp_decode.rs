//! Fuzzes the PCP codec (`fleetgate_codec::pcp`) with untrusted bytes: frame decoding, message
//! decoding in both directions and uplink recognition.
//!
//! Besides "never panics", it checks that every decoded message encodes to a frame that decodes
//! to the same message, and that recognition agrees with uplink decoding.

#![no_main]

use fleetgate_codec::pcp::{Direction, Frame, Message, Recognized, recognize_uplink};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Frame::decode(data);
    for direction in [Direction::DeviceToPlatform, Direction::PlatformToDevice] {
        if let Ok(message) = Message::decode(data, direction) {
            let encoded = message.encode();
            assert_eq!(encoded.len(), message.encoded_len());
            assert_eq!(Message::decode(&encoded, direction).ok(), Some(message));
        }
    }
    match (recognize_uplink(data), Message::decode_uplink(data)) {
        (Recognized::Pcp(recognized), Ok(decoded)) => assert_eq!(recognized, decoded),
        (Recognized::Business, Err(_)) => {}
        (recognized, decoded) => panic!("recognize_uplink {recognized:?} vs decode {decoded:?}"),
    }
});
