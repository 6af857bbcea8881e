//! The secret-based authentication scheme of spec/device-protocol.md §3.5 and §10.1: the
//! four-part MQTT client id, and the password `hex(HMAC-SHA256(key = timestamp, data = secret))`.
//! Pure functions; the engine supplies the stored secret and the current time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::device::DeviceSecret;
use crate::ids::DeviceId;
use crate::time::Timestamp;

/// Whether the timestamp of the client id is checked against the server clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignType {
    /// `0`: HMAC-SHA256, timestamp not checked.
    NoTimestampCheck,
    /// `1`: HMAC-SHA256, timestamp checked first.
    TimestampCheck,
}

/// The parts of `{device_id}_{id_type}_{sign_type}_{timestamp}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    /// The device id (it may itself contain underscores).
    pub device_id: DeviceId,
    /// The sign type.
    pub sign_type: SignType,
    /// The `YYYYMMDDHH` text, which is also the HMAC key.
    pub timestamp: String,
}

/// Why a client id is malformed (answered with CONNACK 0x02).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    /// Fewer than four `_`-separated parts.
    #[error("client id must have four '_'-separated parts")]
    Parts,
    /// Identity type other than `0`.
    #[error("identity type must be 0")]
    IdentityType,
    /// Sign type other than `0` or `1`.
    #[error("sign type must be 0 or 1")]
    SignType,
    /// Timestamp not ten digits of a real hour.
    #[error("timestamp must be YYYYMMDDHH")]
    Timestamp,
    /// Device id part invalid.
    #[error("invalid device id in client id")]
    DeviceId,
}

impl ClientId {
    /// Parses from the right: the last three parts are fixed, the rest is the device id
    /// (spec/device-protocol.md §13 item 1).
    pub fn parse(client_id: &str) -> Result<ClientId, ClientIdError> {
        let mut parts = client_id.rsplitn(4, '_');
        let timestamp = parts.next().ok_or(ClientIdError::Parts)?;
        let sign = parts.next().ok_or(ClientIdError::Parts)?;
        let id_type = parts.next().ok_or(ClientIdError::Parts)?;
        let device = parts.next().ok_or(ClientIdError::Parts)?;
        if id_type != "0" {
            return Err(ClientIdError::IdentityType);
        }
        let sign_type = match sign {
            "0" => SignType::NoTimestampCheck,
            "1" => SignType::TimestampCheck,
            _ => return Err(ClientIdError::SignType),
        };
        if Timestamp::parse_auth_hour(timestamp).is_none() {
            return Err(ClientIdError::Timestamp);
        }
        let device_id = DeviceId::new(device).map_err(|_| ClientIdError::DeviceId)?;
        Ok(ClientId {
            device_id,
            sign_type,
            timestamp: timestamp.to_owned(),
        })
    }

    /// Formats the four parts back into a client id.
    pub fn format(device_id: &DeviceId, sign_type: SignType, timestamp: &str) -> String {
        let sign = match sign_type {
            SignType::NoTimestampCheck => '0',
            SignType::TimestampCheck => '1',
        };
        format!("{device_id}_0_{sign}_{timestamp}")
    }
}

/// The password a device sends: lower-case hex of HMAC-SHA256 keyed by the timestamp text,
/// over the secret (64 characters).
pub fn password(secret: &DeviceSecret, timestamp: &str) -> String {
    hex::encode(mac(secret, timestamp))
}

fn mac(secret: &DeviceSecret, timestamp: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(timestamp.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(secret.expose().as_bytes());
    m.finalize().into_bytes().into()
}

/// Checks a presented password in constant time. Hex case is ignored.
pub fn verify_password(secret: &DeviceSecret, timestamp: &str, presented: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(presented) else {
        return false;
    };
    let Ok(bytes) = hex::decode(text) else {
        return false;
    };
    bool::from(bytes.ct_eq(&mac(secret, timestamp)))
}

/// Whether a `YYYYMMDDHH` timestamp is within `window_hours` of the hour of `now` (sign type 1).
pub fn timestamp_fresh(timestamp: &str, now: Timestamp, window_hours: u32) -> bool {
    let Some(hour) = Timestamp::parse_auth_hour(timestamp) else {
        return false;
    };
    let Some(current) = Timestamp::parse_auth_hour(&now.to_auth_hour()) else {
        return false;
    };
    let diff = hour.millis_since(current).unsigned_abs();
    diff <= u64::from(window_hours) * 3_600_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from_the_right() {
        let c = ClientId::parse("60a87ffebaccd902c2f1abbb_0001_0_0_2019120219").unwrap();
        assert_eq!(c.device_id.as_str(), "60a87ffebaccd902c2f1abbb_0001");
        assert_eq!(c.sign_type, SignType::NoTimestampCheck);
        assert_eq!(c.timestamp, "2019120219");
        assert_eq!(
            ClientId::format(&c.device_id, c.sign_type, &c.timestamp),
            "60a87ffebaccd902c2f1abbb_0001_0_0_2019120219"
        );
    }

    #[test]
    fn rejects_malformed_client_ids() {
        assert_eq!(ClientId::parse("dev_0_0"), Err(ClientIdError::Parts));
        assert_eq!(
            ClientId::parse("dev_1_0_2019120219"),
            Err(ClientIdError::IdentityType)
        );
        assert_eq!(
            ClientId::parse("dev_0_2_2019120219"),
            Err(ClientIdError::SignType)
        );
        assert_eq!(
            ClientId::parse("dev_0_0_201912021"),
            Err(ClientIdError::Timestamp)
        );
        assert_eq!(
            ClientId::parse("dev_0_0_2019123199"),
            Err(ClientIdError::Timestamp)
        );
        assert_eq!(
            ClientId::parse("d v_0_0_2019120219"),
            Err(ClientIdError::DeviceId)
        );
        assert_eq!(
            ClientId::parse("_0_0_2019120219"),
            Err(ClientIdError::DeviceId)
        );
    }

    #[test]
    fn password_matches_the_reference_hmac() {
        // HMAC-SHA256(key = "2019120219", data = "12345678"), computed independently with
        // `printf 12345678 | openssl dgst -sha256 -hmac 2019120219`.
        let secret = DeviceSecret::new("12345678").unwrap();
        let pw = password(&secret, "2019120219");
        assert_eq!(pw.len(), 64);
        assert_eq!(
            pw,
            "338ce4d607e62fdca760488716216fbe0a19771874db10ce30360e5c777c3e3c"
        );
    }

    #[test]
    fn verification_is_exact_and_case_insensitive() {
        let secret = DeviceSecret::new("12345678").unwrap();
        let pw = password(&secret, "2019120219");
        assert!(verify_password(&secret, "2019120219", pw.as_bytes()));
        assert!(verify_password(
            &secret,
            "2019120219",
            pw.to_uppercase().as_bytes()
        ));
        assert!(!verify_password(&secret, "2019120220", pw.as_bytes()));
        assert!(!verify_password(&secret, "2019120219", b"zz"));
        assert!(!verify_password(&secret, "2019120219", &[0xff, 0xfe]));
    }

    #[test]
    fn freshness_window() {
        let now = Timestamp::parse_auth_hour("2019120219")
            .unwrap()
            .plus_secs(1800);
        assert!(timestamp_fresh("2019120219", now, 0));
        assert!(!timestamp_fresh("2019120218", now, 0));
        assert!(timestamp_fresh("2019120218", now, 1));
        assert!(timestamp_fresh("2019120220", now, 1));
        assert!(!timestamp_fresh("2019120221", now, 1));
        assert!(!timestamp_fresh("garbage", now, 24));
    }
}
