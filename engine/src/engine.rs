//! [`Engine`]: starts the shards on their driver, the storage workers and the upstream
//! dispatcher, and is the handle through which the rest of fleetgate reaches device sessions
//! (deliver a message, kick a device, look up who is online, invalidate cached credentials).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use fleetgate_model::rule::AclRule;
use fleetgate_model::{DeviceId, ProductId};
use fleetgate_storage::Storage;

use crate::acl::AclRules;
use crate::auth::AuthCache;
use crate::coap::CoapEndpoint;
use crate::commands::{CommandService, CommandTransport};
use crate::config::EngineConfig;
use crate::driver::{self, DriverKind};
use crate::metrics::{CloseReason, Family, ShardMetrics};
use crate::platform::{Platform, PlatformConfig};
use crate::presence::Presence;
use crate::queue::{BoundedSender, bounded};
use crate::registry::Registry;
use crate::router::Router;
use crate::session::Downlink;
use crate::shard::{ShardCore, ShardHandle, ShardMsg, inbox};
use crate::time::Clock;
use crate::upstream::{Dispatcher, UpstreamHandler, UpstreamQueue, UpstreamSender};
use crate::workers::{self, WorkerJob};

/// State every shard, worker and handle shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: EngineConfig,
    /// Device id → session.
    pub registry: Arc<Registry>,
    /// Cached credentials and product policies.
    pub auth: AuthCache,
    /// Stored ACL rules, replaced as a whole when they change.
    pub acl: ArcSwap<AclRules>,
    /// The stores.
    pub storage: Arc<dyn Storage>,
    /// The upstream queue.
    pub upstream: UpstreamSender,
    /// The storage worker queue.
    pub workers: BoundedSender<WorkerJob>,
    /// The engine clock.
    pub clock: Clock,
    /// Open device connections (all shards).
    pub connections: AtomicUsize,
    /// Connections accepted for service.
    pub max_connections: usize,
    /// Connections beyond the limit that still get a polite refusal.
    pub refusal_headroom: usize,
    /// Each shard's counters.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Publications to sessions outside the publisher's tree.
    pub router: Arc<Router>,
    handles: OnceLock<Vec<ShardHandle>>,
}

impl Shared {
    /// The inbox of shard `i`.
    pub fn shard(&self, i: u16) -> Option<&ShardHandle> {
        self.handles.get().and_then(|h| h.get(usize::from(i)))
    }

    /// Hands a message to the device's session.
    pub fn deliver(&self, device: &DeviceId, msg: Downlink) -> Result<(), DeliverError> {
        let target = self.registry.get(device).ok_or(DeliverError::Offline)?;
        let h = self.shard(target.shard).ok_or(DeliverError::Offline)?;
        h.send(ShardMsg::Deliver {
            device: device.clone(),
            target,
            msg,
            hops: 0,
        })
        .map_err(|_| DeliverError::Busy)
    }
}

/// Why a message could not be handed to a device's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The device has no session (it is offline and has no persistent session).
    #[error("the device is offline")]
    Offline,
    /// The shard's inbox is full.
    #[error("the device's shard is overloaded")]
    Busy,
}

/// The engine's threads, taken apart at shutdown.
#[derive(Debug, Default)]
struct Threads {
    shards: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    dispatcher: Option<Dispatcher>,
}

/// The running connection tier.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    platform: Arc<Platform>,
    commands: Arc<CommandService>,
    coap: Option<Arc<CoapEndpoint>>,
    threads: parking_lot::Mutex<Threads>,
    mqtt: Option<SocketAddr>,
    coap_addr: Option<SocketAddr>,
    driver: DriverKind,
}

/// Options the binary decides.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// File descriptors to leave for everything but device connections (storage, the API).
    pub reserved_fds: usize,
}

fn fd_limit() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(1024)
}

impl Engine {
    /// Starts the engine: `handlers` receive upstream events in order, after the engine's own
    /// handlers (presence tracking, routing, and the [`Platform`]).
    pub fn start(
        config: EngineConfig,
        storage: Arc<dyn Storage>,
        handlers: Vec<Arc<dyn UpstreamHandler>>,
        options: StartOptions,
    ) -> std::io::Result<Engine> {
        let shards = config.shard_count();
        let driver = driver::select(config.driver)?;
        let limit = fd_limit();
        let usable = limit.saturating_sub(options.reserved_fds.max(64));
        // Sockets beyond `max_connections` are accepted to be refused politely (CONNACK), up to
        // this many at once; beyond that they are closed unanswered.
        let refusal_headroom = (usable / 100).clamp(16, 256);
        let max_connections = match config.max_connections {
            0 => usable.saturating_sub(refusal_headroom).max(1),
            n => n.min(usable.saturating_sub(refusal_headroom).max(1)),
        };
        let Parts {
            shared,
            inboxes,
            jobs: job_rx,
            queue,
        } = assemble(
            config,
            Arc::clone(&storage),
            shards,
            max_connections,
            refusal_headroom,
        )?;
        let registry = Arc::clone(&shared.registry);
        let clock = shared.clock;
        let platform = Arc::new(Platform::new(
            Arc::clone(&storage),
            Arc::clone(&shared) as Arc<dyn crate::platform::Deliver>,
            PlatformConfig::default(),
        ));
        let commands = CommandService::new(
            Arc::clone(&storage),
            shared.config.commands.clone(),
            shared.upstream.clone(),
        );
        platform.attach_commands(Arc::clone(&commands));
        let mqtt_transport: Arc<dyn CommandTransport> = Arc::clone(&platform) as _;
        commands.attach_mqtt(Arc::downgrade(&mqtt_transport));
        let coap_storage = Arc::clone(&storage);
        let presence = Arc::new(Presence::new(
            storage,
            registry,
            clock,
            shared.config.offline_grace_secs,
        ));
        match presence.recover() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                devices = n,
                "devices left online by the previous run get the grace period to reconnect"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read devices left online"),
        }
        let mut all: Vec<Arc<dyn UpstreamHandler>> = vec![
            presence,
            Arc::clone(&shared.router) as Arc<dyn UpstreamHandler>,
            Arc::clone(&platform) as Arc<dyn UpstreamHandler>,
        ];
        all.extend(handlers);
        let dispatcher = queue.start(all, Duration::from_millis(250))?;
        let worker_threads = workers::start(shared.config.workers, &shared, job_rx)?;

        let mut listeners: Vec<Vec<TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
        let mut mqtt = None;
        if shared.config.mqtt.enabled {
            let addr = bind_all(shared.config.mqtt.listen, &mut listeners)?;
            tracing::info!(%addr, shards, driver = driver.name(), max_connections, "mqtt listening");
            mqtt = Some(addr);
        }
        let mut udp: Vec<Option<UdpSocket>> = (0..shards).map(|_| None).collect();
        let mut coap = None;
        let mut coap_addr = None;
        if shared.config.coap.enabled {
            let addr = bind_udp(shared.config.coap.listen, &mut udp)?;
            let endpoint = CoapEndpoint::new(
                shared.config.lwm2m.clone(),
                coap_storage,
                shared.upstream.clone(),
                Arc::clone(&commands),
            );
            if let Some(Some(first)) = udp.first() {
                endpoint.bind(first.try_clone()?)?;
            }
            let t: Arc<dyn CommandTransport> = Arc::clone(&endpoint) as _;
            commands.attach_coap(Arc::downgrade(&t));
            tracing::info!(%addr, shards, "coap/lwm2m listening");
            coap = Some(endpoint);
            coap_addr = Some(addr);
        }
        commands.start()?;
        for (name, l) in shared.config.listeners() {
            if l.enabled && name != "mqtt" && name != "coap" {
                tracing::info!(
                    listener = name,
                    "not served by this version of fleetgate; disable it with engine.{name}.enabled = false"
                );
            }
        }

        let mut threads = Vec::new();
        for (i, (((rx, waker), ls), sock)) in
            inboxes.into_iter().zip(listeners).zip(udp).enumerate()
        {
            let core = ShardCore::new(i as u16, shards, Arc::clone(&shared), rx, waker);
            let datagrams = sock.zip(coap.clone());
            let t = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    if let Err(e) = driver::run(driver, core, ls, datagrams) {
                        tracing::error!(shard = i, error = %e, "shard stopped with an error");
                    }
                })?;
            threads.push(t);
        }
        let threads = Threads {
            shards: threads,
            workers: worker_threads,
            dispatcher: Some(dispatcher),
        };
        Ok(Engine {
            shared,
            platform,
            commands,
            coap,
            threads: parking_lot::Mutex::new(threads),
            mqtt,
            coap_addr,
            driver,
        })
    }

    /// The bound MQTT address (with the real port when the configured one was 0).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt
    }

    /// The bound CoAP address (with the real port when the configured one was 0).
    pub fn coap_addr(&self) -> Option<SocketAddr> {
        self.coap_addr
    }

    /// The asynchronous-command service.
    pub fn commands(&self) -> &Arc<CommandService> {
        &self.commands
    }

    /// The CoAP/LwM2M endpoint, when `engine.coap` is enabled.
    pub fn coap(&self) -> Option<&Arc<CoapEndpoint>> {
        self.coap.as_ref()
    }

    /// The driver the shards run on.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Shared state, for handles that outlive a borrow of the engine.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The device-side platform: requests, messages and desired pushes to devices, and
    /// observers of what devices report.
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// Metric families: the shards' counters summed, then the platform's.
    pub fn metrics(&self) -> Vec<Family> {
        let m: Vec<&ShardMetrics> = self.shared.metrics.iter().map(|a| a.as_ref()).collect();
        let mut families = crate::metrics::snapshot(&m);
        families.extend(self.platform.metrics());
        if let Some(c) = &self.coap {
            families.extend(c.metrics());
        }
        families
    }

    /// Hands a message to the device's session.
    pub fn deliver(&self, device: &DeviceId, msg: Downlink) -> Result<(), DeliverError> {
        self.shared.deliver(device, msg)
    }

    /// Closes the device's connection (and ends a detached session). Returns whether there was one.
    pub fn kick(&self, device: &DeviceId) -> bool {
        let Some(target) = self.shared.registry.get(device) else {
            return false;
        };
        self.shared.shard(target.shard).is_some_and(|h| {
            h.send(ShardMsg::Kick {
                device: device.clone(),
                target,
                reason: CloseReason::Kicked,
            })
            .is_ok()
        })
    }

    /// Whether the device is connected now.
    pub fn is_online(&self, device: &DeviceId) -> bool {
        self.shared.registry.is_online(device)
    }

    /// Forgets a device's cached credential (after a reset, freeze or delete).
    pub fn invalidate_device(&self, device: &DeviceId) {
        self.shared.auth.invalidate_device(device);
    }

    /// Forgets a product's cached policy (custom topics, limits).
    pub fn invalidate_product(&self, product: &ProductId) {
        self.shared.auth.invalidate_product(product);
        self.platform.invalidate_product(product);
    }

    /// Replaces the ACL rules live sessions are checked against.
    pub fn set_acl_rules(&self, rules: Vec<AclRule>) {
        self.shared.acl.store(Arc::new(AclRules::new(rules)));
    }

    /// Stops in order: every connection is closed (MQTT 5 clients hear "server shutting down"),
    /// the shards and workers stop, and the upstream queue is drained. Idempotent.
    pub fn shutdown(&self) {
        let mut threads = self.threads.lock();
        for i in 0..threads.shards.len() {
            if let Some(h) = self.shared.shard(i as u16) {
                // Past a full inbox; a shard that is gone has nothing to stop.
                let _ = h.send_control(ShardMsg::Shutdown);
            }
        }
        for t in threads.shards.drain(..) {
            let _ = t.join();
        }
        if let Some(c) = &self.coap {
            c.stop();
        }
        self.commands.stop();
        for _ in 0..threads.workers.len() {
            let _ = self.shared.workers.force_send(WorkerJob::Stop);
        }
        for t in threads.workers.drain(..) {
            let _ = t.join();
        }
        if let Some(d) = threads.dispatcher.take() {
            d.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An engine's shared state and queues before any thread runs (the in-memory tests drive
/// shard cores from these directly).
pub(crate) struct Parts {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inboxes: Vec<(
        crossbeam_channel::Receiver<ShardMsg>,
        Arc<crate::shard::Waker>,
    )>,
    pub(crate) jobs: crossbeam_channel::Receiver<WorkerJob>,
    pub(crate) queue: UpstreamQueue,
}

pub(crate) fn assemble(
    config: EngineConfig,
    storage: Arc<dyn Storage>,
    shards: usize,
    max_connections: usize,
    refusal_headroom: usize,
) -> std::io::Result<Parts> {
    let queue = UpstreamQueue::new(config.upstream_capacity, config.upstream_policy);
    let (job_tx, jobs) = bounded(config.inbox_capacity);
    let mut handles = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..shards {
        let (h, rx, waker) = inbox(config.inbox_capacity)?;
        handles.push(h);
        inboxes.push((rx, waker));
    }
    let shared = Arc::new(Shared {
        auth: AuthCache::new(
            config.session.credential_cache_capacity,
            config.flow.clone(),
            config.session.auth_window_hours,
        ),
        acl: ArcSwap::from_pointee(AclRules::new(load_acl(storage.as_ref()))),
        registry: Arc::new(Registry::new()),
        storage,
        upstream: queue.sender(),
        workers: job_tx,
        clock: Clock::new(),
        connections: AtomicUsize::new(0),
        max_connections,
        refusal_headroom,
        metrics: (0..shards)
            .map(|_| Arc::new(ShardMetrics::default()))
            .collect(),
        router: Arc::new(Router::new()),
        handles: OnceLock::new(),
        config,
    });
    let _ = shared.handles.set(handles);
    shared.router.attach(&shared);
    Ok(Parts {
        shared,
        inboxes,
        jobs,
        queue,
    })
}

fn load_acl(storage: &dyn Storage) -> Vec<AclRule> {
    let mut rules = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        match storage.list_acl_rules(cursor.as_deref(), 1000) {
            Ok(page) => {
                rules.extend(page.items);
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => return rules,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load ACL rules; starting without them");
                return rules;
            }
        }
    }
}

/// Binds one SO_REUSEPORT UDP socket per shard on `addr` (the first picks the port when it is
/// 0). Returns the bound address.
fn bind_udp(addr: SocketAddr, per_shard: &mut [Option<UdpSocket>]) -> std::io::Result<SocketAddr> {
    let mut bound = addr;
    for s in per_shard.iter_mut() {
        let sock = driver::udp_socket(bound)?;
        bound = sock.local_addr()?;
        *s = Some(sock);
    }
    Ok(bound)
}

/// Binds one SO_REUSEPORT listener per shard on `addr`; with port 0 the first bind picks the
/// port and the others share it. Returns the bound address.
fn bind_all(addr: SocketAddr, per_shard: &mut [Vec<TcpListener>]) -> std::io::Result<SocketAddr> {
    let mut bound = addr;
    for ls in per_shard.iter_mut() {
        let l = driver::listener(bound)?;
        bound = l.local_addr()?;
        ls.push(l);
    }
    Ok(bound)
}
