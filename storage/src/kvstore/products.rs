//! [`ProductStore`] over a [`KvEngine`]: products keyed by id, a unique-name index and a
//! per-resource-space index.

use fleetgate_model::product::Product;
use fleetgate_model::{AppId, ProductId};

use super::{KvStore, LockKind, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, KvEngine, WriteBatch};
use crate::traits::{Mutation, Page, ProductStore, not_found};

/// Product writes are rare; one lock for all of them keeps the unique-name index simple.
const PRODUCT_WRITES: (LockKind, &str) = (LockKind::ProductName, "*");

impl<E: KvEngine> ProductStore for KvStore<E> {
    fn create_product(&self, product: &Product) -> Result<()> {
        let id = &product.product_id;
        let _g = self.lock(&[(LockKind::Product, id.as_str()), PRODUCT_WRITES]);
        if self.exists(Cf::Products, &keys::id(id.as_str()))? {
            return Err(StorageError::AlreadyExists {
                kind: "product",
                id: id.to_string(),
            });
        }
        if self.exists(Cf::Index, &keys::product_name(&product.name))? {
            return Err(StorageError::AlreadyExists {
                kind: "product name",
                id: product.name.clone(),
            });
        }
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Products, keys::id(id.as_str()), product)?;
        b.put(Cf::Index, keys::product_name(&product.name), id.as_str());
        b.put(
            Cf::Index,
            keys::product_by_app(&product.app_id, Some(id)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn get_product(&self, id: &ProductId) -> Result<Option<Product>> {
        self.read(Cf::Products, &keys::id(id.as_str()))
    }

    fn update_product(&self, id: &ProductId, f: Mutation<'_, Product>) -> Result<Product> {
        let _g = self.lock(&[(LockKind::Product, id.as_str()), PRODUCT_WRITES]);
        let old = self
            .get_product(id)?
            .ok_or_else(|| not_found("product", id))?;
        let mut new = old.clone();
        f(&mut new)?;
        if new.product_id != old.product_id || new.app_id != old.app_id {
            return Err(StorageError::Conflict(
                "a product's id and resource space cannot change".into(),
            ));
        }
        let mut b = WriteBatch::new();
        if new.name != old.name {
            if self.exists(Cf::Index, &keys::product_name(&new.name))? {
                return Err(StorageError::AlreadyExists {
                    kind: "product name",
                    id: new.name.clone(),
                });
            }
            b.delete(Cf::Index, keys::product_name(&old.name));
            b.put(Cf::Index, keys::product_name(&new.name), id.as_str());
        }
        put(&mut b, Cf::Products, keys::id(id.as_str()), &new)?;
        self.engine.write(b, Durability::Synced)?;
        Ok(new)
    }

    fn delete_product(&self, id: &ProductId) -> Result<Product> {
        let _g = self.lock(&[(LockKind::Product, id.as_str()), PRODUCT_WRITES]);
        let old = self
            .get_product(id)?
            .ok_or_else(|| not_found("product", id))?;
        if self.any_with_prefix(Cf::Index, &keys::dev_by_product(id, None))? {
            return Err(StorageError::Conflict(format!(
                "product {id} still has devices; delete them first"
            )));
        }
        let mut b = WriteBatch::new();
        b.delete(Cf::Products, keys::id(id.as_str()));
        b.delete(Cf::Index, keys::product_name(&old.name));
        b.delete(Cf::Index, keys::product_by_app(&old.app_id, Some(id)));
        self.engine.write(b, Durability::Synced)?;
        Ok(old)
    }

    fn list_products(
        &self,
        app: Option<&AppId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Product>> {
        match app {
            Some(app) => self.page_via_index(
                Cf::Index,
                &keys::product_by_app(app, None),
                cursor,
                limit,
                Cf::Products,
                keys::id,
            ),
            None => self.page_records(Cf::Products, b"", cursor, limit),
        }
    }
}
