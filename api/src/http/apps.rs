//! Applications and API keys. An administrator application creates applications (each with a
//! first key) and manages everyone's keys; any application reads itself and manages its own
//! keys. A key's text is shown once, when it is created.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use fleetgate_model::app::{ApiKey, Application};
use fleetgate_model::{AppId, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Caller, PageQuery, blocking, listing};
use crate::error::ApiError;
use crate::server::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/apps", web::post().to(create_app))
        .route("/apps", web::get().to(list_apps))
        .route("/apps/{app_id}", web::get().to(get_app))
        .route("/apps/{app_id}", web::delete().to(delete_app))
        .route("/apps/{app_id}/keys", web::post().to(create_key))
        .route("/apps/{app_id}/keys", web::get().to(list_keys))
        .route("/apps/{app_id}/keys/{key_id}", web::delete().to(delete_key));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    app_id: Option<AppId>,
    name: String,
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: String,
}

/// A key as listed: never its text or digest.
#[derive(Debug, Serialize)]
struct KeyView {
    key_id: String,
    app_id: AppId,
    name: String,
    created_at: Timestamp,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        KeyView {
            key_id: k.key_id,
            app_id: k.app_id,
            name: k.name,
            created_at: k.created_at,
        }
    }
}

/// A key just created, with its text.
#[derive(Debug, Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    key: KeyView,
    api_key: String,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "name must be 1 to 64 letters, digits, spaces, '_', '-' or '.'",
        ))
    }
}

/// The caller may act on `app`'s keys and record: itself, or any application for an admin.
fn may_manage(caller: &Caller, app: &AppId) -> Result<(), ApiError> {
    if caller.owns(app) || caller.app.admin {
        Ok(())
    } else {
        Err(ApiError::not_found("application", app))
    }
}

async fn create_app(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewApp>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let body = body.into_inner();
    check_name(&body.name)?;
    let now = Timestamp::now();
    let app = Application {
        app_id: match body.app_id {
            Some(id) => id,
            None => {
                AppId::new(uuid::Uuid::new_v4().simple().to_string()).map_err(ApiError::internal)?
            }
        },
        name: body.name,
        admin: body.admin,
        created_at: now,
    };
    let (record, text) = ApiKey::generate(&app.app_id, "first", now);
    let storage = Arc::clone(&state.storage);
    let created = app.clone();
    blocking(move || {
        storage.create_app(&created)?;
        storage.create_api_key(&record)?;
        Ok(record)
    })
    .await
    .map(|record| {
        HttpResponse::Created().json(serde_json::json!({
            "app": app,
            "api_key": CreatedKey { key: record.into(), api_key: text },
        }))
    })
}

async fn list_apps(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let limit = page.limit()?;
    let storage = Arc::clone(&state.storage);
    let marker = page.marker.clone();
    let page = blocking(move || Ok(storage.list_apps(marker.as_deref(), limit)?)).await?;
    listing("apps", page.items, page.next)
}

async fn get_app(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AppId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    may_manage(&caller, &id)?;
    let storage = Arc::clone(&state.storage);
    let app = blocking(move || {
        storage
            .get_app(&id)?
            .ok_or_else(|| ApiError::not_found("application", &id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(app))
}

async fn delete_app(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AppId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    caller.require_admin()?;
    if caller.owns(&id) {
        return Err(ApiError::conflict("an application cannot delete itself"));
    }
    let storage = Arc::clone(&state.storage);
    blocking(move || Ok(storage.delete_app(&id)?)).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn create_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AppId)>,
    body: Option<web::Json<NewKey>>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    may_manage(&caller, &id)?;
    let name = body.map(|b| b.into_inner().name).unwrap_or_default();
    if !name.is_empty() {
        check_name(&name)?;
    }
    let (record, text) = ApiKey::generate(&id, &name, Timestamp::now());
    let storage = Arc::clone(&state.storage);
    let stored = record.clone();
    blocking(move || Ok(storage.create_api_key(&stored)?)).await?;
    Ok(HttpResponse::Created().json(CreatedKey {
        key: record.into(),
        api_key: text,
    }))
}

async fn list_keys(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AppId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    may_manage(&caller, &id)?;
    let storage = Arc::clone(&state.storage);
    let keys = blocking(move || Ok(storage.list_api_keys(&id)?)).await?;
    listing(
        "keys",
        keys.into_iter().map(KeyView::from).collect::<Vec<_>>(),
        None,
    )
}

async fn delete_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, AppId, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id, key_id) = path.into_inner();
    may_manage(&caller, &id)?;
    let storage = Arc::clone(&state.storage);
    blocking(move || {
        match storage.get_api_key(&key_id)? {
            Some(k) if k.app_id == id => {}
            _ => return Err(ApiError::not_found("API key", &key_id)),
        }
        storage.delete_api_key(&key_id)?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
