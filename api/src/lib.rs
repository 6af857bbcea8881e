//! The application side of fleetgate and the binary that wires everything together:
//! configuration ([`config`]), the command line ([`cli`]), logging, metrics, the HTTP server
//! and storage housekeeping.

pub mod cli;
pub mod config;
pub mod error;
pub mod housekeeping;
pub mod logging;
pub mod metrics;
pub mod server;
