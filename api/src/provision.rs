//! `fleetgate provision FILE`: registers products, devices and ACL rules from a JSON file into
//! the data directory (fleetgate must not be running on it). Records that exist already are
//! left alone, so a file can be applied again. Used to bootstrap a deployment, by the test
//! suites and by the load test.

use std::io::Read;
use std::path::Path;

use fleetgate_model::device::{
    AuthType, Credential, Device, DeviceSecret, DeviceStatus, NodeType, Tag,
};
use fleetgate_model::product::Product;
use fleetgate_model::rule::AclRule;
use fleetgate_model::{DeviceId, NodeId, ProductId, Timestamp};
use fleetgate_storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};

/// One device to register.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Its product (which must exist or be in the same file).
    pub product_id: ProductId,
    /// Its node id.
    pub node_id: NodeId,
    /// Its device id; `{product_id}_{node_id}` when absent.
    #[serde(default)]
    pub device_id: Option<DeviceId>,
    /// Its secret; generated (and printed) when absent.
    #[serde(default)]
    pub secret: Option<DeviceSecret>,
    /// Its gateway, for a sub-device.
    #[serde(default)]
    pub gateway_id: Option<DeviceId>,
    /// A name.
    #[serde(default)]
    pub device_name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Any JSON the owner wants to keep with the device.
    #[serde(default)]
    pub extension_info: Option<serde_json::Value>,
}

/// A device record for `spec` (of `product`), inactive until it first connects, and its
/// secret: the spec's, or a new one (`true` when generated, to be shown once).
pub fn new_device(spec: DeviceSpec, product: &Product) -> (Device, DeviceSecret, bool) {
    let device_id = spec
        .device_id
        .clone()
        .unwrap_or_else(|| DeviceId::derive(&spec.product_id, &spec.node_id));
    let gateway_id = spec.gateway_id.clone().unwrap_or_else(|| device_id.clone());
    let sub = gateway_id != device_id;
    let device = Device {
        device_id,
        node_id: spec.node_id,
        product_id: spec.product_id,
        app_id: product.app_id.clone(),
        device_name: spec.device_name,
        description: spec.description,
        gateway_id,
        node_type: if sub {
            NodeType::Endpoint
        } else {
            NodeType::Gateway
        },
        auth_type: AuthType::Secret,
        secure: spec.secret.is_some(),
        status: DeviceStatus::Inactive,
        first_online_time: None,
        last_online_time: None,
        last_offline_time: None,
        fw_version: None,
        sw_version: None,
        device_sdk_version: None,
        tags: spec.tags,
        groups: Vec::new(),
        extension_info: spec.extension_info,
        create_time: Timestamp::now(),
    };
    let generated = spec.secret.is_none();
    let secret = spec.secret.unwrap_or_else(DeviceSecret::generate);
    (device, secret, generated)
}

/// The file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionFile {
    /// Products with their models.
    #[serde(default)]
    pub products: Vec<Product>,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// ACL rules.
    #[serde(default)]
    pub acl_rules: Vec<AclRule>,
}

/// Counts per kind.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Registered now.
    pub created: usize,
    /// Already there.
    pub existing: usize,
}

/// A device secret generated for a device of the file.
#[derive(Debug, Serialize)]
pub struct Generated {
    /// The device.
    pub device_id: DeviceId,
    /// Its new secret (shown once).
    pub secret: String,
}

/// What was done.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Products.
    pub products: Counts,
    /// Devices.
    pub devices: Counts,
    /// ACL rules.
    pub acl_rules: Counts,
    /// Secrets generated for devices that had none in the file.
    pub generated_secrets: Vec<Generated>,
    /// Every record that could not be registered, with the reason.
    pub errors: Vec<String>,
}

/// Reads a provisioning file (`-` for standard input).
pub fn read(path: &Path) -> anyhow::Result<ProvisionFile> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)?;
    }
    Ok(serde_json::from_str(&text)?)
}

/// Applies a file to the stores.
pub fn apply(storage: &dyn Storage, file: ProvisionFile) -> Report {
    let mut r = Report::default();
    for p in file.products {
        if let Err(e) = p.validate() {
            r.errors.push(format!("product {}: {e}", p.product_id));
            continue;
        }
        match storage.create_product(&p) {
            Ok(()) => r.products.created += 1,
            Err(StorageError::AlreadyExists { .. }) => r.products.existing += 1,
            Err(e) => r.errors.push(format!("product {}: {e}", p.product_id)),
        }
    }
    for spec in file.devices {
        let Ok(Some(product)) = storage.get_product(&spec.product_id) else {
            r.errors.push(format!(
                "device {}: product {} does not exist",
                spec.node_id, spec.product_id
            ));
            continue;
        };
        let (device, secret, generated) = new_device(spec, &product);
        let device_id = device.device_id.clone();
        match storage.create_device(&device, &Credential::Secret(secret.clone())) {
            Ok(()) => {
                r.devices.created += 1;
                if generated {
                    r.generated_secrets.push(Generated {
                        device_id,
                        secret: secret.expose().to_owned(),
                    });
                }
            }
            Err(StorageError::AlreadyExists { .. }) => r.devices.existing += 1,
            Err(e) => r.errors.push(format!("device {device_id}: {e}")),
        }
    }
    for rule in file.acl_rules {
        if let Err(e) = rule.validate() {
            r.errors.push(format!("acl rule {}: {e}", rule.acl_rule_id));
            continue;
        }
        match storage.get_acl_rule(&rule.acl_rule_id) {
            Ok(Some(_)) => r.acl_rules.existing += 1,
            Ok(None) => match storage.put_acl_rule(&rule) {
                Ok(()) => r.acl_rules.created += 1,
                Err(e) => r.errors.push(format!("acl rule {}: {e}", rule.acl_rule_id)),
            },
            Err(e) => r.errors.push(format!("acl rule {}: {e}", rule.acl_rule_id)),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_storage::MemStore;
    use serde_json::json;

    #[test]
    fn applies_and_is_idempotent() {
        let store = MemStore::in_memory();
        let file = || -> ProvisionFile {
            serde_json::from_value(json!({
                "products": [serde_json::to_value(fleetgate_model::testing::water_meter()).unwrap()],
                "devices": [
                    {"product_id": "water_meter", "node_id": "n1", "secret": "s3cret-value"},
                    {"product_id": "water_meter", "node_id": "n2"},
                    {"product_id": "nope", "node_id": "n3"}
                ],
                "acl_rules": [{"acl_rule_id": "a1", "app_id": "default", "scope": {"type": "all"},
                               "topic": "/usr/#", "action": "publish", "access": "allow"}]
            }))
            .unwrap()
        };
        let r = apply(&store, file());
        assert_eq!(
            r.products,
            Counts {
                created: 1,
                existing: 0
            }
        );
        assert_eq!(
            r.devices,
            Counts {
                created: 2,
                existing: 0
            }
        );
        assert_eq!(
            r.acl_rules,
            Counts {
                created: 1,
                existing: 0
            }
        );
        assert_eq!(r.generated_secrets.len(), 1);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let again = apply(&store, file());
        assert_eq!(
            again.devices,
            Counts {
                created: 0,
                existing: 2
            }
        );
        assert_eq!(again.products.existing, 1);
        assert_eq!(again.acl_rules.existing, 1);
    }
}
