//! Asynchronous commands for every transport (spec/device-management.md §22, spec/README.md
//! decisions 1 and 2): one state machine ([`fleetgate_model::command`]), one durable per-device
//! cache in storage, and a [`CommandService`] that moves commands along.
//!
//! - A delayed command is in storage (synced) before [`CommandService::create`] returns PENDING.
//!   An immediate one goes out at once when the device is reachable and is FAILED otherwise.
//! - When a device wakes — MQTT connect, LwM2M registration or update, any CoAP uplink — its
//!   pending commands go out **one at a time**, in creation order: the next only after the
//!   current one settled (its result, or — with `serial = "delivered"` — its acknowledgement,
//!   or a terminal status). Expired ones become EXPIRED and are never sent.
//! - Deadlines live in storage (the expiry of PENDING commands, the acknowledgement deadline of
//!   SENT ones), so a restart loses none; one service thread sweeps them every second.
//! - Every status change goes onto the upstream queue as [`UpstreamEvent::CommandStatus`].
//!
//! Delivery is at-least-once: a command goes to the transport before its SENT status is
//! written, so a crash between the two sends it again after the restart rather than never.
//!
//! The transports ([`CommandTransport`]) are the MQTT platform and the CoAP endpoint; the
//! service picks one by the device's product protocol. Everything that writes runs on the
//! service thread; the API thread only enqueues (synced) and reads.

use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use dashmap::{DashMap, DashSet};
use fleetgate_model::command::{Command, CommandEvent, CommandStatus, NewCommand, SendStrategy};
use fleetgate_model::product::ProtocolType;
use fleetgate_model::{CommandId, DeviceId, ProductId, RequestId, Timestamp};
use fleetgate_storage::{Enqueued, Storage, StorageError};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::upstream::{Enqueue, UpstreamEvent, UpstreamSender};

/// When the serial queue of a device moves on to its next command (§24 item 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialMode {
    /// After the device's result (SUCCESSFUL/FAILED) or a terminal status.
    Result,
    /// As soon as the device acknowledged receipt (DELIVERED): shorter wake windows suffice.
    Delivered,
}

/// `[engine.commands]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandsConfig {
    /// Seconds after sending without an acknowledgement before a command is TIMEOUT (spec: 180).
    pub ack_timeout_secs: u64,
    /// Expiry of a delayed command when the request gives none (spec: 86400).
    pub default_expire_secs: u64,
    /// The largest `expire_time` accepted (spec: 172800).
    pub max_expire_secs: u64,
    /// When a device's next cached command goes out.
    pub serial: SerialMode,
    /// With `serial = "result"`: seconds a DELIVERED command may hold its device's queue while
    /// the device works on it. Past it the queue moves on; the command stays DELIVERED and
    /// still takes a late result (the spec sets no execution timeout, §22.3 design note).
    pub result_wait_secs: u64,
    /// Status events and wake-ups waiting for the service thread.
    pub queue_capacity: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            ack_timeout_secs: fleetgate_model::command::ACK_TIMEOUT_SECS,
            default_expire_secs: fleetgate_model::command::DEFAULT_EXPIRE_SECS,
            max_expire_secs: fleetgate_model::command::MAX_EXPIRE_SECS,
            serial: SerialMode::Result,
            result_wait_secs: 180,
            queue_capacity: 65_536,
        }
    }
}

impl CommandsConfig {
    /// Every problem, as `key: reason` lines.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=86_400).contains(&self.ack_timeout_secs) {
            p.push("engine.commands.ack_timeout_secs: must be between 1 and 86400".into());
        }
        if !(1..=31_536_000).contains(&self.max_expire_secs) {
            p.push("engine.commands.max_expire_secs: must be between 1 and 31536000".into());
        }
        if self.default_expire_secs == 0 || self.default_expire_secs > self.max_expire_secs {
            p.push(
                "engine.commands.default_expire_secs: must be between 1 and max_expire_secs".into(),
            );
        }
        if !(1..=86_400).contains(&self.result_wait_secs) {
            p.push("engine.commands.result_wait_secs: must be between 1 and 86400".into());
        }
        if !(16..=1 << 24).contains(&self.queue_capacity) {
            p.push("engine.commands.queue_capacity: must be between 16 and 16777216".into());
        }
        p
    }
}

/// Why a transport could not send a command now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The device cannot be reached now (offline, asleep).
    #[error("the device is not reachable")]
    Unreachable,
    /// The transport is overloaded.
    #[error("the transport is overloaded")]
    Busy,
    /// The command cannot be put on the wire (the product's codec refused it).
    #[error("cannot encode the command: {0}")]
    Encode(String),
}

/// A way to devices: MQTT sessions or CoAP endpoints.
pub trait CommandTransport: Send + Sync {
    /// Whether `device` can receive a command now.
    fn reachable(&self, device: &DeviceId) -> bool;
    /// Puts the command on the wire. Its acknowledgement and result come back through
    /// [`CommandService::acked`] and [`CommandService::result`].
    fn send(&self, command: &Command) -> Result<(), SendError>;
    /// Checks that the transport can encode the command (before it is accepted).
    fn check(&self, command: &Command) -> Result<(), SendError>;
}

/// How a command is asked for through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    /// Target, service, name and parameters.
    pub new: NewCommand,
    /// Immediately or delay.
    pub strategy: SendStrategy,
    /// The requested `expire_time` (seconds; delayed commands only).
    pub expire_secs: Option<u64>,
}

/// What [`CommandService::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new command, in its first status.
    New(Command),
    /// The request repeated an idempotency key: the command created the first time.
    Existing(Command),
}

/// Why a command was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CreateError {
    /// The request is invalid (expiry, keys, encoding).
    #[error("{0}")]
    Invalid(String),
    /// The device already holds the most pending commands allowed.
    #[error("the device already has {0} pending commands")]
    TooManyPending(usize),
    /// The device or its product is gone.
    #[error("the device does not exist")]
    UnknownDevice,
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<StorageError> for CreateError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::LimitExceeded { limit, .. } => {
                CreateError::TooManyPending(limit as usize)
            }
            StorageError::NotFound { .. } => CreateError::UnknownDevice,
            other => CreateError::Storage(other.to_string()),
        }
    }
}

/// Why a command could not be canceled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelError {
    /// No such command.
    #[error("the command does not exist")]
    NotFound,
    /// Only PENDING commands can be canceled.
    #[error("the command is {0}; only PENDING commands can be canceled")]
    NotPending(CommandStatus),
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Work for the service thread.
#[derive(Debug)]
enum Job {
    /// The device talked to us and may have PENDING commands.
    Wake(DeviceId),
    /// A delayed command was just stored for the device: it has a PENDING command.
    Queued(DeviceId),
    Acked(DeviceId, CommandId),
    Result(DeviceId, CommandId, bool, Value),
}

/// The command a device's queue waits on, and (once DELIVERED) until when at most.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    command: CommandId,
    hold_until: Option<std::time::Instant>,
}

/// Which transport a product's devices use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Mqtt,
    Coap,
}

/// The asynchronous-command service.
pub struct CommandService {
    storage: Arc<dyn Storage>,
    config: CommandsConfig,
    upstream: UpstreamSender,
    mqtt: OnceLock<Weak<dyn CommandTransport>>,
    coap: OnceLock<Weak<dyn CommandTransport>>,
    jobs: Sender<Job>,
    rx: parking_lot::Mutex<Option<Receiver<Job>>>,
    /// Device → the cached command it is working on (SENT, or DELIVERED while waiting for the
    /// result). Only devices with a command under way have an entry.
    inflight: DashMap<DeviceId, Inflight>,
    /// Devices that may have PENDING commands. A wake of any other device costs nothing: no
    /// job, no storage read (an MQTT connect or a CoAP uplink of a device without cached
    /// commands, nearly all of them). Filled from storage at [`CommandService::start`], added
    /// to for every delayed command (on the command thread, through [`Job::Queued`], so that
    /// it is ordered after any removal), and cleared by the command thread when it finds the
    /// device's queue empty.
    queued: DashSet<DeviceId>,
    products: Cache<ProductId, Via>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
    stop: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CommandService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService")
            .field("config", &self.config)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

/// The MQTT request id of an asynchronous command: its command id.
pub fn request_id_of(id: &CommandId) -> RequestId {
    // A hyphenated UUID is always a valid topic level.
    RequestId::new(id.to_string()).unwrap_or_else(|_| RequestId::generate())
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl CommandService {
    /// A service over `storage`, emitting status changes on `upstream`. Attach the transports,
    /// then [`CommandService::start`] it.
    pub fn new(
        storage: Arc<dyn Storage>,
        config: CommandsConfig,
        upstream: UpstreamSender,
    ) -> Arc<Self> {
        let (jobs, rx) = crossbeam_channel::bounded(config.queue_capacity.max(16));
        Arc::new(CommandService {
            storage,
            config,
            upstream,
            mqtt: OnceLock::new(),
            coap: OnceLock::new(),
            jobs,
            rx: parking_lot::Mutex::new(Some(rx)),
            inflight: DashMap::new(),
            queued: DashSet::new(),
            products: Cache::new(10_000),
            thread: parking_lot::Mutex::new(None),
            stop: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CommandsConfig {
        &self.config
    }

    /// Attaches the MQTT transport.
    pub fn attach_mqtt(&self, t: Weak<dyn CommandTransport>) {
        let _ = self.mqtt.set(t);
    }

    /// Attaches the CoAP transport.
    pub fn attach_coap(&self, t: Weak<dyn CommandTransport>) {
        let _ = self.coap.set(t);
    }

    /// Starts the service thread: wake-ups, acknowledgements, results, and the deadline sweep.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(rx) = self.rx.lock().take() else {
            return Ok(());
        };
        self.load_queued()?;
        let this = Arc::downgrade(self);
        let t = std::thread::Builder::new()
            .name("commands".into())
            .spawn(move || run(this, rx))?;
        *self.thread.lock() = Some(t);
        Ok(())
    }

    /// Marks every device with a stored PENDING command as queued. Every PENDING command has
    /// an expiry deadline within [`fleetgate_model::command::MAX_EXPIRE_SECS`], so the
    /// deadline index lists them all.
    fn load_queued(&self) -> std::io::Result<()> {
        let horizon = now().plus_secs(2 * fleetgate_model::command::MAX_EXPIRE_SECS);
        let due = self
            .storage
            .due_commands(horizon, usize::MAX)
            .map_err(|e| std::io::Error::other(format!("reading cached commands: {e}")))?;
        for c in due {
            if c.status == CommandStatus::Pending {
                self.queued.insert(c.device_id);
            }
        }
        Ok(())
    }

    /// Stops the service thread (pending work stays in storage).
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    fn via(&self, product: &ProductId) -> Via {
        if let Some(v) = self.products.get(product) {
            return v;
        }
        let via = match self.storage.get_product(product) {
            Ok(Some(p)) if p.protocol_type == ProtocolType::Coap => Via::Coap,
            _ => Via::Mqtt,
        };
        self.products.insert(product.clone(), via);
        via
    }

    fn transport(&self, device: &DeviceId) -> Option<Arc<dyn CommandTransport>> {
        let d = self.storage.get_device(device).ok().flatten()?;
        let slot = match self.via(&d.product_id) {
            Via::Mqtt => &self.mqtt,
            Via::Coap => &self.coap,
        };
        slot.get().and_then(Weak::upgrade)
    }

    /// Accepts an asynchronous command (§22.2): a delayed one is stored (synced) and PENDING —
    /// a newer command with the same `supersede_key` cancels the older pending ones, a repeated
    /// `idempotency_key` returns the first command —; an immediate one is sent at once, or
    /// FAILED when the device is not reachable.
    pub fn create(&self, req: CommandRequest) -> Result<Created, CreateError> {
        let device = req.new.device_id.clone();
        let transport = self.transport(&device).ok_or(CreateError::UnknownDevice)?;
        let at = now();
        match req.strategy {
            SendStrategy::Delay => {
                let secs = fleetgate_model::command::expire_secs(
                    req.expire_secs,
                    self.config.max_expire_secs,
                )
                .map_err(CreateError::Invalid)?;
                let secs = if req.expire_secs.is_none() {
                    self.config.default_expire_secs.min(secs)
                } else {
                    secs
                };
                let command = Command::new_delayed(req.new, secs, at);
                transport
                    .check(&command)
                    .map_err(|e| CreateError::Invalid(e.to_string()))?;
                match self.storage.enqueue_command(&command)? {
                    Enqueued::Existing(c) => return Ok(Created::Existing(c)),
                    Enqueued::Created { superseded } => {
                        for c in superseded {
                            self.emit(c);
                        }
                    }
                }
                self.emit(command.clone());
                self.queued.insert(device.clone());
                self.job(Job::Queued(device));
                Ok(Created::New(command))
            }
            SendStrategy::Immediately => {
                let deadline = at.plus_secs(self.config.ack_timeout_secs);
                if !transport.reachable(&device) {
                    let failed = Command::new_immediate(req.new, None, deadline, at);
                    return self.store_new(failed);
                }
                let id = CommandId::generate();
                let request_id = request_id_of(&id);
                let mut command =
                    Command::new_immediate(req.new, Some(Some(request_id)), deadline, at);
                command.command_id = id;
                transport
                    .check(&command)
                    .map_err(|e| CreateError::Invalid(e.to_string()))?;
                // Stored first: the answer may come back before this call returns.
                let created = self.store_new(command.clone())?;
                if let Created::Existing(_) = created {
                    return Ok(created);
                }
                if let Err(e) = transport.send(&command) {
                    let failed = self.update(
                        &command.command_id,
                        CommandEvent::Result {
                            success: false,
                            detail: Value::String(format!("not delivered: {e}")),
                        },
                    );
                    return Ok(Created::New(failed.unwrap_or(command)));
                }
                Ok(created)
            }
        }
    }

    fn store_new(&self, command: Command) -> Result<Created, CreateError> {
        match self.storage.enqueue_command(&command)? {
            Enqueued::Existing(c) => Ok(Created::Existing(c)),
            Enqueued::Created { .. } => {
                self.emit(command.clone());
                Ok(Created::New(command))
            }
        }
    }

    /// Cancels a PENDING command.
    pub fn cancel(&self, id: &CommandId) -> Result<Command, CancelError> {
        let mut status = None;
        let r = self.storage.update_command(id, &mut |c| {
            status = Some(c.status);
            c.apply(CommandEvent::Canceled, now())
                .map_err(StorageError::abort)
        });
        match r {
            Ok(c) => {
                self.emit(c.clone());
                Ok(c)
            }
            Err(StorageError::NotFound { .. }) => Err(CancelError::NotFound),
            Err(StorageError::Aborted(_)) => Err(CancelError::NotPending(
                status.unwrap_or(CommandStatus::Pending),
            )),
            Err(e) => Err(CancelError::Storage(e.to_string())),
        }
    }

    /// The device talked to us: send its next cached command if it has one and none is under
    /// way. Cheap to call on every uplink.
    pub fn wake(&self, device: &DeviceId) {
        if self.inflight.contains_key(device) || !self.queued.contains(device) {
            return;
        }
        let _ = self.jobs.try_send(Job::Wake(device.clone()));
    }

    /// The device acknowledged receipt of a command (CoAP empty ACK, MQTT PUBACK).
    pub fn acked(&self, device: &DeviceId, command: CommandId) {
        self.job(Job::Acked(device.clone(), command));
    }

    /// The device answered a command: `success` and the decoded response, or a transport
    /// failure (reset, error code) as `success = false`.
    pub fn result(&self, device: &DeviceId, command: CommandId, success: bool, detail: Value) {
        self.job(Job::Result(device.clone(), command, success, detail));
    }

    /// Answers the MQTT platform's question "is this response to a command of mine?":
    /// request ids of asynchronous commands are their command ids.
    pub fn claims(&self, request_id: &RequestId) -> Option<CommandId> {
        request_id.to_string().parse().ok()
    }

    fn job(&self, job: Job) {
        // A full queue blocks the caller briefly rather than losing a status change.
        if self.jobs.send_timeout(job, Duration::from_secs(1)).is_err() {
            tracing::warn!("command service queue full: an acknowledgement or result was dropped");
        }
    }

    fn emit(&self, command: Command) {
        let mut ev = UpstreamEvent::CommandStatus(Box::new(command));
        for _ in 0..100 {
            match self.upstream.try_send(ev) {
                Enqueue::Done | Enqueue::Closed => return,
                Enqueue::Full(back) => {
                    ev = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        tracing::warn!("upstream queue full for a second: a command status event was dropped");
    }

    fn update(&self, id: &CommandId, event: CommandEvent) -> Option<Command> {
        let r = self.storage.update_command(id, &mut |c| {
            c.apply(event.clone(), now()).map_err(StorageError::abort)
        });
        match r {
            Ok(c) => {
                self.emit(c.clone());
                Some(c)
            }
            Err(StorageError::Aborted(reason)) => {
                tracing::debug!(command = %id, reason = %reason, "command event ignored");
                None
            }
            Err(e) => {
                tracing::warn!(command = %id, error = %e, "cannot update command");
                None
            }
        }
    }

    /// Sends the device's next cached command, when nothing is under way.
    fn next(&self, device: &DeviceId) {
        if self.inflight.contains_key(device) {
            return;
        }
        match self.storage.unsettled_command(device) {
            Ok(Some(c)) if !self.settled_for_queue(&c) => {
                // Sent before (perhaps by a previous run): wait for its answer or deadline.
                self.inflight.insert(
                    device.clone(),
                    Inflight {
                        command: c.command_id,
                        hold_until: None,
                    },
                );
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "cannot read the device's command in flight");
                return;
            }
        }
        let Some(transport) = self.transport(device) else {
            return;
        };
        loop {
            if !transport.reachable(device) {
                return;
            }
            let next = match self.storage.pending_commands(device, 1) {
                Ok(mut v) => v.pop(),
                Err(e) => {
                    tracing::warn!(device = %device, error = %e, "cannot read pending commands");
                    return;
                }
            };
            let Some(c) = next else {
                // Only this thread removes, and a newer delayed command re-inserts through
                // Job::Queued, which this thread sees after this removal.
                self.queued.remove(device);
                return;
            };
            let at = now();
            if c.is_expired_at(at) {
                self.update(&c.command_id, CommandEvent::Expired);
                continue;
            }
            match transport.send(&c) {
                Ok(()) => {
                    let sent = CommandEvent::Sent {
                        request_id: Some(request_id_of(&c.command_id)),
                        ack_deadline: at.plus_secs(self.config.ack_timeout_secs),
                    };
                    if self.update(&c.command_id, sent).is_some() {
                        self.inflight.insert(
                            device.clone(),
                            Inflight {
                                command: c.command_id,
                                hold_until: None,
                            },
                        );
                    }
                    return;
                }
                Err(SendError::Unreachable | SendError::Busy) => return,
                Err(SendError::Encode(reason)) => {
                    // The codec changed since the command was accepted: it can never go out.
                    self.update(
                        &c.command_id,
                        CommandEvent::Sent {
                            request_id: None,
                            ack_deadline: at.plus_secs(self.config.ack_timeout_secs),
                        },
                    );
                    self.update(
                        &c.command_id,
                        CommandEvent::Result {
                            success: false,
                            detail: Value::String(format!("cannot encode: {reason}")),
                        },
                    );
                }
            }
        }
    }

    fn settled_for_queue(&self, c: &Command) -> bool {
        match self.config.serial {
            SerialMode::Result => c.status.is_terminal(),
            SerialMode::Delivered => c.status.is_settled(),
        }
    }

    /// Applies a device's acknowledgement or result and moves its queue on when the command
    /// settled.
    fn on_answer(&self, device: &DeviceId, id: CommandId, event: CommandEvent) {
        let Ok(Some(c)) = self.storage.get_command(&id) else {
            return;
        };
        if &c.device_id != device {
            tracing::debug!(command = %id, device = %device, "answer from another device ignored");
            return;
        }
        let Some(after) = self.update(&id, event) else {
            return;
        };
        self.after_change(&after);
    }

    fn after_change(&self, c: &Command) {
        let ours = self
            .inflight
            .get(&c.device_id)
            .is_some_and(|v| v.command == c.command_id);
        if !ours {
            return;
        }
        if self.settled_for_queue(c) {
            self.inflight.remove(&c.device_id);
            self.next(&c.device_id);
        } else if c.status == CommandStatus::Delivered
            && let Some(mut v) = self.inflight.get_mut(&c.device_id)
        {
            v.hold_until =
                Some(std::time::Instant::now() + Duration::from_secs(self.config.result_wait_secs));
        }
    }

    /// Devices whose DELIVERED command held the queue past `result_wait_secs` move on.
    fn release_held(&self) {
        let now = std::time::Instant::now();
        let held: Vec<DeviceId> = self
            .inflight
            .iter()
            .filter(|e| e.hold_until.is_some_and(|t| t <= now))
            .map(|e| e.key().clone())
            .collect();
        for d in held {
            self.inflight.remove(&d);
            self.next(&d);
        }
    }

    /// Expires overdue PENDING commands and times out SENT ones past their deadline.
    fn sweep(&self) {
        let at = now();
        loop {
            let due = match self.storage.due_commands(at, 512) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due commands");
                    return;
                }
            };
            let n = due.len();
            for c in due {
                let event = match c.status {
                    CommandStatus::Pending => CommandEvent::Expired,
                    CommandStatus::Sent => CommandEvent::AckTimeout,
                    _ => continue,
                };
                if let Some(after) = self.update(&c.command_id, event) {
                    self.after_change(&after);
                }
            }
            if n < 512 {
                return;
            }
        }
    }
}

fn run(service: Weak<CommandService>, rx: Receiver<Job>) {
    let tick = Duration::from_secs(1);
    let mut last_sweep = std::time::Instant::now();
    loop {
        let job = rx.recv_timeout(tick);
        let Some(s) = service.upgrade() else { return };
        if s.stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        match job {
            Ok(Job::Wake(d)) => s.next(&d),
            Ok(Job::Queued(d)) => {
                s.queued.insert(d.clone());
                s.next(&d);
            }
            Ok(Job::Acked(d, id)) => s.on_answer(&d, id, CommandEvent::Acked),
            Ok(Job::Result(d, id, success, detail)) => {
                s.on_answer(&d, id, CommandEvent::Result { success, detail })
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_sweep.elapsed() >= tick {
            last_sweep = std::time::Instant::now();
            s.sweep();
            s.release_held();
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetgate_model::command::{CommandMode, NewCommand};
    use fleetgate_model::device::{Credential, DeviceSecret};
    use fleetgate_model::{CommandName, testing};
    use fleetgate_storage::{DeviceStore, MemStore, ProductStore};

    use super::*;
    use crate::config::UpstreamPolicy;
    use crate::upstream::UpstreamQueue;

    /// A service over a store with the water meter product and devices `d1`, `d2`; not
    /// started, so its jobs stay in the queue where the test can count them.
    fn service() -> (Arc<CommandService>, Arc<dyn Storage>, UpstreamQueue) {
        let store = MemStore::in_memory();
        let product = testing::water_meter();
        store.create_product(&product).unwrap();
        let cred = Credential::Secret(DeviceSecret::new("s3cret-value").unwrap());
        for node in ["d1", "d2"] {
            store
                .create_device(&testing::device(&product, node), &cred)
                .unwrap();
        }
        let storage: Arc<dyn Storage> = Arc::new(store);
        let queue = UpstreamQueue::new(1024, UpstreamPolicy::Backpressure);
        let s = CommandService::new(
            Arc::clone(&storage),
            CommandsConfig::default(),
            queue.sender(),
        );
        (s, storage, queue)
    }

    /// Every device reachable, every send accepted.
    struct Reachable;

    impl CommandTransport for Reachable {
        fn reachable(&self, _device: &DeviceId) -> bool {
            true
        }
        fn send(&self, _command: &Command) -> Result<(), SendError> {
            Ok(())
        }
        fn check(&self, _command: &Command) -> Result<(), SendError> {
            Ok(())
        }
    }

    fn queued_jobs(s: &CommandService) -> usize {
        s.rx.lock().as_ref().map_or(0, Receiver::len)
    }

    fn device(node: &str) -> DeviceId {
        testing::device(&testing::water_meter(), node).device_id
    }

    #[test]
    fn waking_a_device_without_cached_commands_costs_no_job() {
        let (s, storage, _queue) = service();
        let transport: Arc<dyn CommandTransport> = Arc::new(Reachable);
        s.attach_mqtt(Arc::downgrade(&transport));
        let d1 = device("d1");
        let pending = Command::new_delayed(
            NewCommand {
                device_id: d1.clone(),
                app_id: testing::app(),
                mode: CommandMode::Async,
                service_id: None,
                command_name: CommandName::new("SET").unwrap(),
                paras: Value::Null,
                supersede_key: None,
                idempotency_key: None,
            },
            3600,
            now(),
        );
        storage.enqueue_command(&pending).unwrap();

        s.wake(&d1);
        s.wake(&device("d2"));
        assert_eq!(
            queued_jobs(&s),
            0,
            "nothing is known to be queued before start"
        );

        // What start() does first: every device with a stored PENDING command is queued.
        s.load_queued().unwrap();
        s.wake(&device("d2"));
        assert_eq!(queued_jobs(&s), 0, "d2 has no cached command");
        s.wake(&d1);
        assert_eq!(queued_jobs(&s), 1, "d1 has one");

        // The command thread finds d1's queue empty once its command is gone: d1 is no
        // longer queued and its next wake costs nothing.
        storage
            .update_command(&pending.command_id, &mut |c| {
                c.apply(CommandEvent::Canceled, now())
                    .map_err(StorageError::abort)
            })
            .unwrap();
        s.next(&d1);
        s.wake(&d1);
        assert_eq!(queued_jobs(&s), 1, "no second job for d1");
    }
}
