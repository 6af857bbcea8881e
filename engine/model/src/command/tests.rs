use super::*;
use proptest::prelude::*;
use serde_json::json;

fn new() -> NewCommand {
    NewCommand {
        device_id: DeviceId::new("p_n1").unwrap(),
        app_id: AppId::new("app").unwrap(),
        mode: CommandMode::Async,
        service_id: Some(ServiceId::new("WaterMeter").unwrap()),
        command_name: CommandName::new("ON_OFF").unwrap(),
        paras: json!({"value": "ON"}),
        supersede_key: None,
        idempotency_key: None,
    }
}

fn sent(at: i64) -> CommandEvent {
    CommandEvent::Sent {
        request_id: None,
        ack_deadline: t(at).plus_secs(ACK_TIMEOUT_SECS),
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

#[test]
fn cached_command_happy_path() {
    let mut c = Command::new_delayed(new(), 60, t(0));
    assert_eq!(c.status, CommandStatus::Pending);
    c.apply(sent(10), t(10)).unwrap();
    assert_eq!(c.ack_deadline, Some(t(190)));
    c.apply(CommandEvent::Acked, t(11)).unwrap();
    assert_eq!(c.ack_deadline, None);
    c.apply(
        CommandEvent::Result {
            success: true,
            detail: json!({"result": "ok"}),
        },
        t(12),
    )
    .unwrap();
    assert_eq!(c.status, CommandStatus::Successful);
    assert_eq!(
        serde_json::to_value(&c.result).unwrap(),
        json!({"resultCode": "SUCCESSFUL", "resultDetail": {"result": "ok"}})
    );
    assert_eq!(
        (c.sent_time, c.delivered_time, c.response_time),
        (Some(t(10)), Some(t(11)), Some(t(12)))
    );
}

#[test]
fn expired_commands_cannot_be_sent() {
    let mut c = Command::new_delayed(new(), 60, t(0));
    assert!(
        c.apply(CommandEvent::Expired, t(59)).is_err(),
        "not yet expired"
    );
    assert!(c.apply(sent(60), t(60)).is_err());
    c.apply(CommandEvent::Expired, t(60)).unwrap();
    assert_eq!(c.status, CommandStatus::Expired);
}

#[test]
fn sent_commands_cannot_expire_or_be_canceled() {
    let mut c = Command::new_delayed(new(), 60, t(0));
    c.apply(sent(1), t(1)).unwrap();
    assert_eq!(c.deadline(), Some(t(181)));
    assert!(c.apply(CommandEvent::Expired, t(100)).is_err());
    assert!(c.apply(CommandEvent::Canceled, t(2)).is_err());
    c.apply(CommandEvent::AckTimeout, t(181)).unwrap();
    assert_eq!(c.status, CommandStatus::Timeout);
    assert_eq!((c.ack_deadline, c.deadline()), (None, None));
    assert!(
        c.apply(
            CommandEvent::Result {
                success: true,
                detail: json!(null)
            },
            t(200)
        )
        .is_err()
    );
}

#[test]
fn immediate_commands() {
    let sent = Command::new_immediate(
        new(),
        Some(Some(RequestId::new("r1").unwrap())),
        t(180),
        t(0),
    );
    assert_eq!(sent.status, CommandStatus::Sent);
    assert_eq!(sent.expires_at, None);
    assert_eq!(sent.ack_deadline, Some(t(180)));
    let failed = Command::new_immediate(new(), None, t(180), t(0));
    assert_eq!(failed.status, CommandStatus::Failed);
    assert!(failed.status.is_terminal());
    assert_eq!(failed.ack_deadline, None);
}

#[test]
fn result_without_ack_implies_delivery() {
    let mut c = Command::new_immediate(new(), Some(None), t(180), t(0));
    c.apply(
        CommandEvent::Result {
            success: false,
            detail: json!({}),
        },
        t(3),
    )
    .unwrap();
    assert_eq!(c.status, CommandStatus::Failed);
    assert_eq!(c.delivered_time, Some(t(3)));
}

#[test]
fn expiry_rules() {
    assert_eq!(expire_secs(None, MAX_EXPIRE_SECS), Ok(DEFAULT_EXPIRE_SECS));
    assert!(expire_secs(Some(0), MAX_EXPIRE_SECS).is_err());
    assert_eq!(
        expire_secs(Some(MAX_EXPIRE_SECS), MAX_EXPIRE_SECS),
        Ok(MAX_EXPIRE_SECS)
    );
    assert!(expire_secs(Some(MAX_EXPIRE_SECS + 1), MAX_EXPIRE_SECS).is_err());
}

#[test]
fn superseded_commands_say_by_whom() {
    let mut c = Command::new_delayed(new(), 60, t(0));
    let by = CommandId::generate();
    c.apply(CommandEvent::Superseded { by }, t(5)).unwrap();
    assert_eq!(c.status, CommandStatus::Canceled);
    assert_eq!(c.response_time, Some(t(5)));
    assert_eq!(
        serde_json::to_value(&c.result).unwrap(),
        json!({"resultCode": "CANCELED", "resultDetail": format!("superseded by {by}")})
    );
}

#[test]
fn keys_are_validated_and_skipped_when_absent() {
    for ok in ["a", "cfg:interval", "A-Z_0.9", &"k".repeat(MAX_KEY_LEN)] {
        assert_eq!(validate_key(ok), Ok(()), "{ok}");
    }
    for bad in ["", "a b", "a/b", "é", "a\0", &"k".repeat(MAX_KEY_LEN + 1)] {
        assert!(validate_key(bad).is_err(), "{bad:?}");
    }
    let mut n = new();
    n.idempotency_key = Some("x y".into());
    assert!(n.validate().unwrap_err().starts_with("idempotency_key "));
    n.idempotency_key = Some("req-1".into());
    n.supersede_key = Some("valve".into());
    assert_eq!(n.validate(), Ok(()));

    let plain = serde_json::to_value(Command::new_delayed(new(), 60, t(0))).unwrap();
    for field in ["ack_deadline", "supersede_key", "idempotency_key"] {
        assert!(plain.get(field).is_none(), "{field} is skipped when unset");
    }
    let keyed = Command::new_delayed(n, 60, t(0));
    let back: Command = serde_json::from_value(serde_json::to_value(&keyed).unwrap()).unwrap();
    assert_eq!(back, keyed);
    assert_eq!(back.supersede_key.as_deref(), Some("valve"));
    // Records written before these fields existed still read.
    let mut old = plain.clone();
    old.as_object_mut().unwrap().remove("sent_time");
    let old: Command = serde_json::from_value(old).unwrap();
    assert_eq!(
        (old.ack_deadline, old.supersede_key, old.idempotency_key),
        (None, None, None)
    );
}

/// The §22.3 graph as documented in the module: every edge the machine may take.
fn allowed(from: CommandStatus, to: CommandStatus) -> bool {
    use CommandStatus as S;
    matches!(
        (from, to),
        (S::Pending, S::Sent | S::Expired | S::Canceled)
            | (
                S::Sent,
                S::Delivered | S::Successful | S::Failed | S::Timeout
            )
            | (S::Delivered, S::Successful | S::Failed)
    )
}

/// What applying `event` at `now` to `c` must give, written out edge by edge from the table in
/// the module documentation; `None` when the event must be refused.
fn expected(c: &Command, event: &CommandEvent, now: Timestamp) -> Option<Command> {
    use CommandStatus as S;
    let mut n = c.clone();
    match (event, c.status) {
        (
            CommandEvent::Sent {
                request_id,
                ack_deadline,
            },
            S::Pending,
        ) if c.expires_at.is_none_or(|e| now < e) => {
            n.status = S::Sent;
            n.sent_time = Some(now);
            n.request_id = request_id.clone();
            n.ack_deadline = Some(if *ack_deadline < now {
                now
            } else {
                *ack_deadline
            });
        }
        (CommandEvent::Expired, S::Pending) if c.expires_at.is_some_and(|e| e <= now) => {
            n.status = S::Expired;
            n.response_time = Some(now);
        }
        (CommandEvent::Canceled, S::Pending) => {
            n.status = S::Canceled;
            n.response_time = Some(now);
        }
        (CommandEvent::Superseded { by }, S::Pending) => {
            n.status = S::Canceled;
            n.response_time = Some(now);
            n.result = Some(CommandResult {
                result_code: "CANCELED".into(),
                result_detail: Value::String(format!("superseded by {by}")),
            });
        }
        (CommandEvent::Acked, S::Sent) => {
            n.status = S::Delivered;
            n.delivered_time = Some(now);
            n.ack_deadline = None;
        }
        (CommandEvent::AckTimeout, S::Sent) => {
            n.status = S::Timeout;
            n.response_time = Some(now);
            n.ack_deadline = None;
        }
        (CommandEvent::Result { success, detail }, S::Sent | S::Delivered) => {
            n.status = if *success { S::Successful } else { S::Failed };
            if c.status == S::Sent {
                n.delivered_time = Some(now);
            }
            n.response_time = Some(now);
            n.ack_deadline = None;
            n.result = Some(CommandResult {
                result_code: n.status.as_str().into(),
                result_detail: detail.clone(),
            });
        }
        _ => return None,
    }
    Some(n)
}

fn event() -> impl Strategy<Value = CommandEvent> {
    prop_oneof![
        (proptest::option::of("[a-z0-9]{1,8}"), -5i64..400).prop_map(
            |(request_id, deadline_secs)| CommandEvent::Sent {
                request_id: request_id.map(|r| RequestId::new(r).unwrap()),
                // Relative to the start; the test adds the current time.
                ack_deadline: t(deadline_secs),
            }
        ),
        Just(CommandEvent::Acked),
        any::<bool>().prop_map(|success| CommandEvent::Result {
            success,
            detail: json!({"ok": success})
        }),
        Just(CommandEvent::AckTimeout),
        Just(CommandEvent::Expired),
        Just(CommandEvent::Canceled),
        Just(CommandEvent::Superseded {
            by: CommandId::from_bytes([7; 16])
        }),
    ]
}

/// How a test command starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    Delayed { expire_secs: u64 },
    ImmediateSent { ack_secs: u64 },
    ImmediateFailed,
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        (1u64..200).prop_map(|expire_secs| Start::Delayed { expire_secs }),
        (0u64..300).prop_map(|ack_secs| Start::ImmediateSent { ack_secs }),
        Just(Start::ImmediateFailed),
    ]
}

/// The record's fields that depend on its status, checked after every step.
fn check_record(c: &Command, now: Timestamp, sent_ever: bool) -> Result<(), TestCaseError> {
    use CommandStatus as S;
    let s = c.status;
    prop_assert_eq!(
        c.ack_deadline.is_some(),
        s == S::Sent,
        "ack deadline only while SENT"
    );
    prop_assert_eq!(
        c.sent_time.is_some(),
        sent_ever,
        "sent_time iff it went through SENT"
    );
    prop_assert_eq!(
        c.delivered_time.is_some(),
        matches!(s, S::Delivered | S::Successful) || (s == S::Failed && sent_ever),
        "delivered_time iff acknowledged or answered"
    );
    prop_assert_eq!(c.response_time.is_some(), s.is_terminal());
    prop_assert_eq!(
        c.result.is_some(),
        matches!(s, S::Successful | S::Failed)
            || (s == S::Canceled
                && c.result
                    .as_ref()
                    .is_some_and(|r| r.result_code == "CANCELED"))
    );
    if let Some(r) = &c.result {
        prop_assert_eq!(r.result_code.as_str(), s.as_str());
    }
    if matches!(s, S::Pending | S::Expired) {
        prop_assert_eq!(c.send_strategy, SendStrategy::Delay);
    }
    if s == S::Expired {
        prop_assert!(c.expires_at.is_some_and(|e| e <= now));
    }
    prop_assert_eq!(
        c.deadline(),
        match s {
            S::Pending => c.expires_at,
            S::Sent => c.ack_deadline,
            _ => None,
        }
    );
    // Times are ordered and never in the future.
    let times = [
        Some(c.created_time),
        c.sent_time,
        c.delivered_time,
        c.response_time,
    ];
    let present: Vec<_> = times.into_iter().flatten().collect();
    prop_assert!(present.windows(2).all(|w| w[0] <= w[1]), "{:?}", present);
    prop_assert!(present.iter().all(|p| *p <= now));
    if let (Some(sent), Some(deadline)) = (c.sent_time, c.ack_deadline) {
        prop_assert!(sent <= deadline);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any sequence of events at non-decreasing times, applied to delayed and immediate
    /// commands, takes only the documented edges, setting exactly the documented fields.
    #[test]
    fn state_machine_invariants(
        start in start(),
        steps in proptest::collection::vec((event(), 0i64..60), 0..16),
    ) {
        let mut c = match start {
            Start::Delayed { expire_secs } => Command::new_delayed(new(), expire_secs, t(0)),
            Start::ImmediateSent { ack_secs } => {
                Command::new_immediate(new(), Some(None), t(0).plus_secs(ack_secs), t(0))
            }
            Start::ImmediateFailed => Command::new_immediate(new(), None, t(0).plus_secs(180), t(0)),
        };
        let mut sent_ever = c.status == CommandStatus::Sent;
        check_record(&c, t(0), sent_ever)?;
        let mut now = t(0);
        for (ev, dt) in steps {
            now = now.plus_secs(dt as u64);
            // Deadlines are generated relative to the start; move them to "now + offset".
            let ev = match ev {
                CommandEvent::Sent { request_id, ack_deadline } => CommandEvent::Sent {
                    request_id,
                    ack_deadline: now.plus_millis(ack_deadline.as_millis()),
                },
                other => other,
            };
            let before = c.clone();
            let want = expected(&before, &ev, now);
            match c.apply(ev.clone(), now) {
                Ok(()) => {
                    prop_assert!(!before.status.is_terminal(), "{:?} accepted {:?}", before.status, ev);
                    prop_assert!(
                        allowed(before.status, c.status),
                        "{:?} -> {:?} on {:?}", before.status, c.status, ev
                    );
                    prop_assert_eq!(Some(&c), want.as_ref(), "exactly the documented fields change");
                    if c.status == CommandStatus::Expired {
                        prop_assert_eq!(before.status, CommandStatus::Pending);
                    }
                }
                Err(e) => {
                    prop_assert_eq!(&c, &before, "a refused event changes nothing");
                    prop_assert_eq!(e.from, before.status);
                    prop_assert_eq!(want, None, "{:?} refused {:?} at {:?}", before.status, ev, now);
                }
            }
            // A SENT (or later) command never expires; a terminal one never changes.
            if before.status != CommandStatus::Pending {
                prop_assert!(c.status != CommandStatus::Expired || before.status == CommandStatus::Expired);
            }
            if before.status.is_terminal() {
                prop_assert_eq!(&c, &before, "terminal states are final");
            }
            // Once set, a time stays as it was.
            for (old, new) in [
                (before.sent_time, c.sent_time),
                (before.delivered_time, c.delivered_time),
                (before.response_time, c.response_time),
            ] {
                if old.is_some() {
                    prop_assert_eq!(old, new, "a time never moves");
                }
            }
            prop_assert_eq!(c.created_time, before.created_time);
            prop_assert_eq!(c.expires_at, before.expires_at);
            sent_ever |= c.status == CommandStatus::Sent;
            check_record(&c, now, sent_ever)?;
        }
    }

    /// Every event on a terminal command is refused, whatever the time.
    #[test]
    fn terminal_commands_refuse_every_event(
        start in start(),
        path in proptest::collection::vec(event(), 0..8),
        probes in proptest::collection::vec((event(), 0i64..1000), 1..8),
    ) {
        let mut c = match start {
            Start::Delayed { expire_secs } => Command::new_delayed(new(), expire_secs, t(0)),
            Start::ImmediateSent { ack_secs } => {
                Command::new_immediate(new(), Some(None), t(0).plus_secs(ack_secs), t(0))
            }
            Start::ImmediateFailed => Command::new_immediate(new(), None, t(0), t(0)),
        };
        // Drive it to some state, then force it terminal.
        for ev in path {
            let _ = c.apply(ev, t(1));
        }
        for ev in [CommandEvent::Canceled, CommandEvent::AckTimeout, CommandEvent::Result { success: true, detail: json!(null) }] {
            let _ = c.apply(ev, t(2));
        }
        prop_assert!(c.status.is_terminal(), "{:?}", c.status);
        let settled = c.clone();
        for (ev, at) in probes {
            let err = c.apply(ev, t(2 + at)).expect_err("terminal refuses");
            prop_assert_eq!(err.from, settled.status);
            prop_assert_eq!(&c, &settled);
        }
    }
}
