//! The store traits, one per concern. They are synchronous: the engine calls them from a
//! storage worker pool, never from a reactor thread; the API calls them from its own threads.
//! Read-modify-write operations take a mutation closure that runs under the store's lock for
//! that record; a closure that returns an error leaves the record unchanged.
//!
//! Every trait is object safe so that callers can hold an `Arc<dyn Storage>`.

use fleetgate_model::app::{ApiKey, Application};
use fleetgate_model::command::{Command, CommandStatus};
use fleetgate_model::device::{Credential, Device, DeviceStatus, Group, StatusEvent};
use fleetgate_model::lwm2m::{Registration, RegistrationId};
use fleetgate_model::ota::{OtaDeviceProgress, OtaPackage, OtaTask};
use fleetgate_model::product::Product;
use fleetgate_model::rule::{AclRule, RoutingRule, RuleAction};
use fleetgate_model::shadow::Shadow;
use fleetgate_model::{
    AclRuleId, ActionId, AppId, CommandId, DeviceId, GroupId, NodeId, PackageId, ProductId, RuleId,
    TaskId, Timestamp,
};

use crate::error::{Result, StorageError};
use crate::kv::{Durability, EngineStat};

/// A mutation of a record, run under the record's lock.
pub type Mutation<'a, T> = &'a mut dyn FnMut(&mut T) -> Result<()>;

/// One page of a listing and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Pass to the next call to continue; `None` when the listing is complete.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page with no items and no continuation.
    pub fn empty() -> Self {
        Page {
            items: Vec::new(),
            next: None,
        }
    }
}

/// Filters for device listings; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceQuery {
    /// Resource space.
    pub app_id: Option<AppId>,
    /// Product.
    pub product_id: Option<ProductId>,
    /// Status.
    pub status: Option<DeviceStatus>,
    /// Sub-devices of this gateway.
    pub gateway_id: Option<DeviceId>,
    /// Members of this group.
    pub group_id: Option<GroupId>,
    /// Carrying this tag key (and value, when given).
    pub tag: Option<(String, Option<String>)>,
    /// Node id starts with this.
    pub node_id_prefix: Option<String>,
}

/// Store limits that the stores enforce atomically with the change they guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Pending cached commands per device.
    pub max_pending_commands: usize,
    /// Groups a device may belong to.
    pub max_groups_per_device: usize,
    /// Devices per group.
    pub max_devices_per_group: u32,
    /// Tags per device.
    pub max_tags_per_device: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_commands: fleetgate_model::command::DEFAULT_MAX_PENDING_PER_DEVICE,
            max_groups_per_device: 10,
            max_devices_per_group: 20_000,
            max_tags_per_device: 10,
        }
    }
}

/// Products and product models.
pub trait ProductStore {
    /// Stores a new product; its id and its name must be unused. Synced.
    fn create_product(&self, product: &Product) -> Result<()>;
    /// Reads a product.
    fn get_product(&self, id: &ProductId) -> Result<Option<Product>>;
    /// Changes a product (not its id); a new name must be unused. Synced.
    fn update_product(&self, id: &ProductId, f: Mutation<'_, Product>) -> Result<Product>;
    /// Deletes a product that has no devices left ([`StorageError::Conflict`] otherwise). Synced.
    fn delete_product(&self, id: &ProductId) -> Result<Product>;
    /// Lists a resource space's products (all when `app` is `None`) in id order.
    fn list_products(
        &self,
        app: Option<&AppId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Product>>;
}

/// Devices, their credentials and group memberships.
pub trait DeviceStore {
    /// Registers a device with its credential. The product must exist, the device id and the
    /// (product, node id) pair must be unused, a sub-device's gateway must exist. Synced.
    fn create_device(&self, device: &Device, credential: &Credential) -> Result<()>;
    /// Reads a device.
    fn get_device(&self, id: &DeviceId) -> Result<Option<Device>>;
    /// Reads a device's credential.
    fn get_credential(&self, id: &DeviceId) -> Result<Option<Credential>>;
    /// Replaces a device's credential (reset secret). Synced.
    fn set_credential(&self, id: &DeviceId, credential: &Credential) -> Result<()>;
    /// Removes a device's credential, so that it cannot connect until a new one is set;
    /// returns whether there was one. Synced.
    fn delete_credential(&self, id: &DeviceId) -> Result<bool>;
    /// Changes a device. Ids, product and node id cannot change; groups change only through
    /// [`GroupStore`]; indexes follow status, gateway and tag changes.
    fn update_device(
        &self,
        id: &DeviceId,
        durability: Durability,
        f: Mutation<'_, Device>,
    ) -> Result<Device>;
    /// Applies a connection event (connect, connection lost, uplink, silence; not freeze or
    /// unfreeze, which go through [`DeviceStore::update_device`]) to the device's status and
    /// returns the device after it. Writes only the device's presence — a few bytes, no index
    /// — so that connects and disconnects stay cheap for large fleets. A frozen device's
    /// connect fails with the model's `StatusError` ([`StorageError::aborted`]).
    fn apply_presence_event(
        &self,
        id: &DeviceId,
        event: StatusEvent,
        at: Timestamp,
        durability: Durability,
    ) -> Result<Device>;
    /// What authenticating a connection needs, read without filling the engine's block cache
    /// (the caller caches it): `None` for an unknown device or one without a credential.
    fn load_for_auth(&self, id: &DeviceId, max_sub_devices: usize) -> Result<Option<AuthView>>;
    /// Deletes a device and everything that belongs to it: credential, shadow, group
    /// memberships, cached and historical commands, OTA progress, LwM2M registration. A
    /// gateway with sub-devices is refused. Synced.
    fn delete_device(&self, id: &DeviceId) -> Result<Device>;
    /// Lists devices matching `query` in device-id order.
    fn list_devices(
        &self,
        query: &DeviceQuery,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Device>>;
    /// Devices with this node id (in any product).
    fn find_by_node(&self, node: &NodeId) -> Result<Vec<DeviceId>>;
    /// The device registered for (product, node id).
    fn find_by_product_node(&self, product: &ProductId, node: &NodeId) -> Result<Option<DeviceId>>;
}

/// What [`DeviceStore::load_for_auth`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthView {
    /// The device record. Its status tells FROZEN or not; connection status and times are not
    /// read.
    pub device: Device,
    /// Whether the device is frozen.
    pub frozen: bool,
    /// Its credential.
    pub credential: Credential,
    /// Its sub-devices, when it is a gateway (at most the number asked for).
    pub sub_devices: Vec<DeviceId>,
}

/// Groups and membership (tags are fields of the device and indexed by [`DeviceStore`]).
pub trait GroupStore {
    /// Stores a new group. Synced.
    fn create_group(&self, group: &Group) -> Result<()>;
    /// Reads a group.
    fn get_group(&self, id: &GroupId) -> Result<Option<Group>>;
    /// Changes a group's name or description. Synced.
    fn update_group(&self, id: &GroupId, f: Mutation<'_, Group>) -> Result<Group>;
    /// Deletes a group and its memberships. Synced.
    fn delete_group(&self, id: &GroupId) -> Result<Group>;
    /// Lists a resource space's groups (all when `app` is `None`).
    fn list_groups(
        &self,
        app: Option<&AppId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Group>>;
    /// Adds a device to a group within the limits; adding a member twice is a no-op. Synced.
    fn add_member(&self, group: &GroupId, device: &DeviceId) -> Result<()>;
    /// Removes a device from a group; removing a non-member is a no-op. Synced.
    fn remove_member(&self, group: &GroupId, device: &DeviceId) -> Result<()>;
    /// Lists a group's members in device-id order.
    fn list_members(
        &self,
        group: &GroupId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<DeviceId>>;
}

/// Device shadows.
pub trait ShadowStore {
    /// Reads a shadow; a device without one has the empty shadow.
    fn get_shadow(&self, device: &DeviceId) -> Result<Shadow>;
    /// [`ShadowStore::get_shadow`] without filling the engine's block cache: the check made at
    /// every connect (is there a desired delta to push?) reads each shadow once, and caching
    /// it would cost memory per connected device for nothing.
    fn peek_shadow(&self, device: &DeviceId) -> Result<Shadow>;
    /// Changes a shadow under its lock (the device must exist).
    fn update_shadow(
        &self,
        device: &DeviceId,
        durability: Durability,
        f: Mutation<'_, Shadow>,
    ) -> Result<Shadow>;
}

/// What [`CommandStore::enqueue_command`] did.
// A value returned once per call and taken apart at once: boxing the command would only add
// an allocation and a dereference for the caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// The command was stored.
    Created {
        /// The device's PENDING commands with the same supersede key, now CANCELED, in queue
        /// order.
        superseded: Vec<Command>,
    },
    /// The device already has a command with this idempotency key: here it is, as stored;
    /// nothing was written.
    Existing(Command),
}

/// Command records and the durable per-device command cache.
pub trait CommandStore {
    /// Stores a new command, under its device's lock and in one batch:
    ///
    /// 1. when it has an `idempotency_key` and the device already has a command with that key,
    ///    returns [`Enqueued::Existing`] with that command and writes nothing (the key is free
    ///    again once that command is pruned);
    /// 2. when it has a `supersede_key`, every PENDING command of the device with the same key
    ///    becomes CANCELED (response time: the new command's creation time; result "superseded
    ///    by {new id}") and leaves the queue and the deadline index;
    /// 3. stores the command: a PENDING one joins its device's queue, refused with
    ///    [`StorageError::LimitExceeded`] (and nothing written) when the queue, counted after
    ///    step 2, is full; a PENDING or SENT one enters the deadline index.
    ///
    /// Keys that [`fleetgate_model::command::validate_key`] refuses are a
    /// [`StorageError::Conflict`]; a reused command id is [`StorageError::AlreadyExists`];
    /// an unknown device is [`StorageError::NotFound`]. Synced when the command is PENDING or
    /// asynchronous or it superseded any; buffered otherwise (synchronous-command history).
    fn enqueue_command(&self, command: &Command) -> Result<Enqueued>;
    /// [`CommandStore::enqueue_command`] for callers that want no result: a command whose
    /// idempotency key is taken is refused with [`StorageError::AlreadyExists`].
    fn insert_command(&self, command: &Command) -> Result<()> {
        match self.enqueue_command(command)? {
            Enqueued::Created { .. } => Ok(()),
            Enqueued::Existing(c) => Err(StorageError::AlreadyExists {
                kind: "idempotency key",
                id: format!(
                    "{} (command {})",
                    c.idempotency_key.unwrap_or_default(),
                    c.command_id
                ),
            }),
        }
    }
    /// Reads a command.
    fn get_command(&self, id: &CommandId) -> Result<Option<Command>>;
    /// Changes a command under its device's lock. Its id, device, creation time, expiry and
    /// keys cannot change, nor can it return to PENDING ([`StorageError::Conflict`]). Leaving
    /// PENDING removes it from the queue; the deadline index follows
    /// [`Command::deadline`] (expiry while PENDING, ack deadline while SENT) and the
    /// device's SENT entry follows the status. Changes of PENDING and asynchronous commands
    /// are synced.
    fn update_command(&self, id: &CommandId, f: Mutation<'_, Command>) -> Result<Command>;
    /// A device's pending commands in queue (creation) order, at most `limit`.
    fn pending_commands(&self, device: &DeviceId, limit: usize) -> Result<Vec<Command>>;
    /// Commands whose deadline is at or before `now`, earliest deadline first, at most `limit`:
    /// PENDING commands whose expiry passed (to expire) and SENT commands whose ack deadline
    /// passed (to time out). Ack deadlines are stored, so they survive a restart.
    fn due_commands(&self, now: Timestamp, limit: usize) -> Result<Vec<Command>>;
    /// The device's command currently SENT — the one in flight, which a serial queue waits for
    /// — or `None`. If several are SENT (an immediate command beside the queue), the one sent
    /// first. Read from a per-device index, so it is cheap and survives a restart.
    fn unsettled_command(&self, device: &DeviceId) -> Result<Option<Command>>;
    /// A device's commands, oldest first, optionally only those in `status`.
    fn list_device_commands(
        &self,
        device: &DeviceId,
        status: Option<CommandStatus>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Command>>;
    /// Deletes up to `limit` terminal commands created before `before` (history retention),
    /// skipping unsettled ones however old. Returns how many were deleted; call again while it
    /// returns `limit`.
    fn prune_commands(&self, before: Timestamp, limit: usize) -> Result<usize>;
}

/// LwM2M registrations of CoAP devices (docs/coap.md): at most one per device, found by its
/// location, its device or its expiry. Writes are buffered: a registration lost to a power
/// failure is one the device makes again.
pub trait RegistrationStore {
    /// Stores a device's registration, replacing (and returning) its previous one, under the
    /// device's lock: the record and its location, device and expiry entries change in one
    /// batch. The device must exist ([`StorageError::NotFound`]); a location held by another
    /// device is [`StorageError::AlreadyExists`]; a registration that
    /// [`Registration::validate`] refuses is [`StorageError::Conflict`].
    fn put_registration(&self, registration: &Registration) -> Result<Option<Registration>>;
    /// Reads a registration by its location.
    fn get_registration(&self, location: &RegistrationId) -> Result<Option<Registration>>;
    /// A device's registration.
    fn registration_of_device(&self, device: &DeviceId) -> Result<Option<Registration>>;
    /// A registration update at `now` from `address` ([`Registration::touch`]): new update
    /// time, expiry (with the new lifetime, if given) and address; the expiry entry moves.
    /// `None`, and nothing written, when the location is unknown or has expired at `now` (the
    /// device must register again; the expired record stays for
    /// [`RegistrationStore::due_registrations`]).
    fn touch_registration(
        &self,
        location: &RegistrationId,
        address: &str,
        now: Timestamp,
        lifetime_secs: Option<u32>,
    ) -> Result<Option<Registration>>;
    /// Deletes a registration (de-register, expiry), returning it; `None` when unknown.
    fn delete_registration(&self, location: &RegistrationId) -> Result<Option<Registration>>;
    /// Registrations whose expiry is at or before `now`, earliest first, at most `limit`.
    fn due_registrations(&self, now: Timestamp, limit: usize) -> Result<Vec<Registration>>;
    /// How many registrations are stored: exact, the sum of counters kept per lock stripe
    /// (1024 small entries) that change in the same batch as the records.
    fn count_registrations(&self) -> Result<u64>;
}

/// OTA packages, tasks and per-device progress.
pub trait OtaStore {
    /// Stores a new package. Synced.
    fn create_package(&self, package: &OtaPackage) -> Result<()>;
    /// Reads a package.
    fn get_package(&self, id: &PackageId) -> Result<Option<OtaPackage>>;
    /// Deletes a package. Synced.
    fn delete_package(&self, id: &PackageId) -> Result<OtaPackage>;
    /// Lists a product's packages.
    fn list_packages(
        &self,
        product: &ProductId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OtaPackage>>;
    /// Stores a task (insert or replace). Synced.
    fn put_task(&self, task: &OtaTask) -> Result<()>;
    /// Reads a task.
    fn get_task(&self, id: &TaskId) -> Result<Option<OtaTask>>;
    /// Deletes a task and its per-device progress. Synced.
    fn delete_task(&self, id: &TaskId) -> Result<OtaTask>;
    /// Stores one device's progress; unfinished sub-tasks are indexed by device. Synced.
    fn put_progress(&self, progress: &OtaDeviceProgress) -> Result<()>;
    /// Reads one device's progress in a task.
    fn get_progress(&self, task: &TaskId, device: &DeviceId) -> Result<Option<OtaDeviceProgress>>;
    /// Lists a task's per-device progress.
    fn list_progress(
        &self,
        task: &TaskId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OtaDeviceProgress>>;
    /// The tasks in which a device has an unfinished sub-task.
    fn active_tasks(&self, device: &DeviceId) -> Result<Vec<TaskId>>;
}

/// Forwarding rules, their actions (push subscriptions) and ACL rules.
pub trait RuleStore {
    /// Stores a rule (insert or replace). Synced.
    fn put_rule(&self, rule: &RoutingRule) -> Result<()>;
    /// Reads a rule.
    fn get_rule(&self, id: &RuleId) -> Result<Option<RoutingRule>>;
    /// Deletes a rule and its actions. Synced.
    fn delete_rule(&self, id: &RuleId) -> Result<RoutingRule>;
    /// Lists a resource space's rules (all when `app` is `None`).
    fn list_rules(
        &self,
        app: Option<&AppId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoutingRule>>;
    /// Stores an action of an existing rule (insert or replace). Synced.
    fn put_action(&self, action: &RuleAction) -> Result<()>;
    /// Reads an action.
    fn get_action(&self, id: &ActionId) -> Result<Option<RuleAction>>;
    /// Deletes an action. Synced.
    fn delete_action(&self, id: &ActionId) -> Result<RuleAction>;
    /// A rule's actions.
    fn list_actions(&self, rule: &RuleId) -> Result<Vec<RuleAction>>;
    /// Stores an ACL rule (insert or replace). Synced.
    fn put_acl_rule(&self, rule: &AclRule) -> Result<()>;
    /// Reads an ACL rule.
    fn get_acl_rule(&self, id: &AclRuleId) -> Result<Option<AclRule>>;
    /// Deletes an ACL rule. Synced.
    fn delete_acl_rule(&self, id: &AclRuleId) -> Result<AclRule>;
    /// Lists ACL rules in id order.
    fn list_acl_rules(&self, cursor: Option<&str>, limit: usize) -> Result<Page<AclRule>>;
}

/// Applications (resource spaces) and their API keys.
pub trait AppStore {
    /// Creates an application; `AlreadyExists` when its id or name is taken. Synced.
    fn create_app(&self, app: &Application) -> Result<()>;
    /// Reads an application.
    fn get_app(&self, id: &AppId) -> Result<Option<Application>>;
    /// Lists applications in id order.
    fn list_apps(&self, cursor: Option<&str>, limit: usize) -> Result<Page<Application>>;
    /// Deletes an application and all its API keys; `Conflict` while it still owns products.
    /// Synced.
    fn delete_app(&self, id: &AppId) -> Result<Application>;
    /// Stores a new API key of an existing application (`NotFound` otherwise;
    /// `AlreadyExists` when the key id is taken). Synced.
    fn create_api_key(&self, key: &ApiKey) -> Result<()>;
    /// Reads an API key by its key id.
    fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKey>>;
    /// An application's API keys, in key-id order.
    fn list_api_keys(&self, app: &AppId) -> Result<Vec<ApiKey>>;
    /// Deletes an API key. Synced.
    fn delete_api_key(&self, key_id: &str) -> Result<ApiKey>;
}

/// What an integrity check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Records and index entries examined.
    pub checked: u64,
    /// Every inconsistency, described.
    pub problems: Vec<String>,
}

/// Everything the platform stores, plus administration.
pub trait Storage:
    ProductStore
    + DeviceStore
    + GroupStore
    + ShadowStore
    + CommandStore
    + OtaStore
    + RuleStore
    + AppStore
    + RegistrationStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Makes every write durable (shutdown).
    fn flush(&self) -> Result<()>;
    /// A cheap read that fails when the engine cannot serve reads (health checks).
    fn ping(&self) -> Result<()>;
    /// Engine figures for `/metrics`.
    fn engine_stats(&self) -> Vec<EngineStat>;
    /// Decodes every record and checks that indexes and records agree.
    fn check_integrity(&self) -> Result<IntegrityReport>;
    /// The limits the store enforces.
    fn limits(&self) -> &Limits;
}

/// Shorthand for a missing record.
pub fn not_found(kind: &'static str, id: impl ToString) -> StorageError {
    StorageError::NotFound {
        kind,
        id: id.to_string(),
    }
}
