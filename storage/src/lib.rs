//! fleetgate's storage layer.
//!
//! - [`traits`]: one store trait per concern (products, devices and credentials, groups,
//!   shadows, commands and the command cache, OTA, rules and ACLs, applications, LwM2M
//!   registrations) and [`Storage`], all of them;
//! - [`kv`]: the ordered key-value engine the stores are built on;
//! - [`KvStore`]: every store implemented once over any engine, with indexes written
//!   atomically with their records;
//! - [`mem::MemKv`]: the in-memory engine; `fleetgate-storage-rocks` provides RocksDB;
//! - [`keys`] and [`value`]: the on-disk encodings (docs/storage.md);
//! - `conformance` (feature): the suite every backend must pass.
//!
//! The crate does no I/O of its own and depends on no runtime.

pub mod config;
pub mod error;
pub mod keys;
pub mod kv;
mod kvstore;
pub mod mem;
pub mod traits;
pub mod value;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use config::StorageConfig;
pub use error::{Result, StorageError};
pub use kv::{Cf, Durability, EngineStat, KvEngine};
pub use kvstore::{KvStore, SCHEMA_VERSION};
pub use traits::*;

/// The stores over the in-memory engine.
pub type MemStore = KvStore<mem::MemKv>;

impl MemStore {
    /// An empty in-memory store with default limits.
    pub fn in_memory() -> MemStore {
        Self::in_memory_with(Limits::default())
    }

    /// An empty in-memory store with the given limits.
    pub fn in_memory_with(limits: Limits) -> MemStore {
        // Opening an empty memory engine only writes the schema version, which cannot fail.
        KvStore::open(mem::MemKv::new(), limits)
            .unwrap_or_else(|e| unreachable!("memory engine: {e}"))
    }
}
