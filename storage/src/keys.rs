//! Key encodings, one place for all of them (documented in docs/storage.md).
//!
//! Identifiers never contain NUL, so NUL (`\0`) separates the parts of composite keys: it sorts
//! before every other byte, which keeps `a\0…` and `ab\0…` apart and lets a prefix scan over
//! `{part}\0` visit exactly one part's entries. Integers are big-endian so that byte order is
//! numeric order; signed times are stored with the sign bit flipped for the same reason.
//!
//! | family | key | value |
//! |---|---|---|
//! | products | `{product_id}` | product |
//! | devices | `{device_id}` | device |
//! | credentials | `{device_id}` | credential |
//! | presence | `{device_id}` | connection status and times (binary, `value::encode_presence`) |
//! | groups | `{group_id}` | group |
//! | shadows | `{device_id}` | shadow |
//! | index | `A{app}\0{device}` `P{product}\0{device}` `W{gateway}\0{device}` `S{status}\0{device}` (the record's status: `INACTIVE` or `FROZEN`) `M{group}\0{device}` `T{key}\0{value}\0{device}` `n{node}\0{device}` | empty |
//! | index | `N{product}\0{node}` | device id (unique node per product) |
//! | index | `a{app}\0{product}` `m{product name}` | empty / product id (unique name) |
//! | index | `g{app}\0{group}` | empty |
//! | commands | `r{command_id}` | command |
//! | commands | `h{device}\0{created}{command_id}` `t{created}{command_id}` | empty |
//! | commands | `i{device}\0{idempotency_key}` | command id |
//! | command_queue | `q{device}\0{seq}` | command id |
//! | command_queue | `x{deadline}{command_id}` (PENDING: expiry; SENT: ack deadline) | device id |
//! | command_queue | `s{device}\0{sent}{command_id}` (SENT commands) | empty |
//! | ota | `k{package}` `j{task}` `p{task}\0{device}` `d{device}\0{task}` `K{product}\0{package}` | package / task / progress / empty / empty |
//! | rules | `r{rule}` `a{action}` `R{rule}\0{action}` `A{app}\0{rule}` | rule / action / empty / empty |
//! | acl | `{acl_rule_id}` | ACL rule |
//! | apps | `a{app}` `n{app name}` `k{key_id}` `K{app}\0{key_id}` | application / app id (unique name) / API key / empty |
//! | registrations | `r{location}` | registration (binary, `value::encode_registration`) |
//! | registrations | `d{device}` `x{expires_at}{location}` `c{stripe}` | location / empty / partial count |
//! | meta | `schema_version` | version number |

use fleetgate_model::device::DeviceStatus;
use fleetgate_model::lwm2m::RegistrationId;
use fleetgate_model::{
    AclRuleId, ActionId, AppId, CommandId, DeviceId, GroupId, NodeId, PackageId, ProductId, RuleId,
    TaskId, Timestamp,
};

/// Builds a key from byte parts.
fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

const SEP: &[u8] = b"\0";

/// A timestamp as 8 bytes whose byte order is time order.
pub fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t.as_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

/// Reads [`time_bytes`] back.
pub fn time_from_bytes(b: [u8; 8]) -> Timestamp {
    Timestamp::from_millis((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// The last `n` bytes of a key, if it is that long.
pub fn tail<const N: usize>(k: &[u8]) -> Option<[u8; N]> {
    k.len()
        .checked_sub(N)
        .and_then(|start| k[start..].try_into().ok())
}

/// The text after the last NUL of a key (the id that ends most index keys).
pub fn last_part(k: &[u8]) -> Option<&str> {
    let start = k.iter().rposition(|b| *b == 0)? + 1;
    std::str::from_utf8(&k[start..]).ok()
}

// ---- primary records -------------------------------------------------------------------------

/// `products`, `devices`, `credentials`, `groups`, `shadows`, `acl`: the id itself.
pub fn id(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

// ---- device indexes (family `index`) ----------------------------------------------------------

/// Devices by resource space.
pub fn dev_by_app(app: &AppId, device: Option<&DeviceId>) -> Vec<u8> {
    indexed(b"A", app.as_str(), device)
}
/// Devices by product.
pub fn dev_by_product(product: &ProductId, device: Option<&DeviceId>) -> Vec<u8> {
    indexed(b"P", product.as_str(), device)
}
/// Sub-devices by gateway.
pub fn dev_by_gateway(gateway: &DeviceId, device: Option<&DeviceId>) -> Vec<u8> {
    indexed(b"W", gateway.as_str(), device)
}
/// Devices by status.
pub fn dev_by_status(status: DeviceStatus, device: Option<&DeviceId>) -> Vec<u8> {
    indexed(b"S", status.as_str(), device)
}
/// Group members.
pub fn dev_by_group(group: &GroupId, device: Option<&DeviceId>) -> Vec<u8> {
    indexed(b"M", group.as_str(), device)
}
/// Devices by node id (not unique across products).
pub fn dev_by_node(node: &NodeId, device: Option<&DeviceId>) -> Vec<u8> {
    indexed(b"n", node.as_str(), device)
}
/// Devices by node id prefix (scan prefix only).
pub fn dev_by_node_prefix(prefix: &str) -> Vec<u8> {
    key(&[b"n", prefix.as_bytes()])
}
/// Devices by tag key and value; `value: None` gives the prefix of every value of the key.
pub fn dev_by_tag(tag_key: &str, value: Option<&str>, device: Option<&DeviceId>) -> Vec<u8> {
    match value {
        None => key(&[b"T", tag_key.as_bytes(), SEP]),
        Some(v) => {
            let mut k = key(&[b"T", tag_key.as_bytes(), SEP, v.as_bytes(), SEP]);
            if let Some(d) = device {
                k.extend_from_slice(d.as_str().as_bytes());
            }
            k
        }
    }
}
/// The unique (product, node) → device entry.
pub fn node_in_product(product: &ProductId, node: &NodeId) -> Vec<u8> {
    key(&[
        b"N",
        product.as_str().as_bytes(),
        SEP,
        node.as_str().as_bytes(),
    ])
}

fn indexed(tag: &[u8], first: &str, device: Option<&DeviceId>) -> Vec<u8> {
    let mut k = key(&[tag, first.as_bytes(), SEP]);
    if let Some(d) = device {
        k.extend_from_slice(d.as_str().as_bytes());
    }
    k
}

// ---- product and group indexes (family `index`) -----------------------------------------------

/// Products by resource space.
pub fn product_by_app(app: &AppId, product: Option<&ProductId>) -> Vec<u8> {
    let mut k = key(&[b"a", app.as_str().as_bytes(), SEP]);
    if let Some(p) = product {
        k.extend_from_slice(p.as_str().as_bytes());
    }
    k
}
/// The unique product name → product id entry.
pub fn product_name(name: &str) -> Vec<u8> {
    key(&[b"m", name.as_bytes()])
}
/// Groups by resource space.
pub fn group_by_app(app: &AppId, group: Option<&GroupId>) -> Vec<u8> {
    let mut k = key(&[b"g", app.as_str().as_bytes(), SEP]);
    if let Some(g) = group {
        k.extend_from_slice(g.as_str().as_bytes());
    }
    k
}

// ---- commands (families `commands` and `command_queue`) ---------------------------------------

/// A command record.
pub fn command(id: &CommandId) -> Vec<u8> {
    key(&[b"r", id.as_bytes()])
}
/// A device's command history entry; `None` parts give prefixes.
pub fn command_history(device: &DeviceId, at: Option<(Timestamp, &CommandId)>) -> Vec<u8> {
    let mut k = key(&[b"h", device.as_str().as_bytes(), SEP]);
    if let Some((t, id)) = at {
        k.extend_from_slice(&time_bytes(t));
        k.extend_from_slice(id.as_bytes());
    }
    k
}
/// The creation-time index of every command (for retention); `None` gives the prefix.
pub fn command_by_time(at: Option<(Timestamp, &CommandId)>) -> Vec<u8> {
    let mut k = b"t".to_vec();
    if let Some((t, id)) = at {
        k.extend_from_slice(&time_bytes(t));
        k.extend_from_slice(id.as_bytes());
    }
    k
}
/// A device's pending-queue entry; `None` gives the device's queue prefix.
pub fn queue(device: &DeviceId, seq: Option<u64>) -> Vec<u8> {
    let mut k = key(&[b"q", device.as_str().as_bytes(), SEP]);
    if let Some(s) = seq {
        k.extend_from_slice(&s.to_be_bytes());
    }
    k
}
/// The deadline index entry of a command (a PENDING command's expiry, a SENT command's ack
/// deadline); `None` gives the index prefix.
pub fn deadline(at: Option<(Timestamp, &CommandId)>) -> Vec<u8> {
    let mut k = b"x".to_vec();
    if let Some((t, id)) = at {
        k.extend_from_slice(&time_bytes(t));
        k.extend_from_slice(id.as_bytes());
    }
    k
}
/// A device's SENT-command entry, by send time; `None` gives the device's prefix.
pub fn sent(device: &DeviceId, at: Option<(Timestamp, &CommandId)>) -> Vec<u8> {
    let mut k = key(&[b"s", device.as_str().as_bytes(), SEP]);
    if let Some((t, id)) = at {
        k.extend_from_slice(&time_bytes(t));
        k.extend_from_slice(id.as_bytes());
    }
    k
}
/// A device's idempotency-key entry (family `commands`). Keys are `[A-Za-z0-9_.:-]`, no NUL.
pub fn idempotency(device: &DeviceId, idempotency_key: Option<&str>) -> Vec<u8> {
    let mut k = key(&[b"i", device.as_str().as_bytes(), SEP]);
    if let Some(ik) = idempotency_key {
        k.extend_from_slice(ik.as_bytes());
    }
    k
}

// ---- LwM2M registrations (family `registrations`) ---------------------------------------------

/// A registration, by its location's 8 big-endian bytes.
pub fn registration(location: RegistrationId) -> Vec<u8> {
    key(&[b"r", &location.as_u64().to_be_bytes()])
}
/// A device's registration entry (value: the location's 8 bytes); `None` gives the prefix.
pub fn registration_of_device(device: Option<&DeviceId>) -> Vec<u8> {
    key(&[b"d", device.map_or(&b""[..], |d| d.as_str().as_bytes())])
}
/// The expiry index entry of a registration; `None` gives the index prefix.
pub fn registration_expiry(at: Option<(Timestamp, RegistrationId)>) -> Vec<u8> {
    let mut k = b"x".to_vec();
    if let Some((t, location)) = at {
        k.extend_from_slice(&time_bytes(t));
        k.extend_from_slice(&location.as_u64().to_be_bytes());
    }
    k
}
/// One of the partial registration counts (value: i64, big-endian); `None` gives the prefix.
pub fn registration_count(stripe: Option<u16>) -> Vec<u8> {
    let mut k = b"c".to_vec();
    if let Some(s) = stripe {
        k.extend_from_slice(&s.to_be_bytes());
    }
    k
}

// ---- OTA (family `ota`) -----------------------------------------------------------------------

/// A package.
pub fn package(id: &PackageId) -> Vec<u8> {
    key(&[b"k", id.as_str().as_bytes()])
}
/// Packages by product.
pub fn package_by_product(product: &ProductId, id: Option<&PackageId>) -> Vec<u8> {
    let mut k = key(&[b"K", product.as_str().as_bytes(), SEP]);
    if let Some(p) = id {
        k.extend_from_slice(p.as_str().as_bytes());
    }
    k
}
/// A task.
pub fn task(id: &TaskId) -> Vec<u8> {
    key(&[b"j", id.as_str().as_bytes()])
}
/// A device's progress in a task; `None` gives the task's prefix.
pub fn progress(task: &TaskId, device: Option<&DeviceId>) -> Vec<u8> {
    let mut k = key(&[b"p", task.as_str().as_bytes(), SEP]);
    if let Some(d) = device {
        k.extend_from_slice(d.as_str().as_bytes());
    }
    k
}
/// A device's unfinished sub-task entry; `None` gives the device's prefix.
pub fn active_task(device: &DeviceId, task: Option<&TaskId>) -> Vec<u8> {
    let mut k = key(&[b"d", device.as_str().as_bytes(), SEP]);
    if let Some(t) = task {
        k.extend_from_slice(t.as_str().as_bytes());
    }
    k
}

// ---- rules (family `rules`) -------------------------------------------------------------------

/// A rule.
pub fn rule(id: &RuleId) -> Vec<u8> {
    key(&[b"r", id.as_str().as_bytes()])
}
/// An action.
pub fn action(id: &ActionId) -> Vec<u8> {
    key(&[b"a", id.as_str().as_bytes()])
}
/// A rule's actions.
pub fn action_by_rule(rule: &RuleId, action: Option<&ActionId>) -> Vec<u8> {
    let mut k = key(&[b"R", rule.as_str().as_bytes(), SEP]);
    if let Some(a) = action {
        k.extend_from_slice(a.as_str().as_bytes());
    }
    k
}
/// Rules by resource space.
pub fn rule_by_app(app: &AppId, rule: Option<&RuleId>) -> Vec<u8> {
    let mut k = key(&[b"A", app.as_str().as_bytes(), SEP]);
    if let Some(r) = rule {
        k.extend_from_slice(r.as_str().as_bytes());
    }
    k
}

/// An ACL rule.
pub fn acl(id: &AclRuleId) -> Vec<u8> {
    id.as_str().as_bytes().to_vec()
}

// ---- applications and API keys (family `apps`) ------------------------------------------------

/// An application.
pub fn app(id: &AppId) -> Vec<u8> {
    key(&[b"a", id.as_str().as_bytes()])
}
/// The unique application name → app id entry.
pub fn app_name(name: &str) -> Vec<u8> {
    key(&[b"n", name.as_bytes()])
}
/// An API key, by its key id.
pub fn api_key(key_id: &str) -> Vec<u8> {
    key(&[b"k", key_id.as_bytes()])
}
/// An application's API keys; `None` gives the application's prefix.
pub fn api_key_by_app(app: &AppId, key_id: Option<&str>) -> Vec<u8> {
    let mut k = key(&[b"K", app.as_str().as_bytes(), SEP]);
    if let Some(id) = key_id {
        k.extend_from_slice(id.as_bytes());
    }
    k
}

/// The schema version entry.
pub const SCHEMA_VERSION: &[u8] = b"schema_version";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_bytes() {
        let times = [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in times.windows(2) {
            let (a, b) = (Timestamp::from_millis(w[0]), Timestamp::from_millis(w[1]));
            assert!(time_bytes(a) < time_bytes(b));
            assert_eq!(time_from_bytes(time_bytes(a)), a);
        }
    }

    #[test]
    fn separators_keep_prefixes_apart() {
        let p1 = ProductId::new("a").unwrap();
        let p2 = ProductId::new("ab").unwrap();
        let d = DeviceId::new("d").unwrap();
        let k2 = dev_by_product(&p2, Some(&d));
        assert!(!k2.starts_with(&dev_by_product(&p1, None)));
        assert_eq!(last_part(&k2), Some("d"));
        let id = CommandId::generate();
        let q = command_history(&d, Some((Timestamp::EPOCH, &id)));
        assert_eq!(tail::<16>(&q), Some(*id.as_bytes()));
    }
}
