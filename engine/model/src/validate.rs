//! Validation of device and application payloads against a product model
//! (spec/device-management.md §3.1: the model drives property validation, the shadow and the
//! commands on offer). Every function reports all problems at once with their paths.
//!
//! Numeric types accept JSON numbers and numeric strings (devices and the spec's own examples
//! send `"60"` for numbers); booleans accept `true`/`false` and the strings `"true"`/`"false"`.

use serde_json::{Map, Number, Value};

use crate::error::{Problems, ValidationError};
use crate::ids::ServiceId;
use crate::payload::ServiceProperties;
use crate::product::{ParaDef, Product, PropertyDef, ValueSpec, check_property_name};
use crate::time::Timestamp;

/// What a property is being validated for; it decides which access-mode letter is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyUse {
    /// A device reports it (needs `R`).
    Report,
    /// The platform sets it or writes it into the desired shadow (needs `W`).
    Write,
}

fn as_number(v: &Value) -> Option<Number> {
    match v {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => s.trim().parse::<Number>().ok(),
        _ => None,
    }
}

fn as_i64(n: &Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        // Accept integral floats such as 5.0.
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f <= i64::MAX as f64)
            .map(|f| f as i64)
    })
}

fn below(value: &Number, bound: &Number) -> bool {
    match (value.as_i64(), bound.as_i64()) {
        (Some(v), Some(b)) => v < b,
        _ => value
            .as_f64()
            .zip(bound.as_f64())
            .is_some_and(|(v, b)| v < b),
    }
}

/// Checks one value against its declared type and constraints.
pub fn check_value(spec: &ValueSpec, value: &Value) -> Result<(), String> {
    use crate::product::DataType as T;
    match spec.data_type {
        T::Int | T::Long | T::Decimal => {
            let Some(n) = as_number(value) else {
                return Err(format!("expected a number, got {}", kind(value)));
            };
            match spec.data_type {
                T::Int => match as_i64(&n) {
                    Some(i) if i32::try_from(i).is_ok() => {}
                    Some(_) => return Err("out of the 32-bit integer range".into()),
                    None => return Err("expected an integer".into()),
                },
                T::Long if as_i64(&n).is_none() => {
                    return Err("expected a 64-bit integer".into());
                }
                _ => {}
            }
            if let Some(min) = &spec.min
                && below(&n, min)
            {
                return Err(format!("{n} is below the minimum {min}"));
            }
            if let Some(max) = &spec.max
                && below(max, &n)
            {
                return Err(format!("{n} is above the maximum {max}"));
            }
        }
        T::String => {
            let Value::String(s) = value else {
                return Err(format!("expected a string, got {}", kind(value)));
            };
            check_length(spec, s)?;
            if !spec.enum_list.is_empty() && !spec.enum_list.iter().any(|e| e == s) {
                return Err(format!("{s:?} is not one of the allowed values"));
            }
        }
        T::DateTime => {
            let Value::String(s) = value else {
                return Err(format!("expected a date-time string, got {}", kind(value)));
            };
            if Timestamp::parse_event_time(s).is_none() {
                return Err(format!("{s:?} is not a date-time"));
            }
        }
        T::JsonObject => {
            if !value.is_object() {
                return Err(format!("expected a JSON object, got {}", kind(value)));
            }
        }
        T::Enum => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("expected an enum value, got {}", kind(value))),
            };
            if !spec.enum_list.contains(&text) {
                return Err(format!("{text:?} is not one of the allowed values"));
            }
        }
        T::Boolean => match value {
            Value::Bool(_) => {}
            Value::String(s) if s == "true" || s == "false" => {}
            _ => return Err(format!("expected a boolean, got {}", kind(value))),
        },
        T::StringList => {
            let Value::Array(items) = value else {
                return Err(format!("expected a list of strings, got {}", kind(value)));
            };
            for item in items {
                let Value::String(s) = item else {
                    return Err(format!("list items must be strings, got {}", kind(item)));
                };
                check_length(spec, s)?;
            }
        }
    }
    Ok(())
}

fn check_length(spec: &ValueSpec, s: &str) -> Result<(), String> {
    match spec.max_length {
        Some(max) if s.chars().count() > max as usize => {
            Err(format!("longer than the maximum length {max}"))
        }
        _ => Ok(()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_property(def: &PropertyDef, value: &Value, use_: PropertyUse) -> Result<(), String> {
    match use_ {
        PropertyUse::Report if !def.method.read => {
            return Err("the property is not readable".into());
        }
        PropertyUse::Write if !def.method.write => {
            return Err("the property is not writable".into());
        }
        _ => {}
    }
    check_value(&def.spec, value)
}

/// Validates one service's property map against the model, recording problems under `path`.
pub fn check_service_properties(
    product: &Product,
    service_id: &ServiceId,
    properties: &Map<String, Value>,
    use_: PropertyUse,
    path: &str,
    p: &mut Problems,
) {
    if properties.is_empty() {
        p.push(
            format!("{path}.properties"),
            "at least one property is required",
        );
    }
    if !product.has_model() {
        for key in properties.keys() {
            if let Err(reason) = check_property_name(key) {
                p.push(format!("{path}.properties.{key}"), reason);
            }
        }
        return;
    }
    let Some(service) = product.service(service_id.as_str()) else {
        p.push(
            format!("{path}.service_id"),
            format!("service {service_id:?} is not in the product model"),
        );
        return;
    };
    for (key, value) in properties {
        match service.properties.iter().find(|d| d.property_name == *key) {
            None => p.push(
                format!("{path}.properties.{key}"),
                "not a property of this service",
            ),
            Some(def) => {
                if let Err(reason) = check_property(def, value, use_) {
                    p.push(format!("{path}.properties.{key}"), reason);
                }
            }
        }
    }
}

/// Validates a property report or property set: each service and each property must exist in
/// the model (unless the product has none) and carry a valid value.
pub fn validate_properties(
    product: &Product,
    services: &[ServiceProperties],
    use_: PropertyUse,
) -> Result<(), ValidationError> {
    let mut p = Problems::new();
    if services.is_empty() {
        p.push("services", "at least one service is required");
    }
    for (i, svc) in services.iter().enumerate() {
        check_service_properties(
            product,
            &svc.service_id,
            &svc.properties,
            use_,
            &format!("services[{i}]"),
            &mut p,
        );
    }
    p.finish()
}

fn check_paras(defs: &[ParaDef], paras: &Value, path: &str, p: &mut Problems) {
    let empty = Map::new();
    let map = match paras {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            p.push(path, format!("expected an object, got {}", kind(other)));
            return;
        }
    };
    for def in defs {
        match map.get(&def.para_name) {
            None if def.spec.required => p.push(
                format!("{path}.{}", def.para_name),
                "required parameter is missing",
            ),
            None => {}
            Some(v) => {
                if let Err(reason) = check_value(&def.spec, v) {
                    p.push(format!("{path}.{}", def.para_name), reason);
                }
            }
        }
    }
    for key in map.keys() {
        if !defs.iter().any(|d| d.para_name == *key) {
            p.push(format!("{path}.{key}"), "not a parameter of this command");
        }
    }
}

/// Validates a command against the model: the service and command must exist and the
/// parameters must match (spec/app-side.md §14 item 4). A product without a model accepts any
/// command whose parameters are an object.
pub fn validate_command(
    product: &Product,
    service_id: Option<&ServiceId>,
    command_name: &str,
    paras: &Value,
) -> Result<(), ValidationError> {
    let mut p = Problems::new();
    if !product.has_model() {
        if !(paras.is_object() || paras.is_null()) {
            p.push("paras", format!("expected an object, got {}", kind(paras)));
        }
        return p.finish();
    }
    let services: Vec<_> = match service_id {
        Some(id) => match product.service(id.as_str()) {
            Some(s) => vec![s],
            None => {
                p.push(
                    "service_id",
                    format!("service {id:?} is not in the product model"),
                );
                return p.finish();
            }
        },
        None => product.service_capabilities.iter().collect(),
    };
    let found = services.iter().find_map(|s| {
        s.commands
            .iter()
            .find(|c| c.command_name.as_str() == command_name)
    });
    match found {
        None => p.push(
            "command_name",
            format!("command {command_name:?} is not in the product model"),
        ),
        Some(def) => check_paras(&def.paras, paras, "paras", &mut p),
    }
    p.finish()
}

/// Validates a product-model event reported on `events/up`.
pub fn validate_model_event(
    product: &Product,
    service_id: &ServiceId,
    event_type: &str,
    paras: &Value,
) -> Result<(), ValidationError> {
    let mut p = Problems::new();
    if !product.has_model() {
        return p.finish();
    }
    match product.service(service_id.as_str()) {
        None => p.push(
            "service_id",
            format!("service {service_id:?} is not in the product model"),
        ),
        Some(svc) => match svc.events.iter().find(|e| e.event_type == event_type) {
            None => p.push(
                "event_type",
                format!("event {event_type:?} is not in the product model"),
            ),
            Some(def) => check_paras(&def.paras, paras, "paras", &mut p),
        },
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::water_meter;
    use serde_json::json;

    fn report(v: Value) -> Vec<ServiceProperties> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn valid_report_passes() {
        let services = report(json!([
            {"service_id": "WaterMeter", "properties": {"temperature": 21, "flow": "12.5", "state": "open"}}
        ]));
        validate_properties(&water_meter(), &services, PropertyUse::Report).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let services = report(json!([
            {"service_id": "WaterMeter", "properties": {"temperature": 1000, "flow": "fast", "ghost": 1}},
            {"service_id": "Nope", "properties": {"x": 1}}
        ]));
        let err = validate_properties(&water_meter(), &services, PropertyUse::Report).unwrap_err();
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "services[0].properties.flow",
                "services[0].properties.ghost",
                "services[0].properties.temperature",
                "services[1].service_id"
            ]
        );
    }

    #[test]
    fn writes_need_writable_properties() {
        let services = report(json!([{"service_id": "WaterMeter", "properties": {"flow": 1}}]));
        let err = validate_properties(&water_meter(), &services, PropertyUse::Write).unwrap_err();
        assert!(err.to_string().contains("not writable"), "{err}");
        let services =
            report(json!([{"service_id": "WaterMeter", "properties": {"temperature": 60}}]));
        validate_properties(&water_meter(), &services, PropertyUse::Write).unwrap();
    }

    #[test]
    fn int_range_and_type() {
        let spec: ValueSpec =
            serde_json::from_value(json!({"data_type": "int", "min": "0", "max": 10})).unwrap();
        assert!(check_value(&spec, &json!(0)).is_ok());
        assert!(check_value(&spec, &json!(10)).is_ok());
        assert!(check_value(&spec, &json!(11)).is_err());
        assert!(check_value(&spec, &json!(-1)).is_err());
        assert!(check_value(&spec, &json!(1.5)).is_err());
        assert!(check_value(&spec, &json!("7")).is_ok());
        assert!(check_value(&spec, &json!(true)).is_err());
        let int: ValueSpec = serde_json::from_value(json!({"data_type": "int"})).unwrap();
        assert!(check_value(&int, &json!(3_000_000_000_i64)).is_err());
        let long: ValueSpec = serde_json::from_value(json!({"data_type": "long"})).unwrap();
        assert!(check_value(&long, &json!(3_000_000_000_i64)).is_ok());
    }

    #[test]
    fn other_types() {
        let s = |v: Value| -> ValueSpec { serde_json::from_value(v).unwrap() };
        let string = s(json!({"data_type": "string", "max_length": 3}));
        assert!(check_value(&string, &json!("abc")).is_ok());
        assert!(check_value(&string, &json!("abcd")).is_err());
        let en = s(json!({"data_type": "enum", "enum_list": ["on", "off"]}));
        assert!(check_value(&en, &json!("on")).is_ok());
        assert!(check_value(&en, &json!("dim")).is_err());
        let b = s(json!({"data_type": "boolean"}));
        assert!(check_value(&b, &json!(false)).is_ok());
        assert!(check_value(&b, &json!("true")).is_ok());
        assert!(check_value(&b, &json!(1)).is_err());
        let dt = s(json!({"data_type": "DateTime"}));
        assert!(check_value(&dt, &json!("20151212T121212Z")).is_ok());
        assert!(check_value(&dt, &json!("soon")).is_err());
        let list = s(json!({"data_type": "string list", "max_length": 2}));
        assert!(check_value(&list, &json!(["a", "bb"])).is_ok());
        assert!(check_value(&list, &json!(["a", 1])).is_err());
        let obj = s(json!({"data_type": "jsonObject"}));
        assert!(check_value(&obj, &json!({"a": 1})).is_ok());
        assert!(check_value(&obj, &json!([1])).is_err());
    }

    #[test]
    fn commands_are_checked_against_the_model() {
        let p = water_meter();
        let svc = ServiceId::new("WaterMeter").unwrap();
        validate_command(&p, Some(&svc), "ON_OFF", &json!({"value": "ON"})).unwrap();
        validate_command(&p, None, "ON_OFF", &json!({"value": "ON"})).unwrap();
        let err = validate_command(&p, Some(&svc), "ON_OFF", &json!({"extra": 1})).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(validate_command(&p, Some(&svc), "REBOOT", &json!({})).is_err());
        assert!(validate_command(&p, Some(&svc), "ON_OFF", &json!("ON")).is_err());
    }

    #[test]
    fn products_without_a_model_accept_any_valid_keys() {
        let mut p = water_meter();
        p.service_capabilities.clear();
        let ok = report(json!([{"service_id": "Any", "properties": {"x": [1, 2]}}]));
        validate_properties(&p, &ok, PropertyUse::Report).unwrap();
        let bad = report(json!([{"service_id": "Any", "properties": {"a.b": 1}}]));
        assert!(validate_properties(&p, &bad, PropertyUse::Report).is_err());
    }
}
