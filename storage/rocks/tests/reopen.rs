//! What survives closing and reopening the database, and what a damaged database looks like.

use std::sync::Arc;

use fleetgate_model::device::{Credential, DeviceSecret};
use fleetgate_model::testing;
use fleetgate_storage::{
    AppStore, Cf, DeviceStore, Durability, KvEngine, Limits, ProductStore, Storage, StorageError,
};
use fleetgate_storage_rocks::{RocksConfig, RocksKv, open_store};

fn config() -> RocksConfig {
    RocksConfig {
        block_cache_mb: 8,
        write_buffer_mb: 1,
        total_write_buffer_mb: 8,
        ..RocksConfig::default()
    }
}

#[test]
fn records_and_indexes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let product = testing::water_meter();
    let device = testing::device(&product, "n1");
    let cred = Credential::Secret(DeviceSecret::generate());
    {
        let store = open_store(dir.path(), &config(), Limits::default()).unwrap();
        store.create_product(&product).unwrap();
        store.create_device(&device, &cred).unwrap();
        store
            .update_device(&device.device_id, Durability::Buffered, &mut |d| {
                d.description = "buffered write".into();
                Ok(())
            })
            .unwrap();
        store.flush().unwrap();
    }
    let store = open_store(dir.path(), &config(), Limits::default()).unwrap();
    let got = store.get_device(&device.device_id).unwrap().unwrap();
    assert_eq!(got.description, "buffered write");
    assert_eq!(store.get_credential(&device.device_id).unwrap(), Some(cred));
    assert_eq!(
        store
            .find_by_product_node(&product.product_id, &device.node_id)
            .unwrap(),
        Some(device.device_id)
    );
    assert!(store.check_integrity().unwrap().problems.is_empty());
    let stats = store.engine_stats();
    assert!(
        stats
            .iter()
            .any(|s| s.name == "keys" && s.cf == Some(Cf::Devices))
    );
}

#[test]
fn damage_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(dir.path(), &config(), Limits::default()).unwrap());
    let product = testing::water_meter();
    store.create_product(&product).unwrap();
    let device = testing::device(&product, "n1");
    store
        .create_device(&device, &Credential::Secret(DeviceSecret::generate()))
        .unwrap();

    // An index entry without its device, and a device value that is not a record.
    let mut b = fleetgate_storage::kv::WriteBatch::new();
    b.put(
        Cf::Index,
        fleetgate_storage::keys::dev_by_app(&testing::app(), Some(&"ghost".parse().unwrap())),
        Vec::new(),
    );
    b.put(Cf::Devices, b"broken".to_vec(), b"\x01{not json".to_vec());
    store.engine().write(b, Durability::Synced).unwrap();

    let report = store.check_integrity().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("stale device index entry")),
        "{:#?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("corrupt value in devices")),
        "{:#?}",
        report.problems
    );
    let read = store.get_device(&"broken".parse().unwrap());
    assert!(matches!(
        read,
        Err(StorageError::Corrupt { cf: "devices", .. })
    ));
}

#[test]
fn a_database_from_before_the_apps_family_gains_it_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What an older fleetgate wrote: schema version 1, every family but `apps`.
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let old = Cf::ALL
            .iter()
            .filter(|cf| **cf != Cf::Apps)
            .map(|cf| cf.name());
        let db = rocksdb::DB::open_cf(&opts, dir.path(), old).unwrap();
        let meta = db.cf_handle(Cf::Meta.name()).unwrap();
        let version = fleetgate_storage::value::encode(&1u32).unwrap();
        db.put_cf(meta, fleetgate_storage::keys::SCHEMA_VERSION, version)
            .unwrap();
        db.flush_cf(meta).unwrap();
    }
    let app = fleetgate_model::app::Application {
        app_id: testing::app(),
        name: "Default".into(),
        admin: true,
        created_at: fleetgate_model::Timestamp::EPOCH,
    };
    {
        let store = open_store(dir.path(), &config(), Limits::default()).unwrap();
        store.create_app(&app).unwrap();
    }
    let store = open_store(dir.path(), &config(), Limits::default()).unwrap();
    assert_eq!(store.get_app(&app.app_id).unwrap(), Some(app));
    assert!(store.check_integrity().unwrap().problems.is_empty());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path(), &config()).unwrap();
        let mut b = fleetgate_storage::kv::WriteBatch::new();
        b.put(
            Cf::Meta,
            fleetgate_storage::keys::SCHEMA_VERSION,
            fleetgate_storage::value::encode(&99u32).unwrap(),
        );
        kv.write(b, Durability::Synced).unwrap();
    }
    let err = open_store(dir.path(), &config(), Limits::default()).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open_store(dir.path(), &config(), Limits::default()).unwrap();
    let second = open_store(dir.path(), &config(), Limits::default());
    assert!(matches!(second, Err(StorageError::Backend(_))));
}
