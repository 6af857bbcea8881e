//! The shard side of the application API's operations ([`crate::ops`]): listings, inspection,
//! proxy subscriptions under the ACL, publications and counts, over the in-memory harness.

use crossbeam_channel::Receiver;
use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_model::{AppId, DeviceId};

use super::*;
use crate::ops::{OpsError, OpsRequest, SessionFilter, SessionInfo, ShardCounts, SubscribeOutcome};
use crate::registry::SessionRef;

fn ask<T>(
    c: &mut Cluster,
    shard: u16,
    make: impl FnOnce(crossbeam_channel::Sender<T>) -> OpsRequest,
) -> T {
    let (tx, rx): (_, Receiver<T>) = crossbeam_channel::bounded(1);
    c.shared
        .shard(shard)
        .unwrap()
        .send(super::super::ShardMsg::Ops(Box::new(make(tx))))
        .unwrap();
    c.settle();
    rx.try_recv().expect("the shard answered")
}

fn dev(node: &str) -> DeviceId {
    DeviceId::new(device(node)).unwrap()
}

fn target(c: &Cluster, node: &str) -> SessionRef {
    c.shared.registry.get(&dev(node)).unwrap()
}

fn list(
    c: &mut Cluster,
    shard: u16,
    filter: SessionFilter,
    after: Option<&str>,
) -> Vec<SessionInfo> {
    let after = after.map(dev);
    ask(c, shard, |reply| OpsRequest::List {
        filter,
        after,
        limit: 10,
        reply,
    })
}

fn subscribe(
    c: &mut Cluster,
    node: &str,
    filter: &str,
    qos: Option<QoS>,
) -> Result<Option<SubscribeOutcome>, OpsError> {
    let t = target(c, node);
    ask(c, t.shard, |reply| OpsRequest::Subscribe {
        target: t,
        filter: ByteString::from(filter),
        qos,
        reply,
    })
}

fn publish(c: &mut Cluster, node: &str, app: &str, topic: &str) -> bool {
    let t = target(c, node);
    ask(c, t.shard, |reply| OpsRequest::Publish {
        target: t,
        app: AppId::new(app).unwrap(),
        msg: Downlink {
            topic: ByteString::from(topic),
            payload: Bytes::from_static(b"from the api"),
            qos: QoS::AtLeastOnce,
        },
        reply,
    })
}

fn got_publish(c: &mut Cluster, shard: usize, id: ConnId, topic: &str) -> bool {
    c.packets(shard, id, Version::V5)
        .iter()
        .any(|p| matches!(p, v5::Packet::Publish(p) if p.topic == topic))
}

#[test]
fn established_sessions_are_listed_inspected_and_counted() {
    let mut c = Cluster::new(2, EngineConfig::default(), 100);
    c.connect(0, "d1", Version::V5, true, None);
    c.connect(0, "d2", Version::V311, true, None);
    c.connect(1, "monitor", Version::V5, true, None);
    // A socket that never authenticates is not a session.
    c.accept(0);

    let all = list(&mut c, 0, SessionFilter::default(), None);
    let ids: Vec<_> = all.iter().map(|s| s.device_id.to_string()).collect();
    assert_eq!(ids, [device("d1"), device("d2")]);
    let d2 = &all[1];
    assert_eq!((d2.protocol, d2.keepalive_secs, d2.shard), (4, 60, 0));
    assert_eq!(d2.client_id, format!("{}_0_0_{TS}", device("d2")));
    assert!(d2.connected_at > Timestamp::EPOCH);
    assert_eq!(d2.app_id, testing::app());

    let after = list(&mut c, 0, SessionFilter::default(), Some("d1"));
    assert_eq!(after.len(), 1);
    let filtered = SessionFilter {
        client_id: Some("_d1_".into()),
        ..Default::default()
    };
    assert_eq!(list(&mut c, 0, filtered, None).len(), 1);
    let other_app = SessionFilter {
        app_id: Some(AppId::new("other").unwrap()),
        ..Default::default()
    };
    assert!(list(&mut c, 0, other_app, None).is_empty());
    let other_ip = SessionFilter {
        ip: Some("10.0.0.1".parse().unwrap()),
        ..Default::default()
    };
    assert!(list(&mut c, 0, other_ip, None).is_empty());

    let t = target(&c, "monitor");
    let info: Option<SessionInfo> =
        ask(&mut c, 1, |reply| OpsRequest::Inspect { target: t, reply });
    assert_eq!(info.map(|i| i.device_id), Some(dev("monitor")));

    let counts: ShardCounts = ask(&mut c, 0, |reply| OpsRequest::Count { app: None, reply });
    assert_eq!(counts.online, 2);
    assert_eq!(counts.per_product.values().sum::<u64>(), 2);
    let none: ShardCounts = ask(&mut c, 0, |reply| OpsRequest::Count {
        app: Some(AppId::new("other").unwrap()),
        reply,
    });
    assert_eq!(none, ShardCounts::default());
}

#[test]
fn proxy_subscriptions_follow_the_acl_and_route_publications() {
    let mut c = Cluster::new(2, EngineConfig::default(), 100);
    let m = c.connect(1, "monitor", Version::V5, true, None);
    c.connect(0, "d2", Version::V5, true, None);
    c.packets(1, m, Version::V5);
    let up = "$oc/devices/+/sys/messages/up";
    let topic = format!("$oc/devices/{}/sys/messages/up", device("d2"));

    // Without a rule, a filter outside the device's tree is refused; a bad filter is invalid.
    assert_eq!(
        subscribe(&mut c, "monitor", up, Some(QoS::AtLeastOnce)),
        Err(OpsError::NotAuthorized)
    );
    assert_eq!(
        subscribe(&mut c, "monitor", "a/#/b", Some(QoS::AtMostOnce)),
        Err(OpsError::InvalidFilter)
    );
    assert_eq!(
        subscribe(&mut c, "monitor", "$share/g/x", Some(QoS::AtMostOnce)),
        Err(OpsError::InvalidFilter)
    );

    // A rule applies at once to the live session.
    c.shared.acl.store(Arc::new(crate::acl::AclRules::new(vec![
        serde_json::from_value(serde_json::json!({
            "acl_rule_id": "mon", "app_id": "default",
            "scope": {"type": "device_id", "value": device("monitor")},
            "topic": up, "action": "subscribe", "access": "allow"
        }))
        .unwrap(),
    ])));
    let granted = subscribe(&mut c, "monitor", up, Some(QoS::ExactlyOnce))
        .unwrap()
        .unwrap();
    assert_eq!(
        granted,
        SubscribeOutcome {
            granted: QoS::ExactlyOnce,
            replaced: false
        }
    );
    assert!(
        subscribe(&mut c, "monitor", up, Some(QoS::AtLeastOnce))
            .unwrap()
            .unwrap()
            .replaced
    );
    assert_eq!(
        c.shared
            .router
            .subscribers(&topic, &AppId::new("default").unwrap(), None),
        vec![(dev("monitor"), QoS::AtLeastOnce)],
        "the granted filter is routed"
    );
    assert!(
        c.packets(1, m, Version::V5).is_empty(),
        "no SUBACK for a proxy subscription"
    );

    // A publication reaches the subscribed session, only for its own application.
    assert!(publish(&mut c, "monitor", "default", &topic));
    assert!(got_publish(&mut c, 1, m, &topic));
    assert!(!publish(&mut c, "monitor", "other", &topic));
    assert!(!got_publish(&mut c, 1, m, &topic));

    // Unsubscribed: the route goes, publications no longer reach it.
    assert!(subscribe(&mut c, "monitor", up, None).unwrap().is_some());
    assert_eq!(
        subscribe(&mut c, "monitor", up, None),
        Ok(None),
        "already gone"
    );
    assert!(
        c.shared
            .router
            .subscribers(&topic, &AppId::new("default").unwrap(), None)
            .is_empty()
    );
    assert!(!publish(&mut c, "monitor", "default", &topic));

    // Implicit downlink topics of the device's own tree are always received.
    let down = format!("$oc/devices/{}/sys/messages/down", device("monitor"));
    assert!(publish(&mut c, "monitor", "default", &down));
    assert!(got_publish(&mut c, 1, m, &down));

    let counts: ShardCounts = ask(&mut c, 1, |reply| OpsRequest::Count { app: None, reply });
    assert_eq!((counts.online, counts.subscriptions), (1, 0));

    // A session that is gone answers offline.
    let stale = target(&c, "monitor");
    c.cores[1].on_hangup(m, false, &mut c.io[1]);
    c.settle();
    let r: Result<Option<SubscribeOutcome>, OpsError> =
        ask(&mut c, 1, |reply| OpsRequest::Subscribe {
            target: stale,
            filter: ByteString::from(up),
            qos: Some(QoS::AtMostOnce),
            reply,
        });
    assert_eq!(r, Err(OpsError::Offline));
}
