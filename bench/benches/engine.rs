//! The engine's per-packet work without sockets: the ACL check (built-in policy and stored
//! rules), the token bucket, and `SessionState` per event (connect, QoS 1 publish in with its
//! PUBACK, a QoS 1 delivery out with the device's PUBACK, ping), driven through its public API
//! as a shard drives it (see engine/src/session/tests.rs). Credential verification (HMAC) is
//! the shard's job and is not part of the session's connect here.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytes::{Bytes, BytesMut};
use fleetgate_engine::acl::{AclRules, DeviceInfo, ProductPolicy, may_publish, may_subscribe};
use fleetgate_engine::config::SessionConfig;
use fleetgate_engine::flow::{Rate, TokenBucket};
use fleetgate_engine::metrics::ShardMetrics;
use fleetgate_engine::session::{Action, Downlink, Env, Phase, SessionState};
use fleetgate_engine::time::Millis;
use fleetgate_model::AclRuleId;
use fleetgate_model::product::{CustomTopic, TopicPermission};
use fleetgate_model::rule::{AclAccess, AclAction, AclRule, AclScope};
use fleetgate_model::{DeviceId, Timestamp, testing};

const DEVICE: &str = "p_d1";

fn info() -> Arc<DeviceInfo> {
    Arc::new(DeviceInfo {
        device_id: DeviceId::new(DEVICE).unwrap_or_else(|e| panic!("{e}")),
        product: Arc::new(ProductPolicy {
            product_id: testing::product_id("p"),
            app_id: testing::app(),
            custom_topics: vec![CustomTopic {
                suffix: "cfg".into(),
                permission: TopicPermission::Subscribe,
                description: String::new(),
            }],
            messages: Rate::UNLIMITED,
            bytes: Rate::UNLIMITED,
            max_throttle_ms: 10_000,
        }),
        sub_devices: None,
    })
}

/// `n` stored rules that match nothing the benches ask, so every one is evaluated.
fn rules(n: usize) -> AclRules {
    AclRules::new(
        (0..n)
            .map(|i| AclRule {
                acl_rule_id: AclRuleId::generate(),
                app_id: testing::app(),
                scope: AclScope::All,
                topic: format!("other/{i}/+/x"),
                action: AclAction::All,
                access: AclAccess::Deny,
                priority: i as i32,
                create_time: Timestamp::now(),
            })
            .collect(),
    )
}

fn acl(c: &mut Criterion) {
    let info = info();
    let own = format!("$oc/devices/{DEVICE}/sys/properties/report");
    let foreign = "$oc/devices/p_other/sys/properties/report";
    let none = AclRules::default();
    let twenty = rules(20);
    assert!(may_publish(&info, DEVICE, &own, &none));
    assert!(!may_publish(&info, DEVICE, foreign, &none));
    assert!(may_publish(&info, DEVICE, &own, &twenty));
    c.bench_function("acl/publish_own_builtin", |b| {
        b.iter(|| may_publish(&info, DEVICE, black_box(&own), &none))
    });
    c.bench_function("acl/publish_foreign_denied", |b| {
        b.iter(|| may_publish(&info, DEVICE, black_box(foreign), &none))
    });
    c.bench_function("acl/publish_own_20_rules", |b| {
        b.iter(|| may_publish(&info, DEVICE, black_box(&own), &twenty))
    });
    let filter = format!("$oc/devices/{DEVICE}/sys/commands/#");
    assert!(may_subscribe(&info, DEVICE, &filter, &none).is_some());
    c.bench_function("acl/subscribe_own_builtin", |b| {
        b.iter(|| may_subscribe(&info, DEVICE, black_box(&filter), &none))
    });
}

/// A bucket in steady state: one token taken per millisecond at 1000/s, always within budget.
fn token_bucket(c: &mut Criterion) {
    let rate = Rate {
        per_sec: 1000,
        burst: 100,
    };
    let mut bucket = TokenBucket::full(rate, Millis(0));
    let mut now = 0u64;
    c.bench_function("flow/token_bucket_take", |b| {
        b.iter(|| {
            now += 1;
            black_box(bucket.take(1, rate, Millis(now)))
        })
    });
    c.bench_function("flow/token_bucket_try_take", |b| {
        b.iter(|| {
            now += 1;
            black_box(bucket.try_take(black_box(1), rate, Millis(now)))
        })
    });
}

/// What a shard holds around one session.
struct Shard {
    config: SessionConfig,
    acl: AclRules,
    metrics: ShardMetrics,
    out: BytesMut,
    actions: Vec<Action>,
    info: Arc<DeviceInfo>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            config: SessionConfig::default(),
            acl: AclRules::default(),
            metrics: ShardMetrics::default(),
            out: BytesMut::with_capacity(4096),
            actions: Vec::new(),
            info: info(),
        }
    }

    fn env(&mut self) -> Env<'_> {
        Env {
            now: Millis(1),
            wall: Timestamp::from_millis(1_600_000_000_000),
            config: &self.config,
            acl: &self.acl,
            metrics: &self.metrics,
            out: &mut self.out,
            actions: &mut self.actions,
        }
    }

    /// CONNECT through to CONNACK 0, answering the actions as a shard would.
    fn connect(&mut self, frame: &[u8]) -> SessionState {
        let mut s = SessionState::new(Millis(0));
        s.on_frame(frame, &mut self.env());
        self.actions.clear();
        let info = Arc::clone(&self.info);
        s.on_auth(Ok(info), &mut self.env());
        if matches!(self.actions.as_slice(), [Action::Register { .. }]) {
            self.actions.clear();
            s.on_registered(None, &mut self.env());
        }
        self.actions.clear();
        self.out.clear();
        s
    }

    /// Feeds one frame and returns what the session wrote (outside the measurement).
    fn probe(&mut self, s: &mut SessionState, frame: &[u8]) -> Vec<u8> {
        s.on_frame(frame, &mut self.env());
        self.actions.clear();
        self.out.split().to_vec()
    }

    /// Feeds one frame and forgets the output and actions.
    fn feed(&mut self, s: &mut SessionState, frame: &[u8]) {
        s.on_frame(frame, &mut self.env());
        self.out.clear();
        self.actions.clear();
    }
}

fn mqtt_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A frame with a one-byte remaining length (bodies under 128 bytes).
fn frame(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut f = vec![
        first,
        u8::try_from(body.len()).unwrap_or_else(|e| panic!("{e}")),
    ];
    f.extend(body);
    f
}

fn connect_frame() -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, "MQTT");
    body.extend([4, 0xC2, 0, 60]);
    mqtt_string(&mut body, &format!("{DEVICE}_0_0_2019120219"));
    mqtt_string(&mut body, DEVICE);
    mqtt_string(&mut body, &"a".repeat(64));
    frame(0x10, body)
}

fn session(c: &mut Criterion) {
    let mut shard = Shard::new();
    let connect = connect_frame();
    c.bench_function("session/connect_to_connack", |b| {
        b.iter(|| black_box(shard.connect(black_box(&connect))))
    });

    let mut s = shard.connect(&connect);
    assert_eq!(s.phase(), Phase::Connected);
    let topic = format!("$oc/devices/{DEVICE}/sys/properties/report");
    let mut body = Vec::new();
    mqtt_string(&mut body, &topic);
    body.extend([0x00, 0x07]);
    body.extend_from_slice(br#"{"services":[{"service_id":"m","properties":{"t":21}}]}"#);
    let publish = frame(0x32, body);
    assert_eq!(
        shard.probe(&mut s, &publish),
        [0x40, 0x02, 0x00, 0x07],
        "PUBACK 7"
    );
    c.bench_function("session/publish_qos1_in_with_puback", |b| {
        b.iter(|| shard.feed(&mut s, black_box(&publish)))
    });

    let ping = [0xC0, 0x00];
    assert_eq!(shard.probe(&mut s, &ping), [0xD0, 0x00], "PINGRESP");
    c.bench_function("session/pingreq", |b| {
        b.iter(|| shard.feed(&mut s, black_box(&ping)))
    });

    let down = format!("$oc/devices/{DEVICE}/sys/messages/down");
    let payload = Bytes::from_static(br#"{"content":"hello"}"#);
    // Downlink system topics are implicitly QoS 0; subscribe at QoS 1 for acknowledged
    // deliveries, and check that one comes out at QoS 1.
    let mut body = vec![0x00, 0x01];
    mqtt_string(&mut body, &down);
    body.push(1);
    shard.feed(&mut s, &frame(0x82, body));
    let probe = Downlink {
        topic: down.as_str().into(),
        payload: payload.clone(),
        qos: QoS::AtLeastOnce,
    };
    s.on_deliver(probe, &mut shard.env());
    assert_eq!(
        shard.out.first().map(|b| b & 0xF6),
        Some(0x32),
        "QoS 1 PUBLISH out"
    );
    let id = [shard.out[4 + down.len()], shard.out[5 + down.len()]];
    shard.out.clear();
    shard.feed(&mut s, &[0x40, 0x02, id[0], id[1]]);
    c.bench_function("session/deliver_qos1_out_and_puback", |b| {
        b.iter_batched(
            || Downlink {
                topic: down.as_str().into(),
                payload: payload.clone(),
                qos: QoS::AtLeastOnce,
            },
            |msg| {
                s.on_deliver(msg, &mut shard.env());
                // The device acknowledges the packet id the session just used.
                let id = shard
                    .out
                    .get(4 + down.len()..6 + down.len())
                    .map_or([0, 1], |b| [b[0], b[1]]);
                shard.out.clear();
                shard.actions.clear();
                shard.feed(&mut s, &[0x40, 0x02, id[0], id[1]]);
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(s.inflight(), 0, "every delivery was acknowledged");
    assert_eq!(s.phase(), Phase::Connected);
}

criterion_group!(benches, acl, token_bucket, session);
criterion_main!(benches);
