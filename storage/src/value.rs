//! Value encoding: one format byte followed by the record as JSON. JSON keeps records readable
//! with RocksDB's own tools and lets fields be added with serde defaults; the format byte
//! leaves room for a denser encoding later without a flag day.

use fleetgate_model::device::{DeviceStatus, Presence};
use fleetgate_model::lwm2m::{Registration, RegistrationId};
use fleetgate_model::{AppId, DeviceId, NodeId, Timestamp};
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

const FORMAT_REGISTRATION: u8 = 3;

/// Encodes a registration compactly (millions are kept): the format byte `3`, a flags byte
/// (bit 0: queue mode), the lifetime (u32), the registered, updated and expiry times (i64
/// milliseconds), then endpoint, device id, app id, LwM2M version, address and objects, each
/// as a u16 length and its UTF-8 bytes, all big-endian. The location is the record's key and
/// is not repeated. Fails on a text longer than 65,535 bytes (the model's limits are far
/// below).
pub fn encode_registration(r: &Registration) -> Result<Vec<u8>> {
    let texts = [
        r.endpoint.as_str(),
        r.device_id.as_str(),
        r.app_id.as_str(),
        &r.lwm2m_version,
        &r.address,
        &r.objects,
    ];
    let mut out = Vec::with_capacity(30 + texts.iter().map(|t| 2 + t.len()).sum::<usize>());
    out.push(FORMAT_REGISTRATION);
    out.push(u8::from(r.queue_mode));
    out.extend_from_slice(&r.lifetime_secs.to_be_bytes());
    for t in [r.registered_at, r.updated_at, r.expires_at] {
        out.extend_from_slice(&t.as_millis().to_be_bytes());
    }
    for t in texts {
        let len = u16::try_from(t.len()).map_err(|_| {
            StorageError::Backend(format!(
                "cannot encode registration {}: a field is {} bytes long",
                r.location,
                t.len()
            ))
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    Ok(out)
}

/// Decodes what [`encode_registration`] wrote for `location`; anything else is
/// [`StorageError::Corrupt`].
pub fn decode_registration(
    key: &[u8],
    location: RegistrationId,
    bytes: &[u8],
) -> Result<Registration> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        cf: Cf::Registrations.name(),
        key: escape(key),
        reason: reason.to_owned(),
    };
    let [FORMAT_REGISTRATION, flags, rest @ ..] = bytes else {
        return Err(corrupt("not a registration value"));
    };
    if flags & !1 != 0 {
        return Err(corrupt("unknown flags"));
    }
    let mut r = Reader(rest);
    let lifetime_secs = u32::from_be_bytes(r.take_array().ok_or_else(|| corrupt("too short"))?);
    let mut time = || {
        r.take_array()
            .map(|b| Timestamp::from_millis(i64::from_be_bytes(b)))
            .ok_or_else(|| corrupt("too short"))
    };
    let (registered_at, updated_at, expires_at) = (time()?, time()?, time()?);
    let mut text = || -> Result<String> {
        let len = u16::from_be_bytes(r.take_array().ok_or_else(|| corrupt("too short"))?);
        let bytes = r
            .take(usize::from(len))
            .ok_or_else(|| corrupt("too short"))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("text is not UTF-8"))
    };
    let endpoint = NodeId::new(text()?).map_err(|e| corrupt(&e.to_string()))?;
    let device_id = DeviceId::new(text()?).map_err(|e| corrupt(&e.to_string()))?;
    let app_id = AppId::new(text()?).map_err(|e| corrupt(&e.to_string()))?;
    let (lwm2m_version, address, objects) = (text()?, text()?, text()?);
    if !r.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Registration {
        location,
        endpoint,
        device_id,
        app_id,
        lifetime_secs,
        lwm2m_version,
        queue_mode: flags & 1 != 0,
        objects,
        address,
        registered_at,
        updated_at,
        expires_at,
    })
}

/// A cursor over bytes being decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn take_array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

/// A key as printable text for messages.
pub fn escape(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip_compactly_and_refuse_garbage() {
        let r = Registration {
            location: RegistrationId::from_u64(0x0123_4567_89ab_cdef),
            endpoint: NodeId::new("860000000000001").unwrap(),
            device_id: DeviceId::new("water_meter_860000000000001").unwrap(),
            app_id: AppId::new("default").unwrap(),
            lifetime_secs: 86_400,
            lwm2m_version: "1.1".into(),
            queue_mode: true,
            objects: "</1/0>,</3/0>,</19/0>,</19/1>".into(),
            address: "10.1.2.3:56830".into(),
            registered_at: Timestamp::from_millis(1_700_000_000_000),
            updated_at: Timestamp::from_millis(1_700_000_100_000),
            expires_at: Timestamp::from_millis(1_700_086_500_000),
        };
        let bytes = encode_registration(&r).unwrap();
        // 30 fixed bytes, 6 lengths, the texts: far smaller than the JSON record.
        let texts = 15 + 27 + 7 + 3 + 29 + 14;
        assert_eq!(bytes.len(), 30 + 12 + texts);
        assert!(bytes.len() * 2 < serde_json::to_vec(&r).unwrap().len() + 100);
        assert_eq!(decode_registration(b"k", r.location, &bytes).unwrap(), r);
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut bad_id = bytes.clone();
        bad_id[33] = b'/';
        for bad in [
            &b""[..],
            &[3],
            &[1, 0],
            &[3, 2],
            &bytes[..bytes.len() - 1],
            &trailing,
            &bad_id,
        ] {
            assert!(
                matches!(
                    decode_registration(b"k", r.location, bad),
                    Err(StorageError::Corrupt { .. })
                ),
                "{bad:?}"
            );
        }
    }

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
