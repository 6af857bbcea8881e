//! Commands and their one state machine for every transport (spec/device-management.md §22.3,
//! spec/README.md decision 1):
//!
//! ```text
//! delay:      create ─► PENDING ─(sent on wake, its turn)─► SENT
//!                        ├─(expiry first)─► EXPIRED                           [terminal]
//!                        └─(canceled / superseded)─► CANCELED                [terminal]
//! immediately: create ─► SENT (device online) | FAILED (offline)            [FAILED terminal]
//! common:     SENT ─(ACK)─► DELIVERED ─(result ok/failed)─► SUCCESSFUL | FAILED [terminal]
//!             SENT ─(result without a separate ACK)─► SUCCESSFUL | FAILED    [terminal]
//!             SENT ─(no ACK in time, 180 s)─► TIMEOUT                        [terminal]
//! ```
//!
//! A result that arrives without a separate acknowledgement (an MQTT response, a piggybacked
//! CoAP response) implies delivery: `delivered_time` is set to the response time. DELIVERED
//! has no timeout of its own: it is "settled" for the serial queue and stays DELIVERED until a
//! result arrives (the spec leaves this open; §22.3 design note).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AppId, CommandId, CommandName, DeviceId, RequestId, ServiceId};
use crate::time::Timestamp;

/// Default expiry of a cached command: 24 h (§22.2).
pub const DEFAULT_EXPIRE_SECS: u64 = 86_400;
/// Largest allowed expiry: 48 h (spec/README.md decision 2).
pub const MAX_EXPIRE_SECS: u64 = 172_800;
/// Time allowed for the device's acknowledgement after sending: 180 s (§22.3).
pub const ACK_TIMEOUT_SECS: u64 = 180;
/// Most pending cached commands per device by default (spec/README.md decision 2).
pub const DEFAULT_MAX_PENDING_PER_DEVICE: usize = 20;

/// How an asynchronous command is delivered (§22.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendStrategy {
    /// Now, or fail if the device is offline.
    Immediately,
    /// Cached until the device wakes, then sent in order.
    Delay,
}

/// Where a command came from: the synchronous API or the asynchronous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandMode {
    /// `POST .../commands`: the HTTP call waits for the device's answer.
    Sync,
    /// `POST .../async-commands`: status changes are pushed.
    Async,
}

/// A command's status (§22.3 plus CANCELED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    /// Cached, waiting for the device.
    Pending,
    /// Sent, waiting for the acknowledgement.
    Sent,
    /// Acknowledged by the device, waiting for its result.
    Delivered,
    /// Executed successfully.
    Successful,
    /// Executed with failure, or (immediate mode) the device was offline.
    Failed,
    /// No acknowledgement in time after sending.
    Timeout,
    /// Not delivered before its expiry.
    Expired,
    /// Canceled by the application or replaced by a newer command with the same supersede key.
    Canceled,
}

impl CommandStatus {
    /// Every status, for filters and metrics.
    pub const ALL: [CommandStatus; 8] = [
        CommandStatus::Pending,
        CommandStatus::Sent,
        CommandStatus::Delivered,
        CommandStatus::Successful,
        CommandStatus::Failed,
        CommandStatus::Timeout,
        CommandStatus::Expired,
        CommandStatus::Canceled,
    ];

    /// Whether no further transition is possible.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            CommandStatus::Pending | CommandStatus::Sent | CommandStatus::Delivered
        )
    }

    /// Whether the serial queue may move on to the next command (§24 item 2).
    pub fn is_settled(self) -> bool {
        !matches!(self, CommandStatus::Pending | CommandStatus::Sent)
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "PENDING",
            CommandStatus::Sent => "SENT",
            CommandStatus::Delivered => "DELIVERED",
            CommandStatus::Successful => "SUCCESSFUL",
            CommandStatus::Failed => "FAILED",
            CommandStatus::Timeout => "TIMEOUT",
            CommandStatus::Expired => "EXPIRED",
            CommandStatus::Canceled => "CANCELED",
        }
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device's answer, as pushed: `{"resultCode": "SUCCESSFUL", "resultDetail": {...}}` (§22.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// `SUCCESSFUL` or `FAILED`.
    #[serde(rename = "resultCode")]
    pub result_code: String,
    /// The decoded response parameters.
    #[serde(rename = "resultDetail", default)]
    pub result_detail: Value,
}

/// A command and its history (§22).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The command's UUID.
    pub command_id: CommandId,
    /// The target device.
    pub device_id: DeviceId,
    /// The resource space of the device.
    pub app_id: AppId,
    /// Sync or async API.
    pub mode: CommandMode,
    /// The service of the command (absent: any service of the model).
    #[serde(default)]
    pub service_id: Option<ServiceId>,
    /// The command's name.
    pub command_name: CommandName,
    /// Its parameters.
    #[serde(default)]
    pub paras: Value,
    /// Immediately or delay.
    pub send_strategy: SendStrategy,
    /// For delayed commands: when it expires unless sent (creation + `expire_time`).
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// The correlation id used on the device topic, once sent over MQTT.
    #[serde(default)]
    pub request_id: Option<RequestId>,
    /// Current status.
    pub status: CommandStatus,
    /// Creation time.
    pub created_time: Timestamp,
    /// When it was sent.
    #[serde(default)]
    pub sent_time: Option<Timestamp>,
    /// When the device acknowledged it.
    #[serde(default)]
    pub delivered_time: Option<Timestamp>,
    /// When the device answered (or the command reached another terminal state).
    #[serde(default)]
    pub response_time: Option<Timestamp>,
    /// The device's answer.
    #[serde(default)]
    pub result: Option<CommandResult>,
}

/// What happened to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandEvent {
    /// It went out to the device.
    Sent {
        /// The correlation id used, if the transport has one.
        request_id: Option<RequestId>,
    },
    /// The device acknowledged receipt.
    Acked,
    /// The device answered with its execution result.
    Result {
        /// Success or failure.
        success: bool,
        /// The decoded response.
        detail: Value,
    },
    /// No acknowledgement (or, for sync commands, no answer) within the deadline.
    AckTimeout,
    /// The expiry passed before it could be sent.
    Expired,
    /// The application canceled it, or a newer command superseded it.
    Canceled,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command {command_id} cannot go from {from} on {event}")]
pub struct InvalidTransition {
    /// The command.
    pub command_id: CommandId,
    /// Its status.
    pub from: CommandStatus,
    /// The event's name.
    pub event: &'static str,
}

impl CommandEvent {
    fn name(&self) -> &'static str {
        match self {
            CommandEvent::Sent { .. } => "sent",
            CommandEvent::Acked => "acked",
            CommandEvent::Result { .. } => "result",
            CommandEvent::AckTimeout => "ack timeout",
            CommandEvent::Expired => "expired",
            CommandEvent::Canceled => "canceled",
        }
    }
}

/// What the API needs to create a command.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    /// The target device.
    pub device_id: DeviceId,
    /// Its resource space.
    pub app_id: AppId,
    /// Sync or async.
    pub mode: CommandMode,
    /// Service of the model.
    pub service_id: Option<ServiceId>,
    /// Command name.
    pub command_name: CommandName,
    /// Parameters.
    pub paras: Value,
}

impl Command {
    /// A delayed (cached) command: PENDING until the device wakes or `expire_secs` pass.
    pub fn new_delayed(new: NewCommand, expire_secs: u64, now: Timestamp) -> Command {
        Self::build(
            new,
            SendStrategy::Delay,
            CommandStatus::Pending,
            Some(now.plus_secs(expire_secs)),
            now,
        )
    }

    /// An immediate command: SENT when the device was online and it went out, FAILED otherwise
    /// (immediate mode has no PENDING and no EXPIRED, §24 item 3).
    pub fn new_immediate(
        new: NewCommand,
        sent: Option<Option<RequestId>>,
        now: Timestamp,
    ) -> Command {
        let status = if sent.is_some() {
            CommandStatus::Sent
        } else {
            CommandStatus::Failed
        };
        let mut c = Self::build(new, SendStrategy::Immediately, status, None, now);
        match sent {
            Some(request_id) => {
                c.sent_time = Some(now);
                c.request_id = request_id;
            }
            None => {
                c.response_time = Some(now);
                c.result = Some(CommandResult {
                    result_code: "FAILED".into(),
                    result_detail: Value::String("device offline".into()),
                });
            }
        }
        c
    }

    fn build(
        new: NewCommand,
        send_strategy: SendStrategy,
        status: CommandStatus,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Command {
        Command {
            command_id: CommandId::generate(),
            device_id: new.device_id,
            app_id: new.app_id,
            mode: new.mode,
            service_id: new.service_id,
            command_name: new.command_name,
            paras: new.paras,
            send_strategy,
            expires_at,
            request_id: None,
            status,
            created_time: now,
            sent_time: None,
            delivered_time: None,
            response_time: None,
            result: None,
        }
    }

    /// Whether a pending command's expiry has passed at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.status == CommandStatus::Pending && self.expires_at.is_some_and(|e| e <= now)
    }

    /// Applies an event at `now`. An expired PENDING command can no longer be sent.
    pub fn apply(&mut self, event: CommandEvent, now: Timestamp) -> Result<(), InvalidTransition> {
        use CommandStatus as S;
        let invalid = |c: &Command, e: &CommandEvent| InvalidTransition {
            command_id: c.command_id,
            from: c.status,
            event: e.name(),
        };
        match (&event, self.status) {
            (CommandEvent::Sent { request_id }, S::Pending) if !self.is_expired_at(now) => {
                self.status = S::Sent;
                self.sent_time = Some(now);
                self.request_id = request_id.clone();
            }
            (CommandEvent::Acked, S::Sent) => {
                self.status = S::Delivered;
                self.delivered_time = Some(now);
            }
            (CommandEvent::Result { success, detail }, S::Sent | S::Delivered) => {
                self.delivered_time.get_or_insert(now);
                self.status = if *success { S::Successful } else { S::Failed };
                self.response_time = Some(now);
                self.result = Some(CommandResult {
                    result_code: self.status.as_str().to_owned(),
                    result_detail: detail.clone(),
                });
            }
            (CommandEvent::AckTimeout, S::Sent) => {
                self.status = S::Timeout;
                self.response_time = Some(now);
            }
            (CommandEvent::Expired, S::Pending) if self.is_expired_at(now) => {
                self.status = S::Expired;
                self.response_time = Some(now);
            }
            (CommandEvent::Canceled, S::Pending) => {
                self.status = S::Canceled;
                self.response_time = Some(now);
            }
            _ => return Err(invalid(self, &event)),
        }
        Ok(())
    }
}

/// Checks and normalises a requested expiry (§22.2 design note): absent means 24 h; `0`
/// with `delay` is refused (a command that may never be cached cannot be delayed); more than
/// `max_secs` is refused.
pub fn expire_secs(requested: Option<u64>, max_secs: u64) -> Result<u64, String> {
    match requested {
        None => Ok(DEFAULT_EXPIRE_SECS.min(max_secs)),
        Some(0) => Err("expire_time must be at least 1 second for delayed commands".into()),
        Some(s) if s > max_secs => Err(format!("expire_time may not exceed {max_secs} seconds")),
        Some(s) => Ok(s),
    }
}

#[cfg(test)]
mod tests;
