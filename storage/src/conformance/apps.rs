//! Conformance cases for applications and their API keys.

use fleetgate_model::app::{ApiKey, Application, compose_key, key_digest};
use fleetgate_model::{AppId, Timestamp, testing};

use super::{Make, assert_consistent, fresh, product};
use crate::error::StorageError;

fn app(id: &str, name: &str) -> Application {
    Application {
        app_id: AppId::new(id).unwrap(),
        name: name.into(),
        admin: false,
        created_at: Timestamp::EPOCH,
    }
}

fn api_key(key_id: &str, app: &Application) -> ApiKey {
    ApiKey {
        key_id: key_id.into(),
        app_id: app.app_id.clone(),
        name: format!("key {key_id}"),
        digest: key_digest(&compose_key(key_id, "secret")),
        created_at: Timestamp::EPOCH,
    }
}

/// Applications (unique ids and names, listing in pages) and API keys (by application,
/// refused for a missing application); an application that owns products cannot be deleted,
/// and deleting one deletes its keys.
pub fn apps_and_api_keys(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();

    // The application of the sample products, and two others.
    let default = app(testing::app().as_str(), "Default");
    let (a2, a3) = (app("app2", "Second"), app("app3", "Third"));
    for a in [&a3, &default, &a2] {
        s.create_app(a).unwrap();
    }
    assert_eq!(s.get_app(&a2.app_id).unwrap(), Some(a2.clone()));
    assert_eq!(s.get_app(&AppId::new("ghost").unwrap()).unwrap(), None);

    // Duplicate id, duplicate name: refused, nothing changed.
    let same_id = app("app2", "Another name");
    assert!(matches!(
        s.create_app(&same_id),
        Err(StorageError::AlreadyExists { .. })
    ));
    let same_name = app("app4", "Second");
    assert!(matches!(
        s.create_app(&same_name),
        Err(StorageError::AlreadyExists { .. })
    ));
    assert_eq!(s.get_app(&a2.app_id).unwrap(), Some(a2.clone()));
    assert_eq!(s.get_app(&same_name.app_id).unwrap(), None);

    // Listing in id order, two per page.
    let first = s.list_apps(None, 2).unwrap();
    assert_eq!(first.items, vec![a2.clone(), a3.clone()]);
    let cursor = first.next.expect("a second page");
    let second = s.list_apps(Some(&cursor), 2).unwrap();
    assert_eq!(second.items, vec![default.clone()]);
    assert_eq!(second.next, None);
    assert_eq!(s.list_apps(None, 10).unwrap().items.len(), 3);

    // API keys.
    let (k1, k2) = (
        api_key("00000000000000b2", &a2),
        api_key("00000000000000a1", &a2),
    );
    let k3 = api_key("00000000000000c3", &a3);
    for k in [&k1, &k2, &k3] {
        s.create_api_key(k).unwrap();
    }
    assert_eq!(s.get_api_key(&k1.key_id).unwrap(), Some(k1.clone()));
    assert!(
        s.get_api_key(&k1.key_id)
            .unwrap()
            .unwrap()
            .matches(&compose_key(&k1.key_id, "secret"))
    );
    assert_eq!(s.get_api_key("ffffffffffffffff").unwrap(), None);
    assert_eq!(
        s.list_api_keys(&a2.app_id).unwrap(),
        vec![k2.clone(), k1.clone()]
    );
    assert!(s.list_api_keys(&default.app_id).unwrap().is_empty());
    let mut taken = k3.clone();
    taken.app_id = a2.app_id.clone();
    assert!(matches!(
        s.create_api_key(&taken),
        Err(StorageError::AlreadyExists { .. })
    ));
    assert_eq!(s.get_api_key(&k3.key_id).unwrap(), Some(k3.clone()));
    let mut orphan = api_key("00000000000000d4", &a2);
    orphan.app_id = AppId::new("ghost").unwrap();
    assert!(matches!(
        s.create_api_key(&orphan),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.get_api_key(&orphan.key_id).unwrap(), None);
    assert_eq!(s.delete_api_key(&k2.key_id).unwrap(), k2);
    assert_eq!(s.get_api_key(&k2.key_id).unwrap(), None);
    assert_eq!(s.list_api_keys(&a2.app_id).unwrap(), vec![k1.clone()]);
    assert!(matches!(
        s.delete_api_key(&k2.key_id),
        Err(StorageError::NotFound { .. })
    ));
    assert_consistent(s);

    // An application that owns a product cannot be deleted until the product is gone.
    let p = product(s, "p");
    assert_eq!(p.app_id, default.app_id);
    let k4 = api_key("00000000000000e5", &default);
    s.create_api_key(&k4).unwrap();
    assert!(matches!(
        s.delete_app(&default.app_id),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(s.get_app(&default.app_id).unwrap(), Some(default.clone()));
    assert_eq!(s.get_api_key(&k4.key_id).unwrap(), Some(k4.clone()));
    s.delete_product(&p.product_id).unwrap();
    assert_eq!(s.delete_app(&default.app_id).unwrap(), default);
    assert_eq!(s.get_app(&default.app_id).unwrap(), None);
    assert_eq!(s.get_api_key(&k4.key_id).unwrap(), None);
    assert!(matches!(
        s.delete_app(&default.app_id),
        Err(StorageError::NotFound { .. })
    ));

    // Deleting an application deletes its keys and frees its name; other keys stay.
    assert_eq!(s.delete_app(&a2.app_id).unwrap(), a2);
    assert_eq!(s.get_api_key(&k1.key_id).unwrap(), None);
    assert!(s.list_api_keys(&a2.app_id).unwrap().is_empty());
    assert_eq!(s.get_api_key(&k3.key_id).unwrap(), Some(k3.clone()));
    s.create_app(&same_name).unwrap();
    assert_eq!(
        s.list_apps(None, 10).unwrap().items,
        vec![a3.clone(), same_name.clone()]
    );
    assert_consistent(s);
}
