//! Product codecs (`spec/device-management.md §21`): the translation between a device's binary
//! payloads and the product-model JSON the platform speaks.
//!
//! A product whose data format is `binary` names a codec in its `codec` field. The engine looks
//! it up with [`builtin`] and calls it at four points:
//!
//! - [`DeviceCodec::decode_uplink`] on each report, e.g. a CoAP notification's payload, giving
//!   `{"services":[{"service_id":…,"properties":{…}}]}`;
//! - [`DeviceCodec::encode_uplink_ack`] for the acknowledgement of a report;
//! - [`DeviceCodec::encode_command`] when a command is created, so that a command the codec
//!   cannot encode is refused by the API before it is queued;
//! - [`DeviceCodec::decode_command_response`] on the device's answer to a command.
//!
//! fleetgate ships one codec, [`WaterMeterV1`] (`watermeter-v1`), whose frames are documented in
//! `docs/coap.md` so that devices and simulators can be written against it. Codecs are pure
//! functions of their input; PCP frames never reach them.
//!
//! ```
//! use fleetgate_codec::device_codec::builtin;
//! use serde_json::json;
//!
//! let codec = builtin("watermeter-v1").expect("built in");
//! let report = codec.decode_uplink(&[0x01, 87, 0xA6, 0x00, 0x00, 0x30, 0x39, 0x01])?;
//! assert_eq!(report["services"][0]["properties"]["meter_reading"], 12345);
//! let paras = json!({"valve": "CLOSED"});
//! let command = codec.encode_command(Some("WaterMeter"), "SET_VALVE", &paras)?;
//! assert_eq!(command, [0x81, 0x00]);
//! let response = codec.decode_command_response(&[0xA0, 0x00])?;
//! assert!(response.success);
//! # Ok::<(), fleetgate_codec::device_codec::CodecError>(())
//! ```

mod watermeter;

#[cfg(test)]
mod tests;

use std::fmt;

pub use watermeter::WaterMeterV1;

/// A codec failure, with a message for logs and API errors ("battery_level 101 is out of
/// range 0-100").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CodecError {
    message: String,
}

impl CodecError {
    /// An error with this message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A decoded command response.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResponse {
    /// Whether the device reports success (the command becomes SUCCESSFUL, else FAILED).
    pub success: bool,
    /// The response object, e.g. `{"result_code":0,"paras":{"result":"success"}}`.
    pub detail: serde_json::Value,
}

/// A product codec (`spec/device-management.md §21`). Implementations are stateless and
/// shared between threads.
pub trait DeviceCodec: Send + Sync + fmt::Debug {
    /// The codec's name, as products reference it (`watermeter-v1`).
    fn name(&self) -> &'static str;

    /// Decodes a device report into product-model JSON
    /// (`{"services":[{"service_id":…,"properties":{…}}]}`); an error counts the report as
    /// malformed.
    fn decode_uplink(&self, bytes: &[u8]) -> Result<serde_json::Value, CodecError>;

    /// Encodes the platform's acknowledgement of a report (`{"result_code":0}`).
    fn encode_uplink_ack(&self, ack: &serde_json::Value) -> Result<Vec<u8>, CodecError>;

    /// Encodes a command for the device; unknown services, commands or bad parameters are
    /// errors.
    fn encode_command(
        &self,
        service_id: Option<&str>,
        command_name: &str,
        paras: &serde_json::Value,
    ) -> Result<Vec<u8>, CodecError>;

    /// Decodes the device's response to a command.
    fn decode_command_response(&self, bytes: &[u8]) -> Result<CommandResponse, CodecError>;
}

/// The names of the codecs [`builtin`] knows.
pub const BUILTIN_CODECS: &[&str] = &[WaterMeterV1::NAME];

static WATERMETER_V1: WaterMeterV1 = WaterMeterV1;

/// The built-in codec of this name, if there is one.
#[must_use]
pub fn builtin(name: &str) -> Option<&'static dyn DeviceCodec> {
    match name {
        WaterMeterV1::NAME => Some(&WATERMETER_V1),
        _ => None,
    }
}
