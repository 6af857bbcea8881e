//! Wire codecs for fleetgate: pure byte-level encoding and decoding, with no I/O and no runtime.
//!
//! The crate holds two codecs:
//!
//! - [`mqtt`], the framing glue around rmqtt-codec that the MQTT connection code uses to find
//!   packet boundaries and to speak MQTT 3.1, 3.1.1 and 5.0 with one MQTT 5.0 packet vocabulary;
//! - [`pcp`], the binary software-upgrade protocol of `spec/device-management.md §15`.
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

pub mod mqtt;
pub mod pcp;

pub use mqtt::{Error as MqttError, Version as MqttVersion};

pub use pcp::{
    ChunkPlan, Direction as PcpDirection, Error as PcpError, Frame as PcpFrame,
    Message as PcpMessage, Recognized, Version as PcpVersion, recognize_uplink,
};
