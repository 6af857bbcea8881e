//! The conformance suite on RocksDB, each case in its own temporary directory.

use std::sync::Arc;

use fleetgate_storage::Limits;
use fleetgate_storage::conformance::Fixture;
use fleetgate_storage_rocks::{RocksConfig, open_store};

fn make(limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = RocksConfig {
        block_cache_mb: 8,
        write_buffer_mb: 1,
        total_write_buffer_mb: 8,
        ..RocksConfig::default()
    };
    let store = open_store(dir.path(), &config, limits).expect("open RocksDB");
    Fixture::new(Arc::new(store), dir)
}

fleetgate_storage::conformance_tests!(make);
