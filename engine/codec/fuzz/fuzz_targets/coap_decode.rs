//! Fuzzes CoAP message decoding (`fleetgate_codec::coap::message`) with untrusted datagrams, as
//! the CoAP server receives them, and the option readers the server then calls.
//!
//! Besides "never panics", it checks that a decoded message encodes to a datagram that decodes
//! to the same message, that a rejected datagram's RST echoes its message id, and that a 4.02
//! answer is itself a valid message.

#![no_main]

use fleetgate_codec::coap::{block, message, observe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match message::decode(data) {
        Ok(packet) => {
            let _ = message::uri_path(&packet);
            let _ = message::uri_query(&packet);
            let _ = message::location_path(&packet);
            let _ = message::content_format(&packet);
            let _ = message::max_age(&packet);
            let _ = block::block1(&packet);
            let _ = block::block2(&packet);
            let _ = observe::get(&packet);
            let encoded = message::encode(&packet).expect("a decoded message encodes");
            assert_eq!(message::decode(&encoded).as_ref(), Ok(&packet));
        }
        Err(err) => {
            assert!(!err.reason().is_empty());
            if let Some(reset) = err.reset() {
                assert_eq!(reset.len(), 4);
                assert_eq!(reset[0], 0x70);
                assert_eq!(reset[2..4], data[2..4]);
            }
            if let Some(answer) = err.answer() {
                assert!(message::decode(&answer).is_ok());
            }
        }
    }
});
