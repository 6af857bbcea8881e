//! [`RocksKv`]: [`KvEngine`] on RocksDB.

use std::path::Path;

use fleetgate_storage::kv::{Entry, KeyRange, Op, WriteBatch};
use fleetgate_storage::{Cf, Durability, EngineStat, KvEngine, Result, StorageError};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, IteratorMode, Options, ReadOptions, WriteOptions,
};

use crate::config::{Compression, RocksConfig};

/// A RocksDB database with one column family per [`Cf`].
pub struct RocksKv {
    db: DB,
    cache: Cache,
}

impl std::fmt::Debug for RocksKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKv")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

fn backend(context: &str) -> impl FnOnce(rocksdb::Error) -> StorageError + '_ {
    move |e| StorageError::Backend(format!("{context}: {e}"))
}

const MIB: usize = 1 << 20;

impl RocksKv {
    /// Opens the database at `path`, creating it and any missing column family.
    pub fn open(path: &Path, config: &RocksConfig) -> Result<RocksKv> {
        let cache = Cache::new_lru_cache(
            usize::try_from(config.block_cache_mb).unwrap_or(usize::MAX / MIB) * MIB,
        );
        let compression = match config.compression {
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::None => DBCompressionType::None,
        };
        let cf_options = || {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_compression_type(compression);
            o.set_bottommost_compression_type(compression);
            o.set_write_buffer_size(usize::try_from(config.write_buffer_mb).unwrap_or(4096) * MIB);
            o
        };
        let mut db_opts = cf_options();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(i32::try_from(config.max_open_files).unwrap_or(i32::MAX));
        db_opts.set_max_background_jobs(i32::try_from(config.max_background_jobs).unwrap_or(2));
        db_opts.set_db_write_buffer_size(
            usize::try_from(config.total_write_buffer_mb).unwrap_or(usize::MAX / MIB) * MIB,
        );
        db_opts.set_keep_log_file_num(5);
        db_opts.set_max_log_file_size(16 * MIB);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| {
            StorageError::Backend(format!(
                "cannot open the database at {}: {e}",
                path.display()
            ))
        })?;
        Ok(RocksKv { db, cache })
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| StorageError::Backend(format!("column family {} is missing", cf.name())))
    }
}

impl RocksKv {
    fn get_with(&self, cf: Cf, key: &[u8], fill_cache: bool) -> Result<Option<Vec<u8>>> {
        let handle = self.cf(cf)?;
        let mut opts = ReadOptions::default();
        opts.fill_cache(fill_cache);
        Ok(self
            .db
            .get_pinned_cf_opt(handle, key, &opts)
            .map_err(backend("read"))?
            .map(|v| v.to_vec()))
    }

    fn scan_with(
        &self,
        cf: Cf,
        range: &KeyRange,
        limit: usize,
        fill_cache: bool,
    ) -> Result<Vec<Entry>> {
        let handle = self.cf(cf)?;
        let mut opts = ReadOptions::default();
        opts.fill_cache(fill_cache);
        if !range.end.is_empty() {
            opts.set_iterate_upper_bound(range.end.clone());
        }
        let iter = self.db.iterator_cf_opt(
            handle,
            opts,
            IteratorMode::From(&range.start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(backend("scan"))?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }
}

impl KvEngine for RocksKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(cf, key, true)
    }

    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Entry>> {
        self.scan_with(cf, range, limit, true)
    }

    fn get_uncached(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(cf, key, false)
    }

    fn scan_uncached(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Entry>> {
        self.scan_with(cf, range, limit, false)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let mut b = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                Op::Put { cf, key, value } => b.put_cf(self.cf(*cf)?, key, value),
                Op::Delete { cf, key } => b.delete_cf(self.cf(*cf)?, key),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(durability == Durability::Synced);
        self.db.write_opt(b, &opts).map_err(backend("write"))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(backend("flush wal"))?;
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf)?).map_err(backend("flush"))?;
        }
        Ok(())
    }

    fn stats(&self) -> Vec<EngineStat> {
        const PER_CF: [(&str, &str, &str); 4] = [
            (
                "rocksdb.estimate-num-keys",
                "keys",
                "Estimated number of keys in the column family.",
            ),
            (
                "rocksdb.estimate-live-data-size",
                "live_data_bytes",
                "Estimated size of live data in bytes.",
            ),
            (
                "rocksdb.total-sst-files-size",
                "sst_files_bytes",
                "Total size of the SST files in bytes.",
            ),
            (
                "rocksdb.cur-size-all-mem-tables",
                "memtable_bytes",
                "Size of the memtables in bytes.",
            ),
        ];
        let mut out = Vec::new();
        for cf in Cf::ALL {
            let Ok(handle) = self.cf(cf) else { continue };
            for (property, name, help) in PER_CF {
                if let Ok(Some(v)) = self.db.property_int_value_cf(handle, property) {
                    out.push(EngineStat {
                        name,
                        help,
                        cf: Some(cf),
                        value: v as f64,
                    });
                }
            }
        }
        out.push(EngineStat {
            name: "block_cache_bytes",
            help: "Memory used by the shared block cache in bytes.",
            cf: None,
            value: self.cache.get_usage() as f64,
        });
        out
    }
}
