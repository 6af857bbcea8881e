//! [`KvStore`]: every store trait implemented once over any [`KvEngine`], so that the memory
//! and RocksDB backends share the same invariants — indexes written in the same batch as their
//! record, limits checked under the lock of the record they guard, cascades on delete.
//!
//! Concurrency: read-modify-write operations lock the stripes of the records they touch
//! (sorted, so two operations never wait on each other in opposite orders), read, decide, and
//! write one batch. Plain reads take no lock: a batch is atomic, so they see all of it or none.

mod apps;
mod commands;
mod devices;
mod groups;
mod integrity;
mod ota;
mod products;
mod registrations;
mod rules;
mod shadows;

use std::hash::{Hash, Hasher};

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, EngineStat, KeyRange, KvEngine, WriteBatch};
use crate::traits::{IntegrityReport, Limits, Page, Storage};
use crate::value;

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

const STRIPES: usize = 1024;

/// The stores over an engine `E`.
#[derive(Debug)]
pub struct KvStore<E> {
    engine: E,
    limits: Limits,
    stripes: Box<[Mutex<()>]>,
}

/// Lock-stripe names, so that different record kinds with equal ids do not share a stripe by
/// construction (they may still share one by hash, which is harmless).
#[derive(Debug, Clone, Copy, Hash)]
enum LockKind {
    Device,
    Node,
    Product,
    ProductName,
    Group,
    Ota,
    Rule,
    App,
    AppName,
    ApiKey,
    Registration,
}

impl<E: KvEngine> KvStore<E> {
    /// Opens the stores on `engine`, checking (or, on a new database, writing) the schema version.
    pub fn open(engine: E, limits: Limits) -> Result<Self> {
        let store = KvStore {
            engine,
            limits,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        };
        match store.read::<u32>(Cf::Meta, keys::SCHEMA_VERSION)? {
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StorageError::Backend(format!(
                    "the data directory has schema version {v}, this fleetgate understands {SCHEMA_VERSION}"
                )));
            }
            None => {
                let mut b = WriteBatch::new();
                b.put(
                    Cf::Meta,
                    keys::SCHEMA_VERSION,
                    value::encode(&SCHEMA_VERSION)?,
                );
                store.engine.write(b, Durability::Synced)?;
            }
        }
        Ok(store)
    }

    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The lock stripe of a record.
    fn stripe(name: (LockKind, &str)) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        (h.finish() as usize) % STRIPES
    }

    fn lock(&self, names: &[(LockKind, &str)]) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = names.iter().map(|n| Self::stripe(*n)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| self.stripes[i].lock()).collect()
    }

    fn read<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>> {
        match self.engine.get(cf, key)? {
            None => Ok(None),
            Some(bytes) => value::decode(cf, key, &bytes).map(Some),
        }
    }

    fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        Ok(self.engine.get(cf, key)?.is_some())
    }

    fn any_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<bool> {
        Ok(!self
            .engine
            .scan(cf, &KeyRange::prefix(prefix), 1)?
            .is_empty())
    }

    /// Lists, in key order, the entries under `prefix` that `pick` turns into items, examining a
    /// bounded number of entries per call. The cursor is the hex text of the remainder of the
    /// last examined key after `prefix`, so it is opaque and URL-safe.
    fn filtered_page<T>(
        &self,
        cf: Cf,
        prefix: &[u8],
        cursor: Option<&str>,
        limit: usize,
        mut pick: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>,
    ) -> Result<Page<T>> {
        let limit = limit.max(1);
        let after = match cursor {
            None => None,
            Some(c) => Some([prefix, &cursor_decode(c)?].concat()),
        };
        let mut range = KeyRange::prefix_after(prefix, after.as_deref());
        let mut budget = limit.saturating_mul(20).max(2000);
        let mut items = Vec::new();
        loop {
            let chunk = limit.min(budget).max(1) + 1;
            let entries = self.engine.scan(cf, &range, chunk)?;
            let exhausted = entries.len() < chunk;
            for (i, (k, v)) in entries.iter().enumerate() {
                budget = budget.saturating_sub(1);
                if let Some(item) = pick(k, v)? {
                    items.push(item);
                }
                if items.len() == limit || budget == 0 {
                    let more = !(exhausted && i + 1 == entries.len());
                    return Ok(Page {
                        items,
                        next: more.then(|| cursor_encode(&k[prefix.len()..])),
                    });
                }
            }
            match entries.last() {
                Some((k, _)) if !exhausted => range = KeyRange::prefix_after(prefix, Some(k)),
                _ => return Ok(Page { items, next: None }),
            }
        }
    }

    /// Lists records whose ids are the last part of index entries under `prefix` in `index_cf`.
    fn page_via_index<T: DeserializeOwned>(
        &self,
        index_cf: Cf,
        prefix: &[u8],
        cursor: Option<&str>,
        limit: usize,
        record_cf: Cf,
        record_key: impl Fn(&str) -> Vec<u8>,
    ) -> Result<Page<T>> {
        let after = cursor.map(|c| [prefix, c.as_bytes()].concat());
        let range = KeyRange::prefix_after(prefix, after.as_deref());
        let entries = self
            .engine
            .scan(index_cf, &range, limit.saturating_add(1))?;
        let more = entries.len() > limit;
        let mut items = Vec::with_capacity(entries.len().min(limit));
        let mut last = None;
        for (k, _) in entries.into_iter().take(limit) {
            let id = id_after(&k, prefix)?;
            if let Some(rec) = self.read(record_cf, &record_key(&id))? {
                items.push(rec);
            }
            last = Some(id);
        }
        Ok(Page {
            items,
            next: if more { last } else { None },
        })
    }

    /// Lists records of a family keyed by `{tag}{id}` in id order.
    fn page_records<T: DeserializeOwned>(
        &self,
        cf: Cf,
        tag: &[u8],
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>> {
        let after = cursor.map(|c| [tag, c.as_bytes()].concat());
        let range = KeyRange::prefix_after(tag, after.as_deref());
        let entries = self.engine.scan(cf, &range, limit.saturating_add(1))?;
        let more = entries.len() > limit;
        let mut items = Vec::with_capacity(entries.len().min(limit));
        let mut last = None;
        for (k, v) in entries.into_iter().take(limit) {
            items.push(value::decode(cf, &k, &v)?);
            last = Some(id_after(&k, tag)?);
        }
        Ok(Page {
            items,
            next: if more { last } else { None },
        })
    }
}

/// Hex text of key bytes (cursor form).
fn cursor_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a cursor made by [`cursor_encode`].
fn cursor_decode(cursor: &str) -> Result<Vec<u8>> {
    let bad = || StorageError::Conflict(format!("invalid cursor {cursor:?}"));
    if !cursor.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// The id that follows `prefix` in an index or record key.
fn id_after(key: &[u8], prefix: &[u8]) -> Result<String> {
    key.strip_prefix(prefix)
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .map(str::to_owned)
        .ok_or_else(|| StorageError::Corrupt {
            cf: Cf::Index.name(),
            key: value::escape(key),
            reason: "index key does not end with a valid id".into(),
        })
}

fn put<T: Serialize>(
    batch: &mut WriteBatch,
    cf: Cf,
    key: impl Into<Vec<u8>>,
    record: &T,
) -> Result<()> {
    batch.put(cf, key, value::encode(record)?);
    Ok(())
}

impl<E: KvEngine> Storage for KvStore<E> {
    fn flush(&self) -> Result<()> {
        self.engine.flush()
    }

    fn ping(&self) -> Result<()> {
        self.engine.get(Cf::Meta, keys::SCHEMA_VERSION).map(|_| ())
    }

    fn engine_stats(&self) -> Vec<EngineStat> {
        self.engine.stats()
    }

    fn check_integrity(&self) -> Result<IntegrityReport> {
        integrity::check(self)
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }
}
