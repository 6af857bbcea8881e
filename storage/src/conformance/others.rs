//! Conformance cases for shadows, OTA records, rules and ACLs.

use fleetgate_model::ota::{
    OtaDeviceProgress, OtaPackage, OtaTask, SubTaskStatus, TaskStatus, TaskTargets, UpgradeKind,
};
use fleetgate_model::rule::{
    AclAccess, AclAction, AclRule, AclScope, AppType, Channel, Resource, RoutingRule, RuleAction,
    Subject,
};
use fleetgate_model::shadow::{Shadow, ShadowError};
use fleetgate_model::{
    AclRuleId, ActionId, PackageId, RuleId, ServiceId, TaskId, Timestamp, testing,
};
use serde_json::json;

use super::{Make, assert_consistent, device, fresh, map, product};
use crate::error::StorageError;
use crate::kv::Durability;

/// Shadows start empty, change under the closure, and stay unchanged when it refuses.
pub fn shadow_updates(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let svc: ServiceId = "WaterMeter".parse().unwrap();
    assert_eq!(s.get_shadow(&d.device_id).unwrap(), Shadow::default());
    assert_eq!(s.peek_shadow(&d.device_id).unwrap(), Shadow::default());
    let after = s
        .update_shadow(&d.device_id, Durability::Synced, &mut |sh| {
            sh.set_desired(
                &svc,
                &map(json!({"temperature": 60})),
                Some(0),
                Timestamp::EPOCH,
            )
            .map(|_| ())
            .map_err(StorageError::abort)
        })
        .unwrap();
    assert_eq!(s.get_shadow(&d.device_id).unwrap(), after);
    assert_eq!(s.peek_shadow(&d.device_id).unwrap(), after);
    let conflict = s
        .update_shadow(&d.device_id, Durability::Synced, &mut |sh| {
            sh.set_desired(
                &svc,
                &map(json!({"temperature": 61})),
                Some(0),
                Timestamp::EPOCH,
            )
            .map(|_| ())
            .map_err(StorageError::abort)
        })
        .unwrap_err();
    assert!(matches!(
        conflict.aborted::<ShadowError>(),
        Some(ShadowError::VersionConflict { .. })
    ));
    assert_eq!(s.get_shadow(&d.device_id).unwrap(), after);
    s.update_shadow(&d.device_id, Durability::Buffered, &mut |sh| {
        sh.report(&svc, &map(json!({"temperature": 60})), Timestamp::EPOCH);
        Ok(())
    })
    .unwrap();
    assert!(!s.get_shadow(&d.device_id).unwrap().has_delta());
    assert!(matches!(
        s.update_shadow(&"ghost".parse().unwrap(), Durability::Synced, &mut |_| Ok(
            ()
        )),
        Err(StorageError::NotFound { .. })
    ));
    assert_consistent(s);
}

/// Packages by product, tasks, progress and the active-task index.
pub fn ota_records(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let p = product(s, "p");
    let d = device(s, &p, "n1");
    let pkg = OtaPackage {
        package_id: PackageId::new("pkg1").unwrap(),
        app_id: testing::app(),
        product_id: p.product_id.clone(),
        kind: UpgradeKind::Firmware,
        version: "v2".into(),
        source_versions: vec![],
        description: String::new(),
        file_name: "fw.bin".into(),
        file_size: 10,
        sha256: "0".repeat(64),
        chunk_size: None,
        create_time: Timestamp::EPOCH,
    };
    s.create_package(&pkg).unwrap();
    assert!(matches!(
        s.create_package(&pkg),
        Err(StorageError::AlreadyExists { .. })
    ));
    let mut orphan = pkg.clone();
    orphan.package_id = PackageId::new("pkg2").unwrap();
    orphan.product_id = testing::product_id("missing");
    assert!(matches!(
        s.create_package(&orphan),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(
        s.list_packages(&p.product_id, None, 10).unwrap().items,
        vec![pkg.clone()]
    );

    let mut task = OtaTask {
        task_id: TaskId::new("t1").unwrap(),
        app_id: testing::app(),
        task_name: "upgrade".into(),
        package_id: pkg.package_id.clone(),
        kind: UpgradeKind::Firmware,
        targets: TaskTargets {
            devices: vec![d.device_id.clone()],
            groups: vec![],
        },
        execute_at: None,
        retry: None,
        status: TaskStatus::Processing,
        create_time: Timestamp::EPOCH,
    };
    s.put_task(&task).unwrap();
    let mut progress = OtaDeviceProgress {
        task_id: task.task_id.clone(),
        device_id: d.device_id.clone(),
        status: SubTaskStatus::Processing,
        step: None,
        progress: 10,
        source_version: Some("v1".into()),
        cell: None,
        failure_reason: None,
        attempts: 1,
        update_time: Timestamp::EPOCH,
    };
    s.put_progress(&progress).unwrap();
    assert_eq!(
        s.active_tasks(&d.device_id).unwrap(),
        vec![task.task_id.clone()]
    );
    assert!(matches!(
        s.delete_task(&task.task_id),
        Err(StorageError::Conflict(_))
    ));
    progress.status = SubTaskStatus::Success;
    s.put_progress(&progress).unwrap();
    assert!(s.active_tasks(&d.device_id).unwrap().is_empty());
    assert_eq!(
        s.list_progress(&task.task_id, None, 10).unwrap().items,
        vec![progress.clone()]
    );
    let mut stray = progress.clone();
    stray.task_id = TaskId::new("nope").unwrap();
    assert!(matches!(
        s.put_progress(&stray),
        Err(StorageError::NotFound { .. })
    ));
    task.status = TaskStatus::Success;
    s.put_task(&task).unwrap();
    s.delete_task(&task.task_id).unwrap();
    assert_eq!(s.get_progress(&task.task_id, &d.device_id).unwrap(), None);
    s.delete_package(&pkg.package_id).unwrap();
    assert!(
        s.list_packages(&p.product_id, None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    assert_consistent(s);
}

/// Rules with actions (deleted together), listing by app, and ACL rules.
pub fn rules_actions_and_acls(make: &Make) {
    let f = fresh(make);
    let s = f.store.as_ref();
    let rule = |id: &str, app: &str| RoutingRule {
        rule_id: RuleId::new(id).unwrap(),
        rule_name: id.into(),
        description: String::new(),
        subject: Subject {
            resource: Resource::DeviceProperty,
            event: "report".into(),
        },
        app_type: AppType::App,
        app_id: app.parse().unwrap(),
        select: None,
        where_clause: None,
        active: false,
        create_time: Timestamp::EPOCH,
    };
    let (r1, r2) = (rule("r1", "default"), rule("r2", "other"));
    s.put_rule(&r1).unwrap();
    s.put_rule(&r2).unwrap();
    let action = RuleAction {
        action_id: ActionId::new("a1").unwrap(),
        rule_id: r1.rule_id.clone(),
        channel: Channel::HttpForwarding {
            url: "http://127.0.0.1:9/push".into(),
            cert_id: None,
        },
        create_time: Timestamp::EPOCH,
    };
    s.put_action(&action).unwrap();
    let mut stray = action.clone();
    stray.action_id = ActionId::new("a2").unwrap();
    stray.rule_id = RuleId::new("missing").unwrap();
    assert!(matches!(
        s.put_action(&stray),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.list_actions(&r1.rule_id).unwrap(), vec![action.clone()]);
    assert_eq!(
        s.list_rules(Some(&"default".parse().unwrap()), None, 10)
            .unwrap()
            .items,
        vec![r1.clone()]
    );
    assert_eq!(s.list_rules(None, None, 10).unwrap().items.len(), 2);
    // Moving a rule to another app moves its index entry.
    let moved = RoutingRule {
        app_id: "other".parse().unwrap(),
        ..r1.clone()
    };
    s.put_rule(&moved).unwrap();
    assert_eq!(
        s.list_rules(Some(&"other".parse().unwrap()), None, 10)
            .unwrap()
            .items
            .len(),
        2
    );
    assert!(
        s.list_rules(Some(&"default".parse().unwrap()), None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    s.delete_rule(&r1.rule_id).unwrap();
    assert_eq!(s.get_action(&action.action_id).unwrap(), None);
    assert!(matches!(
        s.delete_action(&action.action_id),
        Err(StorageError::NotFound { .. })
    ));

    let acl = AclRule {
        acl_rule_id: AclRuleId::new("acl1").unwrap(),
        app_id: testing::app(),
        scope: AclScope::All,
        topic: "$oc/devices/+/user/#".into(),
        action: AclAction::Subscribe,
        access: AclAccess::Deny,
        priority: 5,
        create_time: Timestamp::EPOCH,
    };
    s.put_acl_rule(&acl).unwrap();
    assert_eq!(s.get_acl_rule(&acl.acl_rule_id).unwrap(), Some(acl.clone()));
    assert_eq!(s.list_acl_rules(None, 10).unwrap().items, vec![acl.clone()]);
    s.delete_acl_rule(&acl.acl_rule_id).unwrap();
    assert!(s.list_acl_rules(None, 10).unwrap().items.is_empty());
    assert_consistent(s);
}
