//! Sample definitions for tests, benches, the load test and the documentation: a water meter
//! product modelled after the spec's running example (spec/device-management.md §3.1, §22).
//! Not used by the platform itself.

use serde_json::json;

use crate::device::{AuthType, Device, DeviceStatus, NodeType};
use crate::ids::{AppId, DeviceId, NodeId, ProductId};
use crate::product::Product;
use crate::time::Timestamp;

/// A JSON MQTT water meter: service `WaterMeter` with a writable `temperature` (int, -40..150),
/// read-only `flow` (decimal) and `state` (enum open/closed), and the command `ON_OFF` with a
/// required `value` parameter (enum ON/OFF).
pub fn water_meter() -> Product {
    let product = json!({
        "product_id": "water_meter",
        "app_id": "default",
        "name": "WaterMeter",
        "device_type": "WaterMeter",
        "protocol_type": "MQTT",
        "data_format": "json",
        "manufacturer_name": "HZYB",
        "service_capabilities": [{
            "service_id": "WaterMeter",
            "option": "Master",
            "properties": [
                {"property_name": "temperature", "data_type": "int", "min": "-40", "max": "150", "method": "RW"},
                {"property_name": "flow", "data_type": "decimal", "min": 0, "method": "R"},
                {"property_name": "state", "data_type": "enum", "enum_list": ["open", "closed"], "method": "RE"}
            ],
            "commands": [{
                "command_name": "ON_OFF",
                "paras": [{"para_name": "value", "data_type": "enum", "enum_list": ["ON", "OFF"], "required": true}],
                "responses": [{"response_name": "COMMAND_RESPONSE", "paras": [{"para_name": "result", "data_type": "string"}]}]
            }],
            "events": [{"event_type": "leak", "paras": [{"para_name": "litres", "data_type": "decimal"}]}]
        }],
        "create_time": 0
    });
    // The literal above is a valid product; a failure here is a bug in this file.
    serde_json::from_value(product).unwrap_or_else(|e| panic!("sample product is invalid: {e}"))
}

/// A directly connected, never-activated device `{product}_{node}` of `product`.
pub fn device(product: &Product, node: &str) -> Device {
    let node_id = NodeId::new(node).unwrap_or_else(|e| panic!("sample node id: {e}"));
    let device_id = DeviceId::derive(&product.product_id, &node_id);
    Device {
        device_id: device_id.clone(),
        node_id,
        product_id: product.product_id.clone(),
        app_id: product.app_id.clone(),
        device_name: node.to_owned(),
        description: String::new(),
        gateway_id: device_id,
        node_type: NodeType::Gateway,
        auth_type: AuthType::Secret,
        secure: false,
        status: DeviceStatus::Inactive,
        first_online_time: None,
        last_online_time: None,
        last_offline_time: None,
        fw_version: None,
        sw_version: None,
        device_sdk_version: None,
        tags: Vec::new(),
        groups: Vec::new(),
        extension_info: None,
        create_time: Timestamp::EPOCH,
    }
}

/// The resource space every sample lives in.
pub fn app() -> AppId {
    AppId::new("default").unwrap_or_else(|e| panic!("{e}"))
}

/// A product id for samples.
pub fn product_id(id: &str) -> ProductId {
    ProductId::new(id).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sample_product_is_valid() {
        super::water_meter().validate().unwrap();
    }
}
