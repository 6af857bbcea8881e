//! OTA records (spec/device-management.md §8–§14): packages, upgrade tasks, per-device
//! progress, failure reasons, and the radio coverage levels that size per-cell concurrency.
//! The scheduler that drives these lives in the engine; this module only holds the types and
//! their pure rules.

use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::ids::{AppId, DeviceId, GroupId, PackageId, ProductId, TaskId};
use crate::time::Timestamp;

/// Firmware (FOTA) or software (SOTA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeKind {
    /// Firmware.
    Firmware,
    /// Software.
    Software,
}

/// PCP chunk size bounds and default (§8.1, §15.5).
pub const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u16> = 32..=500;
/// Default PCP chunk size.
pub const DEFAULT_CHUNK_SIZE: u16 = 500;

/// An uploaded upgrade package (§8.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaPackage {
    /// The package's id.
    pub package_id: PackageId,
    /// The resource space.
    pub app_id: AppId,
    /// The product it targets.
    pub product_id: ProductId,
    /// Firmware or software.
    pub kind: UpgradeKind,
    /// The version devices must report after upgrading.
    pub version: String,
    /// Versions allowed to upgrade from; empty means any.
    #[serde(default)]
    pub source_versions: Vec<String>,
    /// At most 1000 characters.
    #[serde(default)]
    pub description: String,
    /// The file name (no Chinese characters).
    pub file_name: String,
    /// Size in bytes.
    pub file_size: u64,
    /// SHA-256 of the content, 64 lower-case hex digits (the MQTT `sign`).
    pub sha256: String,
    /// Bytes per PCP chunk (software packages).
    #[serde(default)]
    pub chunk_size: Option<u16>,
    /// Upload time.
    pub create_time: Timestamp,
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x2FA1F)
}

impl OtaPackage {
    /// Checks the fields the spec constrains; `pcp` adds the 16-byte version limit of PCP
    /// products and the WORD chunk count (§15.3, §15.5).
    pub fn validate(&self, pcp: bool) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        if self.version.is_empty() || self.version.len() > 64 {
            p.push("version", "must be 1-64 characters");
        }
        if pcp && (self.version.len() > 16 || !self.version.is_ascii()) {
            p.push("version", "PCP versions are at most 16 ASCII characters");
        }
        if self.file_name.is_empty()
            || self.file_name.chars().any(is_cjk)
            || self.file_name.contains(['/', '\0'])
        {
            p.push(
                "file_name",
                "must be non-empty, without Chinese characters, '/' or NUL",
            );
        }
        if self.description.chars().count() > 1000 {
            p.push("description", "at most 1000 characters");
        }
        if self.file_size == 0 {
            p.push("file_size", "the package is empty");
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.push("sha256", "must be 64 hex digits");
        }
        if let Some(chunk) = self.chunk_size {
            if !CHUNK_SIZE_RANGE.contains(&chunk) {
                p.push("chunk_size", "must be 32-500 bytes");
            } else if pcp && self.file_size.div_ceil(u64::from(chunk)) > u64::from(u16::MAX) {
                p.push("chunk_size", "the package needs more than 65535 chunks");
            }
        }
        p.finish()
    }

    /// Whether a device at `version` may upgrade with this package (§11 step 5).
    pub fn accepts_source(&self, version: &str) -> bool {
        self.source_versions.is_empty() || self.source_versions.iter().any(|v| v == version)
    }
}

/// Retry settings of a task (§8.2): count ≤ 5, interval ≤ 1440 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries per device.
    pub count: u8,
    /// Minutes between retries.
    pub interval_minutes: u32,
}

/// Task status (§8.3; the vendor's API spells waiting `Waitting`, which is also accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Scheduled, not started.
    #[serde(alias = "Waitting")]
    Waiting,
    /// Running.
    Processing,
    /// Every device succeeded.
    Success,
    /// Some devices succeeded.
    PartialSuccess,
    /// Every device failed.
    Fail,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
}

/// The devices a task targets: explicit devices and/or groups.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskTargets {
    /// Individual devices.
    #[serde(default)]
    pub devices: Vec<DeviceId>,
    /// Groups, expanded when the task starts.
    #[serde(default)]
    pub groups: Vec<GroupId>,
}

/// An upgrade task (§8.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaTask {
    /// The task's id.
    pub task_id: TaskId,
    /// The resource space.
    pub app_id: AppId,
    /// Free name.
    pub task_name: String,
    /// The package to install.
    pub package_id: PackageId,
    /// Firmware or software (copied from the package).
    pub kind: UpgradeKind,
    /// Target devices.
    pub targets: TaskTargets,
    /// Start time; `None` means immediately.
    #[serde(default)]
    pub execute_at: Option<Timestamp>,
    /// Retry settings.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Current status.
    pub status: TaskStatus,
    /// Creation time.
    pub create_time: Timestamp,
}

impl OtaTask {
    /// Checks names, targets and retry bounds.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        if self.task_name.is_empty() || self.task_name.chars().count() > 128 {
            p.push("task_name", "must be 1-128 characters");
        }
        if self.targets.devices.is_empty() && self.targets.groups.is_empty() {
            p.push("targets", "at least one device or group is required");
        }
        if let Some(r) = self.retry {
            if r.count > 5 {
                p.push("retry.count", "at most 5");
            }
            if r.interval_minutes == 0 || r.interval_minutes > 1440 {
                p.push("retry.interval_minutes", "must be 1-1440");
            }
        }
        p.finish()
    }

    /// Whether the task may be deleted: a running task must be stopped first (§8.2).
    pub fn deletable(&self) -> bool {
        !matches!(self.status, TaskStatus::Processing | TaskStatus::Stopping)
    }
}

/// Per-device sub-task status (§8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubTaskStatus {
    /// Waiting for the device or a concurrency slot.
    Waiting,
    /// In one of the steps.
    Processing,
    /// Upgraded (or already at the target version).
    Success,
    /// Failed with a reason.
    Fail,
    /// Failed, retry scheduled.
    FailWaitRetry,
    /// The task was stopped.
    Stopped,
}

impl SubTaskStatus {
    /// Whether the device's upgrade in this task is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SubTaskStatus::Success | SubTaskStatus::Fail | SubTaskStatus::Stopped
        )
    }
}

/// The step a device's upgrade is in (§9, §11, §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtaStep {
    /// Waiting for the device to wake or come online.
    WaitOnline,
    /// Version query sent.
    QueryVersion,
    /// Radio (cell id, RSRP, SINR) query sent.
    QueryRadio,
    /// Cell-id-only query sent.
    QueryCellId,
    /// Waiting for a per-cell slot.
    WaitSlot,
    /// Upgrade state observed.
    Subscribe,
    /// Package download in progress.
    Download,
    /// Upgrade executing.
    Update,
    /// Result being checked.
    QueryResult,
}

/// A device's radio situation as reported (§9 steps 6–8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellInfo {
    /// The cell.
    pub cell_id: String,
    /// RSRP in dBm, when reported.
    #[serde(default)]
    pub rsrp: Option<i32>,
    /// SINR in dB, when reported.
    #[serde(default)]
    pub sinr: Option<i32>,
}

/// One device's progress in one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaDeviceProgress {
    /// The task.
    pub task_id: TaskId,
    /// The device.
    pub device_id: DeviceId,
    /// Sub-task status.
    pub status: SubTaskStatus,
    /// Current step.
    #[serde(default)]
    pub step: Option<OtaStep>,
    /// 0–100.
    #[serde(default)]
    pub progress: u8,
    /// The version the device reported before upgrading.
    #[serde(default)]
    pub source_version: Option<String>,
    /// Radio information.
    #[serde(default)]
    pub cell: Option<CellInfo>,
    /// One of the reasons of §14 when failed.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u8,
    /// Last change.
    pub update_time: Timestamp,
}

/// Failure reasons the platform reports (§14.1), exact strings.
pub mod failure {
    /// Device abnormal, not online.
    pub const DEVICE_ABNORMAL: &str = "Device Abnormal is not online";
    /// Another device-level operation is running.
    pub const TASK_CONFLICT: &str = "Task Conflict";
    /// The device did not come online in time.
    pub const ONLINE_TIMEOUT: &str = "Waiting for the device online timeout";
    /// No upgrade result in time.
    pub const RESULT_TIMEOUT: &str = "Wait for the device to report upgrade result timeout";
    /// No version report in time.
    pub const VERSION_TIMEOUT: &str = "Waiting for report device firmware version timeout";
    /// No cell id in time.
    pub const CELL_ID_TIMEOUT: &str = "Waiting for report cellId timeout";
    /// Result and the version re-check both timed out.
    pub const UPDATE_AND_CHECK_TIMEOUT: &str =
        "Updating timeout and query device version for check timeout";
    /// Download not completed in time.
    pub const DOWNLOADED_TIMEOUT: &str = "Waiting for device downloaded package timeout";
    /// Update not started in time.
    pub const START_UPDATE_TIMEOUT: &str = "Waiting for device start to update timeout";
    /// Download not started in time.
    pub const START_DOWNLOAD_TIMEOUT: &str = "Waiting for device start download package timeout";
}

/// A radio coverage level (§10.1); higher is weaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CoverageLevel {
    /// Good coverage: 50 concurrent upgrades per cell.
    Level0,
    /// Medium: 10 per cell.
    Level1,
    /// Poor (or outside the table): 1 per cell.
    Level2,
}

impl CoverageLevel {
    /// Level of an RSRP value in dBm.
    pub fn from_rsrp(dbm: i32) -> Self {
        match dbm {
            d if d >= -105 => CoverageLevel::Level0,
            d if d >= -115 => CoverageLevel::Level1,
            _ => CoverageLevel::Level2,
        }
    }

    /// Level of a SINR value in dB.
    pub fn from_sinr(db: i32) -> Self {
        match db {
            d if d >= 7 => CoverageLevel::Level0,
            d if d >= -3 => CoverageLevel::Level1,
            _ => CoverageLevel::Level2,
        }
    }

    /// Concurrent upgrades allowed per cell at this level (§10.2).
    pub fn concurrency(self) -> u32 {
        match self {
            CoverageLevel::Level0 => 50,
            CoverageLevel::Level1 => 10,
            CoverageLevel::Level2 => 1,
        }
    }
}

/// Concurrent upgrades allowed in a cell when only its id is known (§10.2).
pub const CELL_ONLY_CONCURRENCY: u32 = 10;

/// The effective level of a device: the weaker of its RSRP and SINR levels, `None` when
/// either is missing (then only the cell id counts, or the upgrade fails without one).
pub fn effective_level(rsrp: Option<i32>, sinr: Option<i32>) -> Option<CoverageLevel> {
    Some(CoverageLevel::from_rsrp(rsrp?).max(CoverageLevel::from_sinr(sinr?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_levels_follow_the_table() {
        assert_eq!(
            effective_level(Some(-100), Some(10)),
            Some(CoverageLevel::Level0)
        );
        assert_eq!(
            effective_level(Some(-105), Some(7)),
            Some(CoverageLevel::Level0)
        );
        assert_eq!(
            effective_level(Some(-100), Some(0)),
            Some(CoverageLevel::Level1)
        );
        assert_eq!(
            effective_level(Some(-116), Some(0)),
            Some(CoverageLevel::Level2)
        );
        assert_eq!(
            effective_level(Some(-130), Some(20)),
            Some(CoverageLevel::Level2)
        );
        assert_eq!(
            effective_level(Some(-100), Some(-9)),
            Some(CoverageLevel::Level2)
        );
        assert_eq!(effective_level(None, Some(10)), None);
        assert_eq!(CoverageLevel::Level1.concurrency(), 10);
    }

    fn package() -> OtaPackage {
        OtaPackage {
            package_id: PackageId::new("pkg1").unwrap(),
            app_id: AppId::new("app").unwrap(),
            product_id: ProductId::new("prod").unwrap(),
            kind: UpgradeKind::Software,
            version: "V1.0".into(),
            source_versions: vec![],
            description: String::new(),
            file_name: "fw.bin".into(),
            file_size: 1000,
            sha256: "a".repeat(64),
            chunk_size: Some(500),
            create_time: Timestamp::EPOCH,
        }
    }

    #[test]
    fn package_rules() {
        package().validate(true).unwrap();
        let mut p = package();
        p.file_name = "固件.bin".into();
        p.chunk_size = Some(31);
        p.version = "V".repeat(17);
        let err = p.validate(true).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let mut big = package();
        big.chunk_size = Some(32);
        big.file_size = 32 * 65_536;
        assert!(big.validate(true).is_err());
        big.file_size = 32 * 65_535;
        big.validate(true).unwrap();
        assert!(package().accepts_source("anything"));
    }
}
