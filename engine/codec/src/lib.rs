//! Wire codecs for fleetgate: pure byte-level encoding and decoding, with no I/O and no runtime.
//!
//! The crate holds four codecs:
//!
//! - [`mqtt`], the framing glue around rmqtt-codec that the MQTT connection code uses to find
//!   packet boundaries and to speak MQTT 3.1, 3.1.1 and 5.0 with one MQTT 5.0 packet vocabulary;
//! - [`pcp`], the binary software-upgrade protocol of `spec/device-management.md §15`;
//! - [`coap`], CoAP (RFC 7252) messages on top of coap-lite, with block-wise transfer, Observe,
//!   retransmission and deduplication state, the CoRE Link Format and the LwM2M registration
//!   parameters that NB-IoT devices use (`docs/coap.md`);
//! - [`device_codec`], the product codecs of `spec/device-management.md §21` that turn a
//!   device's binary payloads into product-model JSON and back, with the built-in
//!   `watermeter-v1`.
//!
//! Two parts of the engine call [`pcp`]:
//!
//! - the CoAP and MQTT uplink paths, which pass every payload from a PCP-capable device through
//!   [`recognize_uplink`] before the codec plugin, so that PCP frames are handled by the upgrade
//!   flow and everything else reaches the plugin untouched (§15.9);
//! - the OTA scheduler, which plans chunking with [`ChunkPlan`], encodes downlink
//!   [`PcpMessage`]s and answers chunk requests.
//!
//! Decoders never panic and report every violation as a typed error. The most used items are
//! re-exported here under names that stay unambiguous across codecs.

pub mod coap;
pub mod device_codec;
pub mod mqtt;
pub mod pcp;

pub use mqtt::{Error as MqttError, Version as MqttVersion};

pub use pcp::{
    ChunkPlan, Direction as PcpDirection, Error as PcpError, Frame as PcpFrame,
    Message as PcpMessage, Recognized, Version as PcpVersion, recognize_uplink,
};
