//! [`OtaStore`] over a [`KvEngine`]: packages (indexed by product), tasks, per-device progress,
//! and the index of each device's unfinished sub-tasks used for the "Task Conflict" rule
//! (spec/device-management.md §8.4).

use fleetgate_model::ota::{OtaDeviceProgress, OtaPackage, OtaTask};
use fleetgate_model::{DeviceId, PackageId, ProductId, TaskId};

use super::{KvStore, LockKind, put};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{Cf, Durability, KeyRange, KvEngine, WriteBatch};
use crate::traits::{OtaStore, Page, not_found};
use crate::value;

impl<E: KvEngine> KvStore<E> {
    /// Adds the removal of a device's unfinished OTA sub-tasks to a batch.
    pub(super) fn delete_device_ota(&self, b: &mut WriteBatch, device: &DeviceId) -> Result<()> {
        for task in self.active_tasks(device)? {
            b.delete(Cf::Ota, keys::active_task(device, Some(&task)));
            b.delete(Cf::Ota, keys::progress(&task, Some(device)));
        }
        Ok(())
    }
}

impl<E: KvEngine> OtaStore for KvStore<E> {
    fn create_package(&self, package: &OtaPackage) -> Result<()> {
        let id = &package.package_id;
        let _g = self.lock(&[(LockKind::Ota, id.as_str())]);
        if self.exists(Cf::Ota, &keys::package(id))? {
            return Err(StorageError::AlreadyExists {
                kind: "package",
                id: id.to_string(),
            });
        }
        if !self.exists(Cf::Products, &keys::id(package.product_id.as_str()))? {
            return Err(not_found("product", &package.product_id));
        }
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Ota, keys::package(id), package)?;
        b.put(
            Cf::Ota,
            keys::package_by_product(&package.product_id, Some(id)),
            Vec::new(),
        );
        self.engine.write(b, Durability::Synced)
    }

    fn get_package(&self, id: &PackageId) -> Result<Option<OtaPackage>> {
        self.read(Cf::Ota, &keys::package(id))
    }

    fn delete_package(&self, id: &PackageId) -> Result<OtaPackage> {
        let _g = self.lock(&[(LockKind::Ota, id.as_str())]);
        let pkg = self
            .get_package(id)?
            .ok_or_else(|| not_found("package", id))?;
        let mut b = WriteBatch::new();
        b.delete(Cf::Ota, keys::package(id));
        b.delete(Cf::Ota, keys::package_by_product(&pkg.product_id, Some(id)));
        self.engine.write(b, Durability::Synced)?;
        Ok(pkg)
    }

    fn list_packages(
        &self,
        product: &ProductId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OtaPackage>> {
        self.page_via_index(
            Cf::Ota,
            &keys::package_by_product(product, None),
            cursor,
            limit,
            Cf::Ota,
            |id| {
                PackageId::new(id)
                    .map(|p| keys::package(&p))
                    .unwrap_or_default()
            },
        )
    }

    fn put_task(&self, task: &OtaTask) -> Result<()> {
        let _g = self.lock(&[(LockKind::Ota, task.task_id.as_str())]);
        let mut b = WriteBatch::new();
        put(&mut b, Cf::Ota, keys::task(&task.task_id), task)?;
        self.engine.write(b, Durability::Synced)
    }

    fn get_task(&self, id: &TaskId) -> Result<Option<OtaTask>> {
        self.read(Cf::Ota, &keys::task(id))
    }

    fn delete_task(&self, id: &TaskId) -> Result<OtaTask> {
        let _g = self.lock(&[(LockKind::Ota, id.as_str())]);
        let task = self.get_task(id)?.ok_or_else(|| not_found("task", id))?;
        if !task.deletable() {
            return Err(StorageError::Conflict(format!(
                "task {id} is running; stop it first"
            )));
        }
        let mut b = WriteBatch::new();
        b.delete(Cf::Ota, keys::task(id));
        let prefix = keys::progress(id, None);
        let mut range = KeyRange::prefix(&prefix);
        loop {
            let entries = self.engine.scan(Cf::Ota, &range, 1024)?;
            for (k, v) in &entries {
                let p: OtaDeviceProgress = value::decode(Cf::Ota, k, v)?;
                b.delete(Cf::Ota, keys::active_task(&p.device_id, Some(id)));
                b.delete(Cf::Ota, k.clone());
            }
            match entries.last() {
                Some((k, _)) if entries.len() == 1024 => {
                    range = KeyRange::prefix_after(&prefix, Some(k))
                }
                _ => break,
            }
        }
        self.engine.write(b, Durability::Synced)?;
        Ok(task)
    }

    fn put_progress(&self, p: &OtaDeviceProgress) -> Result<()> {
        let _g = self.lock(&[
            (LockKind::Ota, p.task_id.as_str()),
            (LockKind::Device, p.device_id.as_str()),
        ]);
        if !self.exists(Cf::Ota, &keys::task(&p.task_id))? {
            return Err(not_found("task", &p.task_id));
        }
        let mut b = WriteBatch::new();
        put(
            &mut b,
            Cf::Ota,
            keys::progress(&p.task_id, Some(&p.device_id)),
            p,
        )?;
        let active = keys::active_task(&p.device_id, Some(&p.task_id));
        if p.status.is_terminal() {
            b.delete(Cf::Ota, active);
        } else {
            b.put(Cf::Ota, active, Vec::new());
        }
        self.engine.write(b, Durability::Synced)
    }

    fn get_progress(&self, task: &TaskId, device: &DeviceId) -> Result<Option<OtaDeviceProgress>> {
        self.read(Cf::Ota, &keys::progress(task, Some(device)))
    }

    fn list_progress(
        &self,
        task: &TaskId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OtaDeviceProgress>> {
        self.filtered_page(
            Cf::Ota,
            &keys::progress(task, None),
            cursor,
            limit,
            |k, v| value::decode(Cf::Ota, k, v).map(Some),
        )
    }

    fn active_tasks(&self, device: &DeviceId) -> Result<Vec<TaskId>> {
        let entries = self.engine.scan(
            Cf::Ota,
            &KeyRange::prefix(&keys::active_task(device, None)),
            1024,
        )?;
        Ok(entries
            .iter()
            .filter_map(|(k, _)| keys::last_part(k).and_then(|s| TaskId::new(s).ok()))
            .collect())
    }
}
