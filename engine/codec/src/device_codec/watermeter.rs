//! `watermeter-v1`, the example codec of `docs/coap.md`: a water meter reporting battery,
//! signal, meter reading and valve state, and taking `SET_VALVE` and `SET_INTERVAL` commands.
//! All integers are big-endian; every frame has an exact length.

use std::ops::RangeInclusive;

use serde_json::{Map, Value, json};

use super::{CodecError, CommandResponse, DeviceCodec};

/// The `watermeter-v1` codec. Besides the [`DeviceCodec`] methods it has the device side of
/// each frame ([`WaterMeterV1::encode_report`], [`WaterMeterV1::decode_command`], ...), for
/// simulators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WaterMeterV1;

/// Frame type of a report (device → platform).
const REPORT: u8 = 0x01;
/// Frame type of a report acknowledgement (platform → device).
const ACK: u8 = 0xAA;
/// Frame type of `SET_VALVE` (platform → device).
const SET_VALVE: u8 = 0x81;
/// Frame type of `SET_INTERVAL` (platform → device).
const SET_INTERVAL: u8 = 0x82;
/// Frame type of a command response (device → platform).
const COMMAND_RESPONSE: u8 = 0xA0;

const REPORT_LEN: usize = 8;

fn err(message: impl Into<String>) -> CodecError {
    CodecError::new(message)
}

/// The fields of a JSON object, refusing any key outside `allowed` and any missing one.
fn fields<'a>(
    value: &'a Value,
    what: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, CodecError> {
    let Some(object) = value.as_object() else {
        return Err(err(format!("{what} must be a JSON object")));
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(format!("{what} has an unknown field {unknown:?}")));
    }
    if let Some(missing) = allowed.iter().find(|k| !object.contains_key(**k)) {
        return Err(err(format!("{what} lacks the field {missing:?}")));
    }
    Ok(object)
}

/// An integer field within `range`.
fn int(
    object: &Map<String, Value>,
    key: &str,
    range: RangeInclusive<i64>,
) -> Result<i64, CodecError> {
    let value = &object[key];
    let Some(n) = value.as_i64().or_else(|| {
        // u64 values beyond i64 are out of every range used here.
        value.as_u64().map(|_| i64::MAX)
    }) else {
        return Err(err(format!("{key} must be an integer, not {value}")));
    };
    if !range.contains(&n) {
        return Err(err(format!(
            "{key} {value} is out of range {}-{}",
            range.start(),
            range.end()
        )));
    }
    Ok(n)
}

fn valve(object: &Map<String, Value>) -> Result<u8, CodecError> {
    match object["valve"].as_str() {
        Some("OPEN") => Ok(1),
        Some("CLOSED") => Ok(0),
        _ => Err(err(format!(
            "valve must be \"OPEN\" or \"CLOSED\", not {}",
            object["valve"]
        ))),
    }
}

fn valve_name(byte: u8) -> Result<&'static str, CodecError> {
    match byte {
        0 => Ok("CLOSED"),
        1 => Ok("OPEN"),
        other => Err(err(format!(
            "valve byte {other} is neither 0 (closed) nor 1 (open)"
        ))),
    }
}

fn frame_type(bytes: &[u8], expected: u8, len: usize, what: &str) -> Result<(), CodecError> {
    match bytes.first() {
        None => Err(err(format!("empty {what} frame"))),
        Some(&t) if t != expected => Err(err(format!(
            "frame type {t:#04x} is not a {what} ({expected:#04x})"
        ))),
        Some(_) if bytes.len() != len => Err(err(format!(
            "{what} frame of {} bytes; it has {len}",
            bytes.len()
        ))),
        Some(_) => Ok(()),
    }
}

/// Narrows a range-checked integer to its frame type (cannot fail after the range check, but
/// stays panic-free without `as`).
fn narrow<T: TryFrom<i64>>(n: i64, key: &str) -> Result<T, CodecError> {
    T::try_from(n).map_err(|_| err(format!("{key} {n} is out of range")))
}

impl WaterMeterV1 {
    /// The codec's name.
    pub const NAME: &'static str = "watermeter-v1";

    /// The service of the product model.
    pub const SERVICE_ID: &'static str = "WaterMeter";

    /// The accepted `SET_INTERVAL` intervals, in seconds.
    pub const INTERVAL_SECS: RangeInclusive<u32> = 60..=86_400;

    /// Encodes a report as the device sends it, from the JSON [`DeviceCodec::decode_uplink`]
    /// produces. `signal_strength` must fit the frame's signed byte (−128..=0).
    pub fn encode_report(&self, report: &Value) -> Result<Vec<u8>, CodecError> {
        let top = fields(report, "report", &["services"])?;
        let services = top["services"]
            .as_array()
            .filter(|s| s.len() == 1)
            .ok_or_else(|| err("services must be an array of one service"))?;
        let service = fields(&services[0], "service", &["service_id", "properties"])?;
        if service["service_id"] != Self::SERVICE_ID {
            return Err(err(format!(
                "service_id must be {:?}, not {}",
                Self::SERVICE_ID,
                service["service_id"]
            )));
        }
        let props = fields(
            &service["properties"],
            "properties",
            &["battery_level", "signal_strength", "meter_reading", "valve"],
        )?;
        let battery: u8 = narrow(int(props, "battery_level", 0..=100)?, "battery_level")?;
        let signal: i8 = narrow(int(props, "signal_strength", -128..=0)?, "signal_strength")?;
        let reading: u32 = narrow(
            int(props, "meter_reading", 0..=i64::from(u32::MAX))?,
            "meter_reading",
        )?;
        let mut frame = Vec::with_capacity(REPORT_LEN);
        frame.push(REPORT);
        frame.push(battery);
        frame.extend_from_slice(&signal.to_be_bytes());
        frame.extend_from_slice(&reading.to_be_bytes());
        frame.push(valve(props)?);
        Ok(frame)
    }

    /// Decodes a report acknowledgement as the device receives it (`{"result_code":N}`).
    pub fn decode_uplink_ack(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        frame_type(bytes, ACK, 2, "report acknowledgement")?;
        Ok(json!({ "result_code": bytes[1] }))
    }

    /// Decodes a command as the device receives it, into
    /// `{"service_id":"WaterMeter","command_name":…,"paras":{…}}`.
    pub fn decode_command(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        let (name, paras) = match bytes.first() {
            Some(&SET_VALVE) => {
                frame_type(bytes, SET_VALVE, 2, "SET_VALVE")?;
                ("SET_VALVE", json!({ "valve": valve_name(bytes[1])? }))
            }
            Some(&SET_INTERVAL) => {
                frame_type(bytes, SET_INTERVAL, 5, "SET_INTERVAL")?;
                let interval = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                if !Self::INTERVAL_SECS.contains(&interval) {
                    return Err(err(format!("interval {interval} is out of range 60-86400")));
                }
                ("SET_INTERVAL", json!({ "interval": interval }))
            }
            Some(&other) => return Err(err(format!("frame type {other:#04x} is not a command"))),
            None => return Err(err("empty command frame")),
        };
        Ok(json!({
            "service_id": Self::SERVICE_ID,
            "command_name": name,
            "paras": paras,
        }))
    }

    /// Encodes a command response as the device sends it: 0 is success, anything else an error
    /// code.
    #[must_use]
    pub fn encode_command_response(&self, result: u8) -> Vec<u8> {
        vec![COMMAND_RESPONSE, result]
    }
}

impl DeviceCodec for WaterMeterV1 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn decode_uplink(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        frame_type(bytes, REPORT, REPORT_LEN, "report")?;
        let battery = bytes[1];
        if battery > 100 {
            return Err(err(format!(
                "battery_level {battery} is out of range 0-100"
            )));
        }
        let signal = i8::from_be_bytes([bytes[2]]);
        if signal > 0 {
            return Err(err(format!(
                "signal_strength {signal} is out of range -140-0"
            )));
        }
        let reading = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
        let valve = valve_name(bytes[7])?;
        Ok(json!({
            "services": [{
                "service_id": Self::SERVICE_ID,
                "properties": {
                    "battery_level": battery,
                    "signal_strength": signal,
                    "meter_reading": reading,
                    "valve": valve,
                },
            }],
        }))
    }

    fn encode_uplink_ack(&self, ack: &Value) -> Result<Vec<u8>, CodecError> {
        let object = fields(ack, "acknowledgement", &["result_code"])?;
        let status: u8 = narrow(int(object, "result_code", 0..=255)?, "result_code")?;
        Ok(vec![ACK, status])
    }

    fn encode_command(
        &self,
        service_id: Option<&str>,
        command_name: &str,
        paras: &Value,
    ) -> Result<Vec<u8>, CodecError> {
        if let Some(service) = service_id
            && service != Self::SERVICE_ID
        {
            return Err(err(format!(
                "unknown service {service:?}; the codec knows {:?}",
                Self::SERVICE_ID
            )));
        }
        match command_name {
            "SET_VALVE" => {
                let paras = fields(paras, "SET_VALVE paras", &["valve"])?;
                Ok(vec![SET_VALVE, valve(paras)?])
            }
            "SET_INTERVAL" => {
                let paras = fields(paras, "SET_INTERVAL paras", &["interval"])?;
                let range = Self::INTERVAL_SECS;
                let interval: u32 = narrow(
                    int(
                        paras,
                        "interval",
                        i64::from(*range.start())..=i64::from(*range.end()),
                    )?,
                    "interval",
                )?;
                let mut frame = vec![SET_INTERVAL];
                frame.extend_from_slice(&interval.to_be_bytes());
                Ok(frame)
            }
            other => Err(err(format!(
                "unknown command {other:?}; the codec knows SET_VALVE and SET_INTERVAL"
            ))),
        }
    }

    fn decode_command_response(&self, bytes: &[u8]) -> Result<CommandResponse, CodecError> {
        frame_type(bytes, COMMAND_RESPONSE, 2, "command response")?;
        let code = bytes[1];
        let result = if code == 0 {
            "success".to_owned()
        } else {
            format!("error {code}")
        };
        Ok(CommandResponse {
            success: code == 0,
            detail: json!({ "result_code": code, "paras": { "result": result } }),
        })
    }
}
