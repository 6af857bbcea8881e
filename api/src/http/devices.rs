//! Devices (spec/device-management.md §2.2, §4; spec/app-side.md §1): register one or a batch,
//! read, list with filters, update, delete, freeze and unfreeze, reset the secret. Changes that
//! concern a connected device reach it: deleting or freezing disconnects it, a new secret is
//! required at its next connect.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use fleetgate_model::device::{Credential, Device, DeviceSecret, DeviceStatus, StatusEvent, Tag};
use fleetgate_model::{DeviceId, GroupId, NodeId, ProductId, Timestamp};
use fleetgate_storage::{DeviceQuery, Durability, Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Caller, blocking, from_json, listing, products};
use crate::error::ApiError;
use crate::provision::{DeviceSpec, new_device};
use crate::server::AppState;

/// Most devices in one batch registration.
pub(super) const MAX_BATCH: usize = 1000;

api_routes! {
    post "/devices" => create,
    get "/devices" => list,
    post "/devices/batch" => create_batch,
    get "/devices/{device_id}" => get,
    put "/devices/{device_id}" => update,
    delete "/devices/{device_id}" => delete,
    post "/devices/{device_id}/freeze" => freeze,
    post "/devices/{device_id}/unfreeze" => unfreeze,
    post "/devices/{device_id}/action" => action,
}

/// Reads a device of the caller's application (404 for anyone else's).
pub(super) fn owned(
    storage: &dyn Storage,
    caller: &Caller,
    id: &DeviceId,
) -> Result<Device, ApiError> {
    match storage.get_device(id)? {
        Some(d) if caller.owns(&d.app_id) => Ok(d),
        _ => Err(ApiError::not_found("device", id)),
    }
}

/// Runs `f` on the blocking pool with the stores and the caller's device `id` (404 when the
/// device is not the caller's): the shape of every handler that works on one device.
pub(super) async fn with_device<T, F>(
    state: &AppState,
    caller: Caller,
    id: &DeviceId,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Storage, Device) -> Result<T, ApiError> + Send + 'static,
{
    let storage = Arc::clone(&state.storage);
    let id = id.clone();
    blocking(move || {
        let device = owned(storage.as_ref(), &caller, &id)?;
        f(storage.as_ref(), device)
    })
    .await
}

/// `auth_info` of a registration: the secret, or none to have one generated.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AuthInfo {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    secret: Option<DeviceSecret>,
    /// Accepted for IoTDA compatibility; only `SECRET` is supported.
    #[serde(default)]
    auth_type: Option<String>,
}

/// A registration as the API takes it (IoTDA's AddDevice body).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    #[schema(value_type = String)]
    product_id: ProductId,
    #[schema(value_type = String)]
    node_id: NodeId,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    device_id: Option<DeviceId>,
    #[serde(default)]
    device_name: String,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    gateway_id: Option<DeviceId>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    auth_info: AuthInfo,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    tags: Vec<Tag>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    extension_info: Option<Value>,
}

/// A registered device, with its secret when the platform generated it (shown once).
#[derive(Debug, Serialize)]
struct Registered {
    #[serde(flatten)]
    device: Device,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_info: Option<SecretView>,
}

#[derive(Debug, Serialize)]
struct SecretView {
    auth_type: &'static str,
    secret: String,
}

fn register(
    storage: &dyn Storage,
    caller: &Caller,
    body: NewDevice,
) -> Result<Registered, ApiError> {
    if let Some(t) = &body.auth_info.auth_type
        && !t.eq_ignore_ascii_case("SECRET")
    {
        return Err(ApiError::bad_request(format!(
            "auth_info.auth_type {t:?} is not supported; use SECRET"
        )));
    }
    let product = products::owned(storage, caller, &body.product_id)?;
    if let Some(gw) = &body.gateway_id {
        let gateway = owned(storage, caller, gw)?;
        if gateway.is_sub_device() {
            return Err(ApiError::bad_request(format!(
                "gateway_id {gw} is itself a sub-device"
            )));
        }
    }
    let spec = DeviceSpec {
        product_id: body.product_id,
        node_id: body.node_id,
        device_id: body.device_id,
        secret: body.auth_info.secret,
        gateway_id: body.gateway_id,
        device_name: body.device_name,
        tags: body.tags,
        description: body.description,
        extension_info: body.extension_info,
    };
    let (device, secret, generated) = new_device(spec, &product);
    device
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    storage.create_device(&device, &Credential::Secret(secret.clone()))?;
    Ok(Registered {
        device,
        auth_info: generated.then(|| SecretView {
            auth_type: "SECRET",
            secret: secret.expose().to_owned(),
        }),
    })
}

/// Registers a device (IoTDA's AddDevice).
#[utoipa::path(post, path = "/devices", request_body = NewDevice,
    responses((status = 201, description = "The device, with `auth_info` when the secret was generated (shown once)", body = Object)))]
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: NewDevice = from_json(body.into_inner())?;
    let storage = Arc::clone(&state.storage);
    let registered = blocking(move || register(storage.as_ref(), &caller, body)).await?;
    Ok(HttpResponse::Created().json(registered))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Batch {
    /// 1 to 1000 registrations.
    #[schema(value_type = Vec<NewDevice>)]
    devices: Vec<Value>,
}

/// The outcome of one row of a batch.
#[derive(Debug, Serialize)]
struct RowResult {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Registered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_msg: Option<String>,
}

/// Registers up to 1000 devices, each row on its own.
///
/// A bad row is reported in its result and does not stop the others.
#[utoipa::path(post, path = "/devices/batch", request_body = Batch,
    responses((status = 200, description = "`{succeeded, failed, results: [{index, device | error_code, error_msg}]}`", body = Object)))]
async fn create_batch(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let batch: Batch = from_json(body.into_inner())?;
    if batch.devices.is_empty() || batch.devices.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "devices must hold 1 to {MAX_BATCH} rows"
        )));
    }
    let storage = Arc::clone(&state.storage);
    let results = blocking(move || {
        Ok(batch
            .devices
            .into_iter()
            .enumerate()
            .map(|(index, row)| {
                let outcome = from_json::<NewDevice>(row)
                    .and_then(|d| register(storage.as_ref(), &caller, d));
                match outcome {
                    Ok(device) => RowResult {
                        index,
                        device: Some(device),
                        error_code: None,
                        error_msg: None,
                    },
                    Err(e) => RowResult {
                        index,
                        device: None,
                        error_code: Some(e.code),
                        error_msg: Some(e.message),
                    },
                }
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let failed = results.iter().filter(|r| r.error_code.is_some()).count();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "succeeded": results.len() - failed,
        "failed": failed,
        "results": results,
    })))
}

/// Reads a device.
#[utoipa::path(get, path = "/devices/{device_id}", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = Object)))]
async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let device = with_device(&state, caller, &id, |_, d| Ok(d)).await?;
    Ok(HttpResponse::Ok().json(device))
}

/// Filters of the device listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[serde(default)]
    #[param(value_type = Option<String>)]
    product_id: Option<ProductId>,
    /// `ONLINE`, `OFFLINE`, `ABNORMAL`, `INACTIVE` or `FROZEN`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    status: Option<DeviceStatus>,
    #[serde(default)]
    #[param(value_type = Option<String>)]
    gateway_id: Option<DeviceId>,
    #[serde(default)]
    #[param(value_type = Option<String>)]
    group_id: Option<GroupId>,
    #[serde(default)]
    tag_key: Option<String>,
    #[serde(default)]
    tag_value: Option<String>,
    /// Node ids starting with this.
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    #[serde(default)]
    marker: Option<String>,
}

/// Lists the caller's devices, filtered.
#[utoipa::path(get, path = "/devices", params(ListQuery),
    responses((status = 200, description = "`{devices: [...], next_marker}`", body = Object)))]
async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = super::PageQuery {
        limit: q.limit,
        marker: None,
    }
    .limit()?;
    if q.tag_value.is_some() && q.tag_key.is_none() {
        return Err(ApiError::bad_request("tag_value needs tag_key"));
    }
    let query = DeviceQuery {
        app_id: Some(caller.app_id().clone()),
        product_id: q.product_id,
        status: q.status,
        gateway_id: q.gateway_id,
        group_id: q.group_id,
        tag: q.tag_key.map(|k| (k, q.tag_value)),
        node_id_prefix: q.node_id,
    };
    let storage = Arc::clone(&state.storage);
    let marker = q.marker;
    let page =
        blocking(move || Ok(storage.list_devices(&query, marker.as_deref(), limit)?)).await?;
    listing("devices", page.items, page.next)
}

/// What an update may change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Changes {
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    extension_info: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tags: Option<Vec<Tag>>,
}

/// Changes a device's name, description, extension info or tags.
#[utoipa::path(put, path = "/devices/{device_id}", params(("device_id" = String, Path, description = "Device id")), request_body = Changes,
    responses((status = 200, description = "The device", body = Object)))]
async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let changes: Changes = from_json(body.into_inner())?;
    let device = with_device(&state, caller, &id, move |storage, d| {
        Ok(
            storage.update_device(&d.device_id, Durability::Synced, &mut |d: &mut Device| {
                let mut next = d.clone();
                if let Some(v) = &changes.device_name {
                    next.device_name.clone_from(v);
                }
                if let Some(v) = &changes.description {
                    next.description.clone_from(v);
                }
                if let Some(v) = &changes.extension_info {
                    next.extension_info = Some(v.clone());
                }
                if let Some(v) = &changes.tags {
                    next.tags.clone_from(v);
                }
                next.validate()
                    .map_err(|e| StorageError::abort(ApiError::bad_request(e.to_string())))?;
                *d = next;
                Ok(())
            })?,
        )
    })
    .await?;
    state.engine.invalidate_device(&device.device_id);
    Ok(HttpResponse::Ok().json(device))
}

/// Deletes a device and disconnects it.
#[utoipa::path(delete, path = "/devices/{device_id}", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Deleted")))]
async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    with_device(&state, caller, &id, |storage, d| {
        Ok(storage.delete_device(&d.device_id)?)
    })
    .await?;
    state.engine.invalidate_device(&id);
    state.engine.kick(&id);
    Ok(HttpResponse::NoContent().finish())
}

async fn set_frozen(
    state: web::Data<AppState>,
    caller: Caller,
    id: DeviceId,
    event: StatusEvent,
) -> Result<HttpResponse, ApiError> {
    let device = with_device(&state, caller, &id, move |storage, d| {
        Ok(
            storage.update_device(&d.device_id, Durability::Synced, &mut |d: &mut Device| {
                d.apply_status(event, Timestamp::now())
                    .map_err(|e| StorageError::abort(ApiError::conflict(e.to_string())))?;
                Ok(())
            })?,
        )
    })
    .await?;
    state.engine.invalidate_device(&id);
    if event == StatusEvent::Freeze {
        state.engine.kick(&id);
    }
    Ok(HttpResponse::Ok().json(device))
}

/// Freezes a device: it is disconnected and cannot connect.
#[utoipa::path(post, path = "/devices/{device_id}/freeze", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = Object)))]
async fn freeze(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    set_frozen(state, caller, path.into_inner().1, StatusEvent::Freeze).await
}

/// Unfreezes a device.
#[utoipa::path(post, path = "/devices/{device_id}/unfreeze", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = Object)))]
async fn unfreeze(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    set_frozen(state, caller, path.into_inner().1, StatusEvent::Unfreeze).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ActionQuery {
    /// `resetSecret`.
    action_id: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetSecret {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    secret: Option<DeviceSecret>,
    /// Disconnect the device now (default), rather than at its next reconnect.
    #[serde(default)]
    force_disconnect: Option<bool>,
}

/// `action_id=resetSecret`: sets a new secret, given or generated.
///
/// `POST .../devices/{id}/action?action_id=resetSecret` (IoTDA's ResetDeviceSecret): a new
/// secret, given or generated; the answer shows it once.
#[utoipa::path(post, path = "/devices/{device_id}/action", params(("device_id" = String, Path, description = "Device id"), ActionQuery),
    request_body(content = Option<ResetSecret>, description = "Optional"),
    responses((status = 200, description = "`{device_id, secret}`", body = Object)))]
async fn action(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    query: web::Query<ActionQuery>,
    body: Option<web::Json<Value>>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    if query.action_id != "resetSecret" {
        return Err(ApiError::bad_request(format!(
            "unknown action_id {:?}; supported: resetSecret",
            query.action_id
        )));
    }
    let body: ResetSecret = match body {
        Some(b) => from_json(b.into_inner())?,
        None => ResetSecret::default(),
    };
    let secret = body.secret.unwrap_or_else(DeviceSecret::generate);
    let stored = secret.clone();
    with_device(&state, caller, &id, move |storage, d| {
        Ok(storage.set_credential(&d.device_id, &Credential::Secret(stored))?)
    })
    .await?;
    state.engine.invalidate_device(&id);
    if body.force_disconnect.unwrap_or(true) {
        state.engine.kick(&id);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "device_id": id,
        "secret": secret.expose(),
    })))
}
