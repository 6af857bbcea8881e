//! Value encoding: one format byte followed by the record as JSON. JSON keeps records readable
//! with RocksDB's own tools and lets fields be added with serde defaults; the format byte
//! leaves room for a denser encoding later without a flag day.

use fleetgate_model::Timestamp;
use fleetgate_model::device::{DeviceStatus, Presence};
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

const FORMAT_PRESENCE: u8 = 2;

/// Encodes a device's presence in at most 27 bytes: the format byte, the status (1 ONLINE,
/// 2 OFFLINE, 3 ABNORMAL), a byte whose bits 0–2 tell which of first-online, last-online and
/// last-offline time follow, then those times as big-endian milliseconds. Presence is written
/// at every connect and disconnect, so it is kept small.
pub fn encode_presence(p: &Presence) -> Vec<u8> {
    let status = match p.status {
        DeviceStatus::Online => 1,
        DeviceStatus::Offline => 2,
        DeviceStatus::Abnormal => 3,
        // Not connection statuses; never stored as presence (read back as OFFLINE).
        DeviceStatus::Inactive | DeviceStatus::Frozen => 2,
    };
    let times = [p.first_online_time, p.last_online_time, p.last_offline_time];
    let mut out = vec![FORMAT_PRESENCE, status, 0];
    for (bit, t) in times.iter().enumerate() {
        if let Some(t) = t {
            out[2] |= 1 << bit;
            out.extend_from_slice(&t.as_millis().to_be_bytes());
        }
    }
    out
}

/// Decodes what [`encode_presence`] wrote; anything else is [`StorageError::Corrupt`].
pub fn decode_presence(key: &[u8], bytes: &[u8]) -> Result<Presence> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        cf: Cf::Presence.name(),
        key: escape(key),
        reason: reason.to_owned(),
    };
    let [FORMAT_PRESENCE, status, flags, rest @ ..] = bytes else {
        return Err(corrupt("not a presence value"));
    };
    let status = match status {
        1 => DeviceStatus::Online,
        2 => DeviceStatus::Offline,
        3 => DeviceStatus::Abnormal,
        _ => return Err(corrupt("unknown status")),
    };
    if flags & !0b111 != 0 || rest.len() != 8 * flags.count_ones() as usize {
        return Err(corrupt("wrong length"));
    }
    let mut chunks = rest.chunks_exact(8);
    let mut time = |bit: u8| {
        (flags & (1 << bit) != 0).then(|| {
            let c = chunks.next().unwrap_or(&[0; 8]);
            Timestamp::from_millis(i64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        })
    };
    Ok(Presence {
        status,
        first_online_time: time(0),
        last_online_time: time(1),
        last_offline_time: time(2),
    })
}

/// A key as printable text for messages.
pub fn escape(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_round_trips_and_refuses_garbage() {
        let p = Presence {
            status: DeviceStatus::Abnormal,
            first_online_time: Some(Timestamp::from_millis(1)),
            last_online_time: None,
            last_offline_time: Some(Timestamp::from_millis(-5)),
        };
        let bytes = encode_presence(&p);
        assert_eq!(bytes.len(), 3 + 16);
        assert_eq!(decode_presence(b"k", &bytes).unwrap(), p);
        for bad in [
            &b""[..],
            &[2, 1],
            &[2, 9, 0],
            &[2, 1, 1],
            &[2, 1, 8],
            &[1, 1, 0],
        ] {
            assert!(
                matches!(
                    decode_presence(b"k", bad),
                    Err(StorageError::Corrupt { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
