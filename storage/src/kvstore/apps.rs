//! [`AppStore`] over a [`KvEngine`]: applications keyed by id with a unique-name index, and
//! their API keys keyed by key id with a per-application index (deleted with the application).

use fleetgate_model::AppId;
use fleetgate_model::app::{ApiKey, Application};

use super::{KvStore, LockKind, id_after, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, KeyRange, KvEngine, WriteBatch};
use crate::traits::{AppStore, Page, not_found};

/// Application writes are rare; one lock for all of them keeps the unique-name index simple.
const APP_WRITES: (LockKind, &str) = (LockKind::AppName, "*");

/// The lock every product write takes (see `products.rs`): held while deleting an application
/// so that no product of it can be created between the check and the delete.
const PRODUCT_WRITES: (LockKind, &str) = (LockKind::ProductName, "*");

impl<E: KvEngine> KvStore<E> {
    /// The key ids of an application's API keys, in key-id order.
    fn api_key_ids(&self, app: &AppId) -> Result<Vec<String>> {
        let prefix = keys::api_key_by_app(app, None);
        self.engine
            .scan(Cf::Apps, &KeyRange::prefix(&prefix), usize::MAX)?
            .into_iter()
            .map(|(k, _)| id_after(&k, &prefix))
            .collect()
    }
}

impl<E: KvEngine> AppStore for KvStore<E> {
    fn create_app(&self, app: &Application) -> Result<()> {
        let id = &app.app_id;
        let _g = self.lock(&[(LockKind::App, id.as_str()), APP_WRITES]);
        if self.exists(Cf::Apps, &keys::app(id))? {
            return Err(StorageError::AlreadyExists {
                kind: "application",
                id: id.to_string(),
            });
        }
        if self.exists(Cf::Apps, &keys::app_name(&app.name))? {
            return Err(StorageError::AlreadyExists {
                kind: "application named",
                id: app.name.clone(),
            });
        }
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Apps, keys::app(id), app)?;
        b.put(Cf::Apps, keys::app_name(&app.name), id.as_str());
        self.engine.write(b, Durability::Synced)
    }

    fn get_app(&self, id: &AppId) -> Result<Option<Application>> {
        self.read(Cf::Apps, &keys::app(id))
    }

    fn list_apps(&self, cursor: Option<&str>, limit: usize) -> Result<Page<Application>> {
        self.page_records(Cf::Apps, b"a", cursor, limit)
    }

    fn delete_app(&self, id: &AppId) -> Result<Application> {
        let _g = self.lock(&[(LockKind::App, id.as_str()), APP_WRITES, PRODUCT_WRITES]);
        let app = self
            .get_app(id)?
            .ok_or_else(|| not_found("application", id))?;
        if self.any_with_prefix(Cf::Index, &keys::product_by_app(id, None))? {
            return Err(StorageError::Conflict(format!(
                "application {id} still has products; delete them first"
            )));
        }
        let mut b = WriteBatch::new();
        for key_id in self.api_key_ids(id)? {
            b.delete(Cf::Apps, keys::api_key(&key_id));
            b.delete(Cf::Apps, keys::api_key_by_app(id, Some(&key_id)));
        }
        b.delete(Cf::Apps, keys::app(id));
        b.delete(Cf::Apps, keys::app_name(&app.name));
        self.engine.write(b, Durability::Synced)?;
        Ok(app)
    }

    fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        let app = &key.app_id;
        // The application's lock keeps `delete_app` from missing a key created meanwhile.
        let _g = self.lock(&[
            (LockKind::App, app.as_str()),
            (LockKind::ApiKey, key.key_id.as_str()),
        ]);
        if !self.exists(Cf::Apps, &keys::app(app))? {
            return Err(not_found("application", app));
        }
        if self.exists(Cf::Apps, &keys::api_key(&key.key_id))? {
            return Err(StorageError::AlreadyExists {
                kind: "API key",
                id: key.key_id.clone(),
            });
        }
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Apps, keys::api_key(&key.key_id), key)?;
        b.put(
            Cf::Apps,
            keys::api_key_by_app(app, Some(&key.key_id)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKey>> {
        self.read(Cf::Apps, &keys::api_key(key_id))
    }

    fn list_api_keys(&self, app: &AppId) -> Result<Vec<ApiKey>> {
        let mut out = Vec::new();
        for key_id in self.api_key_ids(app)? {
            out.extend(self.get_api_key(&key_id)?);
        }
        Ok(out)
    }

    fn delete_api_key(&self, key_id: &str) -> Result<ApiKey> {
        // A key's application never changes, so the key's own lock is enough; a concurrent
        // `delete_app` deleting the same entries is harmless.
        let _g = self.lock(&[(LockKind::ApiKey, key_id)]);
        let key = self
            .get_api_key(key_id)?
            .ok_or_else(|| not_found("API key", key_id))?;
        let mut b = WriteBatch::new();
        b.delete(Cf::Apps, keys::api_key(key_id));
        b.delete(Cf::Apps, keys::api_key_by_app(&key.app_id, Some(key_id)));
        self.engine.write(b, Durability::Synced)?;
        Ok(key)
    }
}
