//! Publish/subscribe ACL rules (spec/app-side.md §10 row 6): create, read, list, replace and
//! delete the caller's rules. A rule belongs to the caller's resource space and applies only to
//! its devices. After every change all stored rules are loaded into the engine again, so that
//! live sessions are checked against them at their next PUBLISH or SUBSCRIBE, without
//! reconnecting (the engine also loads them when it starts).

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use fleetgate_model::rule::{AclAccess, AclAction, AclRule, AclScope};
use fleetgate_model::{AclRuleId, Timestamp};
use fleetgate_storage::Storage;
use serde::Deserialize;
use serde_json::Value;

use super::super::{Caller, PageQuery, blocking, from_json, listing};
use crate::error::ApiError;
use crate::server::AppState;

/// Changes are made one at a time, each followed by the reload, so that the engine never ends
/// up with the rules of an older change.
static CHANGES: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

// The routes are in the parent module's `api_routes!` table.

/// A rule as the API takes it; the owner is the caller.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleBody {
    /// Generated when absent; a PUT may repeat it but not change it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    acl_rule_id: Option<AclRuleId>,
    /// Whom it applies to: `{"type": "device_id" | "username", "value": "..."}` or
    /// `{"type": "all"}`.
    #[schema(value_type = Object)]
    scope: AclScope,
    /// A topic filter.
    topic: String,
    /// `publish`, `subscribe` or `all`.
    #[schema(value_type = String)]
    action: AclAction,
    /// `allow` or `deny`.
    #[schema(value_type = String)]
    access: AclAccess,
    /// Higher wins; deny wins ties (default 0).
    #[serde(default)]
    priority: i32,
}

fn all_rules(storage: &dyn Storage) -> Result<Vec<AclRule>, ApiError> {
    let mut rules = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = storage.list_acl_rules(cursor.as_deref(), 1000)?;
        rules.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(rules),
        }
    }
}

/// Runs `change`, then loads every stored rule into the engine.
fn change<T>(
    state: &AppState,
    change: impl FnOnce(&dyn Storage) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let _one_at_a_time = CHANGES.lock();
    let out = change(state.storage.as_ref())?;
    state
        .engine
        .set_acl_rules(all_rules(state.storage.as_ref())?);
    Ok(out)
}

fn owned(storage: &dyn Storage, caller: &Caller, id: &AclRuleId) -> Result<AclRule, ApiError> {
    match storage.get_acl_rule(id)? {
        Some(r) if caller.owns(&r.app_id) => Ok(r),
        _ => Err(ApiError::not_found("acl rule", id)),
    }
}

fn checked(rule: AclRule) -> Result<AclRule, ApiError> {
    rule.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(rule)
}

/// Creates a rule of the caller's; it applies to live sessions at once.
#[utoipa::path(post, path = "/acl-rules", request_body = RuleBody,
    responses((status = 201, description = "The rule", body = Object),
        (status = 409, description = "`FLEETGATE.ALREADY_EXISTS`: a rule with this `acl_rule_id` exists", body = crate::http::ErrorBody)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let b: RuleBody = from_json(body.into_inner())?;
    let rule = checked(AclRule {
        acl_rule_id: b.acl_rule_id.unwrap_or_else(AclRuleId::generate),
        app_id: caller.app_id().clone(),
        scope: b.scope,
        topic: b.topic,
        action: b.action,
        access: b.access,
        priority: b.priority,
        create_time: Timestamp::now(),
    })?;
    let st = state.clone();
    let rule = blocking(move || {
        change(&st, |s| {
            if s.get_acl_rule(&rule.acl_rule_id)?.is_some() {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::CONFLICT,
                    "FLEETGATE.ALREADY_EXISTS",
                    format!("acl rule {} already exists", rule.acl_rule_id),
                ));
            }
            s.put_acl_rule(&rule)?;
            Ok(rule)
        })
    })
    .await?;
    Ok(HttpResponse::Created().json(rule))
}

/// Lists the caller's rules in id order.
#[utoipa::path(get, path = "/acl-rules", params(super::super::PageQuery),
    responses((status = 200, description = "`{acl_rules: [...], next_marker}`", body = Object)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = q.limit()?;
    let storage = Arc::clone(&state.storage);
    // Rules are few (the engine holds all of them in memory): read all, keep the caller's.
    let mut mine: Vec<AclRule> = blocking(move || all_rules(storage.as_ref()))
        .await?
        .into_iter()
        .filter(|r| caller.owns(&r.app_id))
        .filter(|r| {
            q.marker
                .as_deref()
                .is_none_or(|m| r.acl_rule_id.as_str() > m)
        })
        .collect();
    mine.sort_by(|a, b| a.acl_rule_id.cmp(&b.acl_rule_id));
    let more = mine.len() > limit;
    mine.truncate(limit);
    let next = more
        .then(|| mine.last().map(|r| r.acl_rule_id.to_string()))
        .flatten();
    listing("acl_rules", mine, next)
}

/// Reads one of the caller's rules.
#[utoipa::path(get, path = "/acl-rules/{acl_rule_id}", params(("acl_rule_id" = String, Path, description = "ACL rule id")),
    responses((status = 200, description = "The rule", body = Object)))]
pub(super) async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AclRuleId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let storage = Arc::clone(&state.storage);
    let rule = blocking(move || owned(storage.as_ref(), &caller, &id)).await?;
    Ok(HttpResponse::Ok().json(rule))
}

/// Replaces one of the caller's rules (its id and creation time stay).
#[utoipa::path(put, path = "/acl-rules/{acl_rule_id}", params(("acl_rule_id" = String, Path, description = "ACL rule id")), request_body = RuleBody,
    responses((status = 200, description = "The rule", body = Object)))]
pub(super) async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AclRuleId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let b: RuleBody = from_json(body.into_inner())?;
    if b.acl_rule_id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::bad_request(
            "acl_rule_id: a rule's id cannot change",
        ));
    }
    let st = state.clone();
    let rule = blocking(move || {
        change(&st, |s| {
            let old = owned(s, &caller, &id)?;
            let rule = checked(AclRule {
                scope: b.scope,
                topic: b.topic,
                action: b.action,
                access: b.access,
                priority: b.priority,
                ..old
            })?;
            s.put_acl_rule(&rule)?;
            Ok(rule)
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(rule))
}

/// Deletes one of the caller's rules.
#[utoipa::path(delete, path = "/acl-rules/{acl_rule_id}", params(("acl_rule_id" = String, Path, description = "ACL rule id")),
    responses((status = 204, description = "Deleted")))]
pub(super) async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AclRuleId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let st = state.clone();
    blocking(move || {
        change(&st, |s| {
            owned(s, &caller, &id)?;
            s.delete_acl_rule(&id)?;
            Ok(())
        })
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
