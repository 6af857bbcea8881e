//! The platform driven directly with constructed upstream events over the memory store, with
//! a recorder in place of the device sessions and an observer collecting platform events.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_model::device::{Credential, DeviceSecret, NodeType};
use fleetgate_model::topic::RequestKind;
use fleetgate_model::{DeviceId, ServiceId, Timestamp, testing};
use fleetgate_storage::{DeviceStore, Durability, MemStore, ProductStore, Storage, StorageError};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::*;
use crate::upstream::{Connected, Disconnected};

/// Device sessions as a recorder: which devices are online, what was delivered.
#[derive(Default)]
struct Sessions {
    online: Mutex<HashSet<DeviceId>>,
    sent: Mutex<Vec<(DeviceId, Downlink)>>,
    busy: AtomicBool,
}

impl Deliver for Sessions {
    fn deliver(&self, device: &DeviceId, msg: Downlink) -> Result<(), DeliverError> {
        if self.busy.load(Ordering::Relaxed) {
            return Err(DeliverError::Busy);
        }
        if !self.online.lock().contains(device) {
            return Err(DeliverError::Offline);
        }
        self.sent.lock().push((device.clone(), msg));
        Ok(())
    }

    fn is_online(&self, device: &DeviceId) -> bool {
        self.online.lock().contains(device)
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<PlatformEvent>>);

impl PlatformObserver for Events {
    fn on_event(&self, ev: &PlatformEvent) {
        self.0.lock().push(ev.clone());
    }
}

struct Fixture {
    platform: Platform,
    sessions: Arc<Sessions>,
    events: Arc<Events>,
    storage: Arc<dyn Storage>,
}

const RECEIVED: Timestamp = Timestamp::from_millis(1_600_000_000_000);

fn id(node: &str) -> DeviceId {
    DeviceId::new(format!("water_meter_{node}")).unwrap()
}

fn svc() -> ServiceId {
    ServiceId::new("WaterMeter").unwrap()
}

/// A store with the water meter product, direct devices `d1` and `other`, gateway `gw` and
/// its sub-device `sub`; `d1` and `gw` are online.
fn fixture() -> Fixture {
    let store = MemStore::in_memory();
    let product = testing::water_meter();
    store.create_product(&product).unwrap();
    let cred = Credential::Secret(DeviceSecret::new("s3cret-value").unwrap());
    for node in ["d1", "other", "gw"] {
        store
            .create_device(&testing::device(&product, node), &cred)
            .unwrap();
    }
    let mut sub = testing::device(&product, "sub");
    sub.gateway_id = id("gw");
    sub.node_type = NodeType::Endpoint;
    store.create_device(&sub, &cred).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(store);
    let sessions = Arc::new(Sessions::default());
    sessions.online.lock().extend([id("d1"), id("gw")]);
    let platform = Platform::new(
        Arc::clone(&storage),
        Arc::clone(&sessions) as Arc<dyn Deliver>,
        PlatformConfig::default(),
    );
    let events = Arc::new(Events::default());
    platform.observe(Arc::clone(&events) as Arc<dyn PlatformObserver>);
    Fixture {
        platform,
        sessions,
        events,
        storage,
    }
}

impl Fixture {
    /// `device` publishes `payload` on its own `sys/{suffix}`.
    fn publish(&self, device: &DeviceId, suffix: &str, payload: impl Into<Bytes>) {
        let p = Published {
            device_id: device.clone(),
            app_id: testing::app(),
            topic: format!("$oc/devices/{device}/sys/{suffix}").into(),
            payload: payload.into(),
            qos: 1,
            will: false,
            at: RECEIVED,
        };
        self.platform.handle(&UpstreamEvent::Published(p));
    }

    fn publish_json(&self, device: &DeviceId, suffix: &str, v: Value) {
        self.publish(device, suffix, v.to_string());
    }

    fn connect(&self, device: &DeviceId) {
        self.sessions.online.lock().insert(device.clone());
        self.platform.handle(&UpstreamEvent::Connected(Connected {
            device_id: device.clone(),
            client_id: format!("{device}_0_0_2019120219"),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            protocol: 4,
            keepalive_secs: 60,
            session_present: false,
            at: RECEIVED,
        }));
    }

    /// Deliveries so far, as (session, topic, JSON payload); clears the record.
    fn take_sent(&self) -> Vec<(DeviceId, String, Value)> {
        std::mem::take(&mut *self.sessions.sent.lock())
            .into_iter()
            .map(|(d, m)| {
                assert_eq!(m.qos, QoS::AtLeastOnce, "downlinks are offered at QoS 1");
                let v = serde_json::from_slice(&m.payload).unwrap();
                (d, m.topic.to_string(), v)
            })
            .collect()
    }

    fn take_events(&self) -> Vec<PlatformEvent> {
        std::mem::take(&mut *self.events.0.lock())
    }

    fn shadow(&self, device: &DeviceId) -> fleetgate_model::shadow::Shadow {
        self.storage.get_shadow(device).unwrap()
    }

    fn set_desired(&self, device: &DeviceId, v: Value) {
        let Value::Object(props) = v else {
            panic!("desired must be an object")
        };
        self.storage
            .update_shadow(device, Durability::Synced, &mut |s| {
                s.set_desired(&svc(), &props, None, RECEIVED)
                    .map(drop)
                    .map_err(StorageError::abort)
            })
            .unwrap();
    }
}

fn report(props: Value) -> Value {
    json!({"services": [{"service_id": "WaterMeter", "properties": props, "event_time": "20151212T121212Z"}]})
}

fn poll(p: &mut PendingResponse) -> Poll<Result<DeviceResponse, ResponseError>> {
    Pin::new(p).poll(&mut Context::from_waker(Waker::noop()))
}

/// The request id in a request topic `…/request_id={rid}`.
fn rid(topic: &str) -> String {
    topic.rsplit_once("request_id=").unwrap().1.to_owned()
}

#[test]
fn a_valid_report_updates_the_shadow_and_emits_an_event() {
    let f = fixture();
    let d1 = id("d1");
    f.publish_json(
        &d1,
        "properties/report",
        report(json!({"temperature": 21, "flow": "12.5"})),
    );
    let shadow = f.shadow(&d1);
    let s = &shadow.services[&svc()];
    assert_eq!(s.version, 1);
    let reported = s.reported.as_ref().unwrap();
    assert_eq!(reported.properties["temperature"], json!(21));
    assert_eq!(
        reported.event_time,
        Timestamp::parse_compact("20151212T121212Z").unwrap()
    );
    let events = f.take_events();
    let [PlatformEvent::PropertiesReported(ev)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!((&ev.device_id, ev.gateway_id.as_ref()), (&d1, None));
    assert_eq!(ev.product_id.as_str(), "water_meter");
    assert_eq!(
        (ev.services[0].shadow_version, ev.received_at),
        (1, RECEIVED)
    );
    f.publish_json(&d1, "properties/report", report(json!({"state": "open"})));
    assert_eq!(f.shadow(&d1).services[&svc()].version, 2);
    let c = f.platform.counters();
    assert_eq!(c.report_count(ReportOutcome::Accepted), 2);
    assert!(
        f.take_sent().is_empty(),
        "no desired values, nothing pushed"
    );
}

#[test]
fn an_invalid_report_stores_nothing_and_is_counted() {
    let f = fixture();
    let d1 = id("d1");
    let body = json!({"services": [
        {"service_id": "WaterMeter", "properties": {"temperature": 21}},
        {"service_id": "WaterMeter", "properties": {"temperature": 1000}}
    ]});
    f.publish_json(&d1, "properties/report", body);
    f.publish_json(&d1, "properties/report", report(json!({"ghost": 1})));
    let unknown = json!({"services": [{"service_id": "Nope", "properties": {"x": 1}}]});
    f.publish_json(&d1, "properties/report", unknown);
    assert!(f.shadow(&d1).services.is_empty());
    assert!(f.take_events().is_empty());
    let c = f.platform.counters();
    assert_eq!(c.invalid_count(PayloadKind::PropertiesReport), 3);
    assert_eq!(c.report_count(ReportOutcome::Invalid), 3);
}

#[test]
fn malformed_payloads_are_counted_and_never_panic() {
    let f = fixture();
    let d1 = id("d1");
    let payloads: [&[u8]; 7] = [
        b"",
        b"not json",
        b"[1, 2]",
        b"\xff\xfe\x00",
        br#"{"services": 5}"#,
        br#"{"services": [{"service_id": 7, "properties": []}]}"#,
        br#"{"devices": [{"device_id": "a b", "services": []}], "object_device_id": {}}"#,
    ];
    let suffixes = [
        "properties/report",
        "gateway/sub_devices/properties/report",
        "events/up",
        "messages/up",
        "shadow/get/request_id=1",
        "commands/response/request_id=nobody",
    ];
    for suffix in suffixes {
        for p in payloads {
            f.publish(&d1, suffix, Bytes::copy_from_slice(p));
        }
    }
    let c = f.platform.counters();
    assert_eq!(c.invalid_count(PayloadKind::PropertiesReport), 7);
    assert_eq!(c.invalid_count(PayloadKind::GatewayReport), 7);
    assert_eq!(c.invalid_count(PayloadKind::EventsUp), 7);
    // An empty shadow get asks for everything, and unknown fields are ignored: three are
    // answered, the other four refused.
    assert_eq!(c.invalid_count(PayloadKind::ShadowGet), 4);
    assert_eq!(c.shadow_get_count(ShadowGetOutcome::Answered), 3);
    assert_eq!(c.unmatched_count(), 7);
    assert_eq!(c.messages_up_count(), 7, "messages are opaque");
    assert!(f.shadow(&d1).services.is_empty());
}

#[test]
fn a_gateway_report_applies_its_sub_devices_and_refuses_others() {
    let f = fixture();
    let (gw, sub, other) = (id("gw"), id("sub"), id("other"));
    let body = json!({"devices": [
        {"device_id": sub, "services": [{"service_id": "WaterMeter", "properties": {"temperature": 5}}]},
        {"device_id": other, "services": [{"service_id": "WaterMeter", "properties": {"temperature": 6}}]},
        {"device_id": "water_meter_ghost", "services": [{"service_id": "WaterMeter", "properties": {"temperature": 7}}]},
        {"device_id": gw, "services": [{"service_id": "WaterMeter", "properties": {"temperature": 999}}]}
    ]});
    f.publish_json(&gw, "gateway/sub_devices/properties/report", body);
    assert_eq!(f.shadow(&sub).services[&svc()].version, 1);
    assert!(f.shadow(&other).services.is_empty());
    assert!(f.shadow(&gw).services.is_empty());
    let c = f.platform.counters();
    assert_eq!(c.report_count(ReportOutcome::Accepted), 1);
    assert_eq!(c.report_count(ReportOutcome::NotSubDevice), 1);
    assert_eq!(c.report_count(ReportOutcome::UnknownDevice), 1);
    assert_eq!(c.report_count(ReportOutcome::Invalid), 1);
    assert_eq!(c.invalid_count(PayloadKind::GatewayReport), 1);
    let events = f.take_events();
    let [PlatformEvent::PropertiesReported(ev)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!((&ev.device_id, ev.gateway_id.as_ref()), (&sub, Some(&gw)));
}

#[test]
fn a_gateway_batch_over_the_limit_is_refused() {
    let f = fixture();
    let entry = json!({"device_id": id("sub"), "services": [{"service_id": "WaterMeter", "properties": {"temperature": 5}}]});
    let devices = vec![entry; 101];
    f.publish_json(
        &id("gw"),
        "gateway/sub_devices/properties/report",
        json!({ "devices": devices }),
    );
    assert!(f.shadow(&id("sub")).services.is_empty());
    let c = f.platform.counters();
    assert_eq!(c.report_count(ReportOutcome::BatchTooLarge), 1);
}

#[test]
fn time_sync_is_answered_on_events_down() {
    let f = fixture();
    let d1 = id("d1");
    let req = json!({"object_device_id": d1, "services": [{"service_id": "$time_sync",
        "event_type": "time_sync_request", "event_time": "20151212T121212Z",
        "paras": {"device_send_time": 1582685678789_i64}}]});
    f.publish_json(&d1, "events/up", req);
    let sent = f.take_sent();
    let [(to, topic, body)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(to, &d1);
    assert_eq!(topic, &format!("$oc/devices/{d1}/sys/events/down"));
    assert_eq!(body["object_device_id"], json!(d1));
    let ev = &body["services"][0];
    assert_eq!(
        (ev["service_id"].as_str(), ev["event_type"].as_str()),
        (Some("$time_sync"), Some("time_sync_response"))
    );
    let paras = &ev["paras"];
    assert_eq!(paras["device_send_time"], json!(1582685678789_i64));
    assert_eq!(paras["server_rcv_time"], json!(RECEIVED.as_millis()));
    let send = paras["server_send_time"].as_i64().unwrap();
    assert!(send >= RECEIVED.as_millis(), "{send}");
    let c = f.platform.counters();
    assert_eq!(c.event_count(EventOutcome::TimeSync), 1);
}

#[test]
fn a_request_is_delivered_and_completed_by_its_response() {
    let f = fixture();
    let d1 = id("d1");
    let body =
        json!({"service_id": "WaterMeter", "command_name": "ON_OFF", "paras": {"value": "ON"}});
    let mut pending = f
        .platform
        .request(&d1, RequestKind::Command, body.clone())
        .unwrap();
    assert!(poll(&mut pending).is_pending());
    let sent = f.take_sent();
    let [(to, topic, payload)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    let request_id = pending.request_id().to_string();
    assert_eq!(to, &d1);
    assert_eq!(
        topic,
        &format!("$oc/devices/{d1}/sys/commands/request_id={request_id}")
    );
    assert_eq!(payload, &body);
    assert_eq!(f.platform.outstanding(), 1);
    // An answer on another kind's topic does not match.
    f.publish_json(
        &d1,
        &format!("properties/set/response/request_id={request_id}"),
        json!({}),
    );
    assert!(poll(&mut pending).is_pending());
    let answer =
        json!({"result_code": 1, "response_name": "COMMAND_RESPONSE", "paras": {"result": "busy"}});
    f.publish_json(
        &d1,
        &format!("commands/response/request_id={request_id}"),
        answer.clone(),
    );
    let Poll::Ready(Ok(resp)) = poll(&mut pending) else {
        panic!("no answer")
    };
    assert_eq!(
        (resp.kind, resp.body, resp.success),
        (RequestKind::Command, answer, false)
    );
    assert_eq!(f.platform.outstanding(), 0);
    let c = f.platform.counters();
    assert_eq!(c.sent_count(RequestLabel::Command), 1);
    assert_eq!(c.answered_count(RequestLabel::Command), 1);
    assert_eq!(c.unmatched_count(), 1);
}

#[test]
fn a_malformed_answer_completes_the_waiter_with_an_error() {
    let f = fixture();
    let d1 = id("d1");
    let mut pending = f
        .platform
        .request(
            &d1,
            RequestKind::PropertiesGet,
            json!({"service_id": "WaterMeter"}),
        )
        .unwrap();
    let suffix = format!(
        "properties/get/response/request_id={}",
        pending.request_id()
    );
    f.publish_json(&d1, &suffix, json!({"services": "none"}));
    assert!(matches!(
        pending.try_response(),
        Some(Err(ResponseError::Malformed(_)))
    ));
    let c = f.platform.counters();
    assert_eq!(c.invalid_count(PayloadKind::PropertiesGetResponse), 1);
}

#[test]
fn an_unmatched_response_is_counted_and_dropping_the_waiter_removes_it() {
    let f = fixture();
    let d1 = id("d1");
    let pending = f
        .platform
        .request(
            &d1,
            RequestKind::PropertiesSet,
            json!({"services": [{"service_id": "WaterMeter", "properties": {"temperature": 30}}]}),
        )
        .unwrap();
    let request_id = pending.request_id().clone();
    assert_eq!(f.platform.outstanding(), 1);
    drop(pending);
    assert_eq!(f.platform.outstanding(), 0);
    assert_eq!(f.platform.requests.devices(), 0, "nothing left behind");
    f.publish_json(
        &d1,
        &format!("properties/set/response/request_id={request_id}"),
        json!({"result_code": 0}),
    );
    let c = f.platform.counters();
    assert_eq!(c.unmatched_count(), 1);
    assert_eq!(c.answered_count(RequestLabel::PropertiesSet), 0);
}

#[test]
fn requests_need_an_online_device_and_are_bounded() {
    let f = fixture();
    let (d1, other) = (id("d1"), id("other"));
    let get = || json!({});
    let err = |r: Result<PendingResponse, RequestError>| r.map(drop).unwrap_err();
    assert_eq!(
        err(f
            .platform
            .request(&other, RequestKind::PropertiesGet, get())),
        RequestError::Offline
    );
    assert_eq!(
        err(f.platform.request(&d1, RequestKind::ShadowGet, get())),
        RequestError::NotPlatformOriginated(RequestKind::ShadowGet)
    );
    assert!(matches!(
        err(f.platform.request(&d1, RequestKind::Command, json!("ON"))),
        RequestError::InvalidBody(_)
    ));
    assert!(matches!(
        err(f
            .platform
            .request(&d1, RequestKind::PropertiesSet, json!({"services": 1}))),
        RequestError::InvalidBody(_)
    ));
    let held: Vec<_> = (0..16)
        .map(|_| {
            f.platform
                .request(&d1, RequestKind::PropertiesGet, get())
                .unwrap()
        })
        .collect();
    assert_eq!(
        err(f.platform.request(&d1, RequestKind::PropertiesGet, get())),
        RequestError::TooMany
    );
    drop(held);
    f.sessions.busy.store(true, Ordering::Relaxed);
    assert_eq!(
        err(f.platform.request(&d1, RequestKind::PropertiesGet, get())),
        RequestError::Busy
    );
    assert_eq!(f.platform.outstanding(), 0, "a failed send leaves nothing");
    let c = f.platform.counters();
    assert_eq!(c.refused_count(RequestRefusal::TooMany), 1);
    assert_eq!(c.refused_count(RequestRefusal::Offline), 1);
    assert_eq!(c.refused_count(RequestRefusal::Busy), 1);
    assert_eq!(c.refused_count(RequestRefusal::InvalidBody), 2);
}

#[test]
fn desired_differing_from_reported_is_pushed_on_connect() {
    let f = fixture();
    let other = id("other");
    f.set_desired(&other, json!({"temperature": 60}));
    f.connect(&other);
    let sent = f.take_sent();
    let [(to, topic, body)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(to, &other);
    assert!(
        topic.starts_with(&format!(
            "$oc/devices/{other}/sys/properties/set/request_id="
        )),
        "{topic}"
    );
    assert_eq!(
        body,
        &json!({"services": [{"service_id": "WaterMeter", "properties": {"temperature": 60}}]})
    );
    // The device's answer to the push is recognised, not unmatched.
    f.publish_json(
        &other,
        &format!("properties/set/response/request_id={}", rid(topic)),
        json!({"result_code": 0}),
    );
    let c = f.platform.counters();
    assert_eq!(c.answered_count(RequestLabel::DesiredPush), 1);
    assert_eq!(c.unmatched_count(), 0);
    // Once reported matches (60 and "60" are the same value), nothing is pushed any more.
    f.publish_json(
        &other,
        "properties/report",
        report(json!({"temperature": "60"})),
    );
    f.connect(&other);
    assert!(f.take_sent().is_empty());
    assert_eq!(c.sent_count(RequestLabel::DesiredPush), 1);
}

#[test]
fn a_report_that_leaves_a_delta_pushes_it_again() {
    let f = fixture();
    let d1 = id("d1");
    f.set_desired(&d1, json!({"temperature": 60}));
    f.publish_json(&d1, "properties/report", report(json!({"temperature": 20})));
    let sent = f.take_sent();
    let [(_, topic, body)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(topic.contains("/sys/properties/set/request_id="), "{topic}");
    assert_eq!(
        body["services"][0]["properties"],
        json!({"temperature": 60})
    );
    // Disconnecting forgets the push: a late answer is unmatched.
    f.platform
        .handle(&UpstreamEvent::Disconnected(Disconnected {
            device_id: d1.clone(),
            client_id: "c".into(),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            reason: crate::metrics::CloseReason::ClientGone,
            session_kept: false,
            at: RECEIVED,
        }));
    f.publish_json(
        &d1,
        &format!("properties/set/response/request_id={}", rid(topic)),
        json!({}),
    );
    assert_eq!(f.platform.counters().unmatched_count(), 1);
}

#[test]
fn a_sub_devices_desired_values_go_through_its_gateway() {
    let f = fixture();
    let (gw, sub) = (id("gw"), id("sub"));
    assert_eq!(
        f.platform.push_desired(&sub),
        Ok(PushOutcome::NothingPending)
    );
    f.set_desired(&sub, json!({"temperature": 42}));
    assert_eq!(f.platform.push_desired(&sub), Ok(PushOutcome::Sent));
    let sent = f.take_sent();
    let [(to, topic, body)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(to, &gw);
    assert!(topic.starts_with(&format!("$oc/devices/{gw}/sys/properties/set/")));
    assert_eq!(body["object_device_id"], json!(sub));
    f.set_desired(&id("other"), json!({"temperature": 1}));
    assert_eq!(
        f.platform.push_desired(&id("other")),
        Ok(PushOutcome::Offline)
    );
    assert_eq!(
        f.platform.push_desired(&id("ghost")),
        Err(RequestError::UnknownDevice)
    );
}

#[test]
fn a_shadow_get_is_answered_with_the_stored_shadow() {
    let f = fixture();
    let (d1, gw, sub) = (id("d1"), id("gw"), id("sub"));
    f.set_desired(&d1, json!({"temperature": 60}));
    f.take_sent();
    f.publish_json(
        &d1,
        "shadow/get/request_id=42",
        json!({"service_id": "WaterMeter"}),
    );
    let sent = f.take_sent();
    let [(to, topic, body)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(to, &d1);
    assert_eq!(
        topic,
        &format!("$oc/devices/{d1}/sys/shadow/get/response/request_id=42")
    );
    assert_eq!(body["object_device_id"], json!(d1));
    let shadow = &body["shadow"][0];
    assert_eq!(shadow["service_id"], json!("WaterMeter"));
    assert_eq!(shadow["desired"]["properties"], json!({"temperature": 60}));
    assert_eq!(shadow["version"], json!(1));
    // A gateway may ask for its sub-device's shadow, not for another device's.
    f.publish_json(
        &gw,
        "shadow/get/request_id=7",
        json!({"object_device_id": sub}),
    );
    f.publish_json(
        &gw,
        "shadow/get/request_id=8",
        json!({"object_device_id": d1}),
    );
    let sent = f.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2, json!({"object_device_id": sub, "shadow": []}));
    let c = f.platform.counters();
    assert_eq!(c.shadow_get_count(ShadowGetOutcome::Answered), 2);
    assert_eq!(c.shadow_get_count(ShadowGetOutcome::NotSubDevice), 1);
}

#[test]
fn messages_and_events_reach_observers() {
    let f = fixture();
    let d1 = id("d1");
    f.publish(&d1, "messages/up", "raw bytes, not JSON");
    f.publish_json(
        &d1,
        "messages/up",
        json!({"name": "n", "content": {"hello": "123"}}),
    );
    let services = json!([
        {"service_id": "$device_info", "event_type": "device_info_report", "paras": {"sw_version": "v1"}},
        {"service_id": "$sdk_info", "event_type": "sdk_info_report"},
        {"service_id": "$log", "event_type": "log_report", "paras": {"type": "DEVICE_MESSAGE", "content": "hi"}},
        {"service_id": "$ota", "event_type": "version_report", "paras": {"fw_version": "2"}},
        {"service_id": "WaterMeter", "event_type": "leak", "event_time": "20151212T121212Z", "paras": {"litres": 3}},
        {"service_id": "WaterMeter", "event_type": "fire", "paras": {}},
        {"service_id": "$unknown", "event_type": "x", "paras": {}},
        {"service_id": "$log", "event_type": "log_report", "paras": {"type": "NOPE"}}
    ]);
    f.publish_json(&d1, "events/up", json!({ "services": services }));
    let events = f.take_events();
    assert_eq!(events.len(), 7, "{events:#?}");
    let PlatformEvent::MessageUp(raw) = &events[0] else {
        panic!("{:?}", events[0])
    };
    assert_eq!(
        (raw.payload.as_ref(), raw.message.is_none()),
        (&b"raw bytes, not JSON"[..], true)
    );
    let PlatformEvent::MessageUp(m) = &events[1] else {
        panic!("{:?}", events[1])
    };
    assert_eq!(m.message.as_ref().unwrap().content, json!({"hello": "123"}));
    assert!(
        matches!(&events[2], PlatformEvent::DeviceInfo(e) if e.info.sw_version.as_deref() == Some("v1"))
    );
    assert!(matches!(&events[3], PlatformEvent::DeviceInfo(_)));
    let stored = f.storage.get_device(&d1).unwrap().unwrap();
    assert_eq!(
        (stored.sw_version.as_deref(), stored.fw_version.as_deref()),
        (Some("v1"), None),
        "the reported version is kept on the device record"
    );
    assert!(matches!(&events[4], PlatformEvent::LogReport(e) if e.log.content == "hi"));
    assert!(matches!(&events[5], PlatformEvent::EventUp(e) if e.system.is_some()));
    let PlatformEvent::EventUp(model) = &events[6] else {
        panic!("{:?}", events[6])
    };
    assert_eq!(
        (model.system.as_ref(), model.event.event_type.as_str()),
        (None, "leak")
    );
    assert_eq!(
        model.source.event_time,
        Timestamp::parse_compact("20151212T121212Z").unwrap()
    );
    let c = f.platform.counters();
    assert_eq!(c.event_count(EventOutcome::Invalid), 2);
    assert_eq!(c.event_count(EventOutcome::UnknownSystem), 1);
    // Events about another device than the publisher's own or sub-devices are refused.
    let foreign = json!({"object_device_id": id("other"), "services": [{"service_id": "$log",
        "event_type": "log_report", "paras": {"type": "DEVICE_MESSAGE", "content": "x"}}]});
    f.publish_json(&d1, "events/up", foreign);
    assert!(f.take_events().is_empty());
    assert_eq!(c.event_count(EventOutcome::NotSubDevice), 1);
}

#[test]
fn messages_go_down_on_the_system_or_a_custom_topic() {
    let f = fixture();
    let d1 = id("d1");
    let generated = f
        .platform
        .send_message(
            &d1,
            OutgoingMessage {
                name: Some("n".into()),
                content: json!("hello"),
                ..Default::default()
            },
        )
        .unwrap();
    let given = f
        .platform
        .send_message(
            &d1,
            OutgoingMessage {
                message_id: Some("m-1".into()),
                content: json!({"a": 1}),
                topic: Some("messageDown".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(given, "m-1");
    let sent = f.take_sent();
    assert_eq!(sent[0].1, format!("$oc/devices/{d1}/sys/messages/down"));
    assert_eq!(
        sent[0].2,
        json!({"name": "n", "id": generated, "content": "hello"})
    );
    assert_eq!(sent[1].1, format!("$oc/devices/{d1}/user/messageDown"));
    assert_eq!(sent[1].2, json!({"id": "m-1", "content": {"a": 1}}));
    let bad = OutgoingMessage {
        topic: Some("a//b".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.platform.send_message(&d1, bad),
        Err(RequestError::InvalidBody(_))
    ));
    assert_eq!(
        f.platform
            .send_message(&id("other"), OutgoingMessage::default()),
        Err(RequestError::Offline)
    );
}

#[test]
fn metric_families_have_one_label_set_each() {
    let f = fixture();
    let families = f.platform.metrics();
    for name in [
        "fleetgate_platform_invalid_payloads_total",
        "fleetgate_platform_property_reports_total",
        "fleetgate_platform_requests_sent_total",
        "fleetgate_platform_unmatched_responses_total",
        "fleetgate_platform_requests_outstanding",
    ] {
        assert!(families.iter().any(|fam| fam.name == name), "{name}");
    }
    for fam in &families {
        let keys: HashSet<Vec<&str>> = fam
            .samples
            .iter()
            .map(|(l, _)| l.iter().map(|(k, _)| *k).collect())
            .collect();
        assert_eq!(keys.len(), 1, "{}", fam.name);
    }
}
