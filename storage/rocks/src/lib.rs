//! The RocksDB engine for fleetgate's stores ([`RocksKv`]) and its `[rocksdb]` configuration.
//! One column family per concern ([`fleetgate_storage::Cf`]), the write-ahead log always on,
//! synced writes for everything the API acknowledges as durable, LZ4 compression, a shared
//! block cache with bloom filters, and a bounded number of open files so that the process keeps
//! its file descriptors for device connections.

mod config;
mod engine;

pub use config::RocksConfig;
pub use engine::RocksKv;

use std::path::Path;

use fleetgate_storage::{KvStore, Limits, Result};

/// The stores over RocksDB.
pub type RocksStore = KvStore<RocksKv>;

/// Opens (creating when missing) the database at `path` and the stores on it.
pub fn open_store(path: &Path, config: &RocksConfig, limits: Limits) -> Result<RocksStore> {
    KvStore::open(RocksKv::open(path, config)?, limits)
}
