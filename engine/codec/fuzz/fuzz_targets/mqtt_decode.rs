//! Fuzzes the MQTT framing glue (`fleetgate_codec::mqtt`) with untrusted bytes, as a connection
//! receives them: `frame_len`, `connect_version` and `decode` for every protocol version, then
//! `encode` of whatever decoded, into every version.
//!
//! Besides "never panics", it checks that a decoded packet encodes in its own version to exactly
//! one frame that decodes to the same packet.

#![no_main]

use fleetgate_codec::mqtt::{Version, bytes::BytesMut, connect_version, decode, encode, frame_len};
use libfuzzer_sys::fuzz_target;

const ALL: [Version; 3] = [Version::V31, Version::V311, Version::V5];

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data, 0);
    let _ = frame_len(data, 256);
    let _ = connect_version(data);

    // The whole input, and the first frame frame_len finds in it.
    let first = match frame_len(data, 0) {
        Ok(Some(len)) => data.get(..len),
        _ => None,
    };
    for frame in std::iter::once(data).chain(first) {
        for version in ALL {
            let _ = decode(frame, version, 256);
            let Ok(packet) = decode(frame, version, 0) else {
                continue;
            };
            for target in ALL {
                let mut out = BytesMut::new();
                if encode(&packet, target, &mut out).is_ok() {
                    assert_eq!(frame_len(&out, 0).ok(), Some(Some(out.len())), "{target}");
                }
            }
            let mut out = BytesMut::new();
            if let Err(e) = encode(&packet, version, &mut out) {
                panic!("{packet:?} decoded as {version} but does not encode: {e}");
            }
            match decode(&out, version, 0) {
                Ok(again) => assert_eq!(again, packet, "{version}: {:02x?}", &out[..]),
                Err(e) => panic!("{packet:?} re-encoded as {version} does not decode: {e}"),
            }
        }
    }
});
