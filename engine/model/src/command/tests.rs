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
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

#[test]
fn cached_command_happy_path() {
    let mut c = Command::new_delayed(new(), 60, t(0));
    assert_eq!(c.status, CommandStatus::Pending);
    c.apply(CommandEvent::Sent { request_id: None }, t(10))
        .unwrap();
    c.apply(CommandEvent::Acked, t(11)).unwrap();
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
    assert!(
        c.apply(CommandEvent::Sent { request_id: None }, t(60))
            .is_err()
    );
    c.apply(CommandEvent::Expired, t(60)).unwrap();
    assert_eq!(c.status, CommandStatus::Expired);
}

#[test]
fn sent_commands_cannot_expire_or_be_canceled() {
    let mut c = Command::new_delayed(new(), 60, t(0));
    c.apply(CommandEvent::Sent { request_id: None }, t(1))
        .unwrap();
    assert!(c.apply(CommandEvent::Expired, t(100)).is_err());
    assert!(c.apply(CommandEvent::Canceled, t(2)).is_err());
    c.apply(CommandEvent::AckTimeout, t(181)).unwrap();
    assert_eq!(c.status, CommandStatus::Timeout);
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
    let sent = Command::new_immediate(new(), Some(Some(RequestId::new("r1").unwrap())), t(0));
    assert_eq!(sent.status, CommandStatus::Sent);
    assert_eq!(sent.expires_at, None);
    let failed = Command::new_immediate(new(), None, t(0));
    assert_eq!(failed.status, CommandStatus::Failed);
    assert!(failed.status.is_terminal());
}

#[test]
fn result_without_ack_implies_delivery() {
    let mut c = Command::new_immediate(new(), Some(None), t(0));
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

fn event() -> impl Strategy<Value = CommandEvent> {
    prop_oneof![
        Just(CommandEvent::Sent { request_id: None }),
        Just(CommandEvent::Acked),
        any::<bool>().prop_map(|success| CommandEvent::Result {
            success,
            detail: json!({})
        }),
        Just(CommandEvent::AckTimeout),
        Just(CommandEvent::Expired),
        Just(CommandEvent::Canceled),
    ]
}

proptest! {
    /// Any sequence of events, at non-decreasing times, keeps the machine within the allowed
    /// transitions and keeps the record consistent.
    #[test]
    fn state_machine_invariants(
        delayed in any::<bool>(),
        expire in 1u64..100,
        steps in proptest::collection::vec((event(), 0i64..30), 0..12),
    ) {
        let mut c = if delayed {
            Command::new_delayed(new(), expire, t(0))
        } else {
            Command::new_immediate(new(), Some(None), t(0))
        };
        let mut now = 0;
        for (ev, dt) in steps {
            now += dt;
            let before = c.clone();
            match c.apply(ev, t(now)) {
                Ok(()) => prop_assert!(allowed(before.status, c.status), "{:?} -> {:?}", before.status, c.status),
                Err(e) => {
                    prop_assert_eq!(&c, &before, "a refused event changes nothing");
                    prop_assert_eq!(e.from, before.status);
                }
            }
            if before.status.is_terminal() {
                prop_assert_eq!(&c, &before, "terminal states are final");
            }
            // Timestamps are consistent with the status.
            let s = c.status;
            prop_assert_eq!(c.sent_time.is_some(), !matches!(s, CommandStatus::Pending | CommandStatus::Expired | CommandStatus::Canceled));
            prop_assert_eq!(c.result.is_some(), matches!(s, CommandStatus::Successful | CommandStatus::Failed));
            prop_assert_eq!(c.response_time.is_some(), s.is_terminal());
            if s == CommandStatus::Expired {
                prop_assert!(c.expires_at.is_some_and(|e| e <= t(now)));
            }
            let times = [Some(c.created_time), c.sent_time, c.delivered_time, c.response_time];
            let present: Vec<_> = times.into_iter().flatten().collect();
            prop_assert!(present.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}
