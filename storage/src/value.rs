//! Value encoding: one format byte followed by the record as JSON. JSON keeps records readable
//! with RocksDB's own tools and lets fields be added with serde defaults; the format byte
//! leaves room for a denser encoding later without a flag day.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StorageError};
use crate::kv::Cf;

const FORMAT_JSON: u8 = 1;

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_JSON];
    serde_json::to_writer(&mut out, value)
        .map_err(|e| StorageError::Backend(format!("cannot encode record: {e}")))?;
    Ok(out)
}

/// Decodes a record read from `cf` at `key`; anything undecodable is [`StorageError::Corrupt`].
pub fn decode<T: DeserializeOwned>(cf: Cf, key: &[u8], bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| StorageError::Corrupt {
        cf: cf.name(),
        key: escape(key),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_JSON, json)) => {
            serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
        }
        Some((other, _)) => Err(corrupt(format!("unknown value format {other}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// A key as printable text for messages.
pub fn escape(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}
