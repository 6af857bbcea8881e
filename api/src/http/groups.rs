//! Device groups and tags (spec/device-management.md §6; IoTDA v5 DeviceGroupManagement and
//! TagManagement paths [ref]): group create, read, list, update and delete; adding and removing
//! members and listing them; binding and unbinding device tags; and finding devices by tag.
//!
//! A group belongs to the application that created it, and only that application's devices can
//! join it: other applications' groups and devices answer 404. The limits of §6.1 (devices per
//! group, groups per device) and the tags-per-device cap are enforced by storage and answer 409
//! `FLEETGATE.LIMIT_EXCEEDED`.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use fleetgate_model::device::{Device, Group, Tag};
use fleetgate_model::{AppId, DeviceId, GroupId, Timestamp};
use fleetgate_storage::{DeviceQuery, Durability, Page, Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Caller, PageQuery, blocking, devices, from_json, listing};
use crate::error::ApiError;
use crate::server::AppState;

/// Longest group name, in characters (the model's 1–64).
const MAX_NAME: usize = 64;
/// Longest group description, in characters [P].
const MAX_DESCRIPTION: usize = 1024;
/// Most tags in one bind, unbind or query call (IoTDA's 10 [ref]).
const MAX_TAGS_PER_CALL: usize = 10;
/// Most storage pages one query by several tags reads to fill a page of answers.
const MAX_QUERY_ROUNDS: usize = 8;

api_routes! {
    post "/device-group" => create,
    get "/device-group" => list,
    get "/device-group/{group_id}" => get,
    put "/device-group/{group_id}" => update,
    delete "/device-group/{group_id}" => delete,
    post "/device-group/{group_id}/action" => action,
    get "/device-group/{group_id}/devices" => members,
    post "/tags/bind-resource" => bind_tags,
    post "/tags/unbind-resource" => unbind_tags,
    post "/resources" => query_by_tags,
}

/// Reads a group of the caller's application (404 for anyone else's).
fn owned(storage: &dyn Storage, caller: &Caller, id: &GroupId) -> Result<Group, ApiError> {
    match storage.get_group(id)? {
        Some(g) if caller.owns(&g.app_id) => Ok(g),
        _ => Err(ApiError::not_found("group", id)),
    }
}

/// Checks a group name: 1–64 characters, no control characters.
fn check_name(name: &str) -> Result<(), ApiError> {
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name: 1 to {MAX_NAME} characters, no control characters"
        )));
    }
    Ok(())
}

/// Checks a group description: at most 1,024 characters.
fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::bad_request(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

// --- groups ----------------------------------------------------------------------------------

/// A new group (IoTDA's AddDeviceGroup body, without sub-groups: the model has none).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    /// Generated when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    group_id: Option<GroupId>,
    name: String,
    #[serde(default)]
    description: String,
    /// Accepted for IoTDA compatibility; must be the caller's own (403 otherwise).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    app_id: Option<AppId>,
}

/// Creates a device group (IoTDA's AddDeviceGroup).
#[utoipa::path(post, path = "/device-group", request_body = NewGroup,
    responses((status = 201, description = "The group", body = Object)))]
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: NewGroup = from_json(body.into_inner())?;
    if body.app_id.as_ref().is_some_and(|a| !caller.owns(a)) {
        return Err(ApiError::forbidden(
            "app_id must be the calling application's",
        ));
    }
    check_name(&body.name)?;
    check_description(&body.description)?;
    let group = Group {
        group_id: body.group_id.unwrap_or_else(GroupId::generate),
        app_id: caller.app_id().clone(),
        name: body.name,
        description: body.description,
        device_count: 0,
        create_time: Timestamp::now(),
    };
    let storage = Arc::clone(&state.storage);
    let stored = group.clone();
    blocking(move || Ok(storage.create_group(&stored)?)).await?;
    Ok(HttpResponse::Created().json(group))
}

/// Lists the caller's groups.
#[utoipa::path(get, path = "/device-group", params(super::PageQuery),
    responses((status = 200, description = "`{device_groups: [...], next_marker}`", body = Object)))]
async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit()?;
    let marker = page.into_inner().marker;
    let storage = Arc::clone(&state.storage);
    let app = caller.app_id().clone();
    let page =
        blocking(move || Ok(storage.list_groups(Some(&app), marker.as_deref(), limit)?)).await?;
    listing("device_groups", page.items, page.next)
}

/// Reads a group.
#[utoipa::path(get, path = "/device-group/{group_id}", params(("group_id" = String, Path, description = "Group id")),
    responses((status = 200, description = "The group", body = Object)))]
async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, GroupId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let storage = Arc::clone(&state.storage);
    let group = blocking(move || owned(storage.as_ref(), &caller, &id)).await?;
    Ok(HttpResponse::Ok().json(group))
}

/// What an update may change (IoTDA's UpdateDeviceGroup body).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Changes a group's name or description.
#[utoipa::path(put, path = "/device-group/{group_id}", params(("group_id" = String, Path, description = "Group id")), request_body = GroupChanges,
    responses((status = 200, description = "The group", body = Object)))]
async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, GroupId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let changes: GroupChanges = from_json(body.into_inner())?;
    if let Some(name) = &changes.name {
        check_name(name)?;
    }
    if let Some(description) = &changes.description {
        check_description(description)?;
    }
    let storage = Arc::clone(&state.storage);
    let group = blocking(move || {
        owned(storage.as_ref(), &caller, &id)?;
        Ok(storage.update_group(&id, &mut |g: &mut Group| {
            if let Some(v) = &changes.name {
                g.name.clone_from(v);
            }
            if let Some(v) = &changes.description {
                g.description.clone_from(v);
            }
            Ok(())
        })?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(group))
}

/// Deletes a group (its members stay registered).
///
/// Deletes a group; its members stay registered and only leave it.
#[utoipa::path(delete, path = "/device-group/{group_id}", params(("group_id" = String, Path, description = "Group id")),
    responses((status = 204, description = "Deleted")))]
async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, GroupId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let storage = Arc::clone(&state.storage);
    blocking(move || {
        owned(storage.as_ref(), &caller, &id)?;
        storage.delete_group(&id)?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- membership ------------------------------------------------------------------------------

/// `?action_id=addDevice|removeDevice&device_id=...` (IoTDA's CreateOrDeleteDeviceInGroup).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MemberAction {
    /// `addDevice` or `removeDevice`.
    action_id: String,
    #[param(value_type = String)]
    device_id: DeviceId,
}

/// Adds a device to the group or removes it.
///
/// `POST .../device-group/{group_id}/action?action_id=addDevice&device_id=...` adds one of the
/// caller's devices to the group (a no-op for a member); `action_id=removeDevice` removes it (a
/// no-op for a non-member). Answers the group with its new `device_count`.
#[utoipa::path(post, path = "/device-group/{group_id}/action", params(("group_id" = String, Path, description = "Group id"), MemberAction),
    responses((status = 200, description = "The group with its new `device_count`", body = Object)))]
async fn action(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, GroupId)>,
    query: web::Query<MemberAction>,
) -> Result<HttpResponse, ApiError> {
    let (_, group_id) = path.into_inner();
    let MemberAction {
        action_id,
        device_id,
    } = query.into_inner();
    let add = match action_id.as_str() {
        "addDevice" => true,
        "removeDevice" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action_id {other:?}; supported: addDevice, removeDevice"
            )));
        }
    };
    let storage = Arc::clone(&state.storage);
    let did = device_id.clone();
    let group = blocking(move || {
        owned(storage.as_ref(), &caller, &group_id)?;
        devices::owned(storage.as_ref(), &caller, &did)?;
        if add {
            storage.add_member(&group_id, &did)?;
        } else {
            storage.remove_member(&group_id, &did)?;
        }
        owned(storage.as_ref(), &caller, &group_id)
    })
    .await?;
    state.engine.invalidate_device(&device_id);
    Ok(HttpResponse::Ok().json(group))
}

/// Lists the group's devices.
///
/// `GET .../device-group/{group_id}/devices`: the members as device records (a superset of
/// IoTDA's ShowDevicesInGroup summary), the same listing as `GET .../devices?group_id=`.
#[utoipa::path(get, path = "/device-group/{group_id}/devices", params(("group_id" = String, Path, description = "Group id"), super::PageQuery),
    responses((status = 200, description = "`{devices: [...], next_marker}`", body = Object)))]
async fn members(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, GroupId)>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let limit = page.limit()?;
    let marker = page.into_inner().marker;
    let storage = Arc::clone(&state.storage);
    let page = blocking(move || {
        owned(storage.as_ref(), &caller, &id)?;
        let query = DeviceQuery {
            app_id: Some(caller.app_id().clone()),
            group_id: Some(id),
            ..DeviceQuery::default()
        };
        Ok(storage.list_devices(&query, marker.as_deref(), limit)?)
    })
    .await?;
    listing("devices", page.items, page.next)
}

// --- tags ------------------------------------------------------------------------------------

/// The kinds of resource tags apply to: devices only.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
enum ResourceType {
    #[serde(rename = "device")]
    Device,
}

/// A tag as a bind call takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TagBody {
    tag_key: String,
    #[serde(default)]
    tag_value: String,
}

/// `POST .../tags/bind-resource` (IoTDA's TagDevice).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BindTags {
    resource_type: ResourceType,
    #[schema(value_type = String)]
    resource_id: DeviceId,
    tags: Vec<TagBody>,
}

/// `POST .../tags/unbind-resource` (IoTDA's UntagDevice).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UnbindTags {
    resource_type: ResourceType,
    #[schema(value_type = String)]
    resource_id: DeviceId,
    tag_keys: Vec<String>,
}

/// A device's tags after a bind or unbind.
#[derive(Debug, Serialize)]
struct Tagged {
    resource_type: ResourceType,
    resource_id: DeviceId,
    tags: Vec<Tag>,
}

/// Checks the number of tags (or keys) in one call.
fn check_count(field: &str, n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_TAGS_PER_CALL {
        return Err(ApiError::bad_request(format!(
            "{field}: 1 to {MAX_TAGS_PER_CALL} entries"
        )));
    }
    Ok(())
}

/// Changes a device's tags with `change`, validates the result (`Device::validate`) and stores
/// it; storage enforces the tags-per-device cap (409) and unique keys.
fn retag(
    storage: &dyn Storage,
    caller: &Caller,
    id: &DeviceId,
    change: &dyn Fn(&mut Vec<Tag>),
) -> Result<Device, ApiError> {
    devices::owned(storage, caller, id)?;
    Ok(
        storage.update_device(id, Durability::Synced, &mut |d: &mut Device| {
            let mut next = d.clone();
            change(&mut next.tags);
            next.validate()
                .map_err(|e| StorageError::abort(ApiError::bad_request(e.to_string())))?;
            *d = next;
            Ok(())
        })?,
    )
}

/// Binds tags to a device (IoTDA's TagDevice).
///
/// Binds tags to a device: a new key is added, an existing key gets the new value. Keys must be
/// unique within the call.
#[utoipa::path(post, path = "/tags/bind-resource", request_body = BindTags,
    responses((status = 200, description = "The device's tags", body = Object)))]
async fn bind_tags(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: BindTags = from_json(body.into_inner())?;
    check_count("tags", body.tags.len())?;
    let mut tags: Vec<Tag> = Vec::with_capacity(body.tags.len());
    for (i, t) in body.tags.into_iter().enumerate() {
        let tag = Tag::new(t.tag_key, t.tag_value)
            .map_err(|e| ApiError::bad_request(format!("tags[{i}]: {e}")))?;
        if tags.iter().any(|seen| seen.tag_key == tag.tag_key) {
            return Err(ApiError::bad_request(format!(
                "tags[{i}]: tag_key {:?} is given twice",
                tag.tag_key
            )));
        }
        tags.push(tag);
    }
    let id = body.resource_id;
    let storage = Arc::clone(&state.storage);
    let did = id.clone();
    let device = blocking(move || {
        retag(storage.as_ref(), &caller, &did, &|have: &mut Vec<Tag>| {
            for tag in &tags {
                match have.iter_mut().find(|t| t.tag_key == tag.tag_key) {
                    Some(t) => t.tag_value.clone_from(&tag.tag_value),
                    None => have.push(tag.clone()),
                }
            }
        })
    })
    .await?;
    state.engine.invalidate_device(&id);
    Ok(HttpResponse::Ok().json(Tagged {
        resource_type: body.resource_type,
        resource_id: id,
        tags: device.tags,
    }))
}

/// Unbinds tags from a device by key (IoTDA's UntagDevice).
///
/// Unbinds tags from a device by key; keys the device does not carry are passed over.
#[utoipa::path(post, path = "/tags/unbind-resource", request_body = UnbindTags,
    responses((status = 200, description = "The device's tags", body = Object)))]
async fn unbind_tags(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: UnbindTags = from_json(body.into_inner())?;
    check_count("tag_keys", body.tag_keys.len())?;
    let id = body.resource_id;
    let keys = body.tag_keys;
    let storage = Arc::clone(&state.storage);
    let did = id.clone();
    let device = blocking(move || {
        retag(storage.as_ref(), &caller, &did, &|have: &mut Vec<Tag>| {
            have.retain(|t| !keys.contains(&t.tag_key));
        })
    })
    .await?;
    state.engine.invalidate_device(&id);
    Ok(HttpResponse::Ok().json(Tagged {
        resource_type: body.resource_type,
        resource_id: id,
        tags: device.tags,
    }))
}

/// A tag filter: the key, and the value when it must match too.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TagFilter {
    tag_key: String,
    #[serde(default)]
    tag_value: Option<String>,
}

impl TagFilter {
    fn matches(&self, d: &Device) -> bool {
        match (d.tag(&self.tag_key), &self.tag_value) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// `POST .../resources` (IoTDA's ListResourcesByTags).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResourceQuery {
    resource_type: ResourceType,
    tags: Vec<TagFilter>,
}

/// One device found by tag: IoTDA's `resource_id` beside the device record.
#[derive(Debug, Serialize)]
struct Resource {
    resource_id: DeviceId,
    #[serde(flatten)]
    device: Device,
}

/// Finds the caller's devices carrying every given tag (with that value, when one is given).
///
/// Storage filters by one tag only ([`DeviceQuery::tag`]); it is given the first filter with a
/// value (those are indexed), else the first filter, and the other filters are applied here in
/// memory. To keep pages full despite that, storage pages are read one after another, each
/// asking only for the devices still missing, until the page is full, the listing ends or
/// [`MAX_QUERY_ROUNDS`] pages were read; the storage cursor after the last page read is the
/// `next_marker`. A page may therefore hold fewer than `limit` devices (even none) and still
/// have a `next_marker`; only its absence means the end.
fn find_by_tags(
    storage: &dyn Storage,
    app: AppId,
    mut filters: Vec<TagFilter>,
    marker: Option<String>,
    limit: usize,
) -> Result<Page<Device>, ApiError> {
    let lead = filters
        .iter()
        .position(|f| f.tag_value.is_some())
        .unwrap_or(0);
    let lead = filters.swap_remove(lead);
    let query = DeviceQuery {
        app_id: Some(app),
        tag: Some((lead.tag_key, lead.tag_value)),
        ..DeviceQuery::default()
    };
    let mut items = Vec::new();
    let mut cursor = marker;
    for _ in 0..MAX_QUERY_ROUNDS {
        let page = storage.list_devices(&query, cursor.as_deref(), limit - items.len())?;
        items.extend(
            page.items
                .into_iter()
                .filter(|d| filters.iter().all(|f| f.matches(d))),
        );
        cursor = page.next;
        if cursor.is_none() || items.len() >= limit {
            break;
        }
    }
    Ok(Page {
        items,
        next: cursor,
    })
}

/// Finds the caller's devices carrying every given tag (IoTDA's ListResourcesByTags).
#[utoipa::path(post, path = "/resources", params(super::PageQuery), request_body = ResourceQuery,
    responses((status = 200, description = "`{resources: [...], next_marker}`", body = Object)))]
async fn query_by_tags(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: ResourceQuery = from_json(body.into_inner())?;
    // Devices are the only kind; another kind would need its own listing here.
    let ResourceType::Device = body.resource_type;
    check_count("tags", body.tags.len())?;
    for (i, f) in body.tags.iter().enumerate() {
        Tag::new(f.tag_key.clone(), f.tag_value.clone().unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("tags[{i}]: {e}")))?;
    }
    let limit = page.limit()?;
    let marker = page.into_inner().marker;
    let storage = Arc::clone(&state.storage);
    let app = caller.app_id().clone();
    let page =
        blocking(move || find_by_tags(storage.as_ref(), app, body.tags, marker, limit)).await?;
    let resources = page
        .items
        .into_iter()
        .map(|device| Resource {
            resource_id: device.device_id.clone(),
            device,
        })
        .collect();
    listing("resources", resources, page.next)
}
