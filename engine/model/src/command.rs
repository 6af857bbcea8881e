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
//!             SENT ─(no ACK by its ack deadline, 180 s)─► TIMEOUT            [terminal]
//! ```
//!
//! Every edge, with the event that takes it and the times it sets (nothing else changes, and a
//! time once set never changes again):
//!
//! | from | event | to | sets |
//! |---|---|---|---|
//! | PENDING | `Sent` (before `expires_at`) | SENT | `sent_time`, `request_id`, `ack_deadline` |
//! | PENDING | `Expired` (at or after `expires_at`) | EXPIRED | `response_time` |
//! | PENDING | `Canceled` | CANCELED | `response_time` |
//! | PENDING | `Superseded` | CANCELED | `response_time`, `result` ("superseded by {id}") |
//! | SENT | `Acked` | DELIVERED | `delivered_time`; clears `ack_deadline` |
//! | SENT | `Result` | SUCCESSFUL / FAILED | `delivered_time` (= now), `response_time`, `result`; clears `ack_deadline` |
//! | SENT | `AckTimeout` | TIMEOUT | `response_time`; clears `ack_deadline` |
//! | DELIVERED | `Result` | SUCCESSFUL / FAILED | `response_time`, `result` |
//!
//! Creation: [`Command::new_delayed`] makes PENDING with `expires_at`; [`Command::new_immediate`]
//! makes SENT (with `sent_time`, `request_id`, `ack_deadline`) or FAILED (with `response_time`
//! and a "device offline" result). Any other event is refused ([`InvalidTransition`]) and
//! leaves the command unchanged; a terminal status refuses every event. A SENT command can no
//! longer expire (§22.3): its only clock is the ack deadline.
//!
//! `ack_deadline` is set exactly while the command is SENT: the caller computes it when sending
//! (now + its configured acknowledgement timeout, [`ACK_TIMEOUT_SECS`] by default) so that a
//! restarted process still knows when to time the command out. [`CommandEvent::AckTimeout`]
//! is accepted from SENT at any time: the caller decides when its timer fired.
//!
//! A result that arrives without a separate acknowledgement (an MQTT response, a piggybacked
//! CoAP response) implies delivery: `delivered_time` is set to the response time. DELIVERED
//! has no timeout of its own: it is "settled" for the serial queue and stays DELIVERED until a
//! result arrives (the spec leaves this open; §22.3 design note).
//!
//! Two optional keys, both 1–64 characters of `[A-Za-z0-9_.:-]` ([`validate_key`]), shape how
//! the store queues a new command: an `idempotency_key` makes a repeated request return the
//! command created first instead of a second one, and a `supersede_key` cancels the device's
//! PENDING commands with the same key (a newer configuration replaces an older, unsent one).

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
/// Longest supersede or idempotency key, in characters.
pub const MAX_KEY_LEN: usize = 64;

/// Checks a supersede or idempotency key: 1–[`MAX_KEY_LEN`] characters of `[A-Za-z0-9_.:-]`.
/// The error is a message for the API's 400 answer.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("must be at most {MAX_KEY_LEN} characters"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err("only letters, digits, '_', '.', ':' and '-' are allowed".into());
    }
    Ok(())
}

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
/// fleetgate writes one itself for an immediate command to an offline device (`FAILED`, "device
/// offline") and for a superseded one (`CANCELED`, "superseded by {command id}").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// `SUCCESSFUL` or `FAILED` (`CANCELED` for a superseded command).
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
    /// While SENT: when the command times out unless the device acknowledges it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_deadline: Option<Timestamp>,
    /// A newer command with the same key cancels this one while it is PENDING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersede_key: Option<String>,
    /// At most one command per device carries a given key: a repeated request returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What happened to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandEvent {
    /// It went out to the device.
    Sent {
        /// The correlation id used, if the transport has one.
        request_id: Option<RequestId>,
        /// When it times out without an acknowledgement: the send time plus the caller's
        /// acknowledgement timeout ([`ACK_TIMEOUT_SECS`] by default). A deadline before the send
        /// time is taken as the send time.
        ack_deadline: Timestamp,
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
    /// The application canceled it.
    Canceled,
    /// A newer command with the same supersede key replaced it while it was PENDING.
    Superseded {
        /// The newer command.
        by: CommandId,
    },
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
            CommandEvent::Superseded { .. } => "superseded",
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
    /// Cancels the device's PENDING commands with the same key ([`validate_key`]).
    pub supersede_key: Option<String>,
    /// Makes a repeated request return the first command ([`validate_key`]).
    pub idempotency_key: Option<String>,
}

impl NewCommand {
    /// Checks the optional keys; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, key) in [
            ("supersede_key", &self.supersede_key),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if let Some(k) = key {
                validate_key(k).map_err(|e| format!("{field} {e}"))?;
            }
        }
        Ok(())
    }
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

    /// An immediate command: SENT when the device was online and it went out (`sent` holds the
    /// correlation id used, if any; `ack_deadline` is when it times out without an
    /// acknowledgement, at least `now`), FAILED otherwise, when `ack_deadline` is not used
    /// (immediate mode has no PENDING and no EXPIRED, §24 item 3).
    pub fn new_immediate(
        new: NewCommand,
        sent: Option<Option<RequestId>>,
        ack_deadline: Timestamp,
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
                c.ack_deadline = Some(ack_deadline.max(now));
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
            ack_deadline: None,
            supersede_key: new.supersede_key,
            idempotency_key: new.idempotency_key,
        }
    }

    /// When the store must next look at the command unless an event comes first: a PENDING
    /// command's expiry, a SENT command's ack deadline; `None` otherwise.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self.status {
            CommandStatus::Pending => self.expires_at,
            CommandStatus::Sent => self.ack_deadline,
            _ => None,
        }
    }

    /// Whether a pending command's expiry has passed at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.status == CommandStatus::Pending && self.expires_at.is_some_and(|e| e <= now)
    }

    /// Applies an event at `now` (see the table in the module documentation). An expired
    /// PENDING command can no longer be sent; a refused event changes nothing.
    pub fn apply(&mut self, event: CommandEvent, now: Timestamp) -> Result<(), InvalidTransition> {
        use CommandStatus as S;
        let invalid = |c: &Command, e: &CommandEvent| InvalidTransition {
            command_id: c.command_id,
            from: c.status,
            event: e.name(),
        };
        match (&event, self.status) {
            (
                CommandEvent::Sent {
                    request_id,
                    ack_deadline,
                },
                S::Pending,
            ) if !self.is_expired_at(now) => {
                self.status = S::Sent;
                self.sent_time = Some(now);
                self.request_id = request_id.clone();
                self.ack_deadline = Some((*ack_deadline).max(now));
            }
            (CommandEvent::Acked, S::Sent) => {
                self.status = S::Delivered;
                self.delivered_time = Some(now);
                self.ack_deadline = None;
            }
            (CommandEvent::Result { success, detail }, S::Sent | S::Delivered) => {
                self.ack_deadline = None;
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
                self.ack_deadline = None;
            }
            (CommandEvent::Expired, S::Pending) if self.is_expired_at(now) => {
                self.status = S::Expired;
                self.response_time = Some(now);
            }
            (CommandEvent::Canceled, S::Pending) => {
                self.status = S::Canceled;
                self.response_time = Some(now);
            }
            (CommandEvent::Superseded { by }, S::Pending) => {
                self.status = S::Canceled;
                self.response_time = Some(now);
                self.result = Some(CommandResult {
                    result_code: S::Canceled.as_str().to_owned(),
                    result_detail: Value::String(format!("superseded by {by}")),
                });
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
