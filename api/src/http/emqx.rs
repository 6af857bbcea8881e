//! The EMQX-style integration operations of the application API (spec/app-side.md §10): online
//! sessions listed and looked up, kicked, subscribed and unsubscribed on the device's behalf,
//! publications to a topic (one or a batch), and statistics. Device credentials and ACL rules
//! are in [`credentials`] and [`acl_rules`]. Every call sees only the caller's devices: another
//! application's device answers 404 as if it did not exist.
//!
//! The live state comes from the engine ([`fleetgate_engine::ops`]), whose calls wait briefly
//! for the shards, so they run on the blocking pool.
//!
//! The routes of the submodules are in this module's table, so the whole EMQX-style API is one
//! part of the OpenAPI document.

mod acl_rules;
mod credentials;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use fleetgate_codec::mqtt::QoS;
use fleetgate_engine::ops::{OpsError, SessionFilter, SessionInfo};
use fleetgate_model::topic::DeviceTopic;
use fleetgate_model::{DeviceId, ProductId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Caller, blocking, devices, from_json, listing};
use crate::error::ApiError;
use crate::server::AppState;

/// Most items of a subscription or publication batch.
const MAX_BATCH: usize = 100;

api_routes! {
    get "/clients" => list_clients,
    get "/devices/{device_id}/connection" => connection,
    delete "/devices/{device_id}/connection" => kick,
    post "/devices/{device_id}/subscriptions" => subscribe,
    delete "/devices/{device_id}/subscriptions" => unsubscribe,
    post "/devices/{device_id}/subscriptions/batch" => subscribe_batch,
    post "/publish" => publish,
    post "/publish/batch" => publish_batch,
    get "/stats" => stats,
    get "/devices/{device_id}/credential" => credentials::get,
    put "/devices/{device_id}/credential" => credentials::put,
    delete "/devices/{device_id}/credential" => credentials::delete,
    post "/acl-rules" => acl_rules::create,
    get "/acl-rules" => acl_rules::list,
    get "/acl-rules/{acl_rule_id}" => acl_rules::get,
    put "/acl-rules/{acl_rule_id}" => acl_rules::update,
    delete "/acl-rules/{acl_rule_id}" => acl_rules::delete,
}

/// The API error for an engine operation that failed.
fn ops_error(e: OpsError) -> ApiError {
    match e {
        OpsError::Offline => ApiError::new(
            StatusCode::CONFLICT,
            "FLEETGATE.DEVICE_OFFLINE",
            "the device is offline; this needs it connected",
        ),
        OpsError::Busy | OpsError::Timeout => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "FLEETGATE.BUSY",
            e.to_string(),
        ),
        OpsError::InvalidFilter => ApiError::bad_request(
            "topic: not a valid topic filter (shared subscriptions are not offered)",
        ),
        OpsError::NotAuthorized => ApiError::forbidden(e.to_string()),
    }
}

/// A QoS from the JSON number (400 unless 0, 1 or 2).
fn qos(n: u8) -> Result<QoS, ApiError> {
    QoS::try_from(n).map_err(|_| ApiError::bad_request(format!("qos must be 0, 1 or 2, not {n}")))
}

fn qos_number(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// A live session as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ClientView {
    #[schema(value_type = String)]
    device_id: DeviceId,
    #[schema(value_type = String)]
    product_id: ProductId,
    client_id: String,
    /// The MQTT username: fleetgate devices connect with their device id.
    #[schema(value_type = String)]
    username: DeviceId,
    ip_address: String,
    port: u16,
    /// 4 for MQTT 3.1.1, 5 for MQTT 5.0.
    proto_ver: u8,
    keepalive: u16,
    /// Milliseconds since the Unix epoch.
    #[schema(value_type = i64)]
    connected_at: Timestamp,
    /// The engine shard serving it (EMQX's `node`).
    shard: u16,
    subscriptions: usize,
}

impl From<SessionInfo> for ClientView {
    fn from(s: SessionInfo) -> Self {
        ClientView {
            username: s.device_id.clone(),
            device_id: s.device_id,
            product_id: s.product_id,
            client_id: s.client_id,
            ip_address: s.peer.ip().to_string(),
            port: s.peer.port(),
            proto_ver: s.protocol,
            keepalive: s.keepalive_secs,
            connected_at: s.connected_at,
            shard: s.shard,
            subscriptions: s.subscriptions,
        }
    }
}

/// A page of online clients (for the document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ClientList {
    clients: Vec<ClientView>,
    /// Absent on the last page.
    next_marker: Option<String>,
}

/// Filters of the client listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ClientsQuery {
    /// Only `online` is accepted: offline devices have no session to list.
    #[serde(default)]
    status: Option<String>,
    /// Only sessions of this product's devices.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    product_id: Option<ProductId>,
    /// Client ids containing this text.
    #[serde(default)]
    client_id: Option<String>,
    /// Peers with this IP address.
    #[serde(default)]
    ip: Option<String>,
    /// Items per page (1 to 1000, default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Where to continue: the `next_marker` of the previous page.
    #[serde(default)]
    marker: Option<String>,
}

/// Lists the caller's online sessions (EMQX's `GET /clients`), filtered, in device id order.
#[utoipa::path(get, path = "/clients", params(ClientsQuery),
    responses((status = 200, description = "`{clients: [...], next_marker}`", body = ClientList),
        (status = 503, description = "`FLEETGATE.BUSY`: the engine did not answer in time", body = crate::http::ErrorBody)))]
async fn list_clients(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ClientsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = super::PageQuery {
        limit: q.limit,
        marker: None,
    }
    .limit()?;
    if let Some(s) = q.status.as_deref()
        && !s.eq_ignore_ascii_case("online")
    {
        return Err(ApiError::bad_request(format!(
            "status {s:?}: only online clients are listed"
        )));
    }
    let ip = match q.ip.as_deref() {
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| ApiError::bad_request(format!("ip {ip:?} is not an IP address")))?,
        ),
        None => None,
    };
    let after = match q.marker.as_deref() {
        Some(m) => Some(
            DeviceId::new(m).map_err(|_| ApiError::bad_request(format!("invalid marker {m:?}")))?,
        ),
        None => None,
    };
    let filter = SessionFilter {
        app_id: Some(caller.app_id().clone()),
        product_id: q.product_id,
        client_id: q.client_id,
        ip,
    };
    let engine = Arc::clone(&state.engine);
    let (page, more) = blocking(move || {
        engine
            .sessions(&filter, after.as_ref(), limit)
            .map_err(ops_error)
    })
    .await?;
    let next = more
        .then(|| page.last().map(|s| s.device_id.to_string()))
        .flatten();
    let items: Vec<ClientView> = page.into_iter().map(ClientView::from).collect();
    listing("clients", items, next)
}

/// Checks that the device is the caller's (404 otherwise) and returns it.
async fn owned_device(
    state: &AppState,
    caller: Caller,
    id: DeviceId,
) -> Result<fleetgate_model::device::Device, ApiError> {
    devices::with_device(state, caller, &id, |_, d| Ok(d)).await
}

/// The device's connection: its live session with `online: true`, or `{device_id, online:
/// false, connected_at, disconnected_at}` when it is not connected.
#[utoipa::path(get, path = "/devices/{device_id}/connection", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The session with `online: true`, or `{device_id, online: false, connected_at, disconnected_at}`", body = Object),
        (status = 503, description = "`FLEETGATE.BUSY`: the engine did not answer in time", body = crate::http::ErrorBody)))]
async fn connection(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let device = owned_device(&state, caller, id.clone()).await?;
    let engine = Arc::clone(&state.engine);
    let session = blocking(move || engine.session(&id).map_err(ops_error)).await?;
    let body = match session {
        Some(s) => {
            let mut v = serde_json::to_value(ClientView::from(s)).map_err(ApiError::internal)?;
            v["online"] = Value::Bool(true);
            v
        }
        None => serde_json::json!({
            "device_id": device.device_id,
            "online": false,
            "connected_at": device.last_online_time,
            "disconnected_at": device.last_offline_time,
        }),
    };
    Ok(HttpResponse::Ok().json(body))
}

/// Closes the device's connection (EMQX's kick-out).
#[utoipa::path(delete, path = "/devices/{device_id}/connection", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Disconnected"),
        (status = 404, description = "`FLEETGATE.NOT_FOUND`: no such device, or it is not connected", body = crate::http::ErrorBody)))]
async fn kick(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    owned_device(&state, caller, id.clone()).await?;
    if state.engine.is_online(&id) && state.engine.kick(&id) {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("connection of device", id))
    }
}

/// A subscription on the device's behalf.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    /// A topic filter (`+` and `#` allowed; `$share/` is not).
    topic: String,
    /// 0, 1 or 2 (default 0).
    #[serde(default)]
    qos: u8,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Subscribed {
    #[schema(value_type = String)]
    device_id: DeviceId,
    topic: String,
    /// The QoS granted (system topics are capped at 1).
    qos: u8,
    /// Whether it replaced a subscription to the same filter.
    replaced: bool,
}

fn subscribe_one(
    state: &AppState,
    id: &DeviceId,
    s: NewSubscription,
) -> Result<Subscribed, ApiError> {
    let q = qos(s.qos)?;
    let outcome = state.engine.subscribe(id, &s.topic, q).map_err(ops_error)?;
    Ok(Subscribed {
        device_id: id.clone(),
        topic: s.topic,
        qos: qos_number(outcome.granted),
        replaced: outcome.replaced,
    })
}

/// Subscribes the device to a topic filter, as if it had sent SUBSCRIBE (same ACL check and
/// QoS caps); the subscription lasts as long as its session.
#[utoipa::path(post, path = "/devices/{device_id}/subscriptions", params(("device_id" = String, Path, description = "Device id")), request_body = NewSubscription,
    responses((status = 200, description = "The subscription made", body = Subscribed),
        (status = 403, description = "`FLEETGATE.FORBIDDEN`: an ACL rule refuses it", body = crate::http::ErrorBody),
        (status = 409, description = "`FLEETGATE.DEVICE_OFFLINE`: the device is not connected", body = crate::http::ErrorBody),
        (status = 503, description = "`FLEETGATE.BUSY`: the engine did not answer in time", body = crate::http::ErrorBody)))]
async fn subscribe(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let sub: NewSubscription = from_json(body.into_inner())?;
    owned_device(&state, caller, id.clone()).await?;
    let st = state.clone();
    let done = blocking(move || subscribe_one(&st, &id, sub)).await?;
    Ok(HttpResponse::Ok().json(done))
}

/// The outcome of one item of a batch.
#[derive(Debug, Serialize)]
struct ItemResult<T: Serialize> {
    index: usize,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_msg: Option<String>,
}

impl<T: Serialize> ItemResult<T> {
    fn of(index: usize, r: Result<T, ApiError>) -> Self {
        match r {
            Ok(v) => ItemResult {
                index,
                ok: Some(v),
                error_code: None,
                error_msg: None,
            },
            Err(e) => ItemResult {
                index,
                ok: None,
                error_code: Some(e.code),
                error_msg: Some(e.message),
            },
        }
    }
}

/// The items of a batch body: a JSON array of 1 to [`MAX_BATCH`] items.
fn batch_items(body: Value) -> Result<Vec<Value>, ApiError> {
    match body {
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_BATCH => Ok(items),
        _ => Err(ApiError::bad_request(format!(
            "the body must be a JSON array of 1 to {MAX_BATCH} items"
        ))),
    }
}

/// The answer of a batch (for the document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct BatchAnswer {
    succeeded: usize,
    failed: usize,
    /// One per item, in order: `{index, ...outcome}` or `{index, error_code, error_msg}`.
    #[schema(value_type = Vec<Object>)]
    results: Vec<Value>,
}

fn batch_answer<T: Serialize>(results: Vec<ItemResult<T>>) -> HttpResponse {
    let failed = results.iter().filter(|r| r.error_code.is_some()).count();
    HttpResponse::Ok().json(serde_json::json!({
        "succeeded": results.len() - failed,
        "failed": failed,
        "results": results,
    }))
}

/// Makes up to 100 subscriptions, each on its own: a failed item (including an offline device)
/// is reported in its result and does not stop the others.
#[utoipa::path(post, path = "/devices/{device_id}/subscriptions/batch", params(("device_id" = String, Path, description = "Device id")),
    request_body(content = Vec<NewSubscription>, description = "1 to 100 subscriptions"),
    responses((status = 200, description = "`{succeeded, failed, results: [{index, device_id, topic, qos, replaced | error_code, error_msg}]}`", body = BatchAnswer)))]
async fn subscribe_batch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let items = batch_items(body.into_inner())?;
    owned_device(&state, caller, id.clone()).await?;
    let st = state.clone();
    let results = blocking(move || {
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let r = from_json::<NewSubscription>(item).and_then(|s| subscribe_one(&st, &id, s));
                ItemResult::of(i, r)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(batch_answer(results))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TopicQuery {
    /// The topic filter to remove, as it was subscribed.
    topic: String,
}

/// Removes one of the device's subscriptions.
#[utoipa::path(delete, path = "/devices/{device_id}/subscriptions", params(("device_id" = String, Path, description = "Device id"), TopicQuery),
    responses((status = 204, description = "Unsubscribed"),
        (status = 404, description = "`FLEETGATE.NOT_FOUND`: no such device, or no such subscription", body = crate::http::ErrorBody),
        (status = 409, description = "`FLEETGATE.DEVICE_OFFLINE`: the device is not connected", body = crate::http::ErrorBody),
        (status = 503, description = "`FLEETGATE.BUSY`: the engine did not answer in time", body = crate::http::ErrorBody)))]
async fn unsubscribe(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, DeviceId)>,
    query: web::Query<TopicQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let topic = query.into_inner().topic;
    owned_device(&state, caller, id.clone()).await?;
    let engine = Arc::clone(&state.engine);
    let t = topic.clone();
    let removed = blocking(move || engine.unsubscribe(&id, &t).map_err(ops_error)).await?;
    if removed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("subscription", format!("{topic:?}")))
    }
}

/// How a publication's payload is written in the JSON body.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Plain,
    Base64,
}

/// A publication (EMQX's `publish`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPublication {
    /// A `$oc/devices/{device_id}/...` topic of one of the caller's devices; no wildcards.
    topic: String,
    /// The payload: text, or standard base64 (padded) when `encoding` is `base64`.
    #[serde(default)]
    payload: String,
    #[serde(default)]
    encoding: Encoding,
    /// 0, 1 or 2 (default 0).
    #[serde(default)]
    qos: u8,
    /// Must be false: fleetgate keeps no retained messages.
    #[serde(default)]
    retain: bool,
    /// Accepted for EMQX compatibility; the platform is the publisher whatever it says.
    #[serde(default)]
    #[allow(dead_code)]
    client_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Published {
    topic: String,
    /// Sessions that took the message (sent, in flight, or queued for a persistent session).
    deliveries: usize,
}

/// Checks a publication and sends it, taking one of the caller's downlink tokens just before
/// sending (429 `FLEETGATE.RATE_LIMITED` when there is none): a publication refused by the
/// checks costs nothing.
fn publish_one(
    state: &AppState,
    caller: &Caller,
    p: NewPublication,
) -> Result<Published, ApiError> {
    if p.retain {
        return Err(ApiError::bad_request(
            "retain: fleetgate keeps no retained messages",
        ));
    }
    let q = qos(p.qos)?;
    if p.topic.contains(['+', '#']) {
        return Err(ApiError::bad_request("topic: wildcards are not allowed"));
    }
    let device = match DeviceTopic::parse(&p.topic) {
        Ok(Some(t)) => t.device_id,
        Ok(None) => {
            return Err(ApiError::forbidden(
                "topic: applications publish only on $oc/devices/{device_id}/... topics of their devices",
            ));
        }
        Err(e) => return Err(ApiError::bad_request(format!("topic: {e}"))),
    };
    match state.storage.get_device(&device)? {
        Some(d) if caller.owns(&d.app_id) => {}
        _ => {
            return Err(ApiError::forbidden(format!(
                "topic: device {device} is not one of the application's devices"
            )));
        }
    }
    let payload = match p.encoding {
        Encoding::Plain => p.payload.into_bytes(),
        Encoding::Base64 => base64_decode(&p.payload)?,
    };
    state.limits.downlink(caller)?;
    let report = state
        .engine
        .publish(caller.app_id(), &p.topic, payload, q)
        .map_err(ops_error)?;
    Ok(Published {
        topic: p.topic,
        deliveries: report.deliveries,
    })
}

/// Publishes a message to a topic of one of the caller's devices (EMQX's `POST /publish`);
/// the named device receives it when subscribed, and so do the caller's devices whose
/// ACL-granted filters match. It counts against the caller's downlink budget: one token, taken
/// once the publication has passed its checks (429 `FLEETGATE.RATE_LIMITED` when the budget
/// is spent).
#[utoipa::path(post, path = "/publish", request_body = NewPublication,
    responses((status = 200, description = "`{topic, deliveries}`", body = Published),
        (status = 403, description = "`FLEETGATE.FORBIDDEN`: not a `$oc/devices/{device_id}/...` topic of the caller's devices", body = crate::http::ErrorBody),
        (status = 503, description = "`FLEETGATE.BUSY`: the engine did not answer in time", body = crate::http::ErrorBody)))]
async fn publish(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let p: NewPublication = from_json(body.into_inner())?;
    let st = state.clone();
    let done = blocking(move || publish_one(&st, &caller, p)).await?;
    Ok(HttpResponse::Ok().json(done))
}

/// Publishes up to 100 messages, each on its own: a failed item is reported in its result and
/// does not stop the others. Every item that passes its checks takes one downlink token just
/// before it is sent, as a single publication does; once the caller's budget is spent, the
/// remaining items fail with `FLEETGATE.RATE_LIMITED` in their results (the batch itself still
/// answers 200), and items refused by their checks cost nothing.
#[utoipa::path(post, path = "/publish/batch",
    request_body(content = Vec<NewPublication>, description = "1 to 100 publications"),
    responses((status = 200, description = "`{succeeded, failed, results: [{index, topic, deliveries | error_code, error_msg}]}`", body = BatchAnswer)))]
async fn publish_batch(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let items = batch_items(body.into_inner())?;
    let st = state.clone();
    let results = blocking(move || {
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let r =
                    from_json::<NewPublication>(item).and_then(|p| publish_one(&st, &caller, p));
                ItemResult::of(i, r)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(batch_answer(results))
}

/// `GET /stats`: session figures of the caller's application; message and byte counters are
/// engine-wide (the shards count them without knowing whose devices they are).
#[utoipa::path(get, path = "/stats",
    responses((status = 200, description = "`{connections, online_devices, subscriptions, messages_received, messages_sent, bytes_received, bytes_sent, per_product}`", body = Object),
        (status = 503, description = "`FLEETGATE.BUSY`: the engine did not answer in time", body = crate::http::ErrorBody)))]
async fn stats(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let engine = Arc::clone(&state.engine);
    let app = caller.app_id().clone();
    let s = blocking(move || engine.stats(Some(&app)).map_err(ops_error)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "connections": s.connections,
        "online_devices": s.online_devices,
        "subscriptions": s.subscriptions,
        "messages_received": s.messages_received,
        "messages_sent": s.messages_sent,
        "bytes_received": s.bytes_received,
        "bytes_sent": s.bytes_sent,
        "per_product": s.per_product,
    })))
}

/// Decodes standard base64 (RFC 4648 §4, with its padding); 400 naming the fault when malformed.
fn base64_decode(text: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ApiError::bad_request(format!("payload: not valid base64 ({e})")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn base64_decodes_standard_padded_text() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("AP8=").unwrap(), [0u8, 255]);
        assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["a", "a$==", "aGVsbG8===", "aGVsbG8", "aGVsbG9=", "-_8="] {
            let e = base64_decode(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                e.message.starts_with("payload: not valid base64"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
