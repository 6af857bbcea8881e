//! Tests of the MQTT glue against frames written by hand from the OASIS specifications
//! (MQTT Version 3.1.1, 29 October 2014, and MQTT Version 5.0, 7 March 2019); comments give the
//! section each frame follows. MQTT 3.1 frames follow 3.1.1 apart from the protocol name and
//! level, as the IBM MQTT V3.1 specification does.

mod decode;
mod encode;
mod errors;
mod frame;
mod regressions;
mod round_trip;

use std::num::{NonZeroU16, NonZeroU32};

use super::bytes::{Bytes, BytesMut};
use super::bytestring::ByteString;
use super::*;

/// Every protocol version, for tests that run in all of them.
const ALL: [Version; 3] = [Version::V31, Version::V311, Version::V5];

/// The two MQTT 3.x versions.
const V3: [Version; 2] = [Version::V31, Version::V311];

fn pid(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).expect("test packet identifiers are non-zero")
}

fn nz32(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).expect("test value is non-zero")
}

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

/// Decodes a frame that must decode.
#[track_caller]
fn dec(frame: &[u8], version: Version) -> v5::Packet {
    match decode(frame, version, 0) {
        Ok(packet) => packet,
        Err(e) => panic!("decoding {frame:02x?} as MQTT {version} failed: {e}"),
    }
}

/// Encodes a packet that must encode.
#[track_caller]
fn enc(packet: &v5::Packet, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    if let Err(e) = encode(packet, version, &mut out) {
        panic!("encoding {packet:?} as MQTT {version} failed: {e}");
    }
    out.to_vec()
}

/// Decodes a frame that must fail, and returns the error.
#[track_caller]
fn dec_err(frame: &[u8], version: Version) -> Error {
    match decode(frame, version, 0) {
        Ok(packet) => panic!("decoding {frame:02x?} as MQTT {version} gave {packet:?}"),
        Err(e) => e,
    }
}

fn publish(qos: QoS, packet_id: Option<u16>, dup: bool, retain: bool) -> Publish {
    Publish {
        dup,
        retain,
        qos,
        topic: s("t/1"),
        packet_id: packet_id.map(pid),
        payload: b(b"on"),
        properties: Some(v5::PublishProperties::default()),
    }
}

fn puback(id: u16, reason: v5::PublishAckReason) -> v5::PublishAck {
    v5::PublishAck {
        packet_id: pid(id),
        reason_code: reason,
        properties: Vec::new(),
        reason_string: None,
    }
}

fn puback2(id: u16, reason: v5::PublishAck2Reason) -> v5::PublishAck2 {
    v5::PublishAck2 {
        packet_id: pid(id),
        reason_code: reason,
        properties: Vec::new(),
        reason_string: None,
    }
}

fn options(qos: QoS) -> v5::SubscriptionOptions {
    v5::SubscriptionOptions {
        qos,
        ..v5::SubscriptionOptions::default()
    }
}

fn will(qos: QoS, retain: bool) -> v5::LastWill {
    v5::LastWill {
        qos,
        retain,
        topic: s("dev1/gone"),
        message: b(b"offline"),
        will_delay_interval_sec: None,
        correlation_data: None,
        message_expiry_interval: None,
        content_type: None,
        user_properties: Vec::new(),
        is_utf8_payload: None,
        response_topic: None,
    }
}
