//! MQTT decode and encode per packet type (fleetgate_codec's `mqtt` module), on MQTT 3.1.1 and
//! 5.0: CONNECT, PUBLISH at QoS 0 and 1, PUBACK, SUBSCRIBE, PINGREQ. The frames are written as
//! byte literals (MQTT 3.1.1 §3, MQTT 5.0 §3); encoding re-encodes the decoded packet.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fleetgate_codec::mqtt::bytes::BytesMut;
use fleetgate_codec::mqtt::{self, Version};

const TOPIC: &str = "$oc/devices/5f111a5a29c62ac7edc88828_test0001/sys/properties/report";
const PAYLOAD: &[u8] =
    br#"{"services":[{"service_id":"WaterMeter","properties":{"temperature":21,"flow":3.5}}]}"#;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Fixed header + variable-length remaining length (MQTT 3.1.1 §2.2.3) + body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        f.push(byte);
        if len == 0 {
            break;
        }
    }
    f.extend_from_slice(body);
    f
}

/// The benchmarked frames of one version, by name.
fn frames(v5: bool) -> Vec<(&'static str, Vec<u8>)> {
    let props = |b: &mut Vec<u8>| {
        if v5 {
            b.push(0); // no properties
        }
    };
    let mut connect = Vec::new();
    string(&mut connect, "MQTT");
    connect.extend([if v5 { 5 } else { 4 }, 0xC2, 0, 60]);
    props(&mut connect);
    string(
        &mut connect,
        "5f111a5a29c62ac7edc88828_test0001_0_0_2019120219",
    );
    string(&mut connect, "5f111a5a29c62ac7edc88828_test0001");
    string(&mut connect, &"a".repeat(64));

    let mut qos0 = Vec::new();
    string(&mut qos0, TOPIC);
    props(&mut qos0);
    qos0.extend_from_slice(PAYLOAD);

    let mut qos1 = Vec::new();
    string(&mut qos1, TOPIC);
    qos1.extend([0x00, 0x07]);
    props(&mut qos1);
    qos1.extend_from_slice(PAYLOAD);

    let mut subscribe = vec![0x00, 0x01];
    props(&mut subscribe);
    string(
        &mut subscribe,
        "$oc/devices/5f111a5a29c62ac7edc88828_test0001/sys/commands/#",
    );
    subscribe.push(1);

    vec![
        ("connect", frame(0x10, &connect)),
        ("publish_qos0", frame(0x30, &qos0)),
        ("publish_qos1", frame(0x32, &qos1)),
        ("puback", frame(0x40, &[0x00, 0x07])),
        ("subscribe", frame(0x82, &subscribe)),
        ("pingreq", frame(0xC0, &[])),
    ]
}

fn codec(c: &mut Criterion) {
    for (version, tag) in [(Version::V311, "v311"), (Version::V5, "v5")] {
        for (name, bytes) in frames(version == Version::V5) {
            let packet = mqtt::decode(&bytes, version, 0)
                .unwrap_or_else(|e| panic!("{tag} {name} does not decode: {e}"));
            c.bench_function(&format!("mqtt/{tag}/decode_{name}"), |b| {
                b.iter(|| mqtt::decode(black_box(&bytes), version, 0))
            });
            let mut out = BytesMut::with_capacity(1024);
            mqtt::encode(&packet, version, &mut out)
                .unwrap_or_else(|e| panic!("{tag} {name} does not encode: {e}"));
            c.bench_function(&format!("mqtt/{tag}/encode_{name}"), |b| {
                b.iter(|| {
                    out.clear();
                    mqtt::encode(black_box(&packet), version, &mut out)
                })
            });
        }
    }
    let publish = frames(false).swap_remove(2).1;
    c.bench_function("mqtt/frame_len_publish", |b| {
        b.iter(|| mqtt::frame_len(black_box(&publish), 0))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
