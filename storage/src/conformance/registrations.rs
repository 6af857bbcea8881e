//! Conformance cases for LwM2M registrations.

use std::sync::Arc;

use fleetgate_model::Timestamp;
use fleetgate_model::device::Device;
use fleetgate_model::lwm2m::{MAX_OBJECTS_BYTES, Registration, RegistrationId};

use super::{Make, assert_consistent, device, fresh, product};
use crate::error::StorageError;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

/// A registration of `d` made at `at_secs` that lives `lifetime_secs`.
pub(crate) fn registration(d: &Device, at_secs: i64, lifetime_secs: u32) -> Registration {
    Registration {
        location: RegistrationId::generate(),
        endpoint: d.node_id.clone(),
        device_id: d.device_id.clone(),
        app_id: d.app_id.clone(),
        lifetime_secs,
        lwm2m_version: "1.1".into(),
        queue_mode: true,
        objects: "</>;rt=\"oma.lwm2m\",</1/0>,</3/0>,</19/0>,</19/1>".into(),
        address: "10.0.0.1:5683".into(),
        registered_at: t(at_secs),
        updated_at: t(at_secs),
        expires_at: Registration::expiry(t(at_secs), lifetime_secs),
    }
}

fn locations(v: Vec<Registration>) -> Vec<RegistrationId> {
    v.into_iter().map(|r| r.location).collect()
}

/// Put, read by location and by device, replace, delete, count.
pub fn registrations_crud(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let a = device(s, &p, "a");
    let b = device(s, &p, "b");
    assert_eq!(s.count_registrations().unwrap(), 0);
    let ra = registration(&a, 0, 300);
    let rb = registration(&b, 0, 300);
    assert_eq!(s.put_registration(&ra).unwrap(), None);
    assert_eq!(s.put_registration(&rb).unwrap(), None);
    assert_eq!(s.count_registrations().unwrap(), 2);
    assert_eq!(s.get_registration(&ra.location).unwrap(), Some(ra.clone()));
    assert_eq!(
        s.registration_of_device(&a.device_id).unwrap(),
        Some(ra.clone())
    );
    // Registering again replaces the device's registration and returns the old one.
    let ra2 = Registration {
        objects: "</1/0>,</3/0>,</19/0>,</19/1>,</5/0>".into(),
        queue_mode: false,
        ..registration(&a, 10, 600)
    };
    assert_eq!(s.put_registration(&ra2).unwrap(), Some(ra.clone()));
    assert_eq!(s.get_registration(&ra.location).unwrap(), None);
    assert_eq!(
        s.registration_of_device(&a.device_id).unwrap(),
        Some(ra2.clone())
    );
    assert_eq!(s.count_registrations().unwrap(), 2);
    // Putting the same location again (a changed body) replaces it in place.
    let ra3 = Registration {
        objects: "</1/0>".into(),
        ..ra2.clone()
    };
    assert_eq!(s.put_registration(&ra3).unwrap(), Some(ra2.clone()));
    assert_eq!(
        s.get_registration(&ra2.location).unwrap(),
        Some(ra3.clone())
    );
    // A location is one device's; unknown devices and oversized bodies are refused.
    let stolen = Registration {
        location: ra3.location,
        ..registration(&b, 20, 300)
    };
    assert!(matches!(
        s.put_registration(&stolen),
        Err(StorageError::AlreadyExists { .. })
    ));
    let mut ghost = registration(&a, 0, 300);
    ghost.device_id = "ghost".parse().unwrap();
    assert!(matches!(
        s.put_registration(&ghost),
        Err(StorageError::NotFound { .. })
    ));
    let mut big = registration(&a, 0, 300);
    big.objects = "x".repeat(MAX_OBJECTS_BYTES + 1);
    assert!(matches!(
        s.put_registration(&big),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        s.registration_of_device(&a.device_id).unwrap(),
        Some(ra3.clone())
    );
    // De-register.
    assert_eq!(
        s.delete_registration(&ra3.location).unwrap(),
        Some(ra3.clone())
    );
    assert_eq!(s.delete_registration(&ra3.location).unwrap(), None);
    assert_eq!(s.registration_of_device(&a.device_id).unwrap(), None);
    assert_eq!(s.count_registrations().unwrap(), 1);
    assert_eq!(
        s.due_registrations(t(1_000_000), 10).unwrap(),
        vec![rb.clone()]
    );
    assert_consistent(s);
}

/// Updates move the expiry; expired registrations come back earliest first and cannot be
/// updated.
pub fn registration_touch_and_expiry(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let a = device(s, &p, "a");
    let b = device(s, &p, "b");
    let c = device(s, &p, "c");
    let ra = registration(&a, 0, 100);
    let rb = registration(&b, 0, 200);
    let rc = registration(&c, 0, 300);
    for r in [&ra, &rb, &rc] {
        s.put_registration(r).unwrap();
    }
    assert!(s.due_registrations(t(99), 10).unwrap().is_empty());
    assert_eq!(
        locations(s.due_registrations(t(200), 10).unwrap()),
        vec![ra.location, rb.location]
    );
    assert_eq!(
        locations(s.due_registrations(t(1000), 1).unwrap()),
        vec![ra.location]
    );
    // An update at 50 from a new address: `a` now expires at 150; with a new lifetime, `b`
    // at 50 + 500.
    let touched = s
        .touch_registration(&ra.location, "10.9.9.9:40000", t(50), None)
        .unwrap()
        .unwrap();
    assert_eq!(touched.expires_at, t(150));
    assert_eq!(touched.updated_at, t(50));
    assert_eq!(touched.address, "10.9.9.9:40000");
    assert_eq!(touched.registered_at, t(0));
    assert_eq!(s.get_registration(&ra.location).unwrap(), Some(touched));
    let rb2 = s
        .touch_registration(&rb.location, "10.0.0.2:1", t(50), Some(500))
        .unwrap()
        .unwrap();
    assert_eq!((rb2.lifetime_secs, rb2.expires_at), (500, t(550)));
    assert_eq!(
        locations(s.due_registrations(t(400), 10).unwrap()),
        vec![ra.location, rc.location]
    );
    // Unknown and expired locations are not updated.
    assert_eq!(
        s.touch_registration(&RegistrationId::generate(), "x:1", t(60), None)
            .unwrap(),
        None
    );
    assert_eq!(
        s.touch_registration(&ra.location, "x:1", t(150), None)
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_registration(&ra.location)
            .unwrap()
            .unwrap()
            .expires_at,
        t(150),
        "an expired registration stays until it is swept"
    );
    // The sweep.
    for r in s.due_registrations(t(400), 10).unwrap() {
        assert_eq!(s.delete_registration(&r.location).unwrap(), Some(r));
    }
    assert!(s.due_registrations(t(549), 10).unwrap().is_empty());
    assert_eq!(s.count_registrations().unwrap(), 1);
    assert_consistent(s);
}

/// Deleting a device deletes its registration.
pub fn device_delete_removes_its_registration(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let a = device(s, &p, "a");
    let b = device(s, &p, "b");
    let ra = registration(&a, 0, 100);
    let rb = registration(&b, 0, 100);
    s.put_registration(&ra).unwrap();
    s.put_registration(&rb).unwrap();
    s.delete_device(&a.device_id).unwrap();
    assert_eq!(s.get_registration(&ra.location).unwrap(), None);
    assert_eq!(s.registration_of_device(&a.device_id).unwrap(), None);
    assert_eq!(s.count_registrations().unwrap(), 1);
    assert_eq!(s.due_registrations(t(1000), 10).unwrap(), vec![rb.clone()]);
    assert_eq!(
        s.touch_registration(&ra.location, "x:1", t(1), None)
            .unwrap(),
        None
    );
    assert_consistent(s);
}

/// Threads registering, re-registering and de-registering many devices keep the records,
/// their entries and the count in agreement.
pub fn concurrent_registrations_keep_the_count(make: &Make) {
    let f = fresh(make);
    let s = Arc::clone(&f.store);
    let p = product(s.as_ref(), "p");
    let devices: Vec<Device> = (0..16)
        .map(|i| device(s.as_ref(), &p, &format!("n{i}")))
        .collect();
    std::thread::scope(|scope| {
        for worker in 0..8usize {
            let s = Arc::clone(&s);
            let devices = &devices;
            scope.spawn(move || {
                for round in 0..40usize {
                    let d = &devices[(worker * 7 + round) % devices.len()];
                    match round % 4 {
                        0 | 1 => {
                            s.put_registration(&registration(d, round as i64, 300))
                                .unwrap();
                        }
                        2 => {
                            if let Some(r) = s.registration_of_device(&d.device_id).unwrap() {
                                s.touch_registration(
                                    &r.location,
                                    "10.0.0.3:9",
                                    t(round as i64),
                                    None,
                                )
                                .unwrap();
                            }
                        }
                        _ => {
                            if let Some(r) = s.registration_of_device(&d.device_id).unwrap() {
                                s.delete_registration(&r.location).unwrap();
                            }
                        }
                    }
                }
            });
        }
    });
    let present = devices
        .iter()
        .filter(|d| s.registration_of_device(&d.device_id).unwrap().is_some())
        .count() as u64;
    assert_eq!(s.count_registrations().unwrap(), present);
    assert_eq!(
        s.due_registrations(t(1_000_000), 100).unwrap().len() as u64,
        present
    );
    assert_consistent(s.as_ref());
}
