//! The `[rocksdb]` section of the configuration.

use serde::{Deserialize, Serialize};

/// `[rocksdb]`: tuning of the embedded database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RocksConfig {
    /// Shared block cache for all column families, in MiB.
    pub block_cache_mb: u64,
    /// Memtable size per column family, in MiB.
    pub write_buffer_mb: u64,
    /// Cap on all memtables together, in MiB.
    pub total_write_buffer_mb: u64,
    /// Most SST files kept open. Every open file is a descriptor the connection tier cannot
    /// use, and the process limit is shared (20,000 on the reference machines).
    pub max_open_files: u32,
    /// Background flush and compaction threads.
    pub max_background_jobs: u32,
    /// Block compression: `lz4` or `none`.
    pub compression: Compression,
}

/// Block compression of SST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// LZ4: fast, the only codec compiled in.
    Lz4,
    /// No compression.
    None,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_mb: 128,
            write_buffer_mb: 16,
            total_write_buffer_mb: 128,
            max_open_files: 256,
            max_background_jobs: 2,
            compression: Compression::Lz4,
        }
    }
}

impl RocksConfig {
    /// Every problem with the section, as `key: reason` lines.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let checks: [(&str, u64, u64, u64); 5] = [
            ("rocksdb.block_cache_mb", self.block_cache_mb, 1, 1 << 20),
            ("rocksdb.write_buffer_mb", self.write_buffer_mb, 1, 4096),
            (
                "rocksdb.total_write_buffer_mb",
                self.total_write_buffer_mb,
                1,
                1 << 20,
            ),
            (
                "rocksdb.max_open_files",
                u64::from(self.max_open_files),
                64,
                100_000,
            ),
            (
                "rocksdb.max_background_jobs",
                u64::from(self.max_background_jobs),
                1,
                64,
            ),
        ];
        for (key, v, min, max) in checks {
            if v < min || v > max {
                p.push(format!("{key}: must be between {min} and {max}"));
            }
        }
        if self.total_write_buffer_mb < self.write_buffer_mb {
            p.push(
                "rocksdb.total_write_buffer_mb: must be at least rocksdb.write_buffer_mb".into(),
            );
        }
        p
    }
}
