//! Products and their product models (spec/device-management.md §2.1, §3): create, get, list,
//! update and delete, each validated against the model's rules. A product belongs to the
//! application that created it.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use fleetgate_model::product::Product;
use fleetgate_model::{AppId, ProductId};
use fleetgate_storage::{Storage, StorageError};
use serde_json::Value;

use super::{Caller, PageQuery, blocking, from_json, listing, object};
use crate::error::ApiError;
use crate::server::AppState;

api_routes! {
    post "/products" => create,
    get "/products" => list,
    get "/products/{product_id}" => get,
    put "/products/{product_id}" => update,
    delete "/products/{product_id}" => delete,
}

/// Fields the platform sets, which a caller may not change.
const FIXED: [&str; 3] = ["product_id", "app_id", "create_time"];

/// Reads a product of the caller's application (404 for anyone else's).
pub(super) fn owned(
    storage: &dyn Storage,
    caller: &Caller,
    id: &ProductId,
) -> Result<Product, ApiError> {
    match storage.get_product(id)? {
        Some(p) if caller.owns(&p.app_id) => Ok(p),
        _ => Err(ApiError::not_found("product", id)),
    }
}

fn check_app(body: &serde_json::Map<String, Value>, app: &AppId) -> Result<(), ApiError> {
    match body.get("app_id") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == app.as_str() => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "app_id must be the calling application's",
        )),
    }
}

/// Registers a product of the caller's application.
#[utoipa::path(post, path = "/products", request_body(content = Object, description = "A product with its product model (spec/device-management.md §3); `product_id` is generated when absent"),
    responses((status = 201, description = "The product", body = Object)))]
async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut body = object(body.into_inner())?;
    check_app(&body, caller.app_id())?;
    body.insert("app_id".into(), caller.app_id().as_str().into());
    if !matches!(body.get("product_id"), Some(Value::String(_))) {
        body.insert(
            "product_id".into(),
            uuid::Uuid::new_v4().simple().to_string()[..24].into(),
        );
    }
    body.remove("create_time");
    let product: Product = from_json(Value::Object(body))?;
    product
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_codec(&product)?;
    let storage = Arc::clone(&state.storage);
    let stored = product.clone();
    blocking(move || Ok(storage.create_product(&stored)?)).await?;
    Ok(HttpResponse::Created().json(product))
}

/// Lists the caller's products.
#[utoipa::path(get, path = "/products", params(super::PageQuery),
    responses((status = 200, description = "`{products: [...], next_marker}`", body = Object)))]
async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit()?;
    let storage = Arc::clone(&state.storage);
    let marker = page.into_inner().marker;
    let app = caller.app_id().clone();
    let page =
        blocking(move || Ok(storage.list_products(Some(&app), marker.as_deref(), limit)?)).await?;
    listing("products", page.items, page.next)
}

/// Reads a product.
#[utoipa::path(get, path = "/products/{product_id}", params(("product_id" = String, Path, description = "Product id")),
    responses((status = 200, description = "The product", body = Object)))]
async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, ProductId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let storage = Arc::clone(&state.storage);
    let product = blocking(move || owned(storage.as_ref(), &caller, &id)).await?;
    Ok(HttpResponse::Ok().json(product))
}

/// Changes the fields the body names (not `product_id`, `create_time`).
///
/// Replaces the fields the body names; the others keep their values. The result is validated
/// as a whole, and sessions of the product's devices pick up new limits and topics.
#[utoipa::path(put, path = "/products/{product_id}", params(("product_id" = String, Path, description = "Product id")),
    request_body(content = Object, description = "Fields to replace"),
    responses((status = 200, description = "The product", body = Object)))]
async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, ProductId)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let changes = object(body.into_inner())?;
    for key in FIXED {
        if changes.contains_key(key) && key != "app_id" {
            return Err(ApiError::bad_request(format!("{key} cannot be changed")));
        }
    }
    check_app(&changes, caller.app_id())?;
    let storage = Arc::clone(&state.storage);
    let pid = id.clone();
    let updated = blocking(move || {
        owned(storage.as_ref(), &caller, &pid)?;
        let updated = storage.update_product(&pid, &mut |p: &mut Product| {
            let mut merged = match serde_json::to_value(&*p) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(StorageError::abort(ApiError::internal(
                        "product is not an object",
                    )));
                }
            };
            for (k, v) in &changes {
                merged.insert(k.clone(), v.clone());
            }
            let next: Product = from_json(Value::Object(merged)).map_err(StorageError::abort)?;
            next.validate()
                .map_err(|e| StorageError::abort(ApiError::bad_request(e.to_string())))?;
            check_codec(&next).map_err(StorageError::abort)?;
            *p = next;
            Ok(())
        })?;
        Ok(updated)
    })
    .await?;
    state.engine.invalidate_product(&id);
    Ok(HttpResponse::Ok().json(updated))
}

/// Deletes a product.
#[utoipa::path(delete, path = "/products/{product_id}", params(("product_id" = String, Path, description = "Product id")),
    responses((status = 204, description = "Deleted")))]
async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, ProductId)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let storage = Arc::clone(&state.storage);
    let pid = id.clone();
    blocking(move || {
        owned(storage.as_ref(), &caller, &pid)?;
        Ok(storage.delete_product(&pid)?)
    })
    .await?;
    state.engine.invalidate_product(&id);
    Ok(HttpResponse::NoContent().finish())
}

/// A product's `codec` must name one of the codecs fleetgate ships (docs/coap.md).
fn check_codec(product: &Product) -> Result<(), ApiError> {
    use fleetgate_codec::device_codec::{BUILTIN_CODECS, builtin};
    match &product.codec {
        Some(name) if builtin(name).is_none() => Err(ApiError::bad_request(format!(
            "codec: unknown codec {name:?}; known: {}",
            BUILTIN_CODECS.join(", ")
        ))),
        _ => Ok(()),
    }
}
