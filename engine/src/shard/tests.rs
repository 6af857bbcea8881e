//! Sessions driven through shard cores over an in-memory transport: several shards share one
//! engine state, the test plays the drivers (bytes in, bytes out, closes, releases) and the
//! storage workers, and watches the upstream queue. No sockets, no threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use fleetgate_codec::mqtt::bytes::{Bytes, BytesMut};
use fleetgate_codec::mqtt::{self, QoS, Version, v5};
use fleetgate_model::auth::password;
use fleetgate_model::device::{Credential, DeviceSecret};
use fleetgate_model::{DeviceId, Timestamp, testing};
use fleetgate_storage::{DeviceStore, MemStore, ProductStore, Storage};

use super::{ConnId, Io, ShardCore};
use crate::config::{EngineConfig, UpstreamPolicy};
use crate::engine::{Parts, assemble};
use crate::metrics::CloseReason;
use crate::session::Downlink;
use crate::upstream::UpstreamEvent;
use crate::workers::WorkerJob;

const TS: &str = "2019120219";
const SECRET: &str = "s3cret-value";

#[derive(Default)]
struct MemIo {
    out: HashMap<ConnId, BytesMut>,
    closed: Vec<ConnId>,
    reading: HashMap<ConnId, bool>,
}

impl Io for MemIo {
    fn send(&mut self, id: ConnId, bytes: BytesMut) {
        self.out.entry(id).or_default().extend_from_slice(&bytes);
    }
    fn close(&mut self, id: ConnId) {
        self.closed.push(id);
    }
    fn set_reading(&mut self, id: ConnId, on: bool) {
        self.reading.insert(id, on);
    }
}

struct Cluster {
    cores: Vec<ShardCore>,
    io: Vec<MemIo>,
    jobs: Receiver<WorkerJob>,
    upstream: Receiver<UpstreamEvent>,
    storage: Arc<dyn Storage>,
    shared: Arc<crate::engine::Shared>,
}

fn storage() -> Arc<dyn Storage> {
    let store = MemStore::in_memory();
    let product = testing::water_meter();
    store.create_product(&product).unwrap();
    for node in ["d1", "d2", "monitor"] {
        let d = testing::device(&product, node);
        store
            .create_device(&d, &Credential::Secret(DeviceSecret::new(SECRET).unwrap()))
            .unwrap();
    }
    Arc::new(store)
}

fn device(node: &str) -> String {
    format!("water_meter_{node}")
}

impl Cluster {
    fn new(shards: usize, config: EngineConfig, max_connections: usize) -> Self {
        let storage = storage();
        let Parts {
            shared,
            inboxes,
            jobs,
            queue,
        } = assemble(config, Arc::clone(&storage), shards, max_connections, 2).unwrap();
        let cores = inboxes
            .into_iter()
            .enumerate()
            .map(|(i, (rx, waker))| {
                ShardCore::new(i as u16, shards, Arc::clone(&shared), rx, waker)
            })
            .collect();
        Cluster {
            cores,
            io: (0..shards).map(|_| MemIo::default()).collect(),
            jobs,
            upstream: queue.into_receiver(),
            storage,
            shared,
        }
    }

    fn accept(&mut self, shard: usize) -> ConnId {
        self.cores[shard]
            .accept(SocketAddr::from(([127, 0, 0, 1], 40000)))
            .unwrap()
    }

    fn feed(&mut self, shard: usize, id: ConnId, bytes: &[u8]) {
        self.cores[shard].on_read(id, bytes, &mut self.io[shard]);
        self.settle();
    }

    /// Plays the storage workers: runs the queued jobs. Returns whether there were any.
    fn run_jobs(&mut self) -> bool {
        let mut any = false;
        while let Ok(job) = self.jobs.try_recv() {
            any = true;
            if let WorkerJob::Auth { shard, conn, req } = job {
                let outcome =
                    self.shared
                        .auth
                        .verify_loading(self.storage.as_ref(), &req, Timestamp::now());
                let _ = self
                    .shared
                    .shard(shard)
                    .unwrap()
                    .send(super::ShardMsg::AuthDone { conn, outcome });
            }
        }
        any
    }

    /// Runs storage jobs and polls every shard until nothing moves.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut moved = self.run_jobs();
            for (core, io) in self.cores.iter_mut().zip(self.io.iter_mut()) {
                let next = core.poll(io);
                if next.is_some_and(|n| n <= self.shared.clock.now()) {
                    moved = true;
                }
                for id in std::mem::take(&mut io.closed) {
                    core.release(id);
                    io.reading.remove(&id);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    fn packets(&mut self, shard: usize, id: ConnId, version: Version) -> Vec<v5::Packet> {
        let bytes = self.io[shard].out.remove(&id).unwrap_or_default();
        let mut rest = &bytes[..];
        let mut v = Vec::new();
        while let Ok(Some(n)) = mqtt::frame_len(rest, 0) {
            v.push(mqtt::decode(&rest[..n], version, 0).unwrap());
            rest = &rest[n..];
        }
        v
    }

    fn events(&mut self) -> Vec<UpstreamEvent> {
        self.upstream.try_iter().collect()
    }

    fn connect(
        &mut self,
        shard: usize,
        node: &str,
        version: Version,
        clean: bool,
        will: Option<&str>,
    ) -> ConnId {
        let id = self.accept(shard);
        let frame = connect_frame(version, node, clean, will);
        self.feed(shard, id, &frame);
        id
    }
}

fn connect_frame(version: Version, node: &str, clean: bool, will: Option<&str>) -> Vec<u8> {
    let device = device(node);
    let pw = password(&DeviceSecret::new(SECRET).unwrap(), TS);
    let c = v5::Connect {
        clean_start: clean,
        keep_alive: 60,
        session_expiry_interval_secs: if clean { 0 } else { 3600 },
        client_id: format!("{device}_0_0_{TS}").into(),
        username: Some(device.clone().into()),
        password: Some(Bytes::from(pw.into_bytes())),
        last_will: will.map(|payload| v5::LastWill {
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("$oc/devices/{device}/sys/messages/up").into(),
            message: Bytes::from(payload.to_owned().into_bytes()),
            will_delay_interval_sec: None,
            correlation_data: None,
            message_expiry_interval: None,
            content_type: None,
            user_properties: Vec::new(),
            is_utf8_payload: None,
            response_topic: None,
        }),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    mqtt::encode(&v5::Packet::Connect(Box::new(c)), version, &mut out).unwrap();
    out.to_vec()
}

fn subscribe_frame(version: Version, filter: &str, qos: QoS) -> Vec<u8> {
    let s = v5::Subscribe {
        packet_id: std::num::NonZeroU16::new(1).unwrap(),
        id: None,
        user_properties: Vec::new(),
        topic_filters: vec![(
            filter.into(),
            v5::SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    };
    let mut out = BytesMut::new();
    mqtt::encode(&v5::Packet::Subscribe(s), version, &mut out).unwrap();
    out.to_vec()
}

fn connack_code(p: &[v5::Packet]) -> Option<(u8, bool)> {
    p.iter().find_map(|p| match p {
        v5::Packet::ConnectAck(a) => Some((u8::from(a.reason_code), a.session_present)),
        _ => None,
    })
}

fn disconnect_code(p: &[v5::Packet]) -> Option<u8> {
    p.iter().find_map(|p| match p {
        v5::Packet::Disconnect(d) => Some(u8::from(d.reason_code)),
        _ => None,
    })
}

#[test]
fn connect_publish_and_disconnect_produce_upstream_events() {
    let mut c = Cluster::new(1, EngineConfig::default(), 100);
    let id = c.connect(0, "d1", Version::V311, true, None);
    assert_eq!(
        connack_code(&c.packets(0, id, Version::V311)),
        Some((0, false))
    );
    let dev = DeviceId::new(device("d1")).unwrap();
    assert!(c.shared.registry.is_online(&dev));
    c.feed(
        0,
        id,
        &[
            0x30, 0x0f, 0x00, 0x03, b'/', b'x', b'y', b'h', b'e', b'l', b'l', b'o', b'!', b'!',
            b'!', b'!', b'!',
        ],
    );
    // Not allowed (fully custom topic, no rule): nothing goes upstream.
    let topic = format!("$oc/devices/{}/sys/messages/up", device("d1"));
    let mut p = vec![0x30, 0];
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p.extend(b"hi");
    p[1] = (p.len() - 2) as u8;
    c.feed(0, id, &p);
    c.feed(0, id, &[0xe0, 0x00]);
    let events = c.events();
    assert!(
        matches!(&events[0], UpstreamEvent::Connected(e) if e.device_id == dev && e.protocol == 4)
    );
    assert!(
        matches!(&events[1], UpstreamEvent::Published(p) if &p.payload[..] == b"hi" && !p.will)
    );
    assert!(
        matches!(&events[2], UpstreamEvent::Disconnected(d) if d.reason == CloseReason::ClientDisconnect && !d.session_kept)
    );
    assert_eq!(events.len(), 3);
    assert!(!c.shared.registry.is_online(&dev));
    assert_eq!(c.cores[0].connections(), 0, "the slot was released");
}

#[test]
fn takeover_across_shards_hands_the_persistent_session_over() {
    let mut c = Cluster::new(2, EngineConfig::default(), 100);
    let a = c.connect(0, "d1", Version::V5, false, None);
    let filter = format!("$oc/devices/{}/sys/commands/#", device("d1"));
    c.feed(
        0,
        a,
        &subscribe_frame(Version::V5, &filter, QoS::AtLeastOnce),
    );
    c.packets(0, a, Version::V5);
    let b = c.connect(1, "d1", Version::V5, false, None);
    assert_eq!(
        disconnect_code(&c.packets(0, a, Version::V5)),
        Some(0x8e),
        "the old connection hears why"
    );
    assert_eq!(
        connack_code(&c.packets(1, b, Version::V5)),
        Some((0, true)),
        "the session was handed over"
    );
    let dev = DeviceId::new(device("d1")).unwrap();
    let cmd = format!("$oc/devices/{}/sys/commands/request_id=1", device("d1"));
    c.shared
        .deliver(
            &dev,
            Downlink {
                topic: cmd.into(),
                payload: Bytes::from_static(b"{}"),
                qos: QoS::AtLeastOnce,
            },
        )
        .unwrap();
    c.settle();
    let got = c.packets(1, b, Version::V5);
    assert!(
        matches!(got.as_slice(), [v5::Packet::Publish(p)] if p.qos == QoS::AtLeastOnce),
        "{got:?}"
    );
    let reasons: Vec<_> = c
        .events()
        .into_iter()
        .filter_map(|e| match e {
            UpstreamEvent::Disconnected(d) => Some(d.reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [CloseReason::TakenOver]);
}

#[test]
fn a_clean_takeover_on_the_same_shard_starts_afresh() {
    let mut c = Cluster::new(1, EngineConfig::default(), 100);
    let a = c.connect(0, "d1", Version::V311, false, None);
    c.packets(0, a, Version::V311);
    let b = c.connect(0, "d1", Version::V311, true, None);
    assert!(
        c.packets(0, a, Version::V311).is_empty(),
        "3.1.1 gets no DISCONNECT"
    );
    assert_eq!(
        connack_code(&c.packets(0, b, Version::V311)),
        Some((0, false))
    );
}

#[test]
fn an_offline_persistent_session_queues_qos1_until_the_device_returns() {
    let mut c = Cluster::new(1, EngineConfig::default(), 100);
    let a = c.connect(0, "d1", Version::V311, false, None);
    let filter = format!("$oc/devices/{}/sys/messages/down", device("d1"));
    c.feed(
        0,
        a,
        &subscribe_frame(Version::V311, &filter, QoS::AtLeastOnce),
    );
    c.cores[0].on_hangup(a, false, &mut c.io[0]);
    c.settle();
    let dev = DeviceId::new(device("d1")).unwrap();
    let r = c.shared.registry.get(&dev).expect("the session is kept");
    assert!(!r.live);
    let down = format!("$oc/devices/{}/sys/messages/down", device("d1"));
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        c.shared
            .deliver(
                &dev,
                Downlink {
                    topic: down.clone().into(),
                    payload: Bytes::from_static(b"m"),
                    qos,
                },
            )
            .unwrap();
    }
    c.settle();
    let b = c.connect(0, "d1", Version::V311, false, None);
    let got = c.packets(0, b, Version::V311);
    assert_eq!(connack_code(&got), Some((0, true)));
    let publishes: Vec<_> = got
        .iter()
        .filter(|p| matches!(p, v5::Packet::Publish(_)))
        .collect();
    assert_eq!(publishes.len(), 1, "QoS 1 was kept, QoS 0 was not: {got:?}");
}

/// Messages on their way to a session while it moves — its connection drops and it detaches,
/// then a connection on another shard resumes it — follow it and arrive in order.
#[test]
fn messages_follow_a_session_that_moves() {
    let mut c = Cluster::new(2, EngineConfig::default(), 100);
    let dev = DeviceId::new(device("d1")).unwrap();
    let down = format!("$oc/devices/{}/sys/messages/down", device("d1"));
    let msg = |n: &'static [u8]| Downlink {
        topic: down.clone().into(),
        payload: Bytes::from_static(n),
        qos: QoS::AtLeastOnce,
    };
    let a = c.connect(0, "d1", Version::V5, false, None);
    c.feed(0, a, &subscribe_frame(Version::V5, &down, QoS::AtLeastOnce));
    c.packets(0, a, Version::V5);

    // 1: addressed to the connection, which is gone (detached) when the message arrives.
    c.shared.deliver(&dev, msg(b"1")).unwrap();
    c.cores[0].on_hangup(a, false, &mut c.io[0]);
    // 2: addressed to the detached session.
    c.settle();
    c.shared.deliver(&dev, msg(b"2")).unwrap();
    c.settle();

    // The device comes back on shard 1. Once it is authenticated it owns the registry entry
    // while its session is still being handed over from shard 0.
    let b = c.accept(1);
    c.cores[1].on_read(
        b,
        &connect_frame(Version::V5, "d1", false, None),
        &mut c.io[1],
    );
    // (The credentials are cached since the first connection: no storage job, no wait.)
    c.run_jobs();
    c.cores[1].poll(&mut c.io[1]);
    let now = c.shared.registry.get(&dev).unwrap();
    assert_eq!((now.shard, now.slot, now.live), (1, b.slot, true));
    // 3: addressed to the new connection before it has its session and has sent CONNACK.
    c.shared.deliver(&dev, msg(b"3")).unwrap();
    c.settle();

    let got = c.packets(1, b, Version::V5);
    assert_eq!(connack_code(&got), Some((0, true)), "{got:?}");
    let payloads: Vec<_> = got
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, [&b"1"[..], b"2", b"3"]);
    assert_eq!(
        c.shared
            .metrics
            .iter()
            .map(|m| m.get(crate::metrics::Counter::Undeliverable))
            .sum::<u64>(),
        0
    );
}

#[test]
fn detached_sessions_expire() {
    let mut config = EngineConfig::default();
    config.session.max_session_expiry_secs = 1;
    let mut c = Cluster::new(1, config, 100);
    let a = c.connect(0, "d1", Version::V311, false, None);
    c.cores[0].on_hangup(a, false, &mut c.io[0]);
    c.settle();
    let dev = DeviceId::new(device("d1")).unwrap();
    assert!(c.shared.registry.get(&dev).is_some());
    std::thread::sleep(std::time::Duration::from_millis(1200));
    c.settle();
    assert!(c.shared.registry.get(&dev).is_none());
}

#[test]
fn a_will_goes_upstream_when_the_connection_is_lost_and_reaches_a_granted_subscriber() {
    let mut c = Cluster::new(2, EngineConfig::default(), 100);
    c.storage
        .put_acl_rule(
            &serde_json::from_value(serde_json::json!({
                "acl_rule_id": "mon", "app_id": "default",
                "scope": {"type": "device_id", "value": device("monitor")},
                "topic": "$oc/devices/+/sys/messages/up", "action": "subscribe", "access": "allow"
            }))
            .unwrap(),
        )
        .unwrap();
    c.shared.acl.store(Arc::new(crate::acl::AclRules::new(
        c.storage.list_acl_rules(None, 10).unwrap().items,
    )));
    let m = c.connect(1, "monitor", Version::V5, true, None);
    c.feed(
        1,
        m,
        &subscribe_frame(
            Version::V5,
            "$oc/devices/+/sys/messages/up",
            QoS::AtLeastOnce,
        ),
    );
    let suback = c.packets(1, m, Version::V5);
    assert!(suback.iter().any(|p| matches!(p, v5::Packet::SubscribeAck(a) if a.status == [v5::SubscribeAckReason::GrantedQos1])), "{suback:?}");
    let d = c.connect(0, "d1", Version::V311, true, Some("gone"));
    c.cores[0].on_hangup(d, true, &mut c.io[0]);
    c.settle();
    let wills: Vec<_> = c
        .events()
        .into_iter()
        .filter_map(|e| match e {
            UpstreamEvent::Published(p) if p.will => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(wills.len(), 1);
    // The router runs in the dispatcher; play it here.
    use crate::upstream::UpstreamHandler;
    c.shared
        .router
        .handle(&UpstreamEvent::Published(wills[0].clone()));
    c.settle();
    let got = c.packets(1, m, Version::V5);
    assert!(
        matches!(got.as_slice(), [v5::Packet::Publish(p)] if &p.payload[..] == b"gone"),
        "{got:?}"
    );
}

#[test]
fn over_the_connection_limit_clients_hear_server_busy() {
    let mut c = Cluster::new(1, EngineConfig::default(), 1);
    let a = c.connect(0, "d1", Version::V5, true, None);
    assert_eq!(
        connack_code(&c.packets(0, a, Version::V5)),
        Some((0, false))
    );
    let b = c.connect(0, "d2", Version::V5, true, None);
    assert_eq!(
        connack_code(&c.packets(0, b, Version::V5)),
        Some((0x89, false))
    );
    let b3 = c.connect(0, "d2", Version::V311, true, None);
    assert_eq!(
        connack_code(&c.packets(0, b3, Version::V311)),
        Some((0x88, false)),
        "3.1.1 hears 0x03"
    );
}

#[test]
fn over_the_connect_rate_clients_hear_0x9f() {
    let mut config = EngineConfig::default();
    config.flow.listener_connects_per_sec = 1;
    config.flow.listener_connect_burst = 1;
    let mut c = Cluster::new(1, config, 100);
    let a = c.connect(0, "d1", Version::V5, true, None);
    assert_eq!(
        connack_code(&c.packets(0, a, Version::V5)),
        Some((0, false))
    );
    let b = c.connect(0, "d2", Version::V5, true, None);
    assert_eq!(
        connack_code(&c.packets(0, b, Version::V5)),
        Some((0x9f, false))
    );
}

#[test]
fn a_full_upstream_queue_stops_reading_until_there_is_room() {
    let config = EngineConfig {
        upstream_capacity: 16,
        upstream_policy: UpstreamPolicy::Backpressure,
        ..Default::default()
    };
    let mut c = Cluster::new(1, config, 100);
    let a = c.connect(0, "d1", Version::V311, true, None);
    let topic = format!("$oc/devices/{}/sys/messages/up", device("d1"));
    let mut p = vec![0x30, 0];
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p.extend(b"x");
    p[1] = (p.len() - 2) as u8;
    let burst: Vec<u8> = p.iter().copied().cycle().take(p.len() * 40).collect();
    c.feed(0, a, &burst);
    assert_eq!(c.io[0].reading.get(&a), Some(&false), "reading stopped");
    let first: usize = c.events().len();
    assert!(first <= 16);
    c.settle();
    let mut total = first;
    for _ in 0..20 {
        total += c.events().len();
        c.settle();
    }
    assert_eq!(total, 1 + 40, "every publication arrived, none was dropped");
    assert_eq!(c.io[0].reading.get(&a), Some(&true), "reading resumed");
}

#[test]
fn kick_and_shutdown_say_why() {
    let mut c = Cluster::new(1, EngineConfig::default(), 100);
    let a = c.connect(0, "d1", Version::V5, true, None);
    let b = c.connect(0, "d2", Version::V5, true, None);
    c.packets(0, a, Version::V5);
    c.packets(0, b, Version::V5);
    let dev = DeviceId::new(device("d1")).unwrap();
    let target = c.shared.registry.get(&dev).unwrap();
    c.shared
        .shard(0)
        .unwrap()
        .send(super::ShardMsg::Kick {
            device: dev,
            target,
            reason: CloseReason::Kicked,
        })
        .unwrap();
    c.settle();
    assert_eq!(disconnect_code(&c.packets(0, a, Version::V5)), Some(0x98));
    c.shared
        .shard(0)
        .unwrap()
        .send(super::ShardMsg::Shutdown)
        .unwrap();
    c.settle();
    assert_eq!(disconnect_code(&c.packets(0, b, Version::V5)), Some(0x8b));
    assert!(c.cores[0].is_stopped());
}

mod ops;
