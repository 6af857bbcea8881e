//! Conformance cases for products and devices.

use fleetgate_model::device::{DeviceStatus, StatusEvent, Tag};
use fleetgate_model::shadow::Shadow;
use fleetgate_model::testing;
use fleetgate_model::{AppId, DeviceId, NodeId, Timestamp};
use serde_json::json;

use super::{Make, assert_consistent, device, fresh, product, secret};
use crate::error::StorageError;
use crate::kv::Durability;
use crate::traits::DeviceQuery;

/// Products: create, read, unique id and name, rename, list, delete.
pub fn products_crud(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let a = product(s, "pa");
    assert_eq!(s.get_product(&a.product_id).unwrap(), Some(a.clone()));
    assert!(matches!(
        s.create_product(&a),
        Err(StorageError::AlreadyExists {
            kind: "product",
            ..
        })
    ));
    let mut same_name = a.clone();
    same_name.product_id = testing::product_id("other");
    assert!(matches!(
        s.create_product(&same_name),
        Err(StorageError::AlreadyExists {
            kind: "product name",
            ..
        })
    ));
    let b = product(s, "pb");
    let mut other_app = testing::water_meter();
    other_app.product_id = testing::product_id("pc");
    other_app.name = "third".into();
    other_app.app_id = AppId::new("second").unwrap();
    s.create_product(&other_app).unwrap();

    let renamed = s.update_product(&a.product_id, &mut |p| {
        p.name = "renamed".into();
        Ok(())
    });
    assert_eq!(renamed.unwrap().name, "renamed");
    // The old name is free again, the new one is taken.
    same_name.name = a.name.clone();
    s.create_product(&same_name).unwrap();
    let taken = s.update_product(&b.product_id, &mut |p| {
        p.name = "renamed".into();
        Ok(())
    });
    assert!(matches!(taken, Err(StorageError::AlreadyExists { .. })));
    let id_change = s.update_product(&b.product_id, &mut |p| {
        p.product_id = testing::product_id("zz");
        Ok(())
    });
    assert!(matches!(id_change, Err(StorageError::Conflict(_))));

    let app = testing::app();
    let first = s.list_products(Some(&app), None, 2).unwrap();
    assert_eq!(first.items.len(), 2);
    let cursor = first.next.expect("a second page");
    let second = s.list_products(Some(&app), Some(&cursor), 2).unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.next, None);
    let all = s.list_products(None, None, 100).unwrap();
    let ids: Vec<_> = all.items.iter().map(|p| p.product_id.to_string()).collect();
    assert_eq!(ids, ["other", "pa", "pb", "pc"]);

    s.delete_product(&b.product_id).unwrap();
    assert_eq!(s.get_product(&b.product_id).unwrap(), None);
    assert!(matches!(
        s.delete_product(&b.product_id),
        Err(StorageError::NotFound { .. })
    ));
    s.create_product(&b).expect("its name is free after delete");
    assert_consistent(s);
}

/// A product with devices cannot be deleted.
pub fn product_delete_refused_while_devices_exist(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    assert!(matches!(
        s.delete_product(&p.product_id),
        Err(StorageError::Conflict(_))
    ));
    s.delete_device(&d.device_id).unwrap();
    s.delete_product(&p.product_id).unwrap();
    assert_consistent(s);
}

/// Registration stores the device and its credential and enforces unique identities.
pub fn device_registration_and_lookup(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let cred = secret();
    let d = testing::device(&p, "n1");
    s.create_device(&d, &cred).unwrap();
    assert_eq!(s.get_device(&d.device_id).unwrap(), Some(d.clone()));
    assert_eq!(s.get_credential(&d.device_id).unwrap(), Some(cred));
    assert!(matches!(
        s.create_device(&d, &secret()),
        Err(StorageError::AlreadyExists { kind: "device", .. })
    ));

    let mut same_node = d.clone();
    same_node.device_id = DeviceId::new("explicit-id").unwrap();
    same_node.gateway_id = same_node.device_id.clone();
    assert!(matches!(
        s.create_device(&same_node, &secret()),
        Err(StorageError::AlreadyExists {
            kind: "node_id in product",
            ..
        })
    ));

    let mut orphan = testing::device(&p, "n2");
    orphan.product_id = testing::product_id("missing");
    assert!(matches!(
        s.create_device(&orphan, &secret()),
        Err(StorageError::NotFound {
            kind: "product",
            ..
        })
    ));

    let q = product(s, "q");
    let other = device(s, &q, "n1");
    let mut found = s.find_by_node(&NodeId::new("n1").unwrap()).unwrap();
    found.sort();
    assert_eq!(found, vec![d.device_id.clone(), other.device_id.clone()]);
    assert_eq!(
        s.find_by_product_node(&p.product_id, &d.node_id).unwrap(),
        Some(d.device_id.clone())
    );
    assert_eq!(
        s.find_by_product_node(&p.product_id, &NodeId::new("nope").unwrap())
            .unwrap(),
        None
    );

    let new_cred = secret();
    s.set_credential(&d.device_id, &new_cred).unwrap();
    assert_eq!(
        s.get_credential(&d.device_id).unwrap(),
        Some(new_cred.clone())
    );
    assert!(matches!(
        s.set_credential(&DeviceId::new("nobody").unwrap(), &secret()),
        Err(StorageError::NotFound { .. })
    ));
    // A revoked credential: the device stays, cannot authenticate, and is consistent.
    assert!(s.delete_credential(&d.device_id).unwrap());
    assert!(!s.delete_credential(&d.device_id).unwrap());
    assert_eq!(s.get_credential(&d.device_id).unwrap(), None);
    assert!(s.load_for_auth(&d.device_id, 10).unwrap().is_none());
    assert_consistent(s);
    s.set_credential(&d.device_id, &new_cred).unwrap();
    assert!(matches!(
        s.delete_credential(&DeviceId::new("nobody").unwrap()),
        Err(StorageError::NotFound { .. })
    ));
    assert_consistent(s);
}

/// Status, tag and gateway changes move the device between index entries.
pub fn device_indexes_follow_updates(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let online = DeviceQuery {
        status: Some(DeviceStatus::Online),
        ..Default::default()
    };
    assert!(s.list_devices(&online, None, 10).unwrap().items.is_empty());
    let updated = s
        .update_device(&d.device_id, Durability::Buffered, &mut |dev| {
            dev.apply_status(StatusEvent::Connected, Timestamp::from_millis(5))
                .map_err(StorageError::abort)?;
            dev.tags.push(Tag::new("site", "north").unwrap());
            Ok(())
        })
        .unwrap();
    assert_eq!(updated.status, DeviceStatus::Online);
    assert_eq!(
        s.list_devices(&online, None, 10).unwrap().items,
        vec![updated.clone()]
    );
    let tagged = DeviceQuery {
        tag: Some(("site".into(), Some("north".into()))),
        ..Default::default()
    };
    assert_eq!(s.list_devices(&tagged, None, 10).unwrap().items.len(), 1);
    s.update_device(&d.device_id, Durability::Synced, &mut |dev| {
        dev.tags.clear();
        dev.status = DeviceStatus::Offline;
        Ok(())
    })
    .unwrap();
    assert!(s.list_devices(&online, None, 10).unwrap().items.is_empty());
    assert!(s.list_devices(&tagged, None, 10).unwrap().items.is_empty());

    // A refused mutation changes nothing and hands the caller its own error back.
    let before = s.get_device(&d.device_id).unwrap();
    let err = s
        .update_device(&d.device_id, Durability::Buffered, &mut |dev| {
            dev.status = DeviceStatus::Frozen;
            dev.apply_status(StatusEvent::Connected, Timestamp::EPOCH)
                .map_err(StorageError::abort)?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        err.aborted::<fleetgate_model::device::StatusError>()
            .is_some()
    );
    assert_eq!(s.get_device(&d.device_id).unwrap(), before);
    assert_consistent(s);
}

/// Connection events change the device's presence: status and times follow the lifecycle,
/// listings by status see them, freezing wins over them, and a deleted device's presence goes
/// with it. The credential load for authentication sees the same device.
pub fn device_presence(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let other = device(s, &p, "n2");
    let id = &d.device_id;
    let listed = |status: DeviceStatus| -> Vec<DeviceId> {
        let q = DeviceQuery {
            status: Some(status),
            ..Default::default()
        };
        let by_product = DeviceQuery {
            product_id: Some(p.product_id.clone()),
            ..q.clone()
        };
        let all: Vec<DeviceId> = s
            .list_devices(&q, None, 100)
            .unwrap()
            .items
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        let mine: Vec<DeviceId> = s
            .list_devices(&by_product, None, 100)
            .unwrap()
            .items
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert_eq!(
            all, mine,
            "{status}: status alone and with the product agree"
        );
        all
    };
    let at = Timestamp::from_millis;
    assert_eq!(
        listed(DeviceStatus::Inactive),
        [id.clone(), other.device_id.clone()]
    );

    let on = s
        .apply_presence_event(id, StatusEvent::Connected, at(10), Durability::Buffered)
        .unwrap();
    assert_eq!(
        (on.status, on.first_online_time, on.last_online_time),
        (DeviceStatus::Online, Some(at(10)), Some(at(10)))
    );
    assert_eq!(s.get_device(id).unwrap(), Some(on.clone()));
    assert_eq!(listed(DeviceStatus::Online), std::slice::from_ref(id));
    assert_eq!(
        listed(DeviceStatus::Inactive),
        std::slice::from_ref(&other.device_id)
    );

    let off = s
        .apply_presence_event(
            id,
            StatusEvent::ConnectionLost,
            at(20),
            Durability::Buffered,
        )
        .unwrap();
    assert_eq!(
        (off.status, off.first_online_time, off.last_offline_time),
        (DeviceStatus::Offline, Some(at(10)), Some(at(20)))
    );
    assert!(listed(DeviceStatus::Online).is_empty());
    assert_eq!(listed(DeviceStatus::Offline), std::slice::from_ref(id));
    let again = s
        .apply_presence_event(id, StatusEvent::Connected, at(30), Durability::Buffered)
        .unwrap();
    assert_eq!(
        (again.first_online_time, again.last_online_time),
        (Some(at(10)), Some(at(30)))
    );

    // Other record changes keep the presence; freezing hides it until unfrozen.
    let renamed = s
        .update_device(id, Durability::Synced, &mut |dev| {
            dev.device_name = "renamed".into();
            Ok(())
        })
        .unwrap();
    assert_eq!(
        (renamed.status, renamed.last_online_time),
        (DeviceStatus::Online, Some(at(30)))
    );
    s.update_device(id, Durability::Synced, &mut |dev| {
        dev.apply_status(StatusEvent::Freeze, at(40))
            .map(|_| ())
            .map_err(StorageError::abort)
    })
    .unwrap();
    assert_eq!(listed(DeviceStatus::Frozen), std::slice::from_ref(id));
    assert!(listed(DeviceStatus::Online).is_empty());
    let refused = s
        .apply_presence_event(id, StatusEvent::Connected, at(41), Durability::Buffered)
        .unwrap_err();
    assert_eq!(
        refused.aborted::<fleetgate_model::device::StatusError>(),
        Some(&fleetgate_model::device::StatusError::Frozen)
    );
    // The frozen device's connection is lost meanwhile.
    s.apply_presence_event(
        id,
        StatusEvent::ConnectionLost,
        at(42),
        Durability::Buffered,
    )
    .unwrap();
    let view = s.load_for_auth(id, 10).unwrap().unwrap();
    assert!(view.frozen);
    assert_eq!(view.credential, s.get_credential(id).unwrap().unwrap());
    let thawed = s
        .update_device(id, Durability::Synced, &mut |dev| {
            dev.apply_status(StatusEvent::Unfreeze, at(50))
                .map(|_| ())
                .map_err(StorageError::abort)
        })
        .unwrap();
    assert_eq!(thawed.status, DeviceStatus::Offline, "it had been online");
    assert_eq!(listed(DeviceStatus::Offline), std::slice::from_ref(id));
    assert!(!s.load_for_auth(id, 10).unwrap().unwrap().frozen);

    // Freezing and unfreezing are record changes, not presence events.
    assert!(matches!(
        s.apply_presence_event(id, StatusEvent::Freeze, at(60), Durability::Buffered),
        Err(StorageError::Conflict(_))
    ));
    let nobody = DeviceId::new("p_nobody").unwrap();
    assert!(matches!(
        s.apply_presence_event(
            &nobody,
            StatusEvent::Connected,
            at(60),
            Durability::Buffered
        ),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.load_for_auth(&nobody, 10).unwrap(), None);

    // A device registered again under the same id starts INACTIVE.
    s.delete_device(id).unwrap();
    assert_consistent(s);
    let d2 = device(s, &p, "n1");
    assert_eq!(s.get_device(id).unwrap(), Some(d2));
    assert_eq!(
        listed(DeviceStatus::Inactive),
        [id.clone(), other.device_id.clone()]
    );
    assert_consistent(s);
}

/// Identity fields and group memberships cannot be changed through `update_device`.
pub fn device_update_guards_identity(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let attempts: [&dyn Fn(&mut fleetgate_model::device::Device); 4] = [
        &|dev| dev.node_id = NodeId::new("other").unwrap(),
        &|dev| dev.product_id = testing::product_id("q"),
        &|dev| dev.app_id = AppId::new("x").unwrap(),
        &|dev| dev.groups.push(fleetgate_model::GroupId::new("g").unwrap()),
    ];
    for change in attempts {
        let r = s.update_device(&d.device_id, Durability::Synced, &mut |dev| {
            change(dev);
            Ok(())
        });
        assert!(matches!(r, Err(StorageError::Conflict(_))), "{r:?}");
    }
    let tags_dup = s.update_device(&d.device_id, Durability::Synced, &mut |dev| {
        dev.tags = vec![Tag::new("k", "1").unwrap(), Tag::new("k", "2").unwrap()];
        Ok(())
    });
    assert!(matches!(tags_dup, Err(StorageError::Conflict(_))));
    assert!(matches!(
        s.update_device(
            &DeviceId::new("ghost").unwrap(),
            Durability::Synced,
            &mut |_| Ok(())
        ),
        Err(StorageError::NotFound { .. })
    ));
    assert_consistent(s);
}

/// Every filter, alone and combined, with pagination that visits each match exactly once.
pub fn device_listing_filters_and_pagination(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let q = product(s, "q");
    let mut all = Vec::new();
    for i in 0..30 {
        let prod = if i % 3 == 0 { &q } else { &p };
        let mut d = testing::device(prod, &format!("node{i:02}"));
        if i % 2 == 0 {
            d.tags.push(Tag::new("parity", "even").unwrap());
        }
        if i % 5 == 0 {
            d.status = DeviceStatus::Online;
        }
        s.create_device(&d, &secret()).unwrap();
        all.push(d);
    }
    let check = |query: DeviceQuery, limit: usize| {
        let mut expected: Vec<_> = all.iter().filter(|d| query.matches(d)).cloned().collect();
        expected.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let page = s.list_devices(&query, cursor.as_deref(), limit).unwrap();
            assert!(page.items.len() <= limit);
            got.extend(page.items);
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        // Every index orders a prefix by device id, except the node-id index which orders by
        // node first; compare as sets there.
        if query.node_id_prefix.is_some() {
            got.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        }
        assert_eq!(got, expected, "query {query:?}");
    };
    check(DeviceQuery::default(), 7);
    check(
        DeviceQuery {
            product_id: Some(q.product_id.clone()),
            ..Default::default()
        },
        4,
    );
    check(
        DeviceQuery {
            status: Some(DeviceStatus::Online),
            ..Default::default()
        },
        2,
    );
    check(
        DeviceQuery {
            tag: Some(("parity".into(), Some("even".into()))),
            ..Default::default()
        },
        5,
    );
    check(
        DeviceQuery {
            tag: Some(("parity".into(), None)),
            ..Default::default()
        },
        5,
    );
    check(
        DeviceQuery {
            app_id: Some(testing::app()),
            status: Some(DeviceStatus::Inactive),
            ..Default::default()
        },
        6,
    );
    check(
        DeviceQuery {
            node_id_prefix: Some("node1".into()),
            ..Default::default()
        },
        3,
    );
    check(
        DeviceQuery {
            product_id: Some(p.product_id.clone()),
            tag: Some(("parity".into(), Some("even".into()))),
            node_id_prefix: Some("node2".into()),
            ..Default::default()
        },
        2,
    );
    check(
        DeviceQuery {
            app_id: Some(AppId::new("nobody").unwrap()),
            ..Default::default()
        },
        3,
    );
    assert!(
        s.list_devices(&DeviceQuery::default(), Some("not hex!"), 3)
            .is_err()
    );
    assert_consistent(s);
}

/// Sub-devices need their gateway, are listed by gateway, and keep it from being deleted.
pub fn sub_devices_and_gateways(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let mut sub = testing::device(&p, "sub1");
    sub.gateway_id = DeviceId::new("p_gw").unwrap();
    sub.node_type = fleetgate_model::device::NodeType::Endpoint;
    assert!(matches!(
        s.create_device(&sub, &secret()),
        Err(StorageError::NotFound {
            kind: "gateway",
            ..
        })
    ));
    let gw = device(s, &p, "gw");
    s.create_device(&sub, &secret()).unwrap();
    let by_gw = DeviceQuery {
        gateway_id: Some(gw.device_id.clone()),
        ..Default::default()
    };
    assert_eq!(
        s.list_devices(&by_gw, None, 10).unwrap().items,
        vec![sub.clone()]
    );
    let view = s.load_for_auth(&gw.device_id, 10).unwrap().unwrap();
    assert_eq!(view.sub_devices, [sub.device_id.clone()]);
    assert!(
        s.load_for_auth(&sub.device_id, 10)
            .unwrap()
            .unwrap()
            .sub_devices
            .is_empty()
    );
    assert!(matches!(
        s.delete_device(&gw.device_id),
        Err(StorageError::Conflict(_))
    ));
    s.delete_device(&sub.device_id).unwrap();
    s.delete_device(&gw.device_id).unwrap();
    assert_consistent(s);
}

/// Deleting a device removes its credential, shadow, memberships, commands and indexes.
pub fn device_delete_cascades(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let keep = device(s, &p, "n2");
    let group = super::group(s, "g1");
    s.add_member(&group.group_id, &d.device_id).unwrap();
    s.add_member(&group.group_id, &keep.device_id).unwrap();
    s.update_shadow(&d.device_id, Durability::Synced, &mut |sh: &mut Shadow| {
        sh.report(
            &"WaterMeter".parse().unwrap(),
            &super::map(json!({"temperature": 3})),
            Timestamp::EPOCH,
        );
        Ok(())
    })
    .unwrap();
    let pending = super::pending_command(&d, 60);
    s.insert_command(&pending).unwrap();
    let done = super::immediate_command(&d);
    s.insert_command(&done).unwrap();

    let deleted = s.delete_device(&d.device_id).unwrap();
    assert_eq!(deleted.device_id, d.device_id);
    assert_eq!(s.get_device(&d.device_id).unwrap(), None);
    assert_eq!(s.get_credential(&d.device_id).unwrap(), None);
    assert_eq!(s.get_shadow(&d.device_id).unwrap(), Shadow::default());
    assert_eq!(s.get_command(&pending.command_id).unwrap(), None);
    assert_eq!(s.get_command(&done.command_id).unwrap(), None);
    assert!(s.pending_commands(&d.device_id, 10).unwrap().is_empty());
    assert_eq!(
        s.get_group(&group.group_id).unwrap().unwrap().device_count,
        1
    );
    assert_eq!(
        s.list_members(&group.group_id, None, 10).unwrap().items,
        vec![keep.device_id.clone()]
    );
    assert_eq!(
        s.find_by_product_node(&p.product_id, &d.node_id).unwrap(),
        None
    );
    // The node id can be registered again.
    device(s, &p, "n1");
    assert_consistent(s);
}

/// At most `max_tags_per_device` tags.
pub fn tag_limit(make: &Make) {
    let f = make(crate::Limits {
        max_tags_per_device: 2,
        ..Default::default()
    });
    let s = f.store.as_ref();
    let p = product(s, "p");
    let mut d = testing::device(&p, "n1");
    d.tags = (0..3)
        .map(|i| Tag::new(format!("k{i}"), "v").unwrap())
        .collect();
    assert!(matches!(
        s.create_device(&d, &secret()),
        Err(StorageError::LimitExceeded { .. })
    ));
    d.tags.pop();
    s.create_device(&d, &secret()).unwrap();
    let r = s.update_device(&d.device_id, Durability::Synced, &mut |dev| {
        dev.tags.push(Tag::new("k9", "v").unwrap());
        Ok(())
    });
    assert!(matches!(r, Err(StorageError::LimitExceeded { .. })));
    assert_consistent(s);
}
