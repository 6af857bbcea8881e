//! Storage on RocksDB (and memory for comparison): shadow updates and reads, cached-command
//! insert (synced, as the API acknowledges it), the pending-queue read on wake and a
//! command read by id.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fleetgate_bench::delayed_command;
use fleetgate_model::device::{Credential, DeviceSecret};
use fleetgate_model::{ServiceId, Timestamp, testing};
use fleetgate_storage::{Durability, Limits, MemStore, Storage, StorageError};
use fleetgate_storage_rocks::{RocksConfig, open_store};

fn setup(store: &dyn Storage) -> fleetgate_model::device::Device {
    let product = testing::water_meter();
    store
        .create_product(&product)
        .unwrap_or_else(|e| panic!("{e}"));
    let device = testing::device(&product, "bench1");
    store
        .create_device(&device, &Credential::Secret(DeviceSecret::generate()))
        .unwrap_or_else(|e| panic!("{e}"));
    device
}

fn backends() -> Vec<(&'static str, Arc<dyn Storage>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let limits = Limits::default();
    let rocks = open_store(dir.path(), &RocksConfig::default(), limits.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    vec![
        ("rocksdb", Arc::new(rocks), Some(dir)),
        ("memory", Arc::new(MemStore::in_memory_with(limits)), None),
    ]
}

fn shadows(c: &mut Criterion) {
    let svc = ServiceId::new("WaterMeter").unwrap_or_else(|e| panic!("{e}"));
    for (name, store, _dir) in backends() {
        let device = setup(store.as_ref());
        let mut props = serde_json::Map::new();
        props.insert("temperature".into(), serde_json::json!(21));
        c.bench_function(&format!("storage/{name}/shadow_report_buffered"), |b| {
            b.iter(|| {
                store.update_shadow(&device.device_id, Durability::Buffered, &mut |sh| {
                    sh.report(&svc, &props, Timestamp::now());
                    Ok::<(), StorageError>(())
                })
            })
        });
        c.bench_function(&format!("storage/{name}/shadow_report_synced"), |b| {
            b.iter(|| {
                store.update_shadow(&device.device_id, Durability::Synced, &mut |sh| {
                    sh.report(&svc, &props, Timestamp::now());
                    Ok::<(), StorageError>(())
                })
            })
        });
        c.bench_function(&format!("storage/{name}/shadow_get"), |b| {
            b.iter(|| store.get_shadow(black_box(&device.device_id)))
        });
    }
}

fn command_cache(c: &mut Criterion) {
    for (name, store, _dir) in backends() {
        setup(store.as_ref());
        let product = testing::water_meter();
        let mut n = 0u64;
        // Each insert goes to a fresh device (made outside the measurement), as commands for a
        // fleet do; a device's queue holds at most 20.
        c.bench_function(&format!("storage/{name}/command_insert_synced"), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let d = testing::device(&product, &format!("d{n}"));
                    store
                        .create_device(&d, &Credential::Secret(DeviceSecret::generate()))
                        .unwrap_or_else(|e| panic!("{e}"));
                    delayed_command(&d)
                },
                |cmd| store.insert_command(&cmd),
                BatchSize::SmallInput,
            )
        });
        let other = {
            let d = testing::device(&product, "bench2");
            store
                .create_device(&d, &Credential::Secret(DeviceSecret::generate()))
                .unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..20 {
                store
                    .insert_command(&delayed_command(&d))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            d
        };
        c.bench_function(&format!("storage/{name}/pending_commands_20"), |b| {
            b.iter(|| store.pending_commands(black_box(&other.device_id), 20))
        });
        let first = store
            .pending_commands(&other.device_id, 1)
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        c.bench_function(&format!("storage/{name}/command_get"), |b| {
            b.iter(|| store.get_command(black_box(&first.command_id)))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = shadows, command_cache
}
criterion_main!(benches);
