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

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/acl-rules", web::post().to(create))
        .route("/acl-rules", web::get().to(list))
        .route("/acl-rules/{acl_rule_id}", web::get().to(get))
        .route("/acl-rules/{acl_rule_id}", web::put().to(update))
        .route("/acl-rules/{acl_rule_id}", web::delete().to(delete));
}

/// A rule as the API takes it; the owner is the caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    /// Generated when absent; a PUT may repeat it but not change it.
    #[serde(default)]
    acl_rule_id: Option<AclRuleId>,
    scope: AclScope,
    topic: String,
    action: AclAction,
    access: AclAccess,
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

async fn create(
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

async fn list(
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

async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AclRuleId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let storage = Arc::clone(&state.storage);
    let rule = blocking(move || owned(storage.as_ref(), &caller, &id)).await?;
    Ok(HttpResponse::Ok().json(rule))
}

async fn update(
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

async fn delete(
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
