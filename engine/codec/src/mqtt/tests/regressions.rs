//! Inputs found by the `mqtt_decode` fuzz target (`engine/codec/fuzz`), kept as regression tests.

use super::*;

use v5::DisconnectReasonCode as D;

#[test]
fn a_refusing_connack_that_claims_a_session_is_rejected() {
    // Found by the round-trip oracle: `20 02 01 01` decoded with Session Present set although
    // the return code refuses the connection, and re-encoded without it. 3.1.1 [MQTT-3.2.2-4]
    // and 5.0 [MQTT-3.2.2-6] forbid that combination, so decoding now rejects it...
    for (frame, version) in [
        (&b"\x20\x02\x01\x01"[..], Version::V31),
        (b"\x20\x02\x01\x05", Version::V311),
        (b"\x20\x03\x01\x87\x00", Version::V5),
    ] {
        let e = dec_err(frame, version);
        assert!(matches!(e, Error::SessionPresentOnRefusal), "{e:?}");
        assert_eq!(e.disconnect_reason(), D::ProtocolError);
    }
    // ...and encoding clears Session Present on a refusal in every version.
    let packet = v5::Packet::from(v5::ConnectAck {
        session_present: true,
        reason_code: v5::ConnectAckReason::ServerBusy,
        ..v5::ConnectAck::default()
    });
    assert_eq!(enc(&packet, Version::V5), b"\x20\x03\x00\x89\x00");
    assert_eq!(enc(&packet, Version::V311), b"\x20\x02\x00\x03");
    // Session Present with Success stays.
    assert_eq!(
        dec(b"\x20\x03\x01\x00\x00", Version::V5),
        v5::ConnectAck {
            session_present: true,
            ..v5::ConnectAck::default()
        }
        .into()
    );
}
