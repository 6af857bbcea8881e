//! Applications and their API keys: who may call the application HTTP API, and on what.
//!
//! An application is a resource space (`app_id`): it owns products, and through them devices,
//! groups and commands; every API call acts as one application and sees only its resources.
//! An API key is `fgk_{key_id}_{secret}`; the platform keeps the key id in clear (to find the
//! record) and only a SHA-256 digest of the whole key, so a stolen database does not yield
//! working keys.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::AppId;
use crate::time::Timestamp;

/// The prefix of every API key, so that leaked keys are easy to recognise and scan for.
pub const API_KEY_PREFIX: &str = "fgk_";

/// An application (resource space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Its id.
    pub app_id: AppId,
    /// A name for people, unique among applications.
    pub name: String,
    /// Whether this application may manage other applications and their keys.
    #[serde(default)]
    pub admin: bool,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A stored API key: never the key itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The key's public id (16 lowercase hex characters), the middle part of the key.
    pub key_id: String,
    /// The application the key acts as.
    pub app_id: AppId,
    /// A label for people.
    #[serde(default)]
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key text.
    pub digest: String,
    /// When it was created.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .field("app_id", &self.app_id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Lowercase hex SHA-256 of a key's text.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The key id inside a presented key (`fgk_{key_id}_{secret}`), if it has that shape.
pub fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex16 = id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hex16 && !secret.is_empty()).then_some(id)
}

/// Builds the key text from a key id (16 hex) and a secret part; `key_id_of` reads it back.
pub fn compose_key(key_id: &str, secret: &str) -> String {
    format!("{API_KEY_PREFIX}{key_id}_{secret}")
}

impl ApiKey {
    /// A new random key for `app`: the stored record and the key text, to be shown once.
    /// Key id and secret come from the operating system's random generator (UUID v4): 64 bits
    /// of id, 244 bits of secret.
    pub fn generate(app: &AppId, name: &str, now: Timestamp) -> (ApiKey, String) {
        let key_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let key = compose_key(&key_id, &secret);
        let record = ApiKey {
            key_id,
            app_id: app.clone(),
            name: name.to_owned(),
            digest: key_digest(&key),
            created_at: now,
        };
        (record, key)
    }

    /// Whether `presented` is this key, compared in constant time over the digests.
    pub fn matches(&self, presented: &str) -> bool {
        key_digest(presented)
            .as_bytes()
            .ct_eq(self.digest.as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compose_parse_and_match() {
        let key = compose_key("0123456789abcdef", "s3cr3t");
        assert_eq!(key, "fgk_0123456789abcdef_s3cr3t");
        assert_eq!(key_id_of(&key), Some("0123456789abcdef"));
        let stored = ApiKey {
            key_id: "0123456789abcdef".into(),
            app_id: AppId::new("a").unwrap(),
            name: String::new(),
            digest: key_digest(&key),
            created_at: Timestamp::from_millis(0),
        };
        assert!(stored.matches(&key));
        assert!(!stored.matches("fgk_0123456789abcdef_s3cr3u"));
        assert!(!format!("{stored:?}").contains(&stored.digest));
        let (generated, text) = ApiKey::generate(&stored.app_id, "ci", Timestamp::from_millis(1));
        assert_eq!(key_id_of(&text), Some(generated.key_id.as_str()));
        assert!(generated.matches(&text) && !stored.matches(&text));
        for bad in [
            "",
            "fgk_",
            "fgk_0123456789abcdef",
            "fgk_0123456789abcdef_",
            "fgk_0123456789ABCDEF_x",
            "fgk_0123_x",
            "xyz_0123456789abcdef_x",
        ] {
            assert_eq!(key_id_of(bad), None, "{bad:?}");
        }
    }
}
