//! Spec examples decode to the typed payloads and encode back to the same JSON; arbitrary
//! payloads survive a serde round trip.

use super::events::*;
use super::*;
use crate::ids::RequestId;
use proptest::prelude::*;
use serde_json::json;

/// Decodes `v` as `T`, re-encodes it, and checks nothing was lost.
fn round_trip<T: serde::de::DeserializeOwned + Serialize>(v: Value) -> T {
    let typed: T = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), v);
    typed
}

#[test]
fn property_payloads_from_the_spec() {
    let r: PropertyReport = round_trip(json!({"services": [
        {"service_id": "Temperature", "properties": {"value": 57, "value2": 60}, "event_time": "20151212T121212Z"},
        {"service_id": "Battery", "properties": {"level": 80, "level2": 90}, "event_time": "20151212T121212Z"}]}));
    assert_eq!(r.services.len(), 2);
    let g: GatewayPropertyReport = round_trip(json!({"devices": [
        {"device_id": "bf40f0c4-4022-41c6-a201-c5133122054a",
         "services": [{"service_id": "analog", "properties": {"PhV_phsA": "1", "PhV_phsB": "2"}, "event_time": "20190606T121212Z"}]}]}));
    assert_eq!(g.devices[0].services[0].service_id.as_str(), "analog");
    round_trip::<PropertySetRequest>(json!({"object_device_id": "d1",
        "services": [{"service_id": "Temperature", "properties": {"value": 57}}]}));
    let ok: PropertySetResponse = round_trip(json!({"result_code": 0, "result_desc": "success"}));
    assert!(ok.is_success());
    assert!(
        serde_json::from_value::<PropertySetResponse>(json!({}))
            .unwrap()
            .is_success()
    );
    round_trip::<PropertyGetRequest>(
        json!({"object_device_id": "d1", "service_id": "Temperature"}),
    );
    round_trip::<PropertyGetResponse>(json!({"services": [{"service_id": "Temperature",
        "properties": {"PhV_phsA": "1"}, "event_time": "20190606T121212Z"}]}));
    round_trip::<ShadowGetRequest>(
        json!({"object_device_id": "40fe3542-f4cc-4b6a-98c3-61a49ba1acd4", "service_id": "WaterMeter"}),
    );
    round_trip::<ShadowGetResponse>(
        json!({"object_device_id": "40fe3542-f4cc-4b6a-98c3-61a49ba1acd4",
        "shadow": [{"service_id": "WaterMeter",
            "desired": {"properties": {"temperature": "60"}, "event_time": "20151212T121212Z"},
            "reported": {"properties": {"temperature": "60"}, "event_time": "20151212T121212Z"},
            "version": 1}]}),
    );
}

#[test]
fn message_and_command_payloads_from_the_spec() {
    round_trip::<MessageUp>(
        json!({"object_device_id": "d1", "name": "name", "id": "id", "content": {"hello": "123"}}),
    );
    assert!(MessageUp::parse_lenient(b"\x00\x01 not json").is_none());
    round_trip::<MessageDown>(
        json!({"object_device_id": "d1", "name": "name", "id": "id", "content": "hello"}),
    );
    round_trip::<CommandRequest>(json!({"object_device_id": "d1", "command_name": "ON_OFF",
        "service_id": "WaterMeter", "paras": {"value": "1"}}));
    let resp: CommandResponse = round_trip(
        json!({"result_code": 0, "response_name": "COMMAND_RESPONSE",
        "paras": {"result": "success"}}),
    );
    assert!(resp.is_success());
    let failed: CommandResponse = serde_json::from_value(json!({"result_code": 1})).unwrap();
    assert!(!failed.is_success());
}

fn decode_one(v: Value) -> EventKind {
    let env: EventEnvelope = serde_json::from_value(v).unwrap();
    env.services[0].decode().unwrap()
}

fn system(v: Value) -> SystemEvent {
    match decode_one(v) {
        EventKind::System(e) => e,
        other => panic!("not a system event: {other:?}"),
    }
}

#[test]
fn every_system_event_of_the_spec_decodes_and_re_encodes() {
    let cases = [
        json!({"service_id": "$log", "event_type": "log_config", "paras": {"switch": "on", "end_time": "20151212T131212Z"}}),
        json!({"service_id": "$log", "event_type": "log_report", "paras": {"timestamp": "1235668997", "type": "DEVICE_MESSAGE", "content": "log content"}}),
        json!({"service_id": "$device_info", "event_type": "device_info_report", "paras": {"device_sdk_version": "C_v0.5.0", "sw_version": "v1.0", "fw_version": "v1.0"}}),
        json!({"service_id": "$time_sync", "event_type": "time_sync_request", "paras": {"device_send_time": 1582685678789_i64}}),
        json!({"service_id": "$time_sync", "event_type": "time_sync_response", "paras": {"device_send_time": 1582685678789_i64, "server_rcv_time": 1582685696152_i64, "server_send_time": 1582685708109_i64}}),
        json!({"service_id": "$file_manager", "event_type": "get_upload_url", "paras": {"file_name": "a.jpg", "file_attributes": {"hash_code": "58059181f378062f9b446e884362a526", "size": 1024}}}),
        json!({"service_id": "$file_manager", "event_type": "get_upload_url_response", "paras": {"url": "https://bucket/a.jpg", "bucket_name": "bucket", "object_name": "d_a.jpg", "expire": 3600, "file_attributes": {"size": 1024}}}),
        json!({"service_id": "$file_manager", "event_type": "upload_result_report", "paras": {"object_name": "d_a.jpg", "result_code": 0, "status_code": 200, "status_description": "upload success"}}),
        json!({"service_id": "$file_manager", "event_type": "get_download_url", "paras": {"file_name": "a.jpg"}}),
        json!({"service_id": "$file_manager", "event_type": "get_download_url_response", "paras": {"url": "https://bucket/a.jpg", "expire": 3600}}),
        json!({"service_id": "$file_manager", "event_type": "download_result_report", "paras": {"object_name": "d_a.jpg", "result_code": 1}}),
        json!({"service_id": "$ota", "event_type": "version_query", "paras": {}}),
        json!({"service_id": "$ota", "event_type": "version_report", "paras": {"sw_version": "v1.0", "fw_version": "v1.0"}}),
        json!({"service_id": "$ota", "event_type": "firmware_upgrade", "paras": {"version": "v1.2", "url": "https://10.1.1.1:8943/f", "file_size": 81362928, "access_token": "595124473f866b033dfa1f", "expires": 86400, "sign": "595124473f866b033dfa1f7e831c8c99a12f6143f392dfa996a819010842c99d"}}),
        json!({"service_id": "$ota", "event_type": "software_upgrade", "paras": {"version": "v1.2", "url": "https://x/f", "file_size": 1, "sign": "00"}}),
        json!({"service_id": "$ota", "event_type": "firmware_upgrade_v2", "paras": {"version": "v1.2", "url": "https://x/test.bin", "expires": 3600}}),
        json!({"service_id": "$ota", "event_type": "software_upgrade_v2", "paras": {"version": "v1.2", "url": "https://x/test.bin"}}),
        json!({"service_id": "$ota", "event_type": "upgrade_progress_report", "paras": {"result_code": 0, "progress": 80, "version": "V2.0", "description": "upgrade processing"}}),
        json!({"service_id": "$sub_device_manager", "event_type": "add_sub_device_notify", "paras": {"devices": [{"parent_device_id": "g1", "node_id": "subdevice11", "device_id": "2bb4ddba-fb56-4566-8577-063ad2f5a6cc", "name": "subDevice11", "manufacturer_id": "ofo", "model": "twx2", "product_id": "c6b39067b0325db34663d3ef421a42f6", "status": "ONLINE"}], "version": 1}}),
        json!({"service_id": "$sub_device_manager", "event_type": "delete_sub_device_notify", "paras": {"devices": [{"parent_device_id": "g1", "node_id": "subdevice11", "device_id": "d2"}], "version": 1}}),
        json!({"service_id": "$sub_device_manager", "event_type": "sub_device_sync_request", "paras": {"version": 1}}),
        json!({"service_id": "$sub_device_manager", "event_type": "sub_device_update_status", "paras": {"device_statuses": [{"device_id": "bf40f0c4-4022-41c6-a201-c5133122054a", "status": "ONLINE"}]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "get_products", "paras": {"product_ids": ["c3badd4a-2941-476b-804e-5ba9eafef331"]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "get_products_response", "paras": {"products": []}}),
        json!({"service_id": "$sub_device_discovery", "event_type": "start_scan", "paras": {"protocol": "zigbee", "channel": "", "parent_device_id": "", "scan_settings": ""}}),
        json!({"service_id": "$sub_device_discovery", "event_type": "scan_result", "paras": {"devices": [{"parent_device_id": "g1", "node_id": "subdevice11", "status": "ONLINE"}]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "add_sub_device_request", "event_id": "40cc9ab1-3579-488c-95c6-c18941c99eb4", "paras": {"devices": [{"name": "subdevice11", "node_id": "subdevice11", "product_id": "c6b39067b0325db34663d3ef421a42f6", "description": "subdevice11"}]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "add_sub_device_response", "event_id": "40cc9ab1-3579-488c-95c6-c18941c99eb4", "paras": {"successful_devices": [{"parent_device_id": "g1", "node_id": "subdevice11", "device_id": "p_subdevice11", "status": "ONLINE"}], "failed_devices": [{"node_id": "subdevice12", "product_id": "p", "error_code": "XXX", "error_msg": "XXXX"}]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "delete_sub_device_request", "paras": {"devices": ["p_subdevice11", "p_subdevice12"]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "delete_sub_device_response", "paras": {"successful_devices": ["p_subdevice11"], "failed_devices": [{"device_id": "p_subdevice12", "error_code": "XXX", "error_msg": "XXXX"}]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "update_sub_device_request", "paras": {"devices": [{"device_id": "d2", "name": "subDevice11", "description": "subDevice11"}]}}),
        json!({"service_id": "$sub_device_manager", "event_type": "update_sub_device_response", "paras": {"successful_devices": [{"parent_device_id": "g1", "node_id": "n", "device_id": "d2"}], "failed_devices": []}}),
    ];
    let mut seen = std::collections::HashSet::new();
    for case in cases {
        let ev: ServiceEvent = serde_json::from_value(case.clone()).unwrap();
        let EventKind::System(sys) = ev.decode().unwrap() else {
            panic!("{case}")
        };
        assert_eq!(sys.service_id(), case["service_id"]);
        assert_eq!(sys.event_type(), case["event_type"]);
        assert!(seen.insert(sys.event_type()), "duplicate case");
        // Re-encoding gives back an event that decodes to the same value.
        let again = sys.to_service_event(None, None).decode().unwrap();
        assert_eq!(again, EventKind::System(sys.clone()));
        // Sub-device info omits empty optionals, so compare the shapes loosely: every field we
        // emit was in the input.
        let out = sys.paras();
        for (k, _) in out.as_object().unwrap() {
            assert!(
                case["paras"].get(k).is_some(),
                "{k} appeared from nowhere in {case}"
            );
        }
    }
    assert_eq!(
        seen.len(),
        32,
        "every pair of the dispatch table is covered"
    );
}

#[test]
fn aliases_and_unknowns() {
    let e = system(
        json!({"services": [{"service_id": "$sdk_info", "event_type": "sdk_info_report",
        "paras": {"device_sdk_version": "C_v0.5.0"}}]}),
    );
    assert!(matches!(e, SystemEvent::DeviceInfoReport(_)));
    let e = system(
        json!({"services": [{"service_id": "$device_info", "event_type": "device_info_report"}]}),
    );
    assert_eq!(
        e,
        SystemEvent::DeviceInfoReport(DeviceInfoReport::default())
    );
    let e = system(
        json!({"services": [{"service_id": "$file_manager", "event_type": "get_download_url",
        "paras": {"fileName": "a.jpg"}}]}),
    );
    assert!(
        matches!(e, SystemEvent::GetDownloadUrl(FileUrlRequest { ref file_name, .. }) if file_name == "a.jpg")
    );
    let e = system(
        json!({"services": [{"service_id": "$sub_device_discovery", "event_type": "start_scan",
        "paras": {"protocol_type": "zigbee", "scan_settings": {"timeout": 5}}}]}),
    );
    assert!(matches!(
        e,
        SystemEvent::StartScan(StartScan {
            protocol: Some(_),
            ..
        })
    ));
    assert!(matches!(
        decode_one(
            json!({"services": [{"service_id": "$future", "event_type": "x", "paras": {}}]})
        ),
        EventKind::UnknownSystem { .. }
    ));
    assert!(matches!(
        decode_one(
            json!({"services": [{"service_id": "WaterMeter", "event_type": "leak", "paras": {"litres": 3}}]})
        ),
        EventKind::Model { .. }
    ));
}

#[test]
fn bad_system_events_are_refused_with_a_reason() {
    let bad = [
        json!({"service_id": "$time_sync", "event_type": "time_sync_request", "paras": {}}),
        json!({"service_id": "$log", "event_type": "log_report", "paras": {"type": "NOPE", "content": "x"}}),
        json!({"service_id": "$ota", "event_type": "upgrade_progress_report", "paras": {"result_code": 0, "progress": 101, "version": "v"}}),
        json!({"service_id": "$sub_device_manager", "event_type": "sub_device_update_status", "paras": {"device_statuses": []}}),
        json!({"service_id": "$sub_device_manager", "event_type": "delete_sub_device_request",
               "paras": {"devices": (0..51).map(|i| format!("d{i}")).collect::<Vec<_>>()}}),
        json!({"service_id": "$sub_device_manager", "event_type": "add_sub_device_request",
               "paras": {"devices": [{"node_id": "n", "product_id": "p", "extension_info": {"x": "y".repeat(1100)}}]}}),
    ];
    for case in bad {
        let ev: ServiceEvent = serde_json::from_value(case.clone()).unwrap();
        assert!(ev.decode().is_err(), "{case}");
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_props() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", arb_json(), 1..5)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #[test]
    fn property_reports_round_trip(
        services in proptest::collection::vec(("[A-Za-z][A-Za-z0-9_]{0,20}", arb_props(), proptest::option::of("[0-9TZ]{16}")), 1..4)
    ) {
        let report = PropertyReport {
            services: services.into_iter().map(|(id, properties, event_time)| ServiceProperties {
                service_id: ServiceId::new(id).unwrap(), properties, event_time,
            }).collect(),
        };
        let text = serde_json::to_string(&report).unwrap();
        prop_assert_eq!(serde_json::from_str::<PropertyReport>(&text).unwrap(), report);
    }

    #[test]
    fn commands_round_trip(paras in arb_json(), code in proptest::option::of(any::<i64>()), name in "\\PC{1,20}") {
        let req = CommandRequest { object_device_id: None, service_id: None, command_name: Some(name), paras: paras.clone() };
        let text = serde_json::to_string(&req).unwrap();
        prop_assert_eq!(serde_json::from_str::<CommandRequest>(&text).unwrap(), req);
        let resp = CommandResponse { result_code: code, response_name: None, paras };
        let text = serde_json::to_string(&resp).unwrap();
        prop_assert_eq!(serde_json::from_str::<CommandResponse>(&text).unwrap(), resp);
    }

    #[test]
    fn event_envelopes_round_trip(paras in arb_json(), et in "[a-z_]{1,20}", id in proptest::option::of("[a-f0-9-]{36}")) {
        let env = EventEnvelope {
            object_device_id: Some(DeviceId::new("d1").unwrap()),
            services: vec![ServiceEvent { service_id: ServiceId::new("Svc").unwrap(), event_type: et, event_time: None, event_id: id, paras }],
        };
        let text = serde_json::to_string(&env).unwrap();
        prop_assert_eq!(serde_json::from_str::<EventEnvelope>(&text).unwrap(), env);
    }

    #[test]
    fn decoding_arbitrary_json_never_panics(v in arb_json(), svc in "\\$[a-z_]{1,20}", et in "[a-z_]{1,30}") {
        let ev = ServiceEvent { service_id: ServiceId::new(svc).unwrap(), event_type: et, event_time: None, event_id: None, paras: v.clone() };
        let _ = ev.decode();
        let _ = serde_json::from_value::<PropertyReport>(v.clone());
        let _ = serde_json::from_value::<GatewayPropertyReport>(v);
        let _ = RequestId::new("x");
    }
}
