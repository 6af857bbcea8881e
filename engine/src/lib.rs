//! fleetgate's connection tier. Today it owns the `[engine]` configuration: how many shards
//! run and where each device and application protocol listens (defaults from
//! spec/README.md decision 7). The shards, session actors and protocol listeners build on it.

pub mod config;

pub use config::EngineConfig;
