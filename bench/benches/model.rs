//! Topic grammar, filter matching, payload decoding and validation against a product model.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fleetgate_model::payload::PropertyReport;
use fleetgate_model::testing;
use fleetgate_model::topic::{DeviceTopic, filter_matches};
use fleetgate_model::validate::{PropertyUse, validate_properties};

fn topics(c: &mut Criterion) {
    let topic =
        "$oc/devices/5f111a5a29c62ac7edc88828_test0001/sys/commands/response/request_id=9f1c2b";
    c.bench_function("topic/parse_command_response", |b| {
        b.iter(|| DeviceTopic::parse(black_box(topic)))
    });
    let parsed = DeviceTopic::parse(topic).ok().flatten();
    c.bench_function("topic/format", |b| {
        b.iter(|| black_box(&parsed).as_ref().map(ToString::to_string))
    });
    c.bench_function("topic/filter_match", |b| {
        b.iter(|| filter_matches(black_box("$oc/devices/+/sys/commands/#"), black_box(topic)))
    });
}

fn payloads(c: &mut Criterion) {
    let product = testing::water_meter();
    let body = br#"{"services":[{"service_id":"WaterMeter","properties":{"temperature":21,"flow":12.5,"state":"open"},"event_time":"20151212T121212Z"}]}"#;
    c.bench_function("payload/decode_property_report", |b| {
        b.iter(|| serde_json::from_slice::<PropertyReport>(black_box(body)))
    });
    let report: PropertyReport = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("payload/validate_property_report", |b| {
        b.iter(|| {
            validate_properties(
                black_box(&product),
                black_box(&report.services),
                PropertyUse::Report,
            )
        })
    });
}

criterion_group!(benches, topics, payloads);
criterion_main!(benches);
