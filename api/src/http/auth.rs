//! Who is calling: the API key in `Authorization: Bearer <key>` (or IoTDA's `X-Auth-Token`
//! header) names an application, and every handler acts as that application.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use fleetgate_model::app::{ApiKey, Application, key_id_of};
use fleetgate_model::{AppId, Timestamp};
use fleetgate_storage::Storage;

use crate::error::ApiError;
use crate::server::AppState;

/// The authenticated application of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The application.
    pub app: Application,
}

impl Caller {
    /// The caller's resource space.
    pub fn app_id(&self) -> &AppId {
        &self.app.app_id
    }

    /// Refuses callers that are not administrators.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.app.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "only an administrator application may do this",
            ))
        }
    }

    /// Whether a record of `owner` is visible to the caller.
    pub fn owns(&self, owner: &AppId) -> bool {
        owner == self.app_id()
    }
}

fn presented_key(req: &HttpRequest) -> Result<String, ApiError> {
    let headers = req.headers();
    if let Some(v) = headers.get(actix_web::http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        return match v.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(key.trim().into()),
            _ => Err(ApiError::unauthorized(
                "use Authorization: Bearer <api key>",
            )),
        };
    }
    if let Some(v) = headers.get("x-auth-token") {
        return v
            .to_str()
            .map(|s| s.trim().to_owned())
            .map_err(|_| ApiError::unauthorized("the X-Auth-Token header is not text"));
    }
    Err(ApiError::unauthorized(
        "an API key is required: Authorization: Bearer <api key>",
    ))
}

fn authenticate(storage: &dyn Storage, key: &str) -> Result<Caller, ApiError> {
    let invalid = || ApiError::unauthorized("invalid API key");
    let key_id = key_id_of(key).ok_or_else(invalid)?;
    let record = storage.get_api_key(key_id)?.ok_or_else(invalid)?;
    if !record.matches(key) {
        return Err(invalid());
    }
    let app = storage.get_app(&record.app_id)?.ok_or_else(invalid)?;
    Ok(Caller { app })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = presented_key(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let key = key?;
            let state = state.ok_or_else(|| ApiError::internal("no application state"))?;
            let storage = Arc::clone(&state.storage);
            let caller = super::blocking(move || authenticate(storage.as_ref(), &key)).await?;
            state.limits.call(&caller)?;
            Ok(caller)
        })
    }
}

/// The name of the file, in the data directory, that receives the first administrator key.
pub const ADMIN_KEY_FILE: &str = "admin-api-key";

/// On a store without applications, creates the administrator application `default` (which
/// also owns products registered with `app_id` "default", e.g. by `fleetgate provision`) and
/// writes its API key to `{data_dir}/admin-api-key`, readable by the owner only. Returns the
/// file's path when it wrote one.
pub fn bootstrap_admin_key(
    storage: &dyn Storage,
    data_dir: &Path,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if !storage.list_apps(None, 1)?.items.is_empty() {
        return Ok(None);
    }
    let now = Timestamp::now();
    let app = Application {
        app_id: AppId::new("default")?,
        name: "default".into(),
        admin: true,
        created_at: now,
    };
    let (record, key): (ApiKey, String) = ApiKey::generate(&app.app_id, "bootstrap", now);
    let path = data_dir.join(ADMIN_KEY_FILE);
    write_private(&path, &format!("{key}\n"))?;
    storage.create_app(&app)?;
    storage.create_api_key(&record)?;
    Ok(Some(path))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
