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

api_routes! {
    post "/apps" => create_app,
    get "/apps" => list_apps,
    get "/apps/{app_id}" => get_app,
    delete "/apps/{app_id}" => delete_app,
    post "/apps/{app_id}/keys" => create_key,
    get "/apps/{app_id}/keys" => list_keys,
    delete "/apps/{app_id}/keys/{key_id}" => delete_key,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApp {
    /// Generated when absent.
    #[schema(value_type = Option<String>)]
    app_id: Option<AppId>,
    name: String,
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: String,
}

/// A key as listed: never its text or digest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeyView {
    key_id: String,
    #[schema(value_type = String)]
    app_id: AppId,
    name: String,
    /// Milliseconds since the Unix epoch.
    #[schema(value_type = i64)]
    created_at: Timestamp,
}

/// An application as the API shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AppView {
    app_id: String,
    name: String,
    admin: bool,
    /// Milliseconds since the Unix epoch.
    created_at: i64,
}

/// `POST /apps`: the application and its first key.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CreatedApp {
    app: AppView,
    api_key: CreatedKey,
}

/// A page of applications.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AppList {
    apps: Vec<AppView>,
    /// Absent on the last page.
    next_marker: Option<String>,
}

/// An application's keys.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct KeyList {
    keys: Vec<KeyView>,
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// Creates an application with a first API key (administrators only).
#[utoipa::path(post, path = "/apps", request_body = NewApp,
    responses((status = 201, description = "The application and its first key (shown once)", body = CreatedApp)))]
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

/// Lists every application (administrators only).
#[utoipa::path(get, path = "/apps", params(super::PageQuery),
    responses((status = 200, description = "A page of applications", body = AppList)))]
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

/// Reads an application: the caller's own, or any for an administrator.
#[utoipa::path(get, path = "/apps/{app_id}", params(("app_id" = String, Path, description = "Application id")),
    responses((status = 200, description = "The application", body = AppView)))]
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

/// Deletes another application (administrators only).
#[utoipa::path(delete, path = "/apps/{app_id}", params(("app_id" = String, Path, description = "Application id")),
    responses((status = 204, description = "Deleted")))]
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

/// Creates an API key for an application; its text is shown once.
#[utoipa::path(post, path = "/apps/{app_id}/keys", params(("app_id" = String, Path, description = "Application id")),
    request_body(content = Option<NewKey>, description = "Optional: the key's name"),
    responses((status = 201, description = "The key with its text", body = CreatedKey)))]
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

/// Lists an application's keys (never their text).
#[utoipa::path(get, path = "/apps/{app_id}/keys", params(("app_id" = String, Path, description = "Application id")),
    responses((status = 200, description = "The keys", body = KeyList)))]
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

/// Deletes one of an application's keys.
#[utoipa::path(delete, path = "/apps/{app_id}/keys/{key_id}",
    params(("app_id" = String, Path, description = "Application id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Deleted")))]
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
