//! Data-forwarding rules and their actions (push subscriptions, spec/app-side.md §1.8, §2,
//! §3.2) and publish/subscribe ACL rules (spec/app-side.md §10 row 6). The rule engine and the
//! push channels that evaluate them live elsewhere; these are the stored records.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::ids::{AclRuleId, ActionId, AppId, DeviceId, RuleId};
use crate::time::Timestamp;
use crate::topic::validate_filter;

/// The resources events are published for (spec/app-side.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    /// Device lifecycle: create, update, delete.
    #[serde(rename = "device")]
    Device,
    /// Property reports.
    #[serde(rename = "device.property")]
    DeviceProperty,
    /// Message reports.
    #[serde(rename = "device.message")]
    DeviceMessage,
    /// Down-link message status.
    #[serde(rename = "device.message.status")]
    DeviceMessageStatus,
    /// Online/offline/abnormal of directly connected devices.
    #[serde(rename = "device.status")]
    DeviceStatus,
    /// Batch tasks.
    #[serde(rename = "batchtask")]
    BatchTask,
    /// Product lifecycle.
    #[serde(rename = "product")]
    Product,
    /// Command status; the source's `device.commmad.status` spelling is accepted on input.
    #[serde(rename = "device.command.status", alias = "device.commmad.status")]
    DeviceCommandStatus,
    /// OTA status and results.
    #[serde(rename = "device.upgrade.status")]
    DeviceUpgradeStatus,
    /// Device run logs.
    #[serde(rename = "device.log")]
    DeviceLog,
}

impl Resource {
    /// The events this resource publishes.
    pub fn events(self) -> &'static [&'static str] {
        match self {
            Resource::Device | Resource::Product => &["create", "update", "delete"],
            Resource::DeviceProperty | Resource::DeviceMessage | Resource::DeviceLog => &["report"],
            Resource::DeviceMessageStatus
            | Resource::DeviceStatus
            | Resource::BatchTask
            | Resource::DeviceCommandStatus
            | Resource::DeviceUpgradeStatus => &["update"],
        }
    }
}

/// Which events a rule listens to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The resource.
    pub resource: Resource,
    /// One of the resource's events.
    pub event: String,
}

/// Whether a rule sees one resource space or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppType {
    /// Every resource space of the tenant.
    Global,
    /// One resource space (`app_id`).
    App,
}

/// A data-forwarding rule: which events, optional SQL, active or not (spec/app-side.md §1.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// The rule's id.
    pub rule_id: RuleId,
    /// At most 256 characters.
    pub rule_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The events it listens to.
    pub subject: Subject,
    /// Scope.
    pub app_type: AppType,
    /// The resource space for `APP` scope; the owner otherwise.
    pub app_id: AppId,
    /// SELECT clause (at most 500 characters by default).
    #[serde(default)]
    pub select: Option<String>,
    /// WHERE clause (at most 500 characters by default).
    #[serde(default, rename = "where")]
    pub where_clause: Option<String>,
    /// Rules forward nothing until activated.
    #[serde(default)]
    pub active: bool,
    /// Creation time.
    pub create_time: Timestamp,
}

impl RoutingRule {
    /// Checks names, the subject and clause sizes (ASCII only, at most `max_clause` each).
    pub fn validate(&self, max_clause: usize) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        if self.rule_name.is_empty() || self.rule_name.chars().count() > 256 {
            p.push("rule_name", "must be 1-256 characters");
        }
        if !self
            .subject
            .resource
            .events()
            .contains(&self.subject.event.as_str())
        {
            p.push(
                "subject.event",
                format!("must be one of {:?}", self.subject.resource.events()),
            );
        }
        for (field, clause) in [("select", &self.select), ("where", &self.where_clause)] {
            if let Some(c) = clause {
                if c.len() > max_clause {
                    p.push(field, format!("at most {max_clause} characters"));
                }
                if !c.is_ascii() {
                    p.push(field, "only ASCII is supported");
                }
            }
        }
        p.finish()
    }
}

/// Where a rule's events go (spec/app-side.md §1.8, §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "channel",
    content = "channel_detail",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum Channel {
    /// HTTP(S) push to an application server.
    HttpForwarding {
        /// The callback URL.
        url: String,
        /// The uploaded CA certificate for HTTPS targets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert_id: Option<String>,
    },
    /// A queue of the AMQP push service.
    AmqpForwarding {
        /// The queue's name.
        queue_name: String,
    },
}

/// A rule action: one target of one rule. A rule plus its actions is a push subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleAction {
    /// The action's id.
    pub action_id: ActionId,
    /// The rule it belongs to.
    pub rule_id: RuleId,
    /// The target.
    #[serde(flatten)]
    pub channel: Channel,
    /// Creation time.
    pub create_time: Timestamp,
}

impl RuleAction {
    /// Checks the target: an http(s) URL, or a queue name of the allowed characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        match &self.channel {
            Channel::HttpForwarding { url, .. } => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://"))
                    || url.len() > 2048
                {
                    p.push(
                        "channel_detail.url",
                        "must be an http:// or https:// URL of at most 2048 characters",
                    );
                }
                if url.chars().any(char::is_whitespace) {
                    p.push("channel_detail.url", "may not contain whitespace");
                }
            }
            Channel::AmqpForwarding { queue_name } => {
                let ok = !queue_name.is_empty()
                    && queue_name.len() <= 128
                    && queue_name.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'.' | b':')
                    });
                if !ok {
                    p.push(
                        "channel_detail.queue_name",
                        "must be 1-128 of letters, digits, '_', '-', '|', '.', ':'",
                    );
                }
            }
        }
        p.finish()
    }
}

/// Whom an ACL rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum AclScope {
    /// One device.
    DeviceId(DeviceId),
    /// Connections with this MQTT username.
    Username(String),
    /// Everyone.
    All,
}

/// The operation an ACL rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Both.
    All,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAccess {
    /// Permit.
    Allow,
    /// Refuse.
    Deny,
}

impl fmt::Display for AclAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclAccess::Allow => "allow",
            AclAccess::Deny => "deny",
        })
    }
}

/// A publish/subscribe ACL rule; higher `priority` wins, deny wins ties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    /// The rule's id.
    pub acl_rule_id: AclRuleId,
    /// The resource space that owns it.
    pub app_id: AppId,
    /// Whom it applies to.
    pub scope: AclScope,
    /// A topic filter (`+` and `#` allowed).
    pub topic: String,
    /// Which operation.
    pub action: AclAction,
    /// Allow or deny.
    pub access: AclAccess,
    /// Evaluation priority.
    #[serde(default)]
    pub priority: i32,
    /// Creation time (now, when a definition leaves it out).
    #[serde(default = "Timestamp::now")]
    pub create_time: Timestamp,
}

impl AclRule {
    /// Checks the topic filter and the scope.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        if let Err(e) = validate_filter(&self.topic) {
            p.push("topic", e.to_string());
        }
        if self.topic.len() > 1024 {
            p.push("topic", "at most 1024 bytes");
        }
        if let AclScope::Username(u) = &self.scope
            && (u.is_empty() || u.len() > 256)
        {
            p.push("scope.value", "username must be 1-256 bytes");
        }
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_misspelled_command_resource_is_accepted_and_corrected() {
        let r: Resource = serde_json::from_value(json!("device.commmad.status")).unwrap();
        assert_eq!(r, Resource::DeviceCommandStatus);
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            json!("device.command.status")
        );
    }

    #[test]
    fn action_wire_shape() {
        let a: RuleAction = serde_json::from_value(json!({
            "action_id": "a1", "rule_id": "r1", "create_time": 0,
            "channel": "HTTP_FORWARDING", "channel_detail": {"url": "https://example.com/push"}
        }))
        .unwrap();
        assert!(matches!(a.channel, Channel::HttpForwarding { .. }));
        a.validate().unwrap();
        let bad = RuleAction {
            channel: Channel::AmqpForwarding {
                queue_name: "a/b".into(),
            },
            ..a
        };
        assert!(bad.validate().is_err());
    }
}
