//! Device identities and credentials of the load test, derived from a seed so that every
//! generator process can recompute any device's secret from its index without reading files,
//! and the secret-based MQTT authentication of spec/device-protocol.md §3.5 (client id,
//! username, HMAC password), computed independently of fleetgate's own code.
//!
//! Called by the `credentials` subcommand (which writes a `fleetgate provision` file) and by
//! the scenario workers (which build each CONNECT).

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use time::macros::format_description;

type HmacSha256 = Hmac<Sha256>;

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    // HMAC-SHA256 accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The node id of the device with 1-based `index`: `n000001`, `n000002`, … (wider past
/// 999,999).
pub fn node_id(index: u64) -> String {
    format!("n{index:06}")
}

/// The device id fleetgate gives a device registered without one: `{product_id}_{node_id}`.
pub fn device_id(product: &str, index: u64) -> String {
    format!("{product}_{}", node_id(index))
}

/// The secret of the device with 1-based `index`: 32 lower-case hex digits of
/// HMAC-SHA256(key = `fleetgate-loadtest/{seed}`, message = `{product}/{index}`). Deterministic,
/// distinct per device, and accepted by fleetgate (8–64 printable characters).
pub fn secret(seed: u64, product: &str, index: u64) -> String {
    let key = format!("fleetgate-loadtest/{seed}");
    let mut s = hmac_hex(key.as_bytes(), format!("{product}/{index}").as_bytes());
    s.truncate(32);
    s
}

/// The MQTT password of spec/device-protocol.md §3.5: lower-case
/// `hex(HMAC-SHA256(key = timestamp, message = secret))`, 64 characters.
pub fn password(secret: &str, timestamp: &str) -> String {
    hmac_hex(timestamp.as_bytes(), secret.as_bytes())
}

/// The `YYYYMMDDHH` UTC hour of `at`, the fourth part of the client id and the HMAC key.
pub fn hour_stamp(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    at.format(format_description!("[year][month][day][hour]"))
        .unwrap_or_else(|_| unreachable!("a four-digit year formats"))
}

/// The four-part client id `{device_id}_0_{sign_type}_{timestamp}` (identity type 0 = device
/// id; sign type 0 = timestamp not checked, 1 = checked).
pub fn client_id(device_id: &str, sign_type: u8, timestamp: &str) -> String {
    format!("{device_id}_0_{sign_type}_{timestamp}")
}

/// The CONNECT credentials of one device at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttCredentials {
    /// `{device_id}_0_{sign_type}_{YYYYMMDDHH}`.
    pub client_id: String,
    /// The device id.
    pub username: String,
    /// The HMAC password.
    pub password: String,
}

/// How the devices of a scenario authenticate (the scenario key `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// fleetgate's device authentication (spec/device-protocol.md §3.5): four-part client id,
    /// device id as user name, HMAC password; the monitor is device 0 of the product, allowed
    /// by the ACL rule `credentials` provisions.
    Device,
    /// A plain broker's user name and password (Mosquitto's password file, rumqttd's
    /// `connections.auth`): client id and user name = the device id, password = the device's
    /// secret (`credentials --passwords` writes the list).
    Password,
    /// No credentials, client id = the device id (a broker allowing anonymous clients).
    Anonymous,
}

impl Auth {
    /// The values the scenario key `auth` takes.
    pub const NAMES: &[&str] = &["device", "password", "anonymous"];

    /// Parses a scenario value.
    pub fn parse(s: &str) -> Option<Auth> {
        match s {
            "device" => Some(Auth::Device),
            "password" => Some(Auth::Password),
            "anonymous" => Some(Auth::Anonymous),
            _ => None,
        }
    }
}

/// How a run derives device identities: which product, which seed, which sign type, which
/// authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// Product id of every device.
    pub product: String,
    /// Seed of the secrets.
    pub seed: u64,
    /// Sign type put in the client id (0 or 1).
    pub sign_type: u8,
    /// How the devices authenticate.
    pub auth: Auth,
}

impl Identities {
    /// The credentials of the device with 1-based `index` (0 = the monitor), at time `at`.
    /// Anonymous credentials have an empty user name and password (the CONNECT then carries
    /// neither, see [`crate::mqtt::Connect::encode`]).
    pub fn mqtt(&self, index: u64, at: SystemTime) -> MqttCredentials {
        let device = device_id(&self.product, index);
        match self.auth {
            Auth::Device => {
                let stamp = hour_stamp(at);
                let secret = secret(self.seed, &self.product, index);
                MqttCredentials {
                    client_id: client_id(&device, self.sign_type, &stamp),
                    password: password(&secret, &stamp),
                    username: device,
                }
            }
            Auth::Password => MqttCredentials {
                client_id: device.clone(),
                password: secret(self.seed, &self.product, index),
                username: device,
            },
            Auth::Anonymous => MqttCredentials {
                client_id: device,
                username: String::new(),
                password: String::new(),
            },
        }
    }
}

/// The `user:password` lines of [`Auth::Password`] for devices 0 (the monitor) ..= `count`:
/// what a plain broker's password list needs (Mosquitto: `mosquitto_passwd -U` hashes it in
/// place; rumqttd: its `connections.auth` table).
pub fn password_lines(product: &str, seed: u64, count: u64) -> String {
    let mut out = String::with_capacity((count as usize + 1) * 48);
    for index in 0..=count {
        out.push_str(&device_id(product, index));
        out.push(':');
        out.push_str(&secret(seed, product, index));
        out.push('\n');
    }
    out
}

/// A product entry of the provisioning file.
#[derive(Debug, Serialize)]
pub struct ProductSpec {
    /// Product id.
    pub product_id: String,
    /// Resource space.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// `MQTT`.
    pub protocol_type: String,
    /// `json`.
    pub data_format: String,
    /// The product model: see [`service_capabilities`].
    pub service_capabilities: serde_json::Value,
}

/// A device entry of the provisioning file.
#[derive(Debug, Serialize)]
pub struct DeviceSpec {
    /// Its product.
    pub product_id: String,
    /// Its node id (the device id is then `{product_id}_{node_id}`).
    pub node_id: String,
    /// Its secret.
    pub secret: String,
}

/// The JSON file read by `fleetgate provision FILE`.
#[derive(Debug, Serialize)]
pub struct ProvisionFile {
    /// One product.
    pub products: Vec<ProductSpec>,
    /// `count` devices of it, and the monitor (device 0).
    pub devices: Vec<DeviceSpec>,
    /// The monitor's rule: see [`monitor_rule`].
    pub acl_rules: Vec<serde_json::Value>,
}

/// The service of the load-test product model.
pub const SERVICE_ID: &str = "LoadTest";
/// The command of the load-test product model.
pub const COMMAND_NAME: &str = "SET";
/// The topic filter the monitor (device 0) may subscribe to: every device's property reports.
pub const REPORTS_FILTER: &str = "$oc/devices/+/sys/properties/report";

/// The first level of every device topic: fleetgate's `$oc` (spec/device-protocol.md).
pub const DEFAULT_TOPIC_ROOT: &str = "$oc";

/// `{root}/devices/{device}/sys/{rest}`: a device topic (or filter, with `+` as the device)
/// under `root` — [`DEFAULT_TOPIC_ROOT`] on fleetgate, possibly another first level on a plain
/// broker that refuses `$` topics (the scenario key `topic_root`).
pub fn device_topic(root: &str, device: &str, rest: &str) -> String {
    format!("{root}/devices/{device}/sys/{rest}")
}

/// Whether `root` can be the first level of a topic: 1-16 characters of `[A-Za-z0-9$_-]`
/// (no `/` and no wildcard).
pub fn valid_topic_root(root: &str) -> bool {
    (1..=16).contains(&root.len())
        && root
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b'_' | b'-'))
}

/// The model of the load-test product: service `LoadTest` with the properties a `telemetry`
/// report carries (`seq` and `ts`, longs: sequence number and send time in µs since the Unix
/// epoch; `value`, an int 0–100; `pad`, a string filling the payload to a size) and the
/// command `SET` with one int parameter `value` (answered by `command-roundtrip` devices).
pub fn service_capabilities() -> serde_json::Value {
    serde_json::json!([{
        "service_id": SERVICE_ID,
        "properties": [
            {"property_name": "seq", "data_type": "long", "method": "R"},
            {"property_name": "ts", "data_type": "long", "method": "R"},
            {"property_name": "value", "data_type": "int", "min": "0", "max": "100", "method": "RW"},
            {"property_name": "pad", "data_type": "string", "max_length": 8192, "method": "R"},
        ],
        "commands": [{
            "command_name": COMMAND_NAME,
            "paras": [{"para_name": "value", "data_type": "int", "required": true,
                       "min": "0", "max": "100"}],
        }],
    }])
}

/// The ACL rule letting the monitor, device 0 of `product` (`{product}_n000000`), subscribe to
/// every device's property reports ([`REPORTS_FILTER`]).
pub fn monitor_rule(product: &str, app_id: &str) -> serde_json::Value {
    serde_json::json!({
        "acl_rule_id": format!("loadtest-monitor-{product}"),
        "app_id": app_id,
        "scope": {"type": "device_id", "value": device_id(product, 0)},
        "topic": REPORTS_FILTER,
        "action": "subscribe",
        "access": "allow",
        "priority": 0,
    })
}

/// The provisioning file for devices 1..=`count` of `product` (with the load-test model), plus
/// the monitor, device 0, and its ACL rule.
pub fn provision_file(product: &str, app_id: &str, seed: u64, count: u64) -> ProvisionFile {
    ProvisionFile {
        products: vec![ProductSpec {
            product_id: product.to_owned(),
            app_id: app_id.to_owned(),
            name: "LoadTest".to_owned(),
            protocol_type: "MQTT".to_owned(),
            data_format: "json".to_owned(),
            service_capabilities: service_capabilities(),
        }],
        acl_rules: vec![monitor_rule(product, app_id)],
        devices: (0..=count)
            .map(|i| DeviceSpec {
                product_id: product.to_owned(),
                node_id: node_id(i),
                secret: secret(seed, product, i),
            })
            .collect(),
    }
}

/// Whether `product` is a valid product id for the load test: 1–32 characters of
/// `[A-Za-z0-9-]` (no `_`, so that the device id splits back unambiguously).
pub fn valid_product(product: &str) -> bool {
    (1..=32).contains(&product.len())
        && product
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn password_matches_the_spec_algorithm() {
        // printf 12345678 | openssl dgst -sha256 -hmac 2019120219
        assert_eq!(
            password("12345678", "2019120219"),
            "338ce4d607e62fdca760488716216fbe0a19771874db10ce30360e5c777c3e3c"
        );
    }

    #[test]
    fn hour_stamp_is_utc_yyyymmddhh() {
        // 2018-07-24T17:56:20Z, the spec's example (§3.5) → 2018072417.
        let at = UNIX_EPOCH + Duration::from_secs(1_532_454_980);
        assert_eq!(hour_stamp(at), "2018072417");
        assert_eq!(hour_stamp(UNIX_EPOCH), "1970010100");
    }

    #[test]
    fn client_id_has_four_parts() {
        assert_eq!(
            client_id("lt_n000001", 0, "2019120219"),
            "lt_n000001_0_0_2019120219"
        );
        assert_eq!(
            client_id("lt_n000001", 1, "2019120219"),
            "lt_n000001_0_1_2019120219"
        );
    }

    #[test]
    fn secrets_are_deterministic_distinct_and_valid() {
        let a = secret(7, "lt", 1);
        assert_eq!(a, secret(7, "lt", 1));
        assert_ne!(a, secret(7, "lt", 2));
        assert_ne!(a, secret(8, "lt", 1));
        assert_ne!(a, secret(7, "other", 1));
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // Pinned (printf lt/1 | openssl dgst -sha256 -hmac fleetgate-loadtest/7, first 32
        // digits) so that a change of derivation, which would invalidate provisioned data
        // directories, is noticed.
        assert_eq!(a, "ea11b8f40d5270bb5bad4109a038d472");
    }

    #[test]
    fn identities_build_connect_credentials() {
        let ids = Identities {
            product: "lt".into(),
            seed: 1,
            sign_type: 0,
            auth: Auth::Device,
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_575_316_800); // 2019-12-02T20:00:00Z
        let c = ids.mqtt(42, at);
        assert_eq!(c.username, "lt_n000042");
        assert_eq!(c.client_id, "lt_n000042_0_0_2019120220");
        assert_eq!(c.password, password(&secret(1, "lt", 42), "2019120220"));

        let plain = Identities {
            auth: Auth::Password,
            ..ids.clone()
        }
        .mqtt(42, at);
        assert_eq!(plain.client_id, "lt_n000042");
        assert_eq!(plain.username, "lt_n000042");
        assert_eq!(plain.password, secret(1, "lt", 42));
        let lines = password_lines("lt", 1, 2);
        assert_eq!(
            lines,
            format!(
                "lt_n000000:{}\nlt_n000001:{}\nlt_n000002:{}\n",
                secret(1, "lt", 0),
                secret(1, "lt", 1),
                secret(1, "lt", 2)
            )
        );

        let anonymous = Identities {
            auth: Auth::Anonymous,
            ..ids
        }
        .mqtt(42, at);
        assert_eq!(anonymous.client_id, "lt_n000042");
        assert!(anonymous.username.is_empty() && anonymous.password.is_empty());
        assert_eq!(Auth::parse("password"), Some(Auth::Password));
        assert_eq!(Auth::parse("Password"), None);
    }

    #[test]
    fn device_topics_take_their_root() {
        assert_eq!(
            device_topic(DEFAULT_TOPIC_ROOT, "+", "properties/report"),
            REPORTS_FILTER
        );
        assert_eq!(
            device_topic("oc", "lt_n000001", "commands/#"),
            "oc/devices/lt_n000001/sys/commands/#"
        );
        assert!(valid_topic_root("$oc") && valid_topic_root("oc") && valid_topic_root("a-b_1"));
        for bad in ["", "a/b", "+", "#", "oc ", &"x".repeat(17)] {
            assert!(!valid_topic_root(bad), "{bad:?}");
        }
    }

    #[test]
    fn node_ids_are_zero_padded() {
        assert_eq!(node_id(1), "n000001");
        assert_eq!(node_id(19_000), "n019000");
        assert_eq!(node_id(1_234_567), "n1234567");
        assert_eq!(device_id("lt", 3), "lt_n000003");
    }

    #[test]
    fn provision_file_has_the_shape_fleetgate_reads() {
        let f = provision_file("lt", "default", 3, 2);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["products"][0]["product_id"], "lt");
        assert_eq!(v["products"][0]["protocol_type"], "MQTT");
        assert_eq!(v["devices"].as_array().unwrap().len(), 3);
        assert_eq!(v["devices"][0]["node_id"], "n000000");
        assert_eq!(v["devices"][2]["node_id"], "n000002");
        assert_eq!(v["devices"][2]["secret"], secret(3, "lt", 2));
        let model = &v["products"][0]["service_capabilities"][0];
        assert_eq!(model["service_id"], SERVICE_ID);
        assert_eq!(model["commands"][0]["command_name"], COMMAND_NAME);
        assert_eq!(v["acl_rules"][0]["scope"]["value"], "lt_n000000");
        assert_eq!(v["acl_rules"][0]["topic"], REPORTS_FILTER);
    }

    #[test]
    fn product_ids_are_checked() {
        assert!(valid_product("lt"));
        assert!(valid_product("load-test-1"));
        assert!(!valid_product(""));
        assert!(!valid_product("a_b"));
        assert!(!valid_product("a/b"));
    }
}
