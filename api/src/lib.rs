//! The application side of fleetgate and the binary that wires everything together:
//! configuration ([`config`]), the command line ([`cli`]), logging, metrics, the HTTP server and
//! the application API ([`http`]),
//! provisioning from a file, and storage housekeeping.

pub mod cli;
pub mod config;
pub mod engine_metrics;
pub mod error;
pub mod housekeeping;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod provision;
pub mod server;
