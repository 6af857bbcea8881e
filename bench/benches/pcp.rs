//! PCP: uplink recognition and decoding of a chunk request, encoding of a chunk response.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fleetgate_codec::pcp::{ChunkPlan, Message, recognize_uplink};

fn pcp(c: &mut Criterion) {
    // 21 request, "V1.0", index 0 (spec/device-management.md §15.4).
    let frame: Vec<u8> = (0..52)
        .step_by(2)
        .filter_map(|i| {
            u8::from_str_radix(
                &"FFFE01155618001256312E300000000000000000000000000000"[i..i + 2],
                16,
            )
            .ok()
        })
        .collect();
    c.bench_function("pcp/recognize_chunk_request", |b| {
        b.iter(|| recognize_uplink(black_box(&frame)))
    });
    let package = vec![0xA5u8; 100_000];
    let plan =
        ChunkPlan::with_default_chunk_size(package.len() as u64).unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("pcp/encode_chunk_response_500", |b| {
        b.iter(|| {
            plan.respond(black_box(&package), black_box(7))
                .map(|m| Message::from(m).encode())
        })
    });
}

criterion_group!(benches, pcp);
criterion_main!(benches);
