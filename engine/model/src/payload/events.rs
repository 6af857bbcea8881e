//! The events envelope of `sys/events/up` and `sys/events/down` (spec/device-protocol.md §3.7)
//! and one typed [`SystemEvent`] per (`service_id`, `event_type`) pair of its dispatch table
//! (§4–§6). Non-`$` service ids are product-model events (§9).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{DeviceId, NodeId, ProductId, ServiceId};

/// The envelope: an optional target device and a list of service events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The final target device; absent means the topic's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_device_id: Option<DeviceId>,
    /// The events.
    #[serde(default)]
    pub services: Vec<ServiceEvent>,
}

/// One event of the envelope, with its parameters still untyped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// A system service (`$ota`, ...) or a product-model service.
    pub service_id: ServiceId,
    /// The event type.
    pub event_type: String,
    /// `yyyyMMdd'T'HHmmss'Z'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Correlates sub-device add/delete/update requests and responses (§6.9–§6.14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The parameters.
    #[serde(default)]
    pub paras: Value,
}

/// Why a system event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service_id}/{event_type}: {reason}")]
pub struct EventError {
    /// The event's service.
    pub service_id: String,
    /// The event's type.
    pub event_type: String,
    /// What was wrong.
    pub reason: String,
}

/// What one service event turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A system event of the dispatch table.
    System(SystemEvent),
    /// A product-model event (non-`$` service id), validated separately against the model.
    Model {
        /// The model service.
        service_id: ServiceId,
        /// The model event type.
        event_type: String,
        /// Its parameters.
        paras: Value,
    },
    /// A `$` service or event type this platform does not know; ignored and counted (§13 item 14).
    UnknownSystem {
        /// The service.
        service_id: ServiceId,
        /// The event type.
        event_type: String,
    },
}

/// `$log` / `log_config` paras (§4.1, down).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogConfig {
    /// `on` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// End of collection, in either accepted time form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// The kind of a device log line (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogType {
    /// Device status.
    DeviceStatus,
    /// Property.
    DeviceProperty,
    /// Message.
    DeviceMessage,
    /// Command.
    DeviceCommand,
}

/// `$log` / `log_report` paras (§4.2, up; at most 1 MB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReport {
    /// When the log was produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The log kind.
    #[serde(rename = "type")]
    pub log_type: LogType,
    /// The text.
    pub content: String,
}

/// `$device_info` / `device_info_report` paras (§4.3, up); also read from the
/// `$sdk_info` / `sdk_info_report` spelling of the source's example.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceInfoReport {
    /// `<access method>_<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_sdk_version: Option<String>,
    /// Software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// Firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_version: Option<String>,
}

/// `$time_sync` / `time_sync_request` paras (§4.4, up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSyncRequest {
    /// The device clock, ms since the epoch.
    pub device_send_time: i64,
}

/// `$time_sync` / `time_sync_response` paras (§4.5, down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSyncResponse {
    /// Echoed from the request.
    pub device_send_time: i64,
    /// When the platform received the request (ms).
    pub server_rcv_time: i64,
    /// When the platform sent this response (ms).
    pub server_send_time: i64,
}

/// `$file_manager` / `get_upload_url` and `get_download_url` paras (§5.1, §5.4, up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileUrlRequest {
    /// The file (the download table spells it `fileName`; both are read).
    #[serde(alias = "fileName")]
    pub file_name: String,
    /// Free JSON (`hash_code`, `size`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_attributes: Option<Value>,
}

/// `$file_manager` / `get_upload_url_response` and `get_download_url_response` paras (§5.2, §5.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileUrlResponse {
    /// The pre-signed URL.
    pub url: String,
    /// Bucket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    /// Object name, `{device_id}_{file_name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// URL validity in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<u64>,
    /// Echoed attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_attributes: Option<Value>,
}

/// `$file_manager` / `upload_result_report` and `download_result_report` paras (§5.3, §5.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileResultReport {
    /// The object.
    pub object_name: String,
    /// `0` success, `1` failure.
    pub result_code: i64,
    /// The object store's HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
}

/// `$ota` / `version_query` paras (§5.7): always the empty object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionQuery {}

/// `$ota` / `version_report` paras (§5.8, up).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionReport {
    /// Software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// Firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_version: Option<String>,
}

/// `$ota` / `firmware_upgrade` and `software_upgrade` paras (§5.9): package on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeNotify {
    /// Target version.
    pub version: String,
    /// Download URL.
    pub url: String,
    /// Package size in bytes.
    pub file_size: u64,
    /// Bearer token for the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Token lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// SHA-256 of the package, 64 hex digits.
    pub sign: String,
}

/// `$ota` / `firmware_upgrade_v2` and `software_upgrade_v2` paras (§5.9): pre-signed URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeNotifyV2 {
    /// Target version.
    pub version: String,
    /// Pre-signed download URL.
    pub url: String,
    /// URL lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// `$ota` / `upgrade_progress_report` paras (§5.10, up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeProgressReport {
    /// 0 success, 1–10 and 255 failures (spec/device-management.md §13).
    pub result_code: i64,
    /// 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The device's current version.
    pub version: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Status of a sub-device as gateways and notifications state it (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubDeviceStatus {
    /// Online.
    Online,
    /// Offline.
    Offline,
    /// Never activated (not in scan results).
    Inactive,
}

/// The full sub-device description of §6 (which fields are required depends on the message).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SubDeviceInfo {
    /// The gateway.
    #[serde(default)]
    pub parent_device_id: Option<DeviceId>,
    /// The node id.
    #[serde(default)]
    pub node_id: Option<String>,
    /// The device id.
    #[serde(default)]
    pub device_id: Option<DeviceId>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Manufacturer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer_id: Option<String>,
    /// Device model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Product id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
    /// Firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_version: Option<String>,
    /// Software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SubDeviceStatus>,
    /// User-defined extension info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_info: Option<Value>,
}

/// `add_sub_device_notify` / `delete_sub_device_notify` paras (§6.1, §6.2, down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubDeviceNotify {
    /// The devices added or deleted.
    pub devices: Vec<SubDeviceInfo>,
    /// The gateway's sub-device information version.
    pub version: i64,
}

/// `sub_device_sync_request` paras (§6.3, up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SubDeviceSyncRequest {
    /// The last version the gateway saw; absent means "send everything".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// One entry of `sub_device_update_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubDeviceStatusEntry {
    /// The sub-device.
    pub device_id: DeviceId,
    /// `ONLINE` or `OFFLINE`.
    pub status: SubDeviceStatus,
}

/// `sub_device_update_status` paras (§6.4, up; 1–100 entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubDeviceUpdateStatus {
    /// The statuses.
    pub device_statuses: Vec<SubDeviceStatusEntry>,
}

/// `get_products` paras (§6.5, up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetProducts {
    /// The products wanted.
    pub product_ids: Vec<ProductId>,
}

/// `get_products_response` paras (§6.6, down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetProductsResponse {
    /// Product records including their models.
    pub products: Vec<Value>,
}

/// `$sub_device_discovery` / `start_scan` paras (§6.7, down). `scan_settings` may be a string
/// or an object (§12 #4).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StartScan {
    /// Protocol type (also sent as `protocol_type`).
    #[serde(
        default,
        alias = "protocol_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol: Option<String>,
    /// Channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Parent node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_device_id: Option<String>,
    /// Scan settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_settings: Option<Value>,
}

/// `$sub_device_discovery` / `scan_result` paras (§6.8, up).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScanResult {
    /// Discovered devices.
    #[serde(default)]
    pub devices: Vec<SubDeviceInfo>,
}

/// One device of `add_sub_device_request` (§6.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddSubDevice {
    /// Defaults to the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_device_id: Option<DeviceId>,
    /// The node id.
    pub node_id: NodeId,
    /// Defaults to `{product_id}_{node_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The product.
    pub product_id: ProductId,
    /// Extension info, at most 1 KiB serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_info: Option<Value>,
}

/// `add_sub_device_request` paras (§6.9, up; at most 50 devices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddSubDeviceRequest {
    /// The devices to create.
    pub devices: Vec<AddSubDevice>,
}

/// A failed row of an add response (§6.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddFailure {
    /// From the request.
    pub node_id: String,
    /// From the request.
    pub product_id: String,
    /// Stable error code.
    pub error_code: String,
    /// Human-readable text.
    pub error_msg: String,
}

/// `add_sub_device_response` paras (§6.10, down).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AddSubDeviceResponse {
    /// Devices created.
    pub successful_devices: Vec<SubDeviceInfo>,
    /// Rows that failed.
    pub failed_devices: Vec<AddFailure>,
}

/// `delete_sub_device_request` paras (§6.11, up; at most 50 ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubDeviceRequest {
    /// Sub-device ids.
    pub devices: Vec<DeviceId>,
}

/// A failed row of a delete or update response (§6.12, §6.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFailure {
    /// The device.
    pub device_id: String,
    /// Stable error code.
    pub error_code: String,
    /// Human-readable text.
    pub error_msg: String,
}

/// `delete_sub_device_response` paras (§6.12, down).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeleteSubDeviceResponse {
    /// Ids deleted.
    pub successful_devices: Vec<DeviceId>,
    /// Rows that failed.
    pub failed_devices: Vec<DeviceFailure>,
}

/// One device of `update_sub_device_request` (§6.13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateSubDevice {
    /// The sub-device.
    pub device_id: DeviceId,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New extension info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_info: Option<Value>,
}

/// `update_sub_device_request` paras (§6.13, up; at most 50 devices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateSubDeviceRequest {
    /// The updates.
    pub devices: Vec<UpdateSubDevice>,
}

/// `update_sub_device_response` paras (§6.14, down).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateSubDeviceResponse {
    /// Devices updated, fully described.
    pub successful_devices: Vec<SubDeviceInfo>,
    /// Rows that failed.
    pub failed_devices: Vec<DeviceFailure>,
}

/// Most devices per sub-device add, delete or update request (§6.9, §6.11, §6.13).
pub const MAX_SUB_DEVICES_PER_REQUEST: usize = 50;
/// Most entries per `sub_device_update_status` (§6.4).
pub const MAX_STATUS_ENTRIES: usize = 100;
/// Largest serialized `extension_info` accepted on add (§6.9).
pub const MAX_EXTENSION_INFO_BYTES: usize = 1024;

macro_rules! system_events {
    ($($variant:ident($ty:ty) = ($svc:literal, $ev:literal),)*) => {
        /// A system event of the dispatch table (spec/device-protocol.md §3.7), typed.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SystemEvent {
            $(
                #[doc = concat!("`", $svc, "` / `", $ev, "`")]
                $variant($ty),
            )*
        }

        impl SystemEvent {
            /// The system service id.
            pub fn service_id(&self) -> &'static str {
                match self { $(SystemEvent::$variant(_) => $svc,)* }
            }

            /// The event type.
            pub fn event_type(&self) -> &'static str {
                match self { $(SystemEvent::$variant(_) => $ev,)* }
            }

            /// The parameters as JSON.
            pub fn paras(&self) -> Value {
                let v = match self { $(SystemEvent::$variant(p) => serde_json::to_value(p),)* };
                // Serializing these plain structs cannot fail; fall back to an empty object.
                v.unwrap_or_else(|_| Value::Object(Default::default()))
            }

            fn decode_known(service: &str, event: &str, paras: &Value) -> Option<Result<Self, String>> {
                match (service, event) {
                    $(($svc, $ev) => Some(<$ty>::deserialize(paras).map(SystemEvent::$variant).map_err(|e| e.to_string())),)*
                    _ => None,
                }
            }
        }
    };
}

system_events! {
    LogConfig(LogConfig) = ("$log", "log_config"),
    LogReport(LogReport) = ("$log", "log_report"),
    DeviceInfoReport(DeviceInfoReport) = ("$device_info", "device_info_report"),
    TimeSyncRequest(TimeSyncRequest) = ("$time_sync", "time_sync_request"),
    TimeSyncResponse(TimeSyncResponse) = ("$time_sync", "time_sync_response"),
    GetUploadUrl(FileUrlRequest) = ("$file_manager", "get_upload_url"),
    GetUploadUrlResponse(FileUrlResponse) = ("$file_manager", "get_upload_url_response"),
    UploadResultReport(FileResultReport) = ("$file_manager", "upload_result_report"),
    GetDownloadUrl(FileUrlRequest) = ("$file_manager", "get_download_url"),
    GetDownloadUrlResponse(FileUrlResponse) = ("$file_manager", "get_download_url_response"),
    DownloadResultReport(FileResultReport) = ("$file_manager", "download_result_report"),
    VersionQuery(VersionQuery) = ("$ota", "version_query"),
    VersionReport(VersionReport) = ("$ota", "version_report"),
    FirmwareUpgrade(UpgradeNotify) = ("$ota", "firmware_upgrade"),
    SoftwareUpgrade(UpgradeNotify) = ("$ota", "software_upgrade"),
    FirmwareUpgradeV2(UpgradeNotifyV2) = ("$ota", "firmware_upgrade_v2"),
    SoftwareUpgradeV2(UpgradeNotifyV2) = ("$ota", "software_upgrade_v2"),
    UpgradeProgressReport(UpgradeProgressReport) = ("$ota", "upgrade_progress_report"),
    AddSubDeviceNotify(SubDeviceNotify) = ("$sub_device_manager", "add_sub_device_notify"),
    DeleteSubDeviceNotify(SubDeviceNotify) = ("$sub_device_manager", "delete_sub_device_notify"),
    SubDeviceSyncRequest(SubDeviceSyncRequest) = ("$sub_device_manager", "sub_device_sync_request"),
    SubDeviceUpdateStatus(SubDeviceUpdateStatus) = ("$sub_device_manager", "sub_device_update_status"),
    GetProducts(GetProducts) = ("$sub_device_manager", "get_products"),
    GetProductsResponse(GetProductsResponse) = ("$sub_device_manager", "get_products_response"),
    StartScan(StartScan) = ("$sub_device_discovery", "start_scan"),
    ScanResult(ScanResult) = ("$sub_device_discovery", "scan_result"),
    AddSubDeviceRequest(AddSubDeviceRequest) = ("$sub_device_manager", "add_sub_device_request"),
    AddSubDeviceResponse(AddSubDeviceResponse) = ("$sub_device_manager", "add_sub_device_response"),
    DeleteSubDeviceRequest(DeleteSubDeviceRequest) = ("$sub_device_manager", "delete_sub_device_request"),
    DeleteSubDeviceResponse(DeleteSubDeviceResponse) = ("$sub_device_manager", "delete_sub_device_response"),
    UpdateSubDeviceRequest(UpdateSubDeviceRequest) = ("$sub_device_manager", "update_sub_device_request"),
    UpdateSubDeviceResponse(UpdateSubDeviceResponse) = ("$sub_device_manager", "update_sub_device_response"),
}

impl SystemEvent {
    /// Wraps the event into a service event stamped with `event_time` (compact form).
    pub fn to_service_event(
        &self,
        event_time: Option<String>,
        event_id: Option<String>,
    ) -> ServiceEvent {
        ServiceEvent {
            service_id: ServiceId::trusted(self.service_id()),
            event_type: self.event_type().to_owned(),
            event_time,
            event_id,
            paras: self.paras(),
        }
    }

    fn check_limits(&self) -> Result<(), String> {
        let too_many = |n: usize, max: usize| -> Result<(), String> {
            if n > max {
                Err(format!("at most {max} devices per request"))
            } else {
                Ok(())
            }
        };
        match self {
            SystemEvent::AddSubDeviceRequest(r) => {
                too_many(r.devices.len(), MAX_SUB_DEVICES_PER_REQUEST)?;
                for d in &r.devices {
                    if let Some(info) = &d.extension_info
                        && info.to_string().len() > MAX_EXTENSION_INFO_BYTES
                    {
                        return Err("extension_info is larger than 1 KiB".into());
                    }
                }
                Ok(())
            }
            SystemEvent::DeleteSubDeviceRequest(r) => {
                too_many(r.devices.len(), MAX_SUB_DEVICES_PER_REQUEST)
            }
            SystemEvent::UpdateSubDeviceRequest(r) => {
                too_many(r.devices.len(), MAX_SUB_DEVICES_PER_REQUEST)
            }
            SystemEvent::SubDeviceUpdateStatus(r) => {
                if r.device_statuses.is_empty() || r.device_statuses.len() > MAX_STATUS_ENTRIES {
                    Err(format!(
                        "device_statuses must hold 1-{MAX_STATUS_ENTRIES} entries"
                    ))
                } else {
                    Ok(())
                }
            }
            SystemEvent::UpgradeProgressReport(r) if r.progress.is_some_and(|p| p > 100) => {
                Err("progress must be 0-100".into())
            }
            _ => Ok(()),
        }
    }
}

impl ServiceEvent {
    /// Classifies and decodes the event (spec/device-protocol.md §13 item 14).
    pub fn decode(&self) -> Result<EventKind, EventError> {
        let service = self.service_id.as_str();
        if !service.starts_with('$') {
            return Ok(EventKind::Model {
                service_id: self.service_id.clone(),
                event_type: self.event_type.clone(),
                paras: self.paras.clone(),
            });
        }
        // The source's example spells the device info report `$sdk_info` / `sdk_info_report`.
        let (service, event) = match (service, self.event_type.as_str()) {
            ("$sdk_info", "sdk_info_report") => ("$device_info", "device_info_report"),
            other => other,
        };
        // `device_info_report` may omit paras altogether.
        let empty = Value::Object(Default::default());
        let paras = if self.paras.is_null() {
            &empty
        } else {
            &self.paras
        };
        let err = |reason: String| EventError {
            service_id: self.service_id.to_string(),
            event_type: self.event_type.clone(),
            reason,
        };
        match SystemEvent::decode_known(service, event, paras) {
            None => Ok(EventKind::UnknownSystem {
                service_id: self.service_id.clone(),
                event_type: self.event_type.clone(),
            }),
            Some(Err(reason)) => Err(err(reason)),
            Some(Ok(ev)) => {
                ev.check_limits().map_err(err)?;
                Ok(EventKind::System(ev))
            }
        }
    }
}
