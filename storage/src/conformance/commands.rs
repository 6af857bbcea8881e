//! Conformance cases for command records and the command cache.

use std::sync::Arc;

use fleetgate_model::command::{Command, CommandEvent, CommandStatus};
use fleetgate_model::{CommandId, Timestamp};

use super::{
    Make, assert_consistent, device, fresh, immediate_command, immediate_sent_command,
    keyed_command, pending_command, pending_command_at, product,
};
use crate::error::StorageError;
use crate::traits::{Enqueued, Storage};

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
            c.apply(sent_event(1, 180), t(1))
                .map_err(StorageError::abort)
        })
        .unwrap();
    assert_eq!(sent.status, CommandStatus::Sent);
    assert!(s.pending_commands(&d.device_id, 10).unwrap().is_empty());
    // Its expiry no longer counts: only its ack deadline does.
    assert!(s.due_commands(t(180), 10).unwrap().is_empty());
    assert_eq!(s.due_commands(t(181), 10).unwrap(), vec![sent.clone()]);
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
    assert!(s.due_commands(t(1000), 10).unwrap().is_empty());
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

fn sent_event(at_secs: i64, ack_secs: u64) -> CommandEvent {
    CommandEvent::Sent {
        request_id: None,
        ack_deadline: t(at_secs).plus_secs(ack_secs),
    }
}

fn ids(v: Vec<Command>) -> Vec<CommandId> {
    v.into_iter().map(|c| c.command_id).collect()
}

fn apply(s: &dyn Storage, id: &CommandId, ev: CommandEvent, at: i64) -> Command {
    s.update_command(id, &mut |c| {
        c.apply(ev.clone(), t(at)).map_err(StorageError::abort)
    })
    .unwrap()
}

/// The deadline index yields PENDING commands whose expiry passed and SENT commands whose ack
/// deadline passed, earliest deadline first; a command leaves it when its deadline no longer
/// applies.
pub fn command_deadline_index(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let a = device(s, &p, "a");
    let b = device(s, &p, "b");
    let late = pending_command(&a, 300);
    let early = pending_command(&b, 100);
    let mid = pending_command(&a, 200);
    // Sent at 10 with a 140 s ack timeout: due at 150, between `early` and `mid`.
    let to_send = pending_command(&b, 1000);
    // An immediate command sent at 0, due at 250.
    let immediate = immediate_sent_command(&a, 0, 250);
    for c in [&late, &early, &mid, &to_send, &immediate] {
        s.insert_command(c).unwrap();
    }
    let sent = apply(s, &to_send.command_id, sent_event(10, 140), 10);
    assert_eq!(sent.ack_deadline, Some(t(150)));
    assert!(s.due_commands(t(99), 10).unwrap().is_empty());
    assert_eq!(
        ids(s.due_commands(t(100), 10).unwrap()),
        vec![early.command_id]
    );
    assert_eq!(
        ids(s.due_commands(t(250), 10).unwrap()),
        vec![
            early.command_id,
            to_send.command_id,
            mid.command_id,
            immediate.command_id
        ]
    );
    assert_eq!(
        ids(s.due_commands(t(1000), 1).unwrap()),
        vec![early.command_id]
    );
    // What a sweeper does: expire the PENDING ones, time out the SENT ones.
    for c in s.due_commands(t(250), 10).unwrap() {
        let ev = match c.status {
            CommandStatus::Pending => CommandEvent::Expired,
            CommandStatus::Sent => CommandEvent::AckTimeout,
            other => panic!("due command in {other}"),
        };
        let after = apply(s, &c.command_id, ev, 250);
        assert!(after.status.is_terminal());
        assert_eq!(after.ack_deadline, None);
    }
    assert_eq!(
        ids(s.due_commands(t(1000), 10).unwrap()),
        vec![late.command_id]
    );
    assert_eq!(
        s.get_command(&early.command_id).unwrap().unwrap().status,
        CommandStatus::Expired
    );
    assert_eq!(
        s.get_command(&to_send.command_id).unwrap().unwrap().status,
        CommandStatus::Timeout
    );
    assert_eq!(
        ids(s.pending_commands(&a.device_id, 10).unwrap()),
        vec![late.command_id]
    );
    // An acknowledged command leaves the index; a moved ack deadline moves its entry.
    let again = pending_command(&b, 1000);
    s.insert_command(&again).unwrap();
    apply(s, &again.command_id, sent_event(300, 180), 300);
    s.update_command(&again.command_id, &mut |c| {
        c.ack_deadline = Some(t(600));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        ids(s.due_commands(t(599), 10).unwrap()),
        vec![late.command_id]
    );
    assert_eq!(
        ids(s.due_commands(t(600), 10).unwrap()),
        vec![late.command_id, again.command_id]
    );
    apply(s, &again.command_id, CommandEvent::Acked, 301);
    assert_eq!(
        ids(s.due_commands(t(10_000), 10).unwrap()),
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

/// A command whose idempotency key the device already used returns the stored command and
/// writes nothing — not even its supersede cancellations; the key is per device.
pub fn command_idempotency_keys(make: &Make) {
    let f = make(crate::Limits {
        max_pending_commands: 2,
        ..Default::default()
    });
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let other = device(s, &p, "n2");
    let first = keyed_command(&d, 600, 0, Some("valve"), Some("req-1"));
    assert_eq!(
        s.enqueue_command(&first).unwrap(),
        Enqueued::Created { superseded: vec![] }
    );
    // The same request again (a retry) and a different command with the same key.
    assert_eq!(
        s.enqueue_command(&first).unwrap(),
        Enqueued::Existing(first.clone())
    );
    let second = keyed_command(&d, 600, 5, Some("valve"), Some("req-1"));
    assert_eq!(
        s.enqueue_command(&second).unwrap(),
        Enqueued::Existing(first.clone())
    );
    assert_eq!(s.get_command(&second.command_id).unwrap(), None);
    assert_eq!(
        ids(s.pending_commands(&d.device_id, 10).unwrap()),
        vec![first.command_id],
        "nothing superseded, nothing queued"
    );
    assert_eq!(
        s.list_device_commands(&d.device_id, None, None, 10)
            .unwrap()
            .items
            .len(),
        1
    );
    // Even with the queue full, the existing command comes back.
    s.insert_command(&pending_command_at(&d, 600, 1)).unwrap();
    assert_eq!(
        s.enqueue_command(&second).unwrap(),
        Enqueued::Existing(first.clone())
    );
    // Another device may use the same key.
    let elsewhere = keyed_command(&other, 600, 0, None, Some("req-1"));
    assert!(matches!(
        s.enqueue_command(&elsewhere).unwrap(),
        Enqueued::Created { .. }
    ));
    // The command comes back as it is now, and insert_command refuses the key.
    let sent = apply(s, &first.command_id, sent_event(10, 180), 10);
    assert_eq!(
        s.enqueue_command(&second).unwrap(),
        Enqueued::Existing(sent.clone())
    );
    assert!(matches!(
        s.insert_command(&second),
        Err(StorageError::AlreadyExists { .. })
    ));
    // Invalid keys are refused before anything is read.
    for (sk, ik) in [(Some("a b"), None), (None, Some("")), (None, Some("x/y"))] {
        let bad = keyed_command(&other, 600, 0, sk, ik);
        assert!(
            matches!(s.enqueue_command(&bad), Err(StorageError::Conflict(_))),
            "{sk:?} {ik:?}"
        );
    }
    // Keys cannot change afterwards.
    assert!(matches!(
        s.update_command(&first.command_id, &mut |c| {
            c.idempotency_key = None;
            Ok(())
        }),
        Err(StorageError::Conflict(_))
    ));
    // Once the command is settled and pruned, the key is free again.
    apply(s, &first.command_id, CommandEvent::AckTimeout, 200);
    assert_eq!(s.prune_commands(t(1), 100).unwrap(), 1);
    assert!(matches!(
        s.enqueue_command(&second).unwrap(),
        Enqueued::Created { .. }
    ));
    assert_consistent(s);
}

/// Threads enqueueing different commands with one idempotency key create exactly one.
pub fn concurrent_idempotent_enqueue_creates_one(make: &Make) {
    let f = fresh(make);
    let s = Arc::clone(&f.store);
    let p = product(s.as_ref(), "p");
    let d = device(s.as_ref(), &p, "n1");
    let results: Vec<Enqueued> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = Arc::clone(&s);
                let d = d.clone();
                scope.spawn(move || {
                    let c = keyed_command(&d, 600, i, None, Some("once"));
                    s.enqueue_command(&c).unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let created = results
        .iter()
        .filter(|r| matches!(r, Enqueued::Created { .. }))
        .count();
    assert_eq!(created, 1);
    let queued = s.pending_commands(&d.device_id, 10).unwrap();
    assert_eq!(queued.len(), 1);
    for r in results {
        if let Enqueued::Existing(c) = r {
            assert_eq!(c, queued[0]);
        }
    }
    assert_consistent(s.as_ref());
}

/// A supersede key cancels the device's PENDING commands with the same key — not other keys,
/// not SENT ones, not other devices' — in the batch that stores the new command.
pub fn command_supersede_keys(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let other = device(s, &p, "n2");
    // Sent first, so a later command with its key does not touch it.
    let in_flight = keyed_command(&d, 600, 0, Some("interval"), None);
    s.insert_command(&in_flight).unwrap();
    apply(s, &in_flight.command_id, sent_event(0, 180), 0);
    let a1 = keyed_command(&d, 600, 1, Some("interval"), None);
    let b1 = keyed_command(&d, 600, 2, Some("valve"), None);
    let plain = pending_command_at(&d, 600, 3);
    let elsewhere = keyed_command(&other, 600, 6, Some("interval"), None);
    for c in [&a1, &b1, &plain, &elsewhere] {
        assert_eq!(
            s.enqueue_command(c).unwrap(),
            Enqueued::Created { superseded: vec![] }
        );
    }
    // A second command with a1's key replaces it: at most one PENDING command per key.
    let a2 = keyed_command(&d, 600, 4, Some("interval"), None);
    let Enqueued::Created { superseded } = s.enqueue_command(&a2).unwrap() else {
        panic!("created");
    };
    assert_eq!(ids(superseded), vec![a1.command_id]);
    let newer = keyed_command(&d, 600, 10, Some("interval"), None);
    let Enqueued::Created { superseded } = s.enqueue_command(&newer).unwrap() else {
        panic!("created");
    };
    assert_eq!(ids(superseded.clone()), vec![a2.command_id]);
    for c in &superseded {
        assert_eq!(c.status, CommandStatus::Canceled);
        assert_eq!(c.response_time, Some(t(10)));
        let result = c.result.as_ref().expect("result");
        assert_eq!(
            result.result_detail,
            serde_json::json!(format!("superseded by {}", newer.command_id))
        );
        assert_eq!(s.get_command(&c.command_id).unwrap().as_ref(), Some(c));
    }
    assert_eq!(
        s.get_command(&a1.command_id).unwrap().unwrap().status,
        CommandStatus::Canceled
    );
    assert_eq!(
        ids(s.pending_commands(&d.device_id, 10).unwrap()),
        vec![b1.command_id, plain.command_id, newer.command_id]
    );
    assert_eq!(
        s.get_command(&in_flight.command_id)
            .unwrap()
            .unwrap()
            .status,
        CommandStatus::Sent
    );
    assert_eq!(
        ids(s.pending_commands(&other.device_id, 10).unwrap()),
        vec![elsewhere.command_id]
    );
    // The canceled ones left the deadline index too.
    let due = ids(s.due_commands(t(10_000), 100).unwrap());
    assert!(!due.contains(&a1.command_id) && !due.contains(&a2.command_id));
    assert_eq!(due.len(), 5, "in flight, b1, plain, elsewhere, newer");
    // An immediate command supersedes as well; a command without the key does not.
    let mut now_cmd = immediate_sent_command(&d, 20, 180);
    now_cmd.supersede_key = Some("valve".into());
    let Enqueued::Created { superseded } = s.enqueue_command(&now_cmd).unwrap() else {
        panic!("created");
    };
    assert_eq!(ids(superseded), vec![b1.command_id]);
    assert_eq!(
        ids(s.pending_commands(&d.device_id, 10).unwrap()),
        vec![plain.command_id, newer.command_id]
    );
    assert_consistent(s);
}

/// The pending limit is checked after the supersede cancellations; a refused command writes
/// nothing.
pub fn command_limit_counts_after_supersede(make: &Make) {
    let f = make(crate::Limits {
        max_pending_commands: 2,
        ..Default::default()
    });
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let a = keyed_command(&d, 600, 1, Some("a"), None);
    let b = keyed_command(&d, 600, 2, Some("b"), None);
    s.insert_command(&a).unwrap();
    s.insert_command(&b).unwrap();
    // Full, but the new command replaces `a`.
    let a2 = keyed_command(&d, 600, 3, Some("a"), None);
    assert!(matches!(
        s.enqueue_command(&a2).unwrap(),
        Enqueued::Created { superseded } if ids(superseded.clone()) == vec![a.command_id]
    ));
    // Full, and nothing to replace.
    let c = keyed_command(&d, 600, 4, Some("c"), Some("req-c"));
    assert!(matches!(
        s.enqueue_command(&c),
        Err(StorageError::LimitExceeded { limit: 2, .. })
    ));
    assert_eq!(s.get_command(&c.command_id).unwrap(), None);
    assert_eq!(
        ids(s.pending_commands(&d.device_id, 10).unwrap()),
        vec![b.command_id, a2.command_id]
    );
    // The refused command did not take its idempotency key.
    let b2 = keyed_command(&d, 600, 5, Some("b"), Some("req-c"));
    assert!(matches!(
        s.enqueue_command(&b2).unwrap(),
        Enqueued::Created { superseded } if ids(superseded.clone()) == vec![b.command_id]
    ));
    assert_eq!(
        ids(s.pending_commands(&d.device_id, 10).unwrap()),
        vec![a2.command_id, b2.command_id]
    );
    assert_consistent(s);
}

/// `unsettled_command` is the device's SENT command, if any (the one sent first when there
/// are several), from the moment it is sent until it leaves SENT.
pub fn unsettled_command_is_the_one_sent(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let other = device(s, &p, "n2");
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), None);
    let first = pending_command_at(&d, 600, 0);
    let second = pending_command_at(&d, 600, 1);
    s.insert_command(&first).unwrap();
    s.insert_command(&second).unwrap();
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), None, "PENDING");
    let sent = apply(s, &first.command_id, sent_event(5, 180), 5);
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), Some(sent));
    assert_eq!(s.unsettled_command(&other.device_id).unwrap(), None);
    // An immediate command sent later does not displace it.
    let immediate = immediate_sent_command(&d, 6, 180);
    s.insert_command(&immediate).unwrap();
    assert_eq!(
        s.unsettled_command(&d.device_id)
            .unwrap()
            .map(|c| c.command_id),
        Some(first.command_id)
    );
    apply(s, &first.command_id, CommandEvent::Acked, 7);
    assert_eq!(
        s.unsettled_command(&d.device_id)
            .unwrap()
            .map(|c| c.command_id),
        Some(immediate.command_id)
    );
    apply(
        s,
        &immediate.command_id,
        CommandEvent::Result {
            success: true,
            detail: serde_json::json!({}),
        },
        8,
    );
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), None);
    let next = apply(s, &second.command_id, sent_event(9, 180), 9);
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), Some(next));
    apply(s, &second.command_id, CommandEvent::AckTimeout, 189);
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), None);
    assert_consistent(s);
}

/// Deleting a device removes its commands' queue, deadline, SENT and idempotency entries.
pub fn device_delete_removes_command_entries(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let keep = device(s, &p, "n2");
    let pending = keyed_command(&d, 600, 0, Some("a"), Some("k1"));
    let sent = keyed_command(&d, 600, 1, None, Some("k2"));
    let kept = keyed_command(&keep, 600, 2, None, Some("k1"));
    for c in [&pending, &sent, &kept] {
        s.insert_command(c).unwrap();
    }
    apply(s, &sent.command_id, sent_event(3, 180), 3);
    s.delete_device(&d.device_id).unwrap();
    assert_eq!(
        ids(s.due_commands(t(100_000), 10).unwrap()),
        vec![kept.command_id]
    );
    assert_eq!(s.unsettled_command(&d.device_id).unwrap(), None);
    assert_eq!(s.get_command(&sent.command_id).unwrap(), None);
    assert_consistent(s);
    // A device registered again under the same id starts with free keys.
    s.create_device(&d, &super::secret()).unwrap();
    let again = keyed_command(&d, 600, 5, None, Some("k1"));
    assert!(matches!(
        s.enqueue_command(&again).unwrap(),
        Enqueued::Created { .. }
    ));
    assert_consistent(s);
}
