//! The `[storage]` section of the configuration: where data lives, the limits the stores
//! enforce, and how long command history is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::traits::Limits;

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Directory of the database (created when missing).
    pub path: PathBuf,
    /// Pending cached commands per device (spec: 20).
    pub max_pending_commands: usize,
    /// Groups a device may belong to (spec: 10).
    pub max_groups_per_device: usize,
    /// Devices per group (spec: 20,000).
    pub max_devices_per_group: u32,
    /// Tags per device.
    pub max_tags_per_device: usize,
    /// Settled commands older than this many days are pruned; 0 keeps them forever.
    pub command_retention_days: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let limits = Limits::default();
        StorageConfig {
            path: PathBuf::from("./data"),
            max_pending_commands: limits.max_pending_commands,
            max_groups_per_device: limits.max_groups_per_device,
            max_devices_per_group: limits.max_devices_per_group,
            max_tags_per_device: limits.max_tags_per_device,
            command_retention_days: 30,
        }
    }
}

impl StorageConfig {
    /// Every problem with the section, as `key: reason` lines.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.path.as_os_str().is_empty() {
            p.push("storage.path: must not be empty".to_owned());
        }
        for (key, value, max) in [
            (
                "storage.max_pending_commands",
                self.max_pending_commands as u64,
                10_000,
            ),
            (
                "storage.max_groups_per_device",
                self.max_groups_per_device as u64,
                1_000,
            ),
            (
                "storage.max_devices_per_group",
                u64::from(self.max_devices_per_group),
                10_000_000,
            ),
            (
                "storage.max_tags_per_device",
                self.max_tags_per_device as u64,
                1_000,
            ),
        ] {
            if value == 0 || value > max {
                p.push(format!("{key}: must be between 1 and {max}"));
            }
        }
        p
    }

    /// The limits the stores enforce.
    pub fn limits(&self) -> Limits {
        Limits {
            max_pending_commands: self.max_pending_commands,
            max_groups_per_device: self.max_groups_per_device,
            max_devices_per_group: self.max_devices_per_group,
            max_tags_per_device: self.max_tags_per_device,
        }
    }
}
