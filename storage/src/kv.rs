//! The ordered key-value engine the stores are built on. An engine provides column families
//! of byte keys in lexicographic order, point reads, bounded range scans and atomic write
//! batches with a durability choice. [`crate::mem::MemKv`] implements it in memory;
//! `fleetgate-storage-rocks` implements it on RocksDB.

use crate::error::Result;

/// Column families: one per concern (key encodings in [`crate::keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Products by id.
    Products,
    /// Devices by id.
    Devices,
    /// Device credentials by device id.
    Credentials,
    /// Device connection status and times by device id.
    Presence,
    /// Groups by id.
    Groups,
    /// Secondary indexes of devices, products and groups.
    Index,
    /// Shadows by device id.
    Shadows,
    /// Command records, per-device history and the creation-time index.
    Commands,
    /// The command cache: per-device pending queues, the deadline index (expiry of PENDING,
    /// ack deadline of SENT commands) and the SENT commands of each device.
    CommandQueue,
    /// OTA packages, tasks and per-device progress.
    Ota,
    /// Forwarding rules and their actions.
    Rules,
    /// Publish/subscribe ACL rules.
    Acl,
    /// Applications (resource spaces), their unique names, API keys and keys by application.
    Apps,
    /// LwM2M registrations, by location, by device and by expiry, and their count.
    Registrations,
    /// Store metadata (schema version).
    Meta,
}

impl Cf {
    /// Every column family.
    pub const ALL: [Cf; 15] = [
        Cf::Products,
        Cf::Devices,
        Cf::Credentials,
        Cf::Presence,
        Cf::Groups,
        Cf::Index,
        Cf::Shadows,
        Cf::Commands,
        Cf::CommandQueue,
        Cf::Ota,
        Cf::Rules,
        Cf::Acl,
        Cf::Apps,
        Cf::Registrations,
        Cf::Meta,
    ];

    /// The column family's name on disk and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Products => "products",
            Cf::Devices => "devices",
            Cf::Credentials => "credentials",
            Cf::Presence => "presence",
            Cf::Groups => "groups",
            Cf::Index => "index",
            Cf::Shadows => "shadows",
            Cf::Commands => "commands",
            Cf::CommandQueue => "command_queue",
            Cf::Ota => "ota",
            Cf::Rules => "rules",
            Cf::Acl => "acl",
            Cf::Apps => "apps",
            Cf::Registrations => "registrations",
            Cf::Meta => "meta",
        }
    }
}

/// Whether a write must be on stable storage before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced to disk (fsync of the write-ahead log) before returning: for everything an API
    /// acknowledges as stored (registrations, cached commands, desired shadows).
    Synced,
    /// Written to the write-ahead log but not synced: survives a process crash, may lose the
    /// last moments on power loss. For high-rate state that the next event rewrites (online
    /// status, reported shadows, command history of synchronous commands).
    Buffered,
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
    },
}

/// Operations applied atomically: all or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            cf,
            key: key.into(),
        });
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A half-open key range `[start, end)`; an empty `end` means "to the end of the family".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key included.
    pub start: Vec<u8>,
    /// First key excluded; empty for unbounded.
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// Keys starting with `prefix` that sort strictly after `after` (a full key).
    pub fn prefix_after(prefix: &[u8], after: Option<&[u8]>) -> Self {
        let mut r = Self::prefix(prefix);
        if let Some(a) = after {
            let mut start = a.to_vec();
            start.push(0);
            if start > r.start {
                r.start = start;
            }
        }
        r
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// The smallest key greater than every key starting with `prefix` (empty if there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A named engine figure for `/metrics` (bytes, keys, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStat {
    /// Metric-style name without prefix, e.g. `live_data_bytes`.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// The column family it describes, if any.
    pub cf: Option<Cf>,
    /// The value.
    pub value: f64,
}

/// An ordered key-value engine with column families and atomic batches.
pub trait KvEngine: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one key.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Reads up to `limit` entries of `range` in key order.
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Entry>>;

    /// Reads one key without keeping what was read in the engine's block cache: for one-pass
    /// reads whose result the caller caches itself (credentials loaded at connect time), which
    /// would otherwise fill the cache with blocks read once.
    fn get_uncached(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(cf, key)
    }

    /// [`KvEngine::scan`] without filling the block cache (see [`KvEngine::get_uncached`]).
    fn scan_uncached(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Entry>> {
        self.scan(cf, range, limit)
    }

    /// Applies every operation of `batch` atomically.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()>;

    /// Makes everything written so far durable (used at shutdown).
    fn flush(&self) -> Result<()>;

    /// Engine figures for monitoring.
    fn stats(&self) -> Vec<EngineStat>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"");
        let r = KeyRange::prefix(b"a\0");
        assert!(r.contains(b"a\0x"));
        assert!(!r.contains(b"ab"));
        let after = KeyRange::prefix_after(b"a\0", Some(b"a\0m"));
        assert!(!after.contains(b"a\0m"));
        assert!(after.contains(b"a\0m\0"));
        assert!(after.contains(b"a\0n"));
    }
}
