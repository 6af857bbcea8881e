//! Talking to a device through the platform (spec/app-side.md §1.2, §1.4–§1.6): the device
//! shadow, synchronous commands, property set and get, and messages down.
//!
//! A synchronous call needs the device online and waits for its answer: the HTTP response
//! carries the device's response, or a distinct error — 409 `FLEETGATE.DEVICE_OFFLINE` when
//! the device is not connected (at once, no waiting), 504 `FLEETGATE.DEVICE_TIMEOUT` when it
//! does not answer within `api.sync_timeout_secs` (20 s by default), 502
//! `FLEETGATE.BAD_DEVICE_RESPONSE` when its answer is malformed, 503 when the platform cannot
//! take more requests. Commands and properties are checked against the product model first.
//!
//! Messages down are delivered at once to an online device; to an offline one the call
//! answers 409 `FLEETGATE.DEVICE_OFFLINE` for now — the per-device message cache of the
//! spec (20 messages, delivered at reconnect) arrives with the durable command cache.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use fleetgate_engine::platform::{OutgoingMessage, RequestError, ResponseError};
use fleetgate_model::payload::{
    CommandRequest, PropertyGetRequest, PropertySetRequest, ServiceProperties,
};
use fleetgate_model::shadow::Shadow;
use fleetgate_model::topic::RequestKind;
use fleetgate_model::validate::{PropertyUse, validate_command, validate_properties};
use fleetgate_model::{DeviceId, ServiceId, Timestamp};
use fleetgate_storage::{Durability, StorageError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Caller, devices, from_json};
use crate::error::ApiError;
use crate::server::AppState;

api_routes! {
    get "/devices/{device_id}/shadow" => get_shadow,
    put "/devices/{device_id}/shadow" => put_shadow,
    post "/devices/{device_id}/commands" => command,
    put "/devices/{device_id}/properties" => set_properties,
    get "/devices/{device_id}/properties" => get_properties,
    post "/devices/{device_id}/messages" => message,
}

/// The status `code` (codes in this crate are valid; 502 otherwise).
pub(super) fn status(code: u16) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY)
}

fn request_error(e: RequestError) -> ApiError {
    match e {
        RequestError::Offline => ApiError::new(
            status(409),
            "FLEETGATE.DEVICE_OFFLINE",
            "the device is offline; synchronous calls need it connected",
        ),
        RequestError::Busy | RequestError::TooMany => {
            ApiError::new(status(503), "FLEETGATE.BUSY", e.to_string())
        }
        RequestError::UnknownDevice => ApiError::not_found("device", "requested"),
        RequestError::InvalidBody(m) => ApiError::bad_request(m),
        other => ApiError::internal(other),
    }
}

/// Takes a downlink token of the caller, sends a request and waits for the device's answer,
/// within the configured timeout. Returns the request id and the answer.
async fn ask(
    state: &AppState,
    caller: &Caller,
    device: &DeviceId,
    kind: RequestKind,
    request: impl serde::Serialize,
) -> Result<(String, Value), ApiError> {
    let body = serde_json::to_value(request).map_err(ApiError::internal)?;
    state.limits.downlink(caller)?;
    let pending = state
        .engine
        .platform()
        .request(device, kind, body)
        .map_err(request_error)?;
    let request_id = pending.request_id().to_string();
    let timeout = Duration::from_secs(state.sync_timeout_secs);
    match tokio::time::timeout(timeout, pending).await {
        Ok(Ok(answer)) => Ok((request_id, answer.body)),
        Ok(Err(ResponseError::Malformed(m))) => Err(ApiError::new(
            status(502),
            "FLEETGATE.BAD_DEVICE_RESPONSE",
            format!("the device answered with an invalid response: {m}"),
        )),
        Ok(Err(ResponseError::Closed)) => Err(ApiError::unavailable("the platform")),
        Err(_) => Err(ApiError::new(
            status(504),
            "FLEETGATE.DEVICE_TIMEOUT",
            format!("the device did not answer within {} s", timeout.as_secs()),
        )),
    }
}

/// Reads the device shadow (§1.5).
#[utoipa::path(get, path = "/devices/{device_id}/shadow", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "`{device_id, shadow: [...]}`", body = Object)))]
async fn get_shadow(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let shadow = devices::with_device(&state, caller, &id, |storage, d| {
        Ok(storage.get_shadow(&d.device_id)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(shadow_body(&id, &shadow)))
}

fn shadow_body(id: &DeviceId, shadow: &Shadow) -> Value {
    let services: Vec<Value> = shadow
        .to_wire(None)
        .into_iter()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    json!({"device_id": id, "shadow": services})
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DesiredService {
    #[schema(value_type = String)]
    service_id: ServiceId,
    #[schema(value_type = Object)]
    desired: Map<String, Value>,
    /// The version the caller last read; refused with 409 when the stored one differs.
    #[serde(default)]
    version: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DesiredBody {
    shadow: Vec<DesiredService>,
}

/// Writes desired values (§1.5): checked against the product model (keys per §7.2), all
/// services or none, then pushed to the device if it is online (otherwise at its next connect
/// or report). Counts against the downlink budget.
#[utoipa::path(put, path = "/devices/{device_id}/shadow", params(("device_id" = String, Path, description = "Device id")), request_body = DesiredBody,
    responses((status = 200, description = "`{device_id, shadow: [...]}`", body = Object)))]
async fn put_shadow(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body: DesiredBody = from_json(body.into_inner())?;
    if body.shadow.is_empty() {
        return Err(ApiError::bad_request(
            "shadow must name at least one service",
        ));
    }
    state.limits.downlink(&caller)?;
    let shadow = devices::with_device(&state, caller, &id, move |storage, device| {
        let did = device.device_id.clone();
        let product = storage
            .get_product(&device.product_id)?
            .ok_or_else(|| ApiError::not_found("product", &device.product_id))?;
        let services: Vec<ServiceProperties> = body
            .shadow
            .iter()
            .map(|s| ServiceProperties {
                service_id: s.service_id.clone(),
                properties: s.desired.clone(),
                event_time: None,
            })
            .collect();
        validate_properties(&product, &services, PropertyUse::Write)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let now = Timestamp::now();
        Ok(
            storage.update_shadow(&did, Durability::Synced, &mut |sh: &mut Shadow| {
                let mut next = sh.clone();
                for s in &body.shadow {
                    next.set_desired(&s.service_id, &s.desired, s.version, now)
                        .map_err(|e| match e {
                            fleetgate_model::shadow::ShadowError::VersionConflict { .. } => {
                                StorageError::abort(ApiError::conflict(e.to_string()))
                            }
                            other => StorageError::abort(ApiError::bad_request(other.to_string())),
                        })?;
                }
                *sh = next;
                Ok(())
            })?,
        )
    })
    .await?;
    // Pushed when the device is online; otherwise at its next connect or report.
    let _ = state.engine.platform().push_desired(&id);
    Ok(HttpResponse::Ok().json(shadow_body(&id, &shadow)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    service_id: Option<ServiceId>,
    command_name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    paras: Value,
}

/// Checks that `id` is the caller's and returns its product, off the async workers.
async fn owned_with_product(
    state: &AppState,
    caller: Caller,
    id: &DeviceId,
) -> Result<fleetgate_model::product::Product, ApiError> {
    devices::with_device(state, caller, id, |storage, device| {
        storage
            .get_product(&device.product_id)?
            .ok_or_else(|| ApiError::not_found("product", &device.product_id))
    })
    .await
}

/// A synchronous command (§1.2).
#[utoipa::path(post, path = "/devices/{device_id}/commands", params(("device_id" = String, Path, description = "Device id")), request_body = CommandBody,
    responses((status = 200, description = "`{command_id, response}`", body = Object),
        (status = 409, description = "`FLEETGATE.DEVICE_OFFLINE`: the device is not connected", body = crate::http::ErrorBody),
        (status = 502, description = "`FLEETGATE.BAD_DEVICE_RESPONSE`", body = crate::http::ErrorBody),
        (status = 504, description = "`FLEETGATE.DEVICE_TIMEOUT`: no answer in time", body = crate::http::ErrorBody)))]
async fn command(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body: CommandBody = from_json(body.into_inner())?;
    let product = owned_with_product(&state, caller.clone(), &id).await?;
    if product.protocol_type == fleetgate_model::product::ProtocolType::Coap {
        return Err(ApiError::bad_request(
            "synchronous commands need a connected MQTT device; CoAP/LwM2M devices take asynchronous commands (POST .../async-commands)",
        ));
    }
    validate_command(
        &product,
        body.service_id.as_ref(),
        &body.command_name,
        &body.paras,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let request = CommandRequest {
        object_device_id: Some(id.clone()),
        service_id: body.service_id,
        command_name: Some(body.command_name),
        paras: body.paras,
    };
    let (command_id, response) = ask(&state, &caller, &id, RequestKind::Command, request).await?;
    Ok(HttpResponse::Ok().json(json!({"command_id": command_id, "response": response})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetBody {
    /// `[{service_id, properties: {...}}]`.
    #[schema(value_type = Vec<Object>)]
    services: Vec<ServiceProperties>,
}

/// A synchronous property set (§1.4).
#[utoipa::path(put, path = "/devices/{device_id}/properties", params(("device_id" = String, Path, description = "Device id")), request_body = SetBody,
    responses((status = 200, description = "`{request_id, response}`", body = Object),
        (status = 409, description = "`FLEETGATE.DEVICE_OFFLINE`: the device is not connected", body = crate::http::ErrorBody),
        (status = 502, description = "`FLEETGATE.BAD_DEVICE_RESPONSE`", body = crate::http::ErrorBody),
        (status = 504, description = "`FLEETGATE.DEVICE_TIMEOUT`: no answer in time", body = crate::http::ErrorBody)))]
async fn set_properties(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body: SetBody = from_json(body.into_inner())?;
    let product = owned_with_product(&state, caller.clone(), &id).await?;
    validate_properties(&product, &body.services, PropertyUse::Write)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let request = PropertySetRequest {
        object_device_id: Some(id.clone()),
        services: body.services,
    };
    let (request_id, response) =
        ask(&state, &caller, &id, RequestKind::PropertiesSet, request).await?;
    Ok(HttpResponse::Ok().json(json!({"request_id": request_id, "response": response})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GetQuery {
    #[serde(default)]
    #[param(value_type = Option<String>)]
    service_id: Option<ServiceId>,
}

/// A synchronous property get (§1.4): the device is asked.
#[utoipa::path(get, path = "/devices/{device_id}/properties", params(("device_id" = String, Path, description = "Device id"), GetQuery),
    responses((status = 200, description = "`{request_id, response}`", body = Object),
        (status = 409, description = "`FLEETGATE.DEVICE_OFFLINE`: the device is not connected", body = crate::http::ErrorBody),
        (status = 502, description = "`FLEETGATE.BAD_DEVICE_RESPONSE`", body = crate::http::ErrorBody),
        (status = 504, description = "`FLEETGATE.DEVICE_TIMEOUT`: no answer in time", body = crate::http::ErrorBody)))]
async fn get_properties(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let product = owned_with_product(&state, caller.clone(), &id).await?;
    let service_id = query.into_inner().service_id;
    if let Some(s) = &service_id
        && !product
            .service_capabilities
            .iter()
            .any(|c| &c.service_id == s)
    {
        return Err(ApiError::bad_request(format!(
            "service_id {s} is not in the product model"
        )));
    }
    let request = PropertyGetRequest {
        object_device_id: Some(id.clone()),
        service_id,
    };
    let (request_id, response) =
        ask(&state, &caller, &id, RequestKind::PropertiesGet, request).await?;
    Ok(HttpResponse::Ok().json(json!({"request_id": request_id, "response": response})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[schema(value_type = Object)]
    message: Value,
    /// A custom topic suffix: delivered on `$oc/devices/{id}/user/{topic}`.
    #[serde(default)]
    topic: Option<String>,
}

/// A model-free message down (§1.6), delivered now when the device is online.
#[utoipa::path(post, path = "/devices/{device_id}/messages", params(("device_id" = String, Path, description = "Device id")), request_body = MessageBody,
    responses((status = 201, description = "`{message_id, result}`", body = Object),
        (status = 409, description = "`FLEETGATE.DEVICE_OFFLINE`", body = crate::http::ErrorBody)))]
async fn message(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body: MessageBody = from_json(body.into_inner())?;
    owned_with_product(&state, caller.clone(), &id).await?;
    state.limits.downlink(&caller)?;
    let message_id = state
        .engine
        .platform()
        .send_message(
            &id,
            OutgoingMessage {
                message_id: body.message_id,
                name: body.name,
                content: body.message,
                object_device_id: None,
                topic: body.topic,
            },
        )
        .map_err(request_error)?;
    Ok(HttpResponse::Created().json(json!({
        "message_id": message_id,
        "result": {"status": "DELIVERED", "created_time": Timestamp::now().to_compact()},
    })))
}
