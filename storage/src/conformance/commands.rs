//! Conformance cases for command records and the command cache.

use std::sync::Arc;

use fleetgate_model::command::{CommandEvent, CommandStatus};
use fleetgate_model::{CommandId, Timestamp};

use super::{
    Make, assert_consistent, device, fresh, immediate_command, pending_command, pending_command_at,
    product,
};
use crate::error::StorageError;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

/// Pending commands come back in creation order, up to the per-device limit.
pub fn command_cache_order_and_limit(make: &Make) {
    let f = make(crate::Limits {
        max_pending_commands: 3,
        ..Default::default()
    });
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let other = device(s, &p, "n2");
    let cmds: Vec<_> = (0..3).map(|i| pending_command_at(&d, 600, i)).collect();
    for c in &cmds {
        s.insert_command(c).unwrap();
    }
    s.insert_command(&pending_command(&other, 600))
        .expect("limits are per device");
    let fourth = pending_command_at(&d, 600, 4);
    assert!(matches!(
        s.insert_command(&fourth),
        Err(StorageError::LimitExceeded { .. })
    ));
    assert!(matches!(
        s.insert_command(&cmds[0]),
        Err(StorageError::AlreadyExists { .. })
    ));
    let queued: Vec<_> = s
        .pending_commands(&d.device_id, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.command_id)
        .collect();
    assert_eq!(
        queued,
        cmds.iter().map(|c| c.command_id).collect::<Vec<_>>()
    );
    assert_eq!(s.pending_commands(&d.device_id, 2).unwrap().len(), 2);
    // Terminal commands do not count against the cache.
    s.insert_command(&immediate_command(&d)).unwrap();
    let mut gone = s.get_command(&cmds[0].command_id).unwrap().unwrap();
    assert_eq!(gone, cmds[0]);
    s.update_command(&gone.command_id, &mut |c| {
        c.apply(CommandEvent::Canceled, t(5))
            .map_err(StorageError::abort)
    })
    .unwrap();
    gone = pending_command_at(&d, 600, 9);
    s.insert_command(&gone).expect("a slot was freed");
    let queued: Vec<_> = s
        .pending_commands(&d.device_id, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.command_id)
        .collect();
    assert_eq!(
        queued,
        vec![cmds[1].command_id, cmds[2].command_id, gone.command_id]
    );
    let mut orphan = pending_command(&d, 60);
    orphan.device_id = "nobody".parse().unwrap();
    assert!(matches!(
        s.insert_command(&orphan),
        Err(StorageError::NotFound { .. })
    ));
    assert_consistent(s);
}

/// Leaving PENDING takes a command out of the queue and the expiry index; it cannot return.
pub fn command_transitions_leave_the_queue(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let c = pending_command(&d, 60);
    s.insert_command(&c).unwrap();
    let sent = s
        .update_command(&c.command_id, &mut |c| {
            c.apply(CommandEvent::Sent { request_id: None }, t(1))
                .map_err(StorageError::abort)
        })
        .unwrap();
    assert_eq!(sent.status, CommandStatus::Sent);
    assert!(s.pending_commands(&d.device_id, 10).unwrap().is_empty());
    assert!(s.expired_pending(t(1000), 10).unwrap().is_empty());
    for ev in [
        CommandEvent::Acked,
        CommandEvent::Result {
            success: true,
            detail: serde_json::json!({"ok": 1}),
        },
    ] {
        s.update_command(&c.command_id, &mut |c| {
            c.apply(ev.clone(), t(2)).map_err(StorageError::abort)
        })
        .unwrap();
    }
    let done = s.get_command(&c.command_id).unwrap().unwrap();
    assert_eq!(done.status, CommandStatus::Successful);
    let again = s.update_command(&c.command_id, &mut |c| {
        c.apply(CommandEvent::AckTimeout, t(3))
            .map_err(StorageError::abort)
    });
    assert!(
        again
            .unwrap_err()
            .aborted::<fleetgate_model::command::InvalidTransition>()
            .is_some()
    );
    let back = s.update_command(&c.command_id, &mut |c| {
        c.status = CommandStatus::Pending;
        Ok(())
    });
    assert!(matches!(back, Err(StorageError::Conflict(_))));
    assert!(matches!(
        s.update_command(&CommandId::generate(), &mut |_| Ok(())),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.get_command(&c.command_id).unwrap().unwrap(), done);
    assert_consistent(s);
}

/// The expiry index yields pending commands whose expiry has passed, earliest first.
pub fn command_expiry_index(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let a = device(s, &p, "a");
    let b = device(s, &p, "b");
    let late = pending_command(&a, 300);
    let early = pending_command(&b, 100);
    let mid = pending_command(&a, 200);
    for c in [&late, &early, &mid] {
        s.insert_command(c).unwrap();
    }
    let ids = |v: Vec<fleetgate_model::command::Command>| {
        v.into_iter().map(|c| c.command_id).collect::<Vec<_>>()
    };
    assert!(s.expired_pending(t(99), 10).unwrap().is_empty());
    assert_eq!(
        ids(s.expired_pending(t(100), 10).unwrap()),
        vec![early.command_id]
    );
    assert_eq!(
        ids(s.expired_pending(t(250), 10).unwrap()),
        vec![early.command_id, mid.command_id]
    );
    assert_eq!(
        ids(s.expired_pending(t(1000), 1).unwrap()),
        vec![early.command_id]
    );
    for c in s.expired_pending(t(250), 10).unwrap() {
        s.update_command(&c.command_id, &mut |c| {
            c.apply(CommandEvent::Expired, t(250))
                .map_err(StorageError::abort)
        })
        .unwrap();
    }
    assert_eq!(
        ids(s.expired_pending(t(1000), 10).unwrap()),
        vec![late.command_id]
    );
    assert_eq!(
        s.get_command(&early.command_id).unwrap().unwrap().status,
        CommandStatus::Expired
    );
    assert_eq!(
        ids(s.pending_commands(&a.device_id, 10).unwrap()),
        vec![late.command_id]
    );
    assert_consistent(s);
}

/// A device's history lists every command in creation order, filtered by status and paged.
pub fn command_history_listing(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let mut created = Vec::new();
    for i in 0..9 {
        let c = if i % 3 == 0 {
            immediate_command(&d)
        } else {
            pending_command_at(&d, 600, i)
        };
        let c = fleetgate_model::command::Command {
            created_time: t(i),
            ..c
        };
        s.insert_command(&c).unwrap();
        created.push(c);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list_device_commands(&d.device_id, None, cursor.as_deref(), 4)
            .unwrap();
        seen.extend(page.items.into_iter().map(|c| c.command_id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        created.iter().map(|c| c.command_id).collect::<Vec<_>>()
    );
    let failed = s
        .list_device_commands(&d.device_id, Some(CommandStatus::Failed), None, 10)
        .unwrap();
    assert_eq!(failed.items.len(), 3);
    assert!(
        failed
            .items
            .iter()
            .all(|c| c.status == CommandStatus::Failed)
    );
    assert!(
        s.list_device_commands(&d.device_id, Some(CommandStatus::Timeout), None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    assert_consistent(s);
}

/// Pruning removes settled commands created before the cut-off and nothing else.
pub fn command_pruning(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let old_done = fleetgate_model::command::Command {
        created_time: t(10),
        ..immediate_command(&d)
    };
    let old_pending = pending_command_at(&d, 600, 10);
    let new_done = fleetgate_model::command::Command {
        created_time: t(500),
        ..immediate_command(&d)
    };
    for c in [&old_done, &old_pending, &new_done] {
        s.insert_command(c).unwrap();
    }
    assert_eq!(s.prune_commands(t(100), 100).unwrap(), 1);
    assert_eq!(s.get_command(&old_done.command_id).unwrap(), None);
    assert!(s.get_command(&old_pending.command_id).unwrap().is_some());
    assert!(s.get_command(&new_done.command_id).unwrap().is_some());
    assert_eq!(s.prune_commands(t(100), 100).unwrap(), 0);
    assert_consistent(s);
}

/// Many threads queueing for one device get exactly the limit accepted.
pub fn concurrent_enqueue_respects_the_limit(make: &Make) {
    let f = make(crate::Limits {
        max_pending_commands: 20,
        ..Default::default()
    });
    let s = Arc::clone(&f.store);
    let p = product(s.as_ref(), "p");
    let d = device(s.as_ref(), &p, "n1");
    let accepted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                let d = d.clone();
                scope.spawn(move || {
                    (0..10)
                        .filter(|_| s.insert_command(&pending_command(&d, 600)).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(accepted, 20);
    assert_eq!(s.pending_commands(&d.device_id, 100).unwrap().len(), 20);
    assert_consistent(s.as_ref());
}
