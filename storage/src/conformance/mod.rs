//! The conformance suite: behaviour every storage backend must show. A backend's tests call
//! [`conformance_tests!`](crate::conformance_tests) with a function that makes a fresh
//! [`Fixture`]; the macro expands to one `#[test]` per case.
//!
//! Each case also ends with an integrity check, so a backend that loses an index entry or
//! writes half a batch fails here.

// Test code: a failed unwrap is a failed case.
#![allow(clippy::unwrap_used)]

mod apps;
mod commands;
mod devices;
mod groups;
mod others;
mod registrations;

use std::any::Any;
use std::sync::Arc;

use fleetgate_model::device::{Credential, Device, DeviceSecret};
use fleetgate_model::product::Product;
use fleetgate_model::testing;

use crate::traits::Storage;

pub use apps::*;
pub use commands::*;
pub use devices::*;
pub use groups::*;
pub use others::*;
pub use registrations::*;

/// A store under test and whatever must live as long as it (a temporary directory).
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Storage>,
    _guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fixture")
    }
}

impl Fixture {
    /// Wraps a store and its guard.
    pub fn new(store: Arc<dyn Storage>, guard: impl Any + Send) -> Self {
        Fixture {
            store,
            _guard: Box::new(guard),
        }
    }
}

/// Expands to one test per conformance case, each on a fresh fixture from `$make`
/// (a function taking [`crate::Limits`] and returning a [`Fixture`]).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            products_crud,
            product_delete_refused_while_devices_exist,
            device_registration_and_lookup,
            device_indexes_follow_updates,
            device_presence,
            device_update_guards_identity,
            device_listing_filters_and_pagination,
            sub_devices_and_gateways,
            device_delete_cascades,
            tag_limit,
            group_membership_and_limits,
            group_delete_releases_members,
            shadow_updates,
            command_cache_order_and_limit,
            command_transitions_leave_the_queue,
            command_deadline_index,
            command_history_listing,
            command_pruning,
            concurrent_enqueue_respects_the_limit,
            command_idempotency_keys,
            concurrent_idempotent_enqueue_creates_one,
            command_supersede_keys,
            command_limit_counts_after_supersede,
            unsettled_command_is_the_one_sent,
            device_delete_removes_command_entries,
            registrations_crud,
            registration_touch_and_expiry,
            device_delete_removes_its_registration,
            concurrent_registrations_keep_the_count,
            concurrent_group_membership_respects_limits,
            ota_records,
            rules_actions_and_acls,
            apps_and_api_keys,
        );
    };
    (@cases $make:path; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$make);
            }
        )*
    };
}

/// Makes a fixture with the given limits.
pub type Make = dyn Fn(crate::Limits) -> Fixture;

pub(crate) fn fresh(make: &Make) -> Fixture {
    make(crate::Limits::default())
}

pub(crate) fn product(store: &dyn Storage, id: &str) -> Product {
    let mut p = testing::water_meter();
    p.product_id = testing::product_id(id);
    p.name = format!("name-{id}");
    store.create_product(&p).expect("create product");
    p
}

pub(crate) fn secret() -> Credential {
    Credential::Secret(DeviceSecret::generate())
}

pub(crate) fn device(store: &dyn Storage, product: &Product, node: &str) -> Device {
    let d = testing::device(product, node);
    store.create_device(&d, &secret()).expect("create device");
    d
}

/// Asserts the store's integrity check finds nothing.
pub(crate) fn assert_consistent(store: &dyn Storage) {
    let report = store.check_integrity().expect("integrity check runs");
    assert!(
        report.problems.is_empty(),
        "integrity problems: {:#?}",
        report.problems
    );
}

pub(crate) fn group(store: &dyn Storage, id: &str) -> fleetgate_model::device::Group {
    let g = fleetgate_model::device::Group {
        group_id: fleetgate_model::GroupId::new(id).expect("group id"),
        app_id: testing::app(),
        name: format!("group {id}"),
        description: String::new(),
        device_count: 0,
        create_time: fleetgate_model::Timestamp::EPOCH,
    };
    store.create_group(&g).expect("create group");
    g
}

pub(crate) fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn new_command(d: &Device) -> fleetgate_model::command::NewCommand {
    fleetgate_model::command::NewCommand {
        device_id: d.device_id.clone(),
        app_id: d.app_id.clone(),
        mode: fleetgate_model::command::CommandMode::Async,
        service_id: Some("WaterMeter".parse().expect("service id")),
        command_name: "ON_OFF".parse().expect("command name"),
        paras: serde_json::json!({"value": "ON"}),
        supersede_key: None,
        idempotency_key: None,
    }
}

/// A delayed command created at second 0 that expires after `expire_secs`.
pub(crate) fn pending_command(d: &Device, expire_secs: u64) -> fleetgate_model::command::Command {
    pending_command_at(d, expire_secs, 0)
}

/// A delayed command created at `created_secs`.
pub(crate) fn pending_command_at(
    d: &Device,
    expire_secs: u64,
    created_secs: i64,
) -> fleetgate_model::command::Command {
    fleetgate_model::command::Command::new_delayed(
        new_command(d),
        expire_secs,
        fleetgate_model::Timestamp::from_millis(created_secs * 1000),
    )
}

/// A delayed command created at `created_secs` with the given keys.
pub(crate) fn keyed_command(
    d: &Device,
    expire_secs: u64,
    created_secs: i64,
    supersede_key: Option<&str>,
    idempotency_key: Option<&str>,
) -> fleetgate_model::command::Command {
    let mut new = new_command(d);
    new.supersede_key = supersede_key.map(str::to_owned);
    new.idempotency_key = idempotency_key.map(str::to_owned);
    fleetgate_model::command::Command::new_delayed(
        new,
        expire_secs,
        fleetgate_model::Timestamp::from_millis(created_secs * 1000),
    )
}

/// An immediate command that failed because the device was offline (terminal).
pub(crate) fn immediate_command(d: &Device) -> fleetgate_model::command::Command {
    fleetgate_model::command::Command::new_immediate(
        new_command(d),
        None,
        fleetgate_model::Timestamp::EPOCH,
        fleetgate_model::Timestamp::EPOCH,
    )
}

/// An immediate command sent at `sent_secs`, timing out `ack_secs` later.
pub(crate) fn immediate_sent_command(
    d: &Device,
    sent_secs: i64,
    ack_secs: u64,
) -> fleetgate_model::command::Command {
    let at = fleetgate_model::Timestamp::from_millis(sent_secs * 1000);
    fleetgate_model::command::Command::new_immediate(
        new_command(d),
        Some(None),
        at.plus_secs(ack_secs),
        at,
    )
}
