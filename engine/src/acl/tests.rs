use super::*;
use fleetgate_model::product::TopicPermission;
use fleetgate_model::{AclRuleId, Timestamp, testing};

fn info(gateway_subs: &[&str]) -> DeviceInfo {
    let product = Arc::new(ProductPolicy {
        product_id: testing::product_id("p"),
        app_id: testing::app(),
        custom_topics: vec![
            CustomTopic {
                suffix: "data/up".into(),
                permission: TopicPermission::Publish,
                description: String::new(),
            },
            CustomTopic {
                suffix: "cfg".into(),
                permission: TopicPermission::Subscribe,
                description: String::new(),
            },
        ],
        messages: Rate::UNLIMITED,
        bytes: Rate::UNLIMITED,
        max_throttle_ms: 10_000,
    });
    DeviceInfo {
        device_id: DeviceId::new("p_d1").unwrap(),
        product,
        sub_devices: (!gateway_subs.is_empty()).then(|| {
            Arc::new(
                gateway_subs
                    .iter()
                    .map(|s| DeviceId::new(*s).unwrap())
                    .collect(),
            )
        }),
    }
}

fn rule(
    scope: AclScope,
    topic: &str,
    action: AclAction,
    access: AclAccess,
    priority: i32,
) -> AclRule {
    AclRule {
        acl_rule_id: AclRuleId::generate(),
        app_id: testing::app(),
        scope,
        topic: topic.into(),
        action,
        access,
        priority,
        create_time: Timestamp::EPOCH,
    }
}

#[test]
fn own_uplink_topics_only() {
    let d = info(&[]);
    let none = AclRules::default();
    let ok = |t: &str| may_publish(&d, "p_d1", t, &none);
    assert!(ok("$oc/devices/p_d1/sys/properties/report"));
    assert!(ok("$oc/devices/p_d1/sys/commands/response/request_id=5"));
    assert!(ok("$oc/devices/p_d1/sys/shadow/get/request_id=5"));
    assert!(ok("$oc/devices/p_d1/user/data/up"));
    assert!(
        !ok("$oc/devices/p_d1/user/cfg"),
        "subscribe-only custom topic"
    );
    assert!(
        !ok("$oc/devices/p_d1/user/other"),
        "undeclared custom topic"
    );
    assert!(!ok("$oc/devices/p_d1/sys/messages/down"), "downlink topic");
    assert!(
        !ok("$oc/devices/p_d2/sys/properties/report"),
        "another device"
    );
    assert!(!ok("/usr/anything"), "fully custom topics need a rule");
    assert!(!ok("$oc/devices/p_d1/sys/bogus"));
}

#[test]
fn gateways_also_own_their_sub_devices() {
    let g = info(&["sub1"]);
    let none = AclRules::default();
    assert!(may_publish(
        &g,
        "p_d1",
        "$oc/devices/sub1/sys/properties/report",
        &none
    ));
    assert!(!may_publish(
        &g,
        "p_d1",
        "$oc/devices/sub2/sys/properties/report",
        &none
    ));
    assert_eq!(
        may_subscribe(&g, "p_d1", "$oc/devices/sub1/sys/commands/#", &none),
        Some(SubscribeScope::Own)
    );
}

#[test]
fn subscriptions() {
    let d = info(&[]);
    let none = AclRules::default();
    let sub = |f: &str| may_subscribe(&d, "p_d1", f, &none);
    assert_eq!(
        sub("$oc/devices/p_d1/sys/commands/#"),
        Some(SubscribeScope::Own)
    );
    assert_eq!(sub("$oc/devices/p_d1/sys/#"), Some(SubscribeScope::Own));
    assert_eq!(sub("$oc/devices/p_d1/#"), Some(SubscribeScope::Own));
    assert_eq!(sub("$oc/devices/p_d1/user/cfg"), Some(SubscribeScope::Own));
    assert_eq!(
        sub("$oc/devices/p_d1/user/data/up"),
        None,
        "publish-only custom topic"
    );
    assert_eq!(sub("$oc/devices/+/sys/commands/#"), None);
    assert_eq!(sub("$oc/devices/p_d2/sys/commands/#"), None);
    assert_eq!(sub("#"), None);
    assert_eq!(
        sub("$oc/devices/p_d1/sys/commands/#/x"),
        None,
        "invalid filter"
    );
}

#[test]
fn stored_rules_come_first_by_priority_and_deny_wins_ties() {
    let d = info(&[]);
    let rules = AclRules::new(vec![
        rule(
            AclScope::All,
            "/usr/#",
            AclAction::Publish,
            AclAccess::Allow,
            1,
        ),
        rule(
            AclScope::DeviceId(DeviceId::new("p_d1").unwrap()),
            "/usr/secret",
            AclAction::All,
            AclAccess::Deny,
            5,
        ),
        rule(
            AclScope::All,
            "$oc/devices/+/sys/events/up",
            AclAction::Publish,
            AclAccess::Deny,
            0,
        ),
        rule(
            AclScope::Username("monitor".into()),
            "$oc/devices/+/sys/messages/up",
            AclAction::Subscribe,
            AclAccess::Allow,
            0,
        ),
        rule(AclScope::All, "/tie", AclAction::All, AclAccess::Allow, 3),
        rule(AclScope::All, "/tie", AclAction::All, AclAccess::Deny, 3),
    ]);
    assert!(may_publish(&d, "p_d1", "/usr/data", &rules));
    assert!(!may_publish(&d, "p_d1", "/usr/secret", &rules));
    assert!(
        !may_publish(&d, "p_d1", "$oc/devices/p_d1/sys/events/up", &rules),
        "a rule can narrow the defaults"
    );
    assert!(!may_publish(&d, "p_d1", "/tie", &rules));
    assert_eq!(
        may_subscribe(&d, "monitor", "$oc/devices/+/sys/messages/up", &rules),
        Some(SubscribeScope::Granted)
    );
    assert_eq!(
        may_subscribe(&d, "p_d1", "$oc/devices/+/sys/messages/up", &rules),
        None
    );
}

#[test]
fn family_bits() {
    assert_eq!(
        families_covered("$oc/devices/d/sys/commands/#", "d"),
        0b000100
    );
    assert_eq!(families_covered("$oc/devices/d/sys/#", "d"), 0b111111);
    assert_eq!(
        families_covered("$oc/devices/d/sys/properties/+/#", "d"),
        0b011000
    );
    assert_eq!(
        families_covered("$oc/devices/d/sys/shadow/get/response/#", "d"),
        0b100000
    );
    assert_eq!(families_covered("$oc/devices/e/sys/#", "d"), 0);
}
