//! The application HTTP API under `/v5/iot/{project_id}/...` (spec/app-side.md §1), after the
//! IoTDA v5 application API: JSON in and out, snake_case fields, and on every failure a JSON
//! body `{"error_code", "error_msg"}` with a stable code.
//!
//! Every call is made by an application (a resource space) authenticated by an API key, and
//! sees only that application's products, devices and commands: another application's records
//! answer 404 as if they did not exist. fleetgate serves one project; the `{project_id}` path
//! segment is accepted whatever its value, so clients written for IoTDA keep their paths.

/// Declares a module's routes once: `method "path" => handler, ...` (paths relative to
/// [`PREFIX`]). Generates `routes`, which registers them, `ROUTES`, the `(method, path)` list
/// the OpenAPI test compares with the document, and `Doc`, the module's OpenAPI paths (every
/// handler must carry `#[utoipa::path]` with the same method and path). A handler may live in a
/// submodule (`credentials::get`), so that a module and its parts share one table.
macro_rules! api_routes {
    ($($method:ident $path:literal => $($handler:ident)::+),+ $(,)?) => {
        pub(super) fn routes(cfg: &mut actix_web::web::ServiceConfig) {
            $(cfg.route($path, actix_web::web::$method().to($($handler)::+));)+
        }

        /// Every route of the module: method and path under the prefix.
        #[cfg(test)]
        pub(super) const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),+];

        /// The module's part of the OpenAPI document.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($handler)::+),+))]
        pub(super) struct Doc;
    };
}

mod apps;
mod auth;
mod commands;
mod devices;
mod emqx;
mod groups;
mod interact;
mod limits;
mod openapi;
mod products;

use actix_web::{HttpRequest, web};

pub use auth::{ADMIN_KEY_FILE, Caller, bootstrap_admin_key};
pub use limits::Limits;
pub use openapi::ErrorBody;

use crate::error::ApiError;

/// The path prefix of every application API route.
pub const PREFIX: &str = "/v5/iot/{project_id}";

/// Registers every application API route and the extractor settings that turn malformed
/// paths, queries and bodies into 400 JSON errors.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi::serve))
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| ApiError::bad_request(format!("invalid path: {e}")).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::bad_request(format!("invalid query: {e}")).into()),
        )
        .service(
            web::scope(PREFIX)
                .configure(apps::routes)
                .configure(products::routes)
                .configure(devices::routes)
                .configure(emqx::routes)
                .configure(groups::routes)
                .configure(interact::routes)
                .configure(commands::routes),
        );
}

/// The JSON body settings: a size limit, and malformed bodies answered 400 (413 when too
/// large) with the reason.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|e, _req: &HttpRequest| {
            use actix_web::error::JsonPayloadError as J;
            let err = match &e {
                J::Overflow { .. } | J::OverflowKnownLength { .. } => ApiError::new(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "FLEETGATE.BODY_TOO_LARGE",
                    e.to_string(),
                ),
                J::ContentType => ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "FLEETGATE.UNSUPPORTED_MEDIA_TYPE",
                    "the body must be JSON (Content-Type: application/json)",
                ),
                _ => ApiError::bad_request(format!("invalid JSON body: {e}")),
            };
            err.into()
        })
}

/// Runs blocking storage work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    web::block(f).await.map_err(ApiError::internal)?
}

/// Pagination of list calls: `limit` (1–1000, default 50) and the opaque `marker` returned as
/// `next_marker` by the previous page.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1 to 1000, default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Where to continue: the `next_marker` of the previous page.
    #[serde(default)]
    pub marker: Option<String>,
}

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=1000) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit must be 1 to 1000, not {n}"
            ))),
        }
    }
}

/// A page of a listing: `{"<key>": [...], "next_marker": "..."}` (`next_marker` absent on the
/// last page).
pub fn listing<T: serde::Serialize>(
    key: &str,
    items: Vec<T>,
    next: Option<String>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let mut body = serde_json::Map::new();
    body.insert(
        key.to_owned(),
        serde_json::to_value(items).map_err(ApiError::internal)?,
    );
    if let Some(next) = next {
        body.insert("next_marker".into(), next.into());
    }
    Ok(actix_web::HttpResponse::Ok().json(body))
}

/// Reads a typed record from JSON, naming the offending field on failure (400).
pub fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(inner.to_string())
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// The body of a create or update call as a JSON object (400 otherwise).
pub fn object(
    body: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match body {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}
