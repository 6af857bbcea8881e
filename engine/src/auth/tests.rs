use super::*;
use fleetgate_model::auth::password;
use fleetgate_model::device::StatusEvent;
use fleetgate_model::product::FlowLimits;
use fleetgate_model::testing;
use fleetgate_storage::{DeviceStore, Durability, MemStore, ProductStore};

struct Fixture {
    store: MemStore,
    device: DeviceId,
    secret: DeviceSecret,
}

fn fixture() -> Fixture {
    let store = MemStore::in_memory();
    let mut product = testing::water_meter();
    product.flow_control = Some(FlowLimits {
        messages_per_sec: 5,
        bytes_per_sec: 1000,
    });
    store.create_product(&product).unwrap();
    let d = testing::device(&product, "n1");
    let secret = DeviceSecret::new("s3cret-value").unwrap();
    store
        .create_device(&d, &Credential::Secret(secret.clone()))
        .unwrap();
    Fixture {
        store,
        device: d.device_id,
        secret,
    }
}

fn request(f: &Fixture, sign: SignType, ts: &str, pw: &str) -> AuthRequest {
    AuthRequest {
        device_id: f.device.clone(),
        sign_type: sign,
        timestamp: ts.into(),
        password: pw.as_bytes().to_vec(),
    }
}

fn cache() -> AuthCache {
    AuthCache::new(100, FlowConfig::default(), 1)
}

const TS: &str = "2019120219";

#[test]
fn good_password_and_product_policy() {
    let f = fixture();
    let c = cache();
    let req = request(&f, SignType::NoTimestampCheck, TS, &password(&f.secret, TS));
    let info = c.verify_loading(&f.store, &req, Timestamp::now()).unwrap();
    assert_eq!(info.device_id, f.device);
    assert_eq!(info.product.messages.per_sec, 5);
    assert_eq!(info.product.bytes.per_sec, 1000);
    assert!(info.sub_devices.is_none());
    // Served from the cache now, without storage.
    assert!(c.verify_cached(&req, Timestamp::now()).unwrap().is_ok());
}

#[test]
fn refusals() {
    let f = fixture();
    let c = cache();
    let now = Timestamp::parse_auth_hour(TS).unwrap();
    let bad = request(&f, SignType::NoTimestampCheck, TS, "0".repeat(64).as_str());
    assert_eq!(
        c.verify_loading(&f.store, &bad, now).unwrap_err(),
        AuthError::BadCredentials
    );
    let mut unknown = request(&f, SignType::NoTimestampCheck, TS, &password(&f.secret, TS));
    unknown.device_id = DeviceId::new("nobody").unwrap();
    assert_eq!(
        c.verify_loading(&f.store, &unknown, now).unwrap_err(),
        AuthError::BadCredentials
    );
    // Sign type 1 checks the clock; sign type 0 does not.
    let stale_ts = "2019120101";
    let stale = request(
        &f,
        SignType::TimestampCheck,
        stale_ts,
        &password(&f.secret, stale_ts),
    );
    assert_eq!(
        c.verify_loading(&f.store, &stale, now).unwrap_err(),
        AuthError::BadCredentials
    );
    let unchecked = request(
        &f,
        SignType::NoTimestampCheck,
        stale_ts,
        &password(&f.secret, stale_ts),
    );
    assert!(c.verify_loading(&f.store, &unchecked, now).is_ok());
    let fresh = request(&f, SignType::TimestampCheck, TS, &password(&f.secret, TS));
    assert!(c.verify_loading(&f.store, &fresh, now).is_ok());
}

#[test]
fn frozen_devices_are_not_authorized_and_invalidation_takes_effect() {
    let f = fixture();
    let c = cache();
    let req = request(&f, SignType::NoTimestampCheck, TS, &password(&f.secret, TS));
    assert!(c.verify_loading(&f.store, &req, Timestamp::now()).is_ok());
    f.store
        .update_device(&f.device, Durability::Synced, &mut |d| {
            d.apply_status(StatusEvent::Freeze, Timestamp::now())
                .map(|_| ())
                .map_err(fleetgate_storage::StorageError::abort)
        })
        .unwrap();
    // The cache still holds the unfrozen record until it is invalidated.
    assert!(c.verify_cached(&req, Timestamp::now()).unwrap().is_ok());
    c.invalidate_device(&f.device);
    assert!(c.verify_cached(&req, Timestamp::now()).is_none());
    assert_eq!(
        c.verify_loading(&f.store, &req, Timestamp::now())
            .unwrap_err(),
        AuthError::NotAuthorized
    );
}

#[test]
fn gateways_learn_their_sub_devices() {
    let f = fixture();
    let product = f
        .store
        .get_product(&testing::water_meter().product_id)
        .unwrap()
        .unwrap();
    let mut sub = testing::device(&product, "sub1");
    sub.gateway_id = f.device.clone();
    f.store
        .create_device(&sub, &Credential::Secret(DeviceSecret::generate()))
        .unwrap();
    let req = request(&f, SignType::NoTimestampCheck, TS, &password(&f.secret, TS));
    let info = cache()
        .verify_loading(&f.store, &req, Timestamp::now())
        .unwrap();
    assert!(info.owns(sub.device_id.as_str()));
}
