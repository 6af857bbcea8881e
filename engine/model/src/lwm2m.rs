//! LwM2M registrations (docs/coap.md, "LwM2M registration interface"): what fleetgate keeps
//! about a registered CoAP device between its register, its updates and its de-register or
//! expiry. The registration location ([`RegistrationId`]) is what the device names in its
//! updates (`/rd/{location}`); the address is only where the latest datagram came from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{AppId, DeviceId, IdError, NodeId};
use crate::time::Timestamp;

/// Largest link-format body kept (`objects`), in bytes.
pub const MAX_OBJECTS_BYTES: usize = 4096;
/// Largest source address kept (`ip:port`; a bracketed IPv6 address with a port is at most 47).
pub const MAX_ADDRESS_BYTES: usize = 64;
/// Largest LwM2M version text kept (`1.0`, `1.1`, `1.2`).
pub const MAX_VERSION_BYTES: usize = 16;

/// A registration's location, the `{location}` of `/rd/{location}`: 64 random bits, written as
/// 13 lowercase characters of the RFC 4648 base32 alphabet (`a`–`z`, `2`–`7`) without padding —
/// the base32 of the 8 big-endian bytes, whose last character carries 4 bits and a zero bit.
/// Only that canonical form parses, so a location has exactly one spelling.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistrationId(u64);

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Length of the text form.
const TEXT_LEN: usize = 13;

impl RegistrationId {
    /// A fresh random location.
    pub fn generate() -> Self {
        // A v4 UUID holds 122 random bits; its fixed version and variant bits sit in different
        // halves at positions where the other half is random, so the XOR is 64 random bits.
        let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
        Self(hi ^ lo)
    }

    /// The location with this number.
    pub const fn from_u64(n: u64) -> Self {
        Self(n)
    }

    /// The location's number (storage keys use its 8 big-endian bytes).
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 64 bits followed by one zero bit: 65 bits, 13 groups of 5, most significant first.
        let bits = u128::from(self.0) << 1;
        let mut out = [0u8; TEXT_LEN];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 5 * (TEXT_LEN - 1 - i);
            *c = BASE32[((bits >> shift) & 0x1f) as usize];
        }
        // Every byte comes from the ASCII alphabet above.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistrationId({self})")
    }
}

impl FromStr for RegistrationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = |reason| IdError::new("location", reason, s);
        if s.len() != TEXT_LEN {
            return Err(bad("must be 13 characters"));
        }
        let mut bits: u128 = 0;
        for b in s.bytes() {
            let v = match b {
                b'a'..=b'z' => b - b'a',
                b'2'..=b'7' => b - b'2' + 26,
                _ => return Err(bad("only 'a'-'z' and '2'-'7' are allowed")),
            };
            bits = (bits << 5) | u128::from(v);
        }
        if bits & 1 != 0 {
            return Err(bad("not a canonical location"));
        }
        u64::try_from(bits >> 1)
            .map(Self)
            .map_err(|_| bad("not a canonical location"))
    }
}

impl TryFrom<String> for RegistrationId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<RegistrationId> for String {
    fn from(id: RegistrationId) -> String {
        id.to_string()
    }
}

/// A device's current LwM2M registration. A device has at most one: registering again
/// replaces it (with a new location).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Where the registration lives: `/rd/{location}`.
    pub location: RegistrationId,
    /// The `ep` parameter: the device's node id.
    pub endpoint: NodeId,
    /// The device it registered as.
    pub device_id: DeviceId,
    /// The device's resource space.
    pub app_id: AppId,
    /// `lt`: seconds the registration lives after its latest register or update.
    pub lifetime_secs: u32,
    /// `lwm2m`: the client's protocol version (`1.0`, `1.1`, `1.2`).
    pub lwm2m_version: String,
    /// Queue mode (`b=UQ` in 1.0, `Q` in 1.1+): reachable only just after it sends.
    pub queue_mode: bool,
    /// The CoRE link-format body of the latest register (or update that carried one), as
    /// received: at most [`MAX_OBJECTS_BYTES`].
    pub objects: String,
    /// The source address (`ip:port`) of the device's latest datagram.
    pub address: String,
    /// When it registered.
    pub registered_at: Timestamp,
    /// Its latest register or update.
    pub updated_at: Timestamp,
    /// When it expires without another update: `updated_at` plus the lifetime.
    pub expires_at: Timestamp,
}

impl Registration {
    /// When a registration refreshed at `at` with `lifetime_secs` expires.
    pub fn expiry(at: Timestamp, lifetime_secs: u32) -> Timestamp {
        at.plus_secs(u64::from(lifetime_secs))
    }

    /// Whether it has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// A registration update at `now` from `address`, optionally with a new lifetime: moves
    /// `updated_at` and `expires_at`.
    pub fn touch(&mut self, address: &str, now: Timestamp, lifetime_secs: Option<u32>) {
        if let Some(lt) = lifetime_secs {
            self.lifetime_secs = lt;
        }
        self.address = address.to_owned();
        self.updated_at = now.max(self.updated_at);
        self.expires_at = Self::expiry(self.updated_at, self.lifetime_secs);
    }

    /// Checks the sizes the store relies on and the order of the times; the error is a
    /// message.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("objects", self.objects.len(), MAX_OBJECTS_BYTES),
            ("address", self.address.len(), MAX_ADDRESS_BYTES),
            ("lwm2m_version", self.lwm2m_version.len(), MAX_VERSION_BYTES),
        ];
        for (field, len, max) in sizes {
            if len > max {
                return Err(format!("{field} is {len} bytes, at most {max} are kept"));
            }
        }
        if self.updated_at < self.registered_at || self.expires_at < self.updated_at {
            return Err("registration times out of order".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_13_lowercase_base32_characters() {
        for n in [
            0,
            1,
            42,
            u64::MAX,
            0x8000_0000_0000_0000,
            0x0123_4567_89ab_cdef,
        ] {
            let id = RegistrationId::from_u64(n);
            let text = id.to_string();
            assert_eq!(text.len(), 13, "{text}");
            assert!(text.bytes().all(|b| BASE32.contains(&b)), "{text}");
            assert_eq!(text.parse::<RegistrationId>(), Ok(id));
        }
        assert_eq!(RegistrationId::from_u64(0).to_string(), "aaaaaaaaaaaaa");
        // RFC 4648 §10: BASE32("foobar") = "MZXW6YTBOI======"; "foobar\0\0" starts the same.
        let foobar = u64::from_be_bytes(*b"foobar\0\0");
        assert!(
            RegistrationId::from_u64(foobar)
                .to_string()
                .starts_with("mzxw6ytboi")
        );
        let max = RegistrationId::from_u64(u64::MAX).to_string();
        assert_eq!(max, "7777777777776");
        for bad in [
            "",
            "aaaaaaaaaaaa",
            "aaaaaaaaaaaaaa",
            "AAAAAAAAAAAAA",
            "aaaaaaaaaaaa1",
            "aaaaaaaaaaaab",
            "7777777777777",
        ] {
            assert!(bad.parse::<RegistrationId>().is_err(), "{bad}");
        }
        assert_ne!(RegistrationId::generate(), RegistrationId::generate());
        let json = serde_json::to_string(&RegistrationId::from_u64(1)).unwrap();
        assert_eq!(json, "\"aaaaaaaaaaaac\"");
        assert!(serde_json::from_str::<RegistrationId>("\"nope\"").is_err());
    }

    #[test]
    fn touch_moves_the_expiry() {
        let mut r = Registration {
            location: RegistrationId::generate(),
            endpoint: NodeId::new("860000000000001").unwrap(),
            device_id: DeviceId::new("p_860000000000001").unwrap(),
            app_id: AppId::new("app").unwrap(),
            lifetime_secs: 300,
            lwm2m_version: "1.1".into(),
            queue_mode: true,
            objects: "</1/0>,</3/0>,</19/0>,</19/1>".into(),
            address: "10.0.0.1:5683".into(),
            registered_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            expires_at: Registration::expiry(Timestamp::from_millis(0), 300),
        };
        assert_eq!(r.validate(), Ok(()));
        assert!(!r.is_expired_at(Timestamp::from_millis(299_999)));
        assert!(r.is_expired_at(Timestamp::from_millis(300_000)));
        r.touch("10.0.0.2:40000", Timestamp::from_millis(100_000), Some(60));
        assert_eq!(r.expires_at, Timestamp::from_millis(160_000));
        assert_eq!(
            (r.address.as_str(), r.lifetime_secs),
            ("10.0.0.2:40000", 60)
        );
        let back: Registration = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        r.objects = "x".repeat(MAX_OBJECTS_BYTES + 1);
        assert!(r.validate().is_err());
    }
}
