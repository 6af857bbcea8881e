//! The in-memory engine: one ordered map per column family behind a lock. Writes of a batch
//! are applied under one write lock, so readers never see half a batch. Nothing survives the
//! process; it serves tests, simulations and the conformance suite.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use crate::error::Result;
use crate::kv::{Cf, Durability, EngineStat, Entry, KeyRange, KvEngine, Op, WriteBatch};

type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`KvEngine`].
#[derive(Debug, Default)]
pub struct MemKv {
    cfs: RwLock<BTreeMap<Cf, Family>>,
}

impl MemKv {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KvEngine for MemKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs.read().get(&cf).and_then(|m| m.get(key).cloned()))
    }

    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Entry>> {
        let guard = self.cfs.read();
        let Some(map) = guard.get(&cf) else {
            return Ok(Vec::new());
        };
        Ok(map
            .range(range.start.clone()..)
            .take_while(|(k, _)| range.contains(k))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, batch: WriteBatch, _durability: Durability) -> Result<()> {
        let mut guard = self.cfs.write();
        for op in batch.ops() {
            match op {
                Op::Put { cf, key, value } => {
                    guard
                        .entry(*cf)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Op::Delete { cf, key } => {
                    if let Some(m) = guard.get_mut(cf) {
                        m.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> Vec<EngineStat> {
        let guard = self.cfs.read();
        Cf::ALL
            .iter()
            .map(|cf| EngineStat {
                name: "keys",
                help: "Number of keys in the column family.",
                cf: Some(*cf),
                value: guard.get(cf).map_or(0, BTreeMap::len) as f64,
            })
            .collect()
    }
}
