//! Durability under SIGKILL: a child process writes cached commands, state transitions and
//! shadows, printing a line after each write returns; the parent kills it mid-stream with
//! SIGKILL, reopens the database, and checks that every acknowledged write is there and that
//! the integrity check finds nothing. Three kill/reopen rounds run on the same directory.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;

use fleetgate_model::command::{
    ACK_TIMEOUT_SECS, Command, CommandEvent, CommandMode, CommandStatus, NewCommand,
};
use fleetgate_model::device::{Credential, DeviceSecret};
use fleetgate_model::{CommandId, DeviceId, ServiceId, Timestamp, testing};
use fleetgate_storage::{Durability, Limits, Storage, StorageError};
use fleetgate_storage_rocks::{RocksConfig, open_store};

const DEVICES: usize = 40;
const CHILD_ENV: &str = "FLEETGATE_CRASH_CHILD_DIR";

fn limits() -> Limits {
    Limits {
        max_pending_commands: 1_000_000,
        ..Limits::default()
    }
}

fn open(dir: &Path) -> Arc<dyn Storage> {
    let config = RocksConfig {
        block_cache_mb: 8,
        write_buffer_mb: 1,
        total_write_buffer_mb: 8,
        ..RocksConfig::default()
    };
    Arc::new(open_store(dir, &config, limits()).expect("open"))
}

fn device_id(i: usize) -> DeviceId {
    DeviceId::derive(
        &testing::water_meter().product_id,
        &format!("n{i}").parse().unwrap(),
    )
}

/// Not a test on its own: the writer process the crash test starts and kills.
#[test]
#[ignore = "run by sigkill_keeps_every_acknowledged_write as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    let product = testing::water_meter();
    match store.create_product(&product) {
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    for i in 0..DEVICES {
        let d = testing::device(&product, &format!("n{i}"));
        match store.create_device(&d, &Credential::Secret(DeviceSecret::generate())) {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    println!("ready");
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                let mut previous: Option<CommandId> = None;
                for i in 0.. {
                    let device = device_id((i * 2 + worker) % DEVICES);
                    let new = NewCommand {
                        device_id: device.clone(),
                        app_id: testing::app(),
                        mode: CommandMode::Async,
                        service_id: Some(ServiceId::new("WaterMeter").unwrap()),
                        command_name: "ON_OFF".parse().unwrap(),
                        paras: serde_json::json!({"value": "ON", "n": i}),
                        supersede_key: None,
                        idempotency_key: None,
                    };
                    let c = Command::new_delayed(new, 86_400, Timestamp::now());
                    store.insert_command(&c).expect("insert");
                    emit(&format!("queued {} {device}", c.command_id));
                    if let Some(prev) = previous.take().filter(|_| i % 3 == 0) {
                        store
                            .update_command(&prev, &mut |c| {
                                let now = Timestamp::now();
                                let sent = CommandEvent::Sent {
                                    request_id: None,
                                    ack_deadline: now.plus_secs(ACK_TIMEOUT_SECS),
                                };
                                c.apply(sent, now).map_err(StorageError::abort)
                            })
                            .expect("send");
                        emit(&format!("sent {prev}"));
                    }
                    previous = Some(c.command_id);
                    if i % 5 == 0 {
                        let svc = ServiceId::new("WaterMeter").unwrap();
                        let mut props = serde_json::Map::new();
                        props.insert("temperature".into(), serde_json::json!(i % 100));
                        let shadow = store
                            .update_shadow(&device, Durability::Synced, &mut |sh| {
                                sh.set_desired(&svc, &props, None, Timestamp::now())
                                    .map(|_| ())
                                    .map_err(StorageError::abort)
                            })
                            .expect("shadow");
                        emit(&format!(
                            "shadow {device} {}",
                            shadow.services[&svc].version
                        ));
                    }
                }
            });
        }
    });
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .expect("stdout");
}

#[derive(Default)]
struct Acknowledged {
    queued: BTreeMap<CommandId, DeviceId>,
    sent: BTreeSet<CommandId>,
    shadow_versions: BTreeMap<DeviceId, u64>,
}

/// Runs the child until it has acknowledged `target` writes, kills it, and records every
/// acknowledged write (including lines still in the pipe when it died).
fn run_and_kill(dir: &Path, target: usize, acked: &mut Acknowledged) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Process::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let lines = BufReader::new(stdout).lines();
    let mut count = 0;
    let mut killed = false;
    for line in lines {
        let line = line.expect("read child output");
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["queued", id, device] => {
                acked
                    .queued
                    .insert(id.parse().unwrap(), device.parse().unwrap());
                count += 1;
            }
            ["sent", id] => {
                acked.sent.insert(id.parse().unwrap());
                count += 1;
            }
            ["shadow", device, version] => {
                let v: u64 = version.parse().unwrap();
                let e = acked
                    .shadow_versions
                    .entry(device.parse().unwrap())
                    .or_default();
                *e = (*e).max(v);
                count += 1;
            }
            _ => {}
        }
        if count >= target && !killed {
            // SIGKILL: no destructors, no flush, no chance to finish the batch in flight.
            child.kill().expect("kill");
            killed = true;
        }
    }
    let status = child.wait().expect("wait");
    assert!(killed, "the child stopped by itself: {status}");
}

fn verify(dir: &Path, acked: &Acknowledged) {
    let store = open(dir);
    for (id, device) in &acked.queued {
        let c = store
            .get_command(id)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged command {id} is lost"));
        assert_eq!(&c.device_id, device);
        if acked.sent.contains(id) {
            assert_eq!(
                c.status,
                CommandStatus::Sent,
                "acknowledged send of {id} is lost"
            );
            assert!(c.ack_deadline.is_some(), "the ack deadline of {id} is lost");
        } else {
            assert!(matches!(
                c.status,
                CommandStatus::Pending | CommandStatus::Sent
            ));
        }
    }
    for (device, version) in &acked.shadow_versions {
        let shadow = store.get_shadow(device).unwrap();
        let stored = shadow
            .services
            .values()
            .map(|s| s.version)
            .max()
            .unwrap_or(0);
        assert!(
            stored >= *version,
            "shadow of {device}: acknowledged version {version}, stored {stored}"
        );
    }
    // Queues are in creation order.
    for i in 0..DEVICES {
        let pending = store.pending_commands(&device_id(i), usize::MAX).unwrap();
        assert!(
            pending
                .windows(2)
                .all(|w| w[0].created_time <= w[1].created_time)
        );
        assert!(pending.iter().all(|c| c.status == CommandStatus::Pending));
    }
    let report = store.check_integrity().unwrap();
    assert!(
        report.problems.is_empty(),
        "corruption after SIGKILL: {:#?}",
        report.problems
    );
    assert!(report.checked > 0);
}

#[test]
fn sigkill_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Acknowledged::default();
    for round in 1..=3 {
        run_and_kill(
            dir.path(),
            400 * round + (Timestamp::now().as_millis() % 300) as usize,
            &mut acked,
        );
        verify(dir.path(), &acked);
    }
    assert!(
        acked.queued.len() > 500,
        "the child wrote too little to mean anything"
    );
}
