//! Device credentials on their own (spec/app-side.md §10 row 1): read whether one is set (the
//! secret is never shown back), set a new secret, revoke it. A change forgets the engine's
//! cached credential; setting one closes the device's connection unless `?kick=false`, and
//! revoking one always does, so the change takes effect at once.

use actix_web::{HttpResponse, web};
use fleetgate_model::DeviceId;
use fleetgate_model::device::{Credential, DeviceSecret};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::{Caller, devices, from_json};
use crate::error::ApiError;
use crate::server::AppState;

// The routes are in the parent module's `api_routes!` table.

/// Whether the device has a credential, and of which kind (the secret is never shown).
#[utoipa::path(get, path = "/devices/{device_id}/credential", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "`{device_id, auth_type, credential_set}`", body = Object)))]
pub(super) async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let credential = devices::with_device(&state, caller, &id, |storage, d| {
        Ok(storage.get_credential(&d.device_id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "device_id": id,
        "auth_type": credential.as_ref().map(Credential::auth_type),
        "credential_set": credential.is_some(),
    })))
}

/// A new secret; none has one generated (and shown once in the answer).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSecret {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    secret: Option<DeviceSecret>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct KickQuery {
    /// Close the device's connection now (default), rather than at its next reconnect.
    #[serde(default)]
    kick: Option<bool>,
}

/// Sets the device's secret, given or generated (a generated one is shown once, as `secret`);
/// closes its connection unless `kick=false`.
#[utoipa::path(put, path = "/devices/{device_id}/credential", params(("device_id" = String, Path, description = "Device id"), KickQuery),
    request_body(content = Option<NewSecret>, description = "Optional"),
    responses((status = 200, description = "`{device_id, auth_type, credential_set, kicked}`, with `secret` when generated", body = Object)))]
pub(super) async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    query: web::Query<KickQuery>,
    body: Option<web::Json<Value>>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body: NewSecret = match body {
        Some(b) => from_json(b.into_inner())?,
        None => NewSecret::default(),
    };
    let generated = body.secret.is_none();
    let secret = body.secret.unwrap_or_else(DeviceSecret::generate);
    let stored = secret.clone();
    devices::with_device(&state, caller, &id, move |storage, d| {
        Ok(storage.set_credential(&d.device_id, &Credential::Secret(stored))?)
    })
    .await?;
    state.engine.invalidate_device(&id);
    let kicked = query.kick.unwrap_or(true) && state.engine.kick(&id);
    let mut answer = json!({
        "device_id": id,
        "auth_type": "SECRET",
        "credential_set": true,
        "kicked": kicked,
    });
    if generated {
        answer["secret"] = Value::String(secret.expose().to_owned());
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Revokes the device's credential and closes its connection.
#[utoipa::path(delete, path = "/devices/{device_id}/credential", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "`FLEETGATE.NOT_FOUND`: no such device, or it has no credential", body = crate::http::ErrorBody)))]
pub(super) async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let existed = devices::with_device(&state, caller, &id, |storage, d| {
        Ok(storage.delete_credential(&d.device_id)?)
    })
    .await?;
    state.engine.invalidate_device(&id);
    state.engine.kick(&id);
    if existed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("credential of device", id))
    }
}
