//! What survives closing and reopening the database, and what a damaged database looks like.

use std::sync::Arc;

use fleetgate_model::command::{Command, CommandEvent, CommandMode, CommandStatus, NewCommand};
use fleetgate_model::device::{Credential, DeviceSecret};
use fleetgate_model::lwm2m::{Registration, RegistrationId};
use fleetgate_model::testing;
use fleetgate_model::{ServiceId, Timestamp};
use fleetgate_storage::{
    AppStore, Cf, CommandStore, DeviceStore, Durability, Enqueued, KvEngine, Limits, ProductStore,
    RegistrationStore, Storage, StorageError,
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

fn secs(s: i64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

/// A SENT command's ack deadline, idempotency keys and registrations are all on disk: after a
/// reopen the deadline sweep, the serial queue and the registration interface carry on.
#[test]
fn deadlines_keys_and_registrations_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let product = testing::water_meter();
    let device = testing::device(&product, "n1");
    let new = |idempotency_key: Option<&str>| NewCommand {
        device_id: device.device_id.clone(),
        app_id: device.app_id.clone(),
        mode: CommandMode::Async,
        service_id: Some(ServiceId::new("WaterMeter").unwrap()),
        command_name: "ON_OFF".parse().unwrap(),
        paras: serde_json::json!({"value": "ON"}),
        supersede_key: Some("valve".into()),
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    let in_flight = Command::new_delayed(new(Some("req-1")), 3600, secs(0));
    let waiting = Command::new_delayed(new(None), 7200, secs(1));
    let registration = Registration {
        location: RegistrationId::generate(),
        endpoint: device.node_id.clone(),
        device_id: device.device_id.clone(),
        app_id: device.app_id.clone(),
        lifetime_secs: 300,
        lwm2m_version: "1.1".into(),
        queue_mode: true,
        objects: "</1/0>,</3/0>,</19/0>,</19/1>".into(),
        address: "10.0.0.1:5683".into(),
        registered_at: secs(0),
        updated_at: secs(0),
        expires_at: Registration::expiry(secs(0), 300),
    };
    let sent;
    {
        let store = open_store(dir.path(), &config(), Limits::default()).unwrap();
        store.create_product(&product).unwrap();
        store
            .create_device(&device, &Credential::Secret(DeviceSecret::generate()))
            .unwrap();
        store.insert_command(&in_flight).unwrap();
        sent = store
            .update_command(&in_flight.command_id, &mut |c| {
                let ev = CommandEvent::Sent {
                    request_id: None,
                    ack_deadline: secs(190),
                };
                c.apply(ev, secs(10)).map_err(StorageError::abort)
            })
            .unwrap();
        // Sent, so not superseded by the next one with the same key.
        assert_eq!(
            store.enqueue_command(&waiting).unwrap(),
            Enqueued::Created { superseded: vec![] }
        );
        store.put_registration(&registration).unwrap();
        // Buffered, not flushed: the write-ahead log carries it.
        store
            .touch_registration(&registration.location, "10.0.0.9:1234", secs(100), None)
            .unwrap()
            .unwrap();
    }
    let store = open_store(dir.path(), &config(), Limits::default()).unwrap();
    assert_eq!(
        store.unsettled_command(&device.device_id).unwrap(),
        Some(sent.clone())
    );
    assert!(store.due_commands(secs(189), 10).unwrap().is_empty());
    assert_eq!(
        store.due_commands(secs(190), 10).unwrap(),
        vec![sent.clone()]
    );
    let retry = Command::new_delayed(new(Some("req-1")), 3600, secs(200));
    assert_eq!(
        store.enqueue_command(&retry).unwrap(),
        Enqueued::Existing(sent.clone())
    );
    let pending = store.pending_commands(&device.device_id, 10).unwrap();
    assert_eq!(pending, vec![waiting.clone()]);
    let timed_out = store
        .update_command(&sent.command_id, &mut |c| {
            c.apply(CommandEvent::AckTimeout, secs(190))
                .map_err(StorageError::abort)
        })
        .unwrap();
    assert_eq!(timed_out.status, CommandStatus::Timeout);
    assert_eq!(store.unsettled_command(&device.device_id).unwrap(), None);

    let stored = store
        .registration_of_device(&device.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.address, "10.0.0.9:1234");
    assert_eq!(stored.expires_at, secs(400));
    assert_eq!(
        store.get_registration(&registration.location).unwrap(),
        Some(stored.clone())
    );
    assert_eq!(store.count_registrations().unwrap(), 1);
    assert!(store.due_registrations(secs(399), 10).unwrap().is_empty());
    assert_eq!(
        store.due_registrations(secs(400), 10).unwrap(),
        vec![stored]
    );
    assert!(store.check_integrity().unwrap().problems.is_empty());
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
    // A deadline entry without its command, and a registration count without records.
    let ghost = fleetgate_model::CommandId::generate();
    b.put(
        Cf::CommandQueue,
        fleetgate_storage::keys::deadline(Some((Timestamp::EPOCH, &ghost))),
        device.device_id.as_str(),
    );
    b.put(
        Cf::Registrations,
        fleetgate_storage::keys::registration_count(Some(7)),
        2i64.to_be_bytes().to_vec(),
    );
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
    for expected in [
        "deadline entry for missing command",
        "registration count is off by -2",
    ] {
        assert!(
            report.problems.iter().any(|p| p.contains(expected)),
            "{expected}: {:#?}",
            report.problems
        );
    }
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
        // What an older fleetgate wrote: schema version 1, every family but `apps` and
        // `registrations`.
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let old = Cf::ALL
            .iter()
            .filter(|cf| !matches!(cf, Cf::Apps | Cf::Registrations))
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
    assert_eq!(store.count_registrations().unwrap(), 0);
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
