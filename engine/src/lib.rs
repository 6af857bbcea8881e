//! fleetgate's connection tier: device sessions as lightweight actors, sharded across
//! reactor threads that run on io_uring or epoll (docs/architecture.md, "The engine").
//!
//! - [`Engine`] starts the shards, the storage workers and the upstream dispatcher, and is the
//!   handle to device sessions;
//! - [`session`]: the MQTT session state machine (pure: events in, actions out);
//! - [`shard`]: connections, timers and inboxes of one reactor thread;
//! - [`driver`]: the io_uring and epoll drivers;
//! - [`auth`], [`acl`], [`flow`]: authentication, authorization and token buckets;
//! - [`registry`], [`upstream`], [`presence`]: who is online, events for the platform, and
//!   device status in storage;
//! - [`platform`]: the device-side semantics over MQTT (property reports and the shadow,
//!   messages, events, time sync, commands and property requests);
//! - [`metrics`]: per-shard counters summed on scrape;
//! - [`ops`]: administrative operations on live sessions for the application API.

pub mod acl;
pub mod auth;
pub mod coap;
pub mod commands;
pub mod config;
pub mod driver;
pub mod engine;
pub mod flow;
pub mod metrics;
pub mod ops;
pub mod platform;
pub mod presence;
pub mod queue;
pub mod registry;
pub mod router;
pub mod session;
pub mod shard;
pub mod time;
pub mod upstream;
pub mod workers;

pub use config::EngineConfig;
pub use engine::{DeliverError, Engine, StartOptions};
pub use platform::{
    PendingResponse, Platform, PlatformEvent, PlatformObserver, RequestError, ResponseError,
};
