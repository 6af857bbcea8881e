//! Asynchronous commands (spec/app-side.md §1.3, spec/device-management.md §22): send one
//! immediately or cache it for a sleeping device, read one, list a device's commands by status,
//! cancel a pending one. Every transport uses the same state machine (docs/coap.md for CoAP;
//! MQTT devices get their cached commands when they connect).
//!
//! Two request fields no other platform offers: `supersede_key` — a newer delayed command with
//! the same key replaces the device's older pending one, which becomes CANCELED — and
//! `idempotency_key` — repeating a request answers with the command it created the first time
//! instead of queueing a second one.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use fleetgate_engine::commands::{CancelError, CommandRequest, CreateError, Created};
use fleetgate_model::command::{Command, CommandMode, CommandStatus, NewCommand, SendStrategy};
use fleetgate_model::validate::validate_command;
use fleetgate_model::{CommandId, DeviceId, ServiceId, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use super::interact::status;
use super::{Caller, PageQuery, blocking, devices, from_json};
use crate::error::ApiError;
use crate::server::AppState;

api_routes! {
    post "/devices/{device_id}/async-commands" => create,
    get "/devices/{device_id}/async-commands" => list,
    get "/devices/{device_id}/async-commands/{command_id}" => get_one,
    post "/devices/{device_id}/async-commands/{command_id}/cancel" => cancel,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AsyncCommandBody {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    service_id: Option<ServiceId>,
    command_name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    paras: Value,
    /// `immediately` (default) or `delay`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    send_strategy: Option<SendStrategy>,
    /// Seconds a delayed command waits for the device (default 86400, at most
    /// `engine.commands.max_expire_secs`, 172800 by default).
    #[serde(default)]
    expire_time: Option<u64>,
    /// A newer delayed command with the same key cancels this device's older pending ones.
    #[serde(default)]
    supersede_key: Option<String>,
    /// Repeating a request with the same key returns the first command.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A timestamp as the notifications write it; unset is the empty string (§22.4).
fn compact(t: Option<Timestamp>) -> String {
    t.map(Timestamp::to_compact).unwrap_or_default()
}

/// The API's view of a command.
fn view(c: &Command) -> Value {
    json!({
        "command_id": c.command_id.to_string(),
        "device_id": c.device_id,
        "service_id": c.service_id,
        "command_name": c.command_name,
        "paras": c.paras,
        "send_strategy": c.send_strategy,
        "expire_time": c.expires_at.map(|e| e.millis_since(c.created_time).max(0) / 1000),
        "status": c.status,
        "result": c.result,
        "created_time": compact(Some(c.created_time)),
        "sent_time": compact(c.sent_time),
        "delivered_time": compact(c.delivered_time),
        "response_time": compact(c.response_time),
        "supersede_key": c.supersede_key,
        "idempotency_key": c.idempotency_key,
    })
}

fn create_error(e: CreateError) -> ApiError {
    match e {
        CreateError::Invalid(m) => ApiError::bad_request(m),
        CreateError::TooManyPending(n) => ApiError::new(
            status(409),
            "FLEETGATE.TOO_MANY_PENDING_COMMANDS",
            format!("the device already has {n} pending commands"),
        ),
        CreateError::UnknownDevice => ApiError::not_found("device", "requested"),
        CreateError::Storage(m) => ApiError::internal(m),
    }
}

/// Sends or caches an asynchronous command (§1.3). `immediately`: SENT when the device is
/// reachable now, FAILED otherwise. `delay`: stored durably and PENDING until the device wakes.
#[utoipa::path(post, path = "/devices/{device_id}/async-commands", params(("device_id" = String, Path, description = "Device id")), request_body = AsyncCommandBody,
    responses((status = 200, description = "The command: `{command_id, status, ...}`", body = Object),
        (status = 409, description = "`FLEETGATE.TOO_MANY_PENDING_COMMANDS`", body = crate::http::ErrorBody)))]
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body: AsyncCommandBody = from_json(body.into_inner())?;
    for (field, key) in [
        ("supersede_key", &body.supersede_key),
        ("idempotency_key", &body.idempotency_key),
    ] {
        if let Some(k) = key {
            fleetgate_model::command::validate_key(k)
                .map_err(|m| ApiError::bad_request(format!("{field}: {m}")))?;
        }
    }
    let strategy = body.send_strategy.unwrap_or(SendStrategy::Immediately);
    if strategy == SendStrategy::Immediately && body.supersede_key.is_some() {
        return Err(ApiError::bad_request(
            "supersede_key applies to delayed commands (send_strategy \"delay\")",
        ));
    }
    let product = devices::with_device(&state, caller.clone(), &id, |storage, d| {
        storage
            .get_product(&d.product_id)?
            .ok_or_else(|| ApiError::not_found("product", &d.product_id))
    })
    .await?;
    let command_name = fleetgate_model::CommandName::new(body.command_name.clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    validate_command(
        &product,
        body.service_id.as_ref(),
        &body.command_name,
        &body.paras,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.limits.downlink(&caller)?;
    let mut new = NewCommand {
        device_id: id,
        app_id: caller.app_id().clone(),
        mode: CommandMode::Async,
        service_id: body.service_id,
        command_name,
        paras: body.paras,
        supersede_key: None,
        idempotency_key: None,
    };
    new.supersede_key = body.supersede_key;
    new.idempotency_key = body.idempotency_key;
    let request = CommandRequest {
        new,
        strategy,
        expire_secs: body.expire_time,
    };
    let service = Arc::clone(state.engine.commands());
    let created = blocking(move || service.create(request).map_err(create_error)).await?;
    let command = match &created {
        Created::New(c) | Created::Existing(c) => c,
    };
    Ok(HttpResponse::Ok().json(view(command)))
}

/// Reads one of the caller's commands.
async fn owned_command(
    state: &AppState,
    caller: Caller,
    device: &DeviceId,
    command: &str,
) -> Result<Command, ApiError> {
    let Ok(command_id) = command.parse::<CommandId>() else {
        return Err(ApiError::not_found("command", command));
    };
    let command = command.to_owned();
    devices::with_device(state, caller, device, move |storage, d| {
        storage
            .get_command(&command_id)?
            .filter(|c| c.device_id == d.device_id && c.mode == CommandMode::Async)
            .ok_or_else(|| ApiError::not_found("command", &command))
    })
    .await
}

/// One command with its status history (§1.3, "query device command").
#[utoipa::path(get, path = "/devices/{device_id}/async-commands/{command_id}",
    params(("device_id" = String, Path, description = "Device id"), ("command_id" = String, Path, description = "Command id")),
    responses((status = 200, description = "The command", body = Object)))]
async fn get_one(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, device, command) = path.into_inner();
    let c = owned_command(&state, caller, &device, &command).await?;
    Ok(HttpResponse::Ok().json(view(&c)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only commands in this status (`PENDING`, `SENT`, `DELIVERED`, `SUCCESSFUL`, `FAILED`,
    /// `TIMEOUT`, `EXPIRED`, `CANCELED`).
    #[serde(default)]
    #[param(value_type = Option<String>)]
    status: Option<CommandStatus>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    #[serde(default)]
    marker: Option<String>,
}

/// A device's asynchronous commands, oldest first, optionally in one status.
#[utoipa::path(get, path = "/devices/{device_id}/async-commands", params(("device_id" = String, Path, description = "Device id"), ListQuery),
    responses((status = 200, description = "`{commands: [...], next_marker}`", body = Object)))]
async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let q = query.into_inner();
    let limit = PageQuery {
        limit: q.limit,
        marker: None,
    }
    .limit()?;
    let marker = q.marker;
    let page = devices::with_device(&state, caller, &id, move |storage, d| {
        Ok(storage.list_device_commands(&d.device_id, q.status, marker.as_deref(), limit)?)
    })
    .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .filter(|c| c.mode == CommandMode::Async)
        .map(view)
        .collect();
    super::listing("commands", items, page.next)
}

/// Cancels a PENDING command; any other status answers 409.
#[utoipa::path(post, path = "/devices/{device_id}/async-commands/{command_id}/cancel",
    params(("device_id" = String, Path, description = "Device id"), ("command_id" = String, Path, description = "Command id")),
    responses((status = 200, description = "The command, CANCELED", body = Object),
        (status = 409, description = "`FLEETGATE.COMMAND_NOT_PENDING`", body = crate::http::ErrorBody)))]
async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, device, command) = path.into_inner();
    let c = owned_command(&state, caller, &device, &command).await?;
    let service = Arc::clone(state.engine.commands());
    let id = c.command_id;
    let canceled = blocking(move || {
        service.cancel(&id).map_err(|e| match e {
            CancelError::NotFound => ApiError::not_found("command", id),
            CancelError::NotPending(s) => ApiError::new(
                status(409),
                "FLEETGATE.COMMAND_NOT_PENDING",
                format!("the command is {s}; only PENDING commands can be canceled"),
            ),
            CancelError::Storage(m) => ApiError::internal(m),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(view(&canceled)))
}
