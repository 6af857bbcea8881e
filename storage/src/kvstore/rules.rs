//! [`RuleStore`] over a [`KvEngine`]: forwarding rules (indexed by resource space), their
//! actions (indexed by rule; deleted with the rule) and ACL rules.

use fleetgate_model::rule::{AclRule, RoutingRule, RuleAction};
use fleetgate_model::{AclRuleId, ActionId, AppId, RuleId};

use super::{KvStore, LockKind, put};
use crate::error::Result;
use crate::keys;
use crate::kv::{Cf, Durability, KeyRange, KvEngine, WriteBatch};
use crate::traits::{Page, RuleStore, not_found};

impl<E: KvEngine> RuleStore for KvStore<E> {
    fn put_rule(&self, rule: &RoutingRule) -> Result<()> {
        let id = &rule.rule_id;
        let _g = self.lock(&[(LockKind::Rule, id.as_str())]);
        let mut b = WriteBatch::new();
        if let Some(old) = self.get_rule(id)? {
            b.delete(Cf::Rules, keys::rule_by_app(&old.app_id, Some(id)));
        }
        put(&mut b, Cf::Rules, keys::rule(id), rule)?;
        b.put(
            Cf::Rules,
            keys::rule_by_app(&rule.app_id, Some(id)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn get_rule(&self, id: &RuleId) -> Result<Option<RoutingRule>> {
        self.read(Cf::Rules, &keys::rule(id))
    }

    fn delete_rule(&self, id: &RuleId) -> Result<RoutingRule> {
        let _g = self.lock(&[(LockKind::Rule, id.as_str())]);
        let rule = self.get_rule(id)?.ok_or_else(|| not_found("rule", id))?;
        let mut b = WriteBatch::new();
        for (k, _) in self.engine.scan(
            Cf::Rules,
            &KeyRange::prefix(&keys::action_by_rule(id, None)),
            usize::MAX,
        )? {
            if let Some(action) = keys::last_part(&k).and_then(|s| ActionId::new(s).ok()) {
                b.delete(Cf::Rules, keys::action(&action));
            }
            b.delete(Cf::Rules, k);
        }
        b.delete(Cf::Rules, keys::rule(id));
        b.delete(Cf::Rules, keys::rule_by_app(&rule.app_id, Some(id)));
        self.engine.write(b, Durability::Synced)?;
        Ok(rule)
    }

    fn list_rules(
        &self,
        app: Option<&AppId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoutingRule>> {
        match app {
            Some(app) => self.page_via_index(
                Cf::Rules,
                &keys::rule_by_app(app, None),
                cursor,
                limit,
                Cf::Rules,
                |id| RuleId::new(id).map(|r| keys::rule(&r)).unwrap_or_default(),
            ),
            None => self.page_records(Cf::Rules, b"r", cursor, limit),
        }
    }

    fn put_action(&self, action: &RuleAction) -> Result<()> {
        let _g = self.lock(&[(LockKind::Rule, action.rule_id.as_str())]);
        if self.get_rule(&action.rule_id)?.is_none() {
            return Err(not_found("rule", &action.rule_id));
        }
        let mut b = WriteBatch::new();
        if let Some(old) = self.get_action(&action.action_id)? {
            b.delete(
                Cf::Rules,
                keys::action_by_rule(&old.rule_id, Some(&action.action_id)),
            );
        }
        put(&mut b, Cf::Rules, keys::action(&action.action_id), action)?;
        b.put(
            Cf::Rules,
            keys::action_by_rule(&action.rule_id, Some(&action.action_id)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn get_action(&self, id: &ActionId) -> Result<Option<RuleAction>> {
        self.read(Cf::Rules, &keys::action(id))
    }

    fn delete_action(&self, id: &ActionId) -> Result<RuleAction> {
        let action = self
            .get_action(id)?
            .ok_or_else(|| not_found("action", id))?;
        let _g = self.lock(&[(LockKind::Rule, action.rule_id.as_str())]);
        let action = self
            .get_action(id)?
            .ok_or_else(|| not_found("action", id))?;
        let mut b = WriteBatch::new();
        b.delete(Cf::Rules, keys::action(id));
        b.delete(Cf::Rules, keys::action_by_rule(&action.rule_id, Some(id)));
        self.engine.write(b, Durability::Synced)?;
        Ok(action)
    }

    fn list_actions(&self, rule: &RuleId) -> Result<Vec<RuleAction>> {
        let mut out = Vec::new();
        for (k, _) in self.engine.scan(
            Cf::Rules,
            &KeyRange::prefix(&keys::action_by_rule(rule, None)),
            usize::MAX,
        )? {
            if let Some(id) = keys::last_part(&k).and_then(|s| ActionId::new(s).ok()) {
                out.extend(self.get_action(&id)?);
            }
        }
        Ok(out)
    }

    fn put_acl_rule(&self, rule: &AclRule) -> Result<()> {
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Acl, keys::acl(&rule.acl_rule_id), rule)?;
        self.engine.write(b, Durability::Synced)
    }

    fn get_acl_rule(&self, id: &AclRuleId) -> Result<Option<AclRule>> {
        self.read(Cf::Acl, &keys::acl(id))
    }

    fn delete_acl_rule(&self, id: &AclRuleId) -> Result<AclRule> {
        let _g = self.lock(&[(LockKind::Rule, id.as_str())]);
        let rule = self
            .get_acl_rule(id)?
            .ok_or_else(|| not_found("acl rule", id))?;
        let mut b = WriteBatch::new();
        b.delete(Cf::Acl, keys::acl(id));
        self.engine.write(b, Durability::Synced)?;
        Ok(rule)
    }

    fn list_acl_rules(&self, cursor: Option<&str>, limit: usize) -> Result<Page<AclRule>> {
        self.page_records(Cf::Acl, b"", cursor, limit)
    }
}
