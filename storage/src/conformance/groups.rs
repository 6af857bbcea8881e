//! Conformance cases for groups and memberships.

use std::sync::Arc;

use fleetgate_model::GroupId;

use super::{Make, assert_consistent, device, fresh, group, product};
use crate::error::StorageError;
use crate::traits::DeviceQuery;

/// Membership is idempotent, limited both ways, listed in order, and scoped to one app.
pub fn group_membership_and_limits(make: &Make) {
    let f = make(crate::Limits {
        max_groups_per_device: 2,
        max_devices_per_group: 3,
        ..Default::default()
    });
    let s = f.store.as_ref();
    let p = product(s, "p");
    let devices: Vec<_> = (0..5).map(|i| device(s, &p, &format!("n{i}"))).collect();
    let (g1, g2, g3) = (group(s, "g1"), group(s, "g2"), group(s, "g3"));
    assert!(matches!(
        s.create_group(&g1),
        Err(StorageError::AlreadyExists { .. })
    ));

    for d in &devices[..3] {
        s.add_member(&g1.group_id, &d.device_id).unwrap();
    }
    s.add_member(&g1.group_id, &devices[0].device_id)
        .expect("adding twice is a no-op");
    assert!(matches!(
        s.add_member(&g1.group_id, &devices[3].device_id),
        Err(StorageError::LimitExceeded {
            what: "devices per group",
            ..
        })
    ));
    s.add_member(&g2.group_id, &devices[0].device_id).unwrap();
    assert!(matches!(
        s.add_member(&g3.group_id, &devices[0].device_id),
        Err(StorageError::LimitExceeded {
            what: "groups per device",
            ..
        })
    ));
    assert_eq!(s.get_group(&g1.group_id).unwrap().unwrap().device_count, 3);
    assert_eq!(
        s.get_device(&devices[0].device_id).unwrap().unwrap().groups,
        vec![g1.group_id.clone(), g2.group_id.clone()]
    );

    let page = s.list_members(&g1.group_id, None, 2).unwrap();
    assert_eq!(
        page.items,
        vec![devices[0].device_id.clone(), devices[1].device_id.clone()]
    );
    let rest = s
        .list_members(&g1.group_id, page.next.as_deref(), 2)
        .unwrap();
    assert_eq!(rest.items, vec![devices[2].device_id.clone()]);
    assert_eq!(rest.next, None);
    let by_group = DeviceQuery {
        group_id: Some(g1.group_id.clone()),
        ..Default::default()
    };
    assert_eq!(s.list_devices(&by_group, None, 10).unwrap().items.len(), 3);

    s.remove_member(&g1.group_id, &devices[1].device_id)
        .unwrap();
    s.remove_member(&g1.group_id, &devices[1].device_id)
        .expect("removing twice is a no-op");
    assert_eq!(s.get_group(&g1.group_id).unwrap().unwrap().device_count, 2);
    s.add_member(&g1.group_id, &devices[3].device_id)
        .expect("room again");
    assert!(matches!(
        s.add_member(&GroupId::new("missing").unwrap(), &devices[4].device_id),
        Err(StorageError::NotFound { .. })
    ));

    let mut foreign = g3.clone();
    foreign.group_id = GroupId::new("foreign").unwrap();
    foreign.app_id = "elsewhere".parse().unwrap();
    s.create_group(&foreign).unwrap();
    assert!(matches!(
        s.add_member(&foreign.group_id, &devices[4].device_id),
        Err(StorageError::Conflict(_))
    ));

    let renamed = s
        .update_group(&g2.group_id, &mut |g| {
            g.name = "renamed".into();
            Ok(())
        })
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert!(matches!(
        s.update_group(&g2.group_id, &mut |g| {
            g.device_count = 99;
            Ok(())
        }),
        Err(StorageError::Conflict(_))
    ));
    let listed = s
        .list_groups(Some(&fleetgate_model::testing::app()), None, 10)
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    assert_eq!(s.list_groups(None, None, 10).unwrap().items.len(), 4);
    assert_consistent(s);
}

/// Deleting a group removes it from every member device.
pub fn group_delete_releases_members(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let g = group(s, "g");
    let devices: Vec<_> = (0..4).map(|i| device(s, &p, &format!("n{i}"))).collect();
    for d in &devices {
        s.add_member(&g.group_id, &d.device_id).unwrap();
    }
    s.delete_group(&g.group_id).unwrap();
    assert_eq!(s.get_group(&g.group_id).unwrap(), None);
    for d in &devices {
        assert!(
            s.get_device(&d.device_id)
                .unwrap()
                .unwrap()
                .groups
                .is_empty()
        );
    }
    assert!(
        s.list_members(&g.group_id, None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    assert!(matches!(
        s.delete_group(&g.group_id),
        Err(StorageError::NotFound { .. })
    ));
    assert_consistent(s);
}

/// Many threads adding devices to a small group never exceed its limit.
pub fn concurrent_group_membership_respects_limits(make: &Make) {
    let f = make(crate::Limits {
        max_devices_per_group: 10,
        ..Default::default()
    });
    let s = Arc::clone(&f.store);
    let p = product(s.as_ref(), "p");
    let g = group(s.as_ref(), "g");
    let devices: Vec<_> = (0..40)
        .map(|i| device(s.as_ref(), &p, &format!("n{i}")))
        .collect();
    let added: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .chunks(5)
            .map(|chunk| {
                let s = Arc::clone(&s);
                let gid = g.group_id.clone();
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter(|d| s.add_member(&gid, &d.device_id).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(added, 10);
    assert_eq!(s.get_group(&g.group_id).unwrap().unwrap().device_count, 10);
    assert_consistent(s.as_ref());
}
