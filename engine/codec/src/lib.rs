//! Wire codecs for fleetgate: pure byte-level encoding and decoding, with no I/O and no runtime.
//!
//! Today the crate holds [`pcp`], the binary software-upgrade protocol of
//! `spec/device-management.md §15`. Two parts of the engine call it:
//!
//! - the CoAP and MQTT uplink paths, which pass every payload from a PCP-capable device through
//!   [`recognize_uplink`] before the codec plugin, so that PCP frames are handled by the upgrade
//!   flow and everything else reaches the plugin untouched (§15.9);
//! - the OTA scheduler, which plans chunking with [`ChunkPlan`], encodes downlink
//!   [`PcpMessage`]s and answers chunk requests.
//!
//! Decoders never panic and report every violation as a typed error. The PCP items are
//! re-exported here under names that stay unambiguous once further codecs join the crate.

pub mod pcp;

pub use pcp::{
    ChunkPlan, Direction as PcpDirection, Error as PcpError, Frame as PcpFrame,
    Message as PcpMessage, Recognized, Version as PcpVersion, recognize_uplink,
};
