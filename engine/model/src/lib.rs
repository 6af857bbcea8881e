//! fleetgate's domain model: the typed vocabulary every other crate speaks.
//!
//! - [`ids`]: identifier newtypes, validated once at the edge;
//! - [`product`] and [`validate`]: products, product models and payload validation;
//! - [`device`]: devices, the status lifecycle, credentials, tags and groups;
//! - [`app`]: applications and their API keys;
//! - [`auth`]: the MQTT/HTTPS secret authentication scheme;
//! - [`shadow`]: desired/reported shadows, versions and deltas;
//! - [`command`]: commands and their state machine;
//! - [`lwm2m`]: LwM2M registrations of CoAP devices and their locations;
//! - [`topic`]: the `$oc/devices/{device_id}/...` topic grammar and filter matching;
//! - [`payload`]: serde types for every system payload;
//! - [`ota`] and [`rule`]: OTA, forwarding-rule and ACL records;
//! - [`time`]: timestamps and the protocols' time formats.
//!
//! The crate does no I/O, reads no clock except [`time::Timestamp::now`], and depends on no
//! async runtime: the engine, storage and API all build on it.

pub mod app;
pub mod auth;
pub mod command;
pub mod device;
pub mod error;
pub mod ids;
pub mod lwm2m;
pub mod ota;
pub mod payload;
pub mod product;
pub mod rule;
pub mod shadow;
pub mod testing;
pub mod time;
pub mod topic;
pub mod validate;

pub use error::{Problem, ValidationError};
pub use ids::*;
pub use time::Timestamp;
