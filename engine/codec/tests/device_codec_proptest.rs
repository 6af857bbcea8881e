//! Property tests of the built-in device codecs: reports and commands survive round trips, and
//! no input makes a decoder panic.

use fleetgate_codec::device_codec::{BUILTIN_CODECS, WaterMeterV1, builtin};
use proptest::prelude::*;
use serde_json::json;

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        for name in BUILTIN_CODECS {
            let codec = builtin(name).ok_or_else(|| fail("missing codec"))?;
            let _ = codec.decode_uplink(&bytes);
            let _ = codec.decode_command_response(&bytes);
        }
        let _ = WaterMeterV1.decode_command(&bytes);
        let _ = WaterMeterV1.decode_uplink_ack(&bytes);
    }

    #[test]
    fn reports_round_trip(
        battery in 0u8..=100,
        signal in -128i8..=0,
        reading in any::<u32>(),
        open in any::<bool>(),
    ) {
        let codec = builtin("watermeter-v1").ok_or_else(|| fail("missing codec"))?;
        let report = json!({"services":[{"service_id":"WaterMeter","properties":{
            "battery_level": battery,
            "signal_strength": signal,
            "meter_reading": reading,
            "valve": if open { "OPEN" } else { "CLOSED" },
        }}]});
        let frame = WaterMeterV1.encode_report(&report).map_err(fail)?;
        prop_assert_eq!(frame.len(), 8);
        prop_assert_eq!(codec.decode_uplink(&frame).map_err(fail)?, report);
    }

    #[test]
    fn report_frames_decode_exactly_when_in_range(body in proptest::array::uniform7(any::<u8>())) {
        let codec = builtin("watermeter-v1").ok_or_else(|| fail("missing codec"))?;
        let mut frame = vec![0x01];
        frame.extend_from_slice(&body);
        let valid = body[0] <= 100 && body[1] as i8 <= 0 && body[6] <= 1;
        match codec.decode_uplink(&frame) {
            Ok(report) => {
                prop_assert!(valid);
                prop_assert_eq!(WaterMeterV1.encode_report(&report).map_err(fail)?, frame);
            }
            Err(_) => prop_assert!(!valid),
        }
    }

    #[test]
    fn commands_round_trip(open in any::<bool>(), interval in 60u32..=86_400, valve in any::<bool>()) {
        let codec = builtin("watermeter-v1").ok_or_else(|| fail("missing codec"))?;
        let (name, paras) = if valve {
            ("SET_VALVE", json!({"valve": if open { "OPEN" } else { "CLOSED" }}))
        } else {
            ("SET_INTERVAL", json!({"interval": interval}))
        };
        let frame = codec.encode_command(Some("WaterMeter"), name, &paras).map_err(fail)?;
        prop_assert_eq!(
            WaterMeterV1.decode_command(&frame).map_err(fail)?,
            json!({"service_id": "WaterMeter", "command_name": name, "paras": paras})
        );
    }

    #[test]
    fn intervals_out_of_range_are_refused(interval in any::<i64>()) {
        let codec = builtin("watermeter-v1").ok_or_else(|| fail("missing codec"))?;
        let result = codec.encode_command(None, "SET_INTERVAL", &json!({"interval": interval}));
        prop_assert_eq!(result.is_ok(), (60..=86_400).contains(&interval));
    }

    #[test]
    fn command_responses_round_trip(result in any::<u8>()) {
        let codec = builtin("watermeter-v1").ok_or_else(|| fail("missing codec"))?;
        let response = codec
            .decode_command_response(&WaterMeterV1.encode_command_response(result))
            .map_err(fail)?;
        prop_assert_eq!(response.success, result == 0);
        prop_assert_eq!(&response.detail["result_code"], &json!(result));
    }
}
