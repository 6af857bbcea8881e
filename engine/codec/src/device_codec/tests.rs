//! Tests of `watermeter-v1` against the frame table of `docs/coap.md`.

use serde_json::{Value, json};

use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn codec() -> &'static dyn DeviceCodec {
    builtin("watermeter-v1").expect("watermeter-v1 is built in")
}

fn report(battery: i64, signal: i64, reading: i64, valve: &str) -> Value {
    json!({"services":[{"service_id":"WaterMeter","properties":{
        "battery_level": battery,
        "signal_strength": signal,
        "meter_reading": reading,
        "valve": valve,
    }}]})
}

#[test]
fn registry() {
    assert_eq!(BUILTIN_CODECS, ["watermeter-v1"]);
    for name in BUILTIN_CODECS {
        assert_eq!(builtin(name).map(|c| c.name()), Some(*name));
    }
    assert!(builtin("watermeter-v2").is_none());
    assert!(builtin("").is_none());
}

#[test]
fn report_frame() -> TestResult {
    let frame = [0x01, 87, 0xA6, 0x00, 0x01, 0xE2, 0x40, 0x01];
    let decoded = codec().decode_uplink(&frame)?;
    assert_eq!(decoded, report(87, -90, 123_456, "OPEN"));
    assert_eq!(WaterMeterV1.encode_report(&decoded)?, frame);

    let frame = [0x01, 0, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0x00];
    let decoded = codec().decode_uplink(&frame)?;
    assert_eq!(decoded, report(0, -128, 4_294_967_295, "CLOSED"));
    assert_eq!(WaterMeterV1.encode_report(&decoded)?, frame);
    let frame = [0x01, 100, 0x00, 0, 0, 0, 0, 0x01];
    assert_eq!(codec().decode_uplink(&frame)?, report(100, 0, 0, "OPEN"));
    Ok(())
}

#[test]
fn malformed_reports() {
    let cases: [&[u8]; 9] = [
        &[],
        &[0x01],
        &[0x01, 87, 0xA6, 0, 0, 0, 0],
        &[0x01, 87, 0xA6, 0, 0, 0, 0, 1, 0],
        &[0x02, 87, 0xA6, 0, 0, 0, 0, 1],
        &[0xA0, 0x00],
        &[0x01, 101, 0xA6, 0, 0, 0, 0, 1],
        &[0x01, 87, 0x01, 0, 0, 0, 0, 1],
        &[0x01, 87, 0xA6, 0, 0, 0, 0, 2],
    ];
    for frame in cases {
        let err = codec().decode_uplink(frame).unwrap_err();
        assert!(!err.message().is_empty(), "{frame:02x?}");
    }
    assert_eq!(
        codec()
            .decode_uplink(&[0x01, 101, 0xA6, 0, 0, 0, 0, 1])
            .unwrap_err()
            .to_string(),
        "battery_level 101 is out of range 0-100"
    );
}

#[test]
fn report_encoding_checks_every_field() {
    let bad = [
        report(101, -90, 1, "OPEN"),
        report(-1, -90, 1, "OPEN"),
        report(50, 1, 1, "OPEN"),
        report(50, -129, 1, "OPEN"),
        report(50, -90, -1, "OPEN"),
        report(50, -90, 4_294_967_296, "OPEN"),
        report(50, -90, 1, "open"),
        json!({"services":[]}),
        json!({"services":[{"service_id":"Other","properties":{}}]}),
        json!({"services":[{"service_id":"WaterMeter","properties":{"battery_level":1}}]}),
        json!([]),
    ];
    for value in bad {
        assert!(WaterMeterV1.encode_report(&value).is_err(), "{value}");
    }
}

#[test]
fn report_acknowledgement() -> TestResult {
    assert_eq!(
        codec().encode_uplink_ack(&json!({"result_code": 0}))?,
        [0xAA, 0x00]
    );
    assert_eq!(
        codec().encode_uplink_ack(&json!({"result_code": 255}))?,
        [0xAA, 0xFF]
    );
    assert_eq!(
        WaterMeterV1.decode_uplink_ack(&[0xAA, 0x03])?,
        json!({"result_code": 3})
    );
    for bad in [
        json!({"result_code": 256}),
        json!({"result_code": -1}),
        json!({"result_code": "0"}),
        json!({"result_code": 0.5}),
        json!({}),
        json!({"result_code": 0, "extra": 1}),
        json!(0),
    ] {
        assert!(codec().encode_uplink_ack(&bad).is_err(), "{bad}");
    }
    assert!(WaterMeterV1.decode_uplink_ack(&[0xAA]).is_err());
    assert!(WaterMeterV1.decode_uplink_ack(&[0xAB, 0]).is_err());
    Ok(())
}

#[test]
fn set_valve() -> TestResult {
    let open =
        codec().encode_command(Some("WaterMeter"), "SET_VALVE", &json!({"valve": "OPEN"}))?;
    assert_eq!(open, [0x81, 0x01]);
    let closed = codec().encode_command(None, "SET_VALVE", &json!({"valve": "CLOSED"}))?;
    assert_eq!(closed, [0x81, 0x00]);
    assert_eq!(
        WaterMeterV1.decode_command(&open)?,
        json!({"service_id":"WaterMeter","command_name":"SET_VALVE","paras":{"valve":"OPEN"}})
    );
    for bad in [
        json!({"valve": "HALF"}),
        json!({"valve": 1}),
        json!({}),
        json!({"valve": "OPEN", "force": true}),
        json!(null),
    ] {
        assert!(
            codec().encode_command(None, "SET_VALVE", &bad).is_err(),
            "{bad}"
        );
    }
    assert!(WaterMeterV1.decode_command(&[0x81, 0x02]).is_err());
    assert!(WaterMeterV1.decode_command(&[0x81]).is_err());
    Ok(())
}

#[test]
fn set_interval() -> TestResult {
    let frame = codec().encode_command(
        Some("WaterMeter"),
        "SET_INTERVAL",
        &json!({"interval": 3600}),
    )?;
    assert_eq!(frame, [0x82, 0x00, 0x00, 0x0E, 0x10]);
    assert_eq!(
        WaterMeterV1.decode_command(&frame)?,
        json!({"service_id":"WaterMeter","command_name":"SET_INTERVAL","paras":{"interval":3600}})
    );
    assert_eq!(
        codec().encode_command(None, "SET_INTERVAL", &json!({"interval": 60}))?,
        [0x82, 0, 0, 0, 60]
    );
    assert_eq!(
        codec().encode_command(None, "SET_INTERVAL", &json!({"interval": 86_400}))?,
        [0x82, 0x00, 0x01, 0x51, 0x80]
    );
    for bad in [
        json!({"interval": 59}),
        json!({"interval": 86_401}),
        json!({"interval": 3600.0}),
        json!({"interval": "3600"}),
        json!({"interval": u64::MAX}),
        json!({"seconds": 3600}),
    ] {
        assert!(
            codec().encode_command(None, "SET_INTERVAL", &bad).is_err(),
            "{bad}"
        );
    }
    assert!(WaterMeterV1.decode_command(&[0x82, 0, 0, 0, 59]).is_err());
    assert!(
        WaterMeterV1
            .decode_command(&[0x82, 0, 0, 0x0E, 0x10, 0])
            .is_err()
    );
    Ok(())
}

#[test]
fn unknown_commands_and_services() {
    let err = codec()
        .encode_command(None, "REBOOT", &json!({}))
        .unwrap_err();
    assert_eq!(
        err.message(),
        "unknown command \"REBOOT\"; the codec knows SET_VALVE and SET_INTERVAL"
    );
    assert!(
        codec()
            .encode_command(Some("GasMeter"), "SET_VALVE", &json!({"valve": "OPEN"}))
            .is_err()
    );
    assert!(WaterMeterV1.decode_command(&[0x83, 0]).is_err());
    assert!(WaterMeterV1.decode_command(&[]).is_err());
}

#[test]
fn command_responses() -> TestResult {
    let ok = codec().decode_command_response(&[0xA0, 0x00])?;
    assert_eq!(
        ok,
        CommandResponse {
            success: true,
            detail: json!({"result_code":0,"paras":{"result":"success"}}),
        }
    );
    let failed = codec().decode_command_response(&WaterMeterV1.encode_command_response(7))?;
    assert_eq!(
        failed,
        CommandResponse {
            success: false,
            detail: json!({"result_code":7,"paras":{"result":"error 7"}}),
        }
    );
    for bad in [&[][..], &[0xA0], &[0xA0, 0, 0], &[0xA1, 0]] {
        assert!(codec().decode_command_response(bad).is_err(), "{bad:02x?}");
    }
    Ok(())
}
