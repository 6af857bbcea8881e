//! [`Fleet`]: many simulated LwM2M devices over a few UDP sockets, for the load test.
//!
//! One I/O thread runs a current-thread tokio runtime: a task per socket reads datagrams and
//! the main task runs commands from the blocking API, the pacer of the current phase and the
//! timers (retransmissions, falling asleep) out of one binary heap. State is single-threaded
//! (`Rc<RefCell<…>>`); counters are atomics the API reads without asking the thread.
//!
//! Per device the fleet keeps a 28-byte `Slot` (state, location offset in one shared arena,
//! last socket, observe token and sequence, command count); the node id is computed from the
//! index ([`node_id`]). Exchanges in flight (bounded by the sockets, as each awake device has a
//! socket of its own: see the module docs of [`super`]) and sockets hold the rest.
//!
//! Demultiplexing: an ACK or RST by (socket, message id); a separate response by its token,
//! whose first four bytes are the device index; a request of the server by the socket's awake
//! device (none: the datagram is dropped and counted in `dropped_asleep`).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc as tmpsc};

use super::watermeter::{Command, Report};
use super::wire::{
    self, CF_OCTET_STREAM, Code, EXCHANGE_LIFETIME, Lwm2mVersion, OBSERVE_MODULUS, Rng,
    Transmission,
};
use crate::stats::latency_histogram;

/// The node id (IMEI-like endpoint name) of device `index`: `86` and 13 digits.
pub fn node_id(index: u64) -> String {
    format!("86{index:013}")
}

/// How a fleet's devices answer commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetCommandBehaviour {
    /// Piggybacked `2.04` with the frame `0xA0, result` (an undecodable frame: 4.00).
    Piggybacked {
        /// The result byte.
        result: u8,
    },
    /// Piggybacked `2.04` without payload.
    NoPayload,
    /// No answer (the command is still counted).
    Ignore,
    /// An RST.
    Reset,
    /// A piggybacked error code.
    Error(Code),
}

/// A fleet's sockets, devices and timing.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The server (fleetgate's CoAP listener).
    pub server: SocketAddr,
    /// Number of devices (indices `0..devices`).
    pub devices: u32,
    /// Device `i`'s node id is [`node_id`]`(first_node + i)`.
    pub first_node: u64,
    /// UDP sockets, at most this many devices awake at once.
    pub sockets: u32,
    /// Source addresses the sockets are spread over, round robin.
    pub sources: Vec<IpAddr>,
    /// Registration lifetime `lt`, seconds.
    pub lifetime: u32,
    /// LwM2M version.
    pub version: Lwm2mVersion,
    /// Queue mode.
    pub queue_mode: bool,
    /// Retransmission of the devices' confirmable messages.
    pub transmission: Transmission,
    /// How long to wait for a separate response after an empty ACK.
    pub response_timeout: Duration,
    /// A device falls asleep this long after its latest datagram (and its exchange is done).
    pub awake_for: Duration,
    /// A socket a device fell asleep on serves another device only after this delay: at least
    /// the server's awake window (fleetgate: `awake_window_secs`, 93 s by default), or what
    /// the server sends the sleeper in its window reaches the next device.
    pub socket_reuse_delay: Duration,
    /// How commands are answered.
    pub command_behaviour: FleetCommandBehaviour,
    /// The report of observe answers and notifications (a notification adds its sequence
    /// number to the reading).
    pub report: Report,
}

impl FleetConfig {
    /// `devices` devices on `sockets` sockets over 127.0.0.2 … 127.0.0.(1+sources), with
    /// LwM2M 1.1 queue mode, `lt` 86400, RFC 7252 timing, awake 5 s, sockets reused after
    /// 95 s, piggybacked success.
    pub fn new(server: SocketAddr, devices: u32, sockets: u32, sources: u8) -> FleetConfig {
        FleetConfig {
            server,
            devices,
            first_node: 0,
            sockets,
            sources: FleetConfig::loopback_sources(sources),
            lifetime: 86_400,
            version: Lwm2mVersion::V1_1,
            queue_mode: true,
            transmission: Transmission::default(),
            response_timeout: Duration::from_secs(93),
            awake_for: Duration::from_secs(5),
            socket_reuse_delay: Duration::from_secs(95),
            command_behaviour: FleetCommandBehaviour::Piggybacked { result: 0 },
            report: Report::default(),
        }
    }

    /// 127.0.0.2 … 127.0.0.(1+n) (at least one).
    pub fn loopback_sources(n: u8) -> Vec<IpAddr> {
        (0..n.max(1))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i))))
            .collect()
    }
}

/// Which devices a phase or a sleep applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSet {
    /// Indices in a range.
    Range(Range<u32>),
    /// Chosen indices, in this order.
    List(Vec<u32>),
}

impl DeviceSet {
    fn len(&self) -> usize {
        match self {
            DeviceSet::Range(r) => r.len(),
            DeviceSet::List(l) => l.len(),
        }
    }

    fn get(&self, i: usize) -> u32 {
        match self {
            DeviceSet::Range(r) => r.start + i as u32,
            DeviceSet::List(l) => l[i],
        }
    }
}

impl From<Range<u32>> for DeviceSet {
    fn from(r: Range<u32>) -> Self {
        DeviceSet::Range(r)
    }
}

impl From<Vec<u32>> for DeviceSet {
    fn from(l: Vec<u32>) -> Self {
        DeviceSet::List(l)
    }
}

impl From<&[u32]> for DeviceSet {
    fn from(l: &[u32]) -> Self {
        DeviceSet::List(l.to_vec())
    }
}

/// The pace of a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Devices started per second.
    pub rate: f64,
    /// At most this many exchanges in flight (also bounded by free sockets).
    pub max_inflight: u32,
    /// The phase gives up (what is left counts as unfinished) after this long.
    pub timeout: Duration,
}

/// What a woken device sends first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeBy {
    /// A registration update.
    Update,
    /// A notification on its observe token (an update when it has none).
    Notification {
        /// Confirmable (waits for the ACK) or not (done when sent).
        confirmable: bool,
    },
}

/// The outcome of a phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhaseReport {
    /// Devices in the set.
    pub requested: u64,
    /// Exchanges that succeeded.
    pub ok: u64,
    /// Exchanges that failed.
    pub failed: u64,
    /// Devices skipped (out of range, not registered for a wake, busy).
    pub skipped: u64,
    /// Devices not finished by the phase timeout.
    pub unfinished: u64,
    /// Failures by reason: a response code (`4.03`), `timeout`, `reset`, `slept`.
    pub failures: BTreeMap<String, u64>,
    /// From the phase's start to its end, microseconds.
    pub elapsed_us: u64,
}

/// A device's registration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceState {
    /// Never registered, or de-registered.
    Unregistered,
    /// Registered (the latest register or update succeeded, or the latest wake failed with
    /// something else than 4.04).
    Registered,
    /// The latest register failed, or an update found the registration gone (4.04).
    Failed,
}

/// One device as the fleet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSnapshot {
    /// The node id.
    pub node_id: String,
    /// Registration state.
    pub state: DeviceState,
    /// Whether it is awake (holds a socket).
    pub awake: bool,
    /// Its registration location.
    pub location: Option<String>,
    /// The observe token, if observed.
    pub observe_token: Option<Vec<u8>>,
    /// Commands received (saturating at 65535).
    pub commands: u16,
    /// The local address of its current (awake) or latest socket.
    pub local_addr: Option<SocketAddr>,
}

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Fleet-wide counters (gauges where said).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct FleetCounters {
            $(#[doc = $doc] pub $name: u64,)*
        }

        #[derive(Debug, Default)]
        struct Atomics {
            $($name: AtomicU64,)*
        }

        impl Atomics {
            fn snapshot(&self) -> FleetCounters {
                FleetCounters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    registered: "Registrations answered 2.01.",
    register_failed: "Registrations refused or unanswered.",
    updates: "Registration updates answered 2.04.",
    update_failed: "Registration updates refused or unanswered.",
    deregistered: "De-registrations answered 2.02.",
    deregister_failed: "De-registrations refused or unanswered.",
    notifications: "Notifications sent.",
    notification_failed: "Confirmable notifications reset or unacknowledged.",
    observes: "Observe requests (`GET /19/0/0` with Observe 0) answered.",
    commands: "Commands (`POST /19/1/0`) received (not counting retransmissions).",
    commands_undecodable: "Commands whose frame did not decode.",
    retransmissions: "Retransmissions of the devices' confirmable messages.",
    timeouts: "Exchanges that got no answer in time.",
    resets: "RSTs received for the devices' messages.",
    dropped_asleep: "Datagrams to a socket with no awake device (dropped).",
    duplicates: "Retransmitted server requests answered from the cache.",
    unmatched: "ACKs, RSTs and responses matching no exchange.",
    malformed: "Datagrams that are not CoAP.",
    send_errors: "Datagrams the socket refused to send.",
    wakes: "Devices woken (sockets taken).",
    awake: "Gauge: devices awake now.",
}

/// Latency histograms (microseconds) of a fleet.
#[derive(Debug, Clone)]
pub struct FleetLatencies {
    /// Register request to 2.01.
    pub register: Histogram<u64>,
    /// Update request to 2.04.
    pub update: Histogram<u64>,
    /// Confirmable notification to its ACK.
    pub notification: Histogram<u64>,
    /// De-register request to 2.02.
    pub deregister: Histogram<u64>,
    /// A device's wake (its first datagram) to the first command it received while awake.
    pub wake_to_command: Histogram<u64>,
}

impl Default for FleetLatencies {
    fn default() -> Self {
        FleetLatencies {
            register: latency_histogram(),
            update: latency_histogram(),
            notification: latency_histogram(),
            deregister: latency_histogram(),
            wake_to_command: latency_histogram(),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    counters: Atomics,
    /// Signalled whenever `counters.commands` grows.
    command_lock: Mutex<()>,
    command_signal: Condvar,
}

#[derive(Debug)]
enum Cmd {
    Phase(Op, DeviceSet, Pacing, mpsc::SyncSender<PhaseReport>),
    Sleep(DeviceSet, mpsc::SyncSender<u64>),
    Snapshot(u32, mpsc::SyncSender<Option<DeviceSnapshot>>),
    Latencies(mpsc::SyncSender<FleetLatencies>),
}

/// What a device's exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Register,
    Update,
    Notify { confirmable: bool },
    Wake(WakeBy),
    Deregister,
}

/// Many simulated devices sharing UDP sockets, driven by one I/O thread; see the module docs.
/// The blocking calls must not be made from inside an async runtime's thread.
#[derive(Debug)]
pub struct Fleet {
    tx: tmpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
    devices: u32,
}

fn stopped() -> io::Error {
    io::Error::other("the fleet's I/O thread stopped")
}

impl Fleet {
    /// Binds the sockets and starts the I/O thread; no device registers yet.
    pub fn start(config: FleetConfig) -> io::Result<Fleet> {
        if config.sockets == 0 || config.sources.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a fleet needs at least one socket and one source address",
            ));
        }
        let mut std_sockets = Vec::with_capacity(config.sockets as usize);
        for i in 0..config.sockets as usize {
            let ip = config.sources[i % config.sources.len()];
            let s = std::net::UdpSocket::bind((ip, 0))?;
            s.set_nonblocking(true)?;
            std_sockets.push(s);
        }
        let local_addrs = std_sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tmpsc::unbounded_channel();
        let devices = config.devices;
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("coap-fleet".into())
            .spawn(move || run(config, std_sockets, sh, rx))?;
        Ok(Fleet {
            tx,
            shared,
            thread: Some(thread),
            local_addrs,
            devices,
        })
    }

    fn phase(&self, op: Op, devices: DeviceSet, pacing: Pacing) -> io::Result<PhaseReport> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Cmd::Phase(op, devices, pacing, reply))
            .map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// Registers `devices` at the given pace; each stays awake [`FleetConfig::awake_for`]
    /// after its latest datagram (answering the server's observe request), then sleeps.
    /// Blocks until every device is done or the phase times out.
    pub fn register(
        &self,
        devices: impl Into<DeviceSet>,
        pacing: Pacing,
    ) -> io::Result<PhaseReport> {
        self.phase(Op::Register, devices.into(), pacing)
    }

    /// Wakes registered `devices`, each from another socket than its last one (a new source
    /// port), sending an update or a notification; they answer commands while awake, then
    /// sleep again. Unregistered devices are skipped. Blocks until done or timed out.
    pub fn wake(
        &self,
        devices: impl Into<DeviceSet>,
        by: WakeBy,
        pacing: Pacing,
    ) -> io::Result<PhaseReport> {
        self.phase(Op::Wake(by), devices.into(), pacing)
    }

    /// De-registers registered `devices` (each wakes to send its `DELETE`).
    pub fn deregister(
        &self,
        devices: impl Into<DeviceSet>,
        pacing: Pacing,
    ) -> io::Result<PhaseReport> {
        self.phase(Op::Deregister, devices.into(), pacing)
    }

    /// Puts awake `devices` to sleep now (an exchange in flight is abandoned and fails as
    /// `slept`); returns how many were awake.
    pub fn sleep(&self, devices: impl Into<DeviceSet>) -> io::Result<u64> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Cmd::Sleep(devices.into(), reply))
            .map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// The counters now (read without the I/O thread).
    pub fn counters(&self) -> FleetCounters {
        self.shared.counters.snapshot()
    }

    /// A copy of the latency histograms.
    pub fn latencies(&self) -> io::Result<FleetLatencies> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx.send(Cmd::Latencies(reply)).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// Device `index` as the fleet sees it (`None` out of range).
    pub fn device(&self, index: u32) -> io::Result<Option<DeviceSnapshot>> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Cmd::Snapshot(index, reply))
            .map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// Waits until the fleet received at least `total` commands in all, or `timeout` passes;
    /// returns whether it did.
    pub fn wait_for_commands(&self, total: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let c = &self.shared.counters.commands;
        let mut g = self
            .shared
            .command_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while c.load(Ordering::Relaxed) < total {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .shared
                .command_signal
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    /// The sockets' local addresses, by socket index.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Number of devices.
    pub fn len(&self) -> u32 {
        self.devices
    }

    /// Whether the fleet has no device.
    pub fn is_empty(&self) -> bool {
        self.devices == 0
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Closing the channel ends the I/O thread.
        let (tx, _) = tmpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const NONE: u32 = u32::MAX;
const NO_TOKEN: u8 = 0xFF;
const ST_UNREGISTERED: u8 = 0;
const ST_REGISTERED: u8 = 1;
const ST_FAILED: u8 = 2;
const FLAG_AWAKE: u8 = 1;
const FLAG_BUSY: u8 = 2;

/// Per-device state: 28 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    loc_off: u32,
    socket: u32,
    observe_seq: u32,
    observe_token: [u8; 8],
    commands: u16,
    loc_len: u8,
    token_len: u8,
    state: u8,
    flags: u8,
}

const EMPTY_SLOT: Slot = Slot {
    loc_off: 0,
    socket: NONE,
    observe_seq: 0,
    observe_token: [0; 8],
    commands: 0,
    loc_len: 0,
    token_len: NO_TOKEN,
    state: ST_UNREGISTERED,
    flags: 0,
};

/// A socket and its awake device.
#[derive(Debug)]
struct Sock {
    socket: Rc<UdpSocket>,
    owner: u32,
    since: Instant,
    sleep_at: Instant,
    sleep_armed: bool,
    commanded: bool,
    next_mid: u16,
}

/// A device's own confirmable (or not) message in flight.
#[derive(Debug)]
struct Exchange {
    op: Op,
    phase: u64,
    mid: u16,
    socket: u32,
    token: [u8; 8],
    bytes: Box<[u8]>,
    started: Instant,
    sent: u32,
    timeout: Duration,
    acked_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retransmit { device: u32, mid: u16 },
    Response { device: u32, mid: u16 },
    Sleep { socket: u32 },
}

#[derive(Debug)]
struct Phase {
    id: u64,
    op: Op,
    devices: DeviceSet,
    pacing: Pacing,
    next: usize,
    started: u64,
    inflight: u32,
    t0: Instant,
    report: PhaseReport,
    reply: mpsc::SyncSender<PhaseReport>,
}

#[derive(Debug)]
struct Engine {
    cfg: FleetConfig,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    locations: Vec<u8>,
    socks: Vec<Sock>,
    free: VecDeque<(u32, Instant)>,
    exchanges: HashMap<u32, Exchange>,
    by_mid: HashMap<(u32, u16), u32>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    answered: HashMap<(u32, u16), Box<[u8]>>,
    answered_order: VecDeque<(Instant, u32, u16)>,
    phase: Option<Phase>,
    queued: VecDeque<Cmd>,
    phase_ids: u64,
    /// When the pacer wants to look again (`None`: on the next event).
    pacer_wake: Option<Instant>,
    nonce: u32,
    latencies: FleetLatencies,
    rng: Rng,
}

fn run(
    cfg: FleetConfig,
    sockets: Vec<std::net::UdpSocket>,
    shared: Arc<Shared>,
    rx: tmpsc::UnboundedReceiver<Cmd>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let notify = Rc::new(Notify::new());
        let now = Instant::now();
        let mut socks = Vec::with_capacity(sockets.len());
        for s in sockets {
            let Ok(s) = UdpSocket::from_std(s) else {
                return;
            };
            socks.push(Sock {
                socket: Rc::new(s),
                owner: NONE,
                since: now,
                sleep_at: now,
                sleep_armed: false,
                commanded: false,
                next_mid: 0,
            });
        }
        let mut rng = Rng::seeded();
        for s in &mut socks {
            s.next_mid = rng.next_u64() as u16;
        }
        let free = (0..socks.len() as u32).map(|i| (i, now)).collect();
        let engine = Rc::new(RefCell::new(Engine {
            slots: vec![EMPTY_SLOT; cfg.devices as usize],
            cfg,
            shared,
            locations: Vec::new(),
            socks,
            free,
            exchanges: HashMap::new(),
            by_mid: HashMap::new(),
            timers: BinaryHeap::new(),
            answered: HashMap::new(),
            answered_order: VecDeque::new(),
            phase: None,
            queued: VecDeque::new(),
            phase_ids: 0,
            pacer_wake: None,
            nonce: 0,
            latencies: FleetLatencies::default(),
            rng,
        }));
        let sockets: Vec<_> = engine
            .borrow()
            .socks
            .iter()
            .map(|s| Rc::clone(&s.socket))
            .collect();
        for (i, s) in sockets.into_iter().enumerate() {
            let e = Rc::clone(&engine);
            let n = Rc::clone(&notify);
            tokio::task::spawn_local(receive(e, i as u32, s, n));
        }
        main_loop(engine, rx, notify).await;
    });
}

async fn receive(
    engine: Rc<RefCell<Engine>>,
    index: u32,
    socket: Rc<UdpSocket>,
    notify: Rc<Notify>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // ICMP errors surface here on some systems; nothing to read.
            tokio::task::yield_now().await;
            continue;
        };
        let progressed = engine
            .borrow_mut()
            .on_datagram(index, from, &buf[..n], Instant::now());
        if progressed {
            notify.notify_one();
        }
    }
}

async fn main_loop(
    engine: Rc<RefCell<Engine>>,
    mut rx: tmpsc::UnboundedReceiver<Cmd>,
    notify: Rc<Notify>,
) {
    loop {
        let next = {
            let mut e = engine.borrow_mut();
            let now = Instant::now();
            e.run_timers(now);
            e.pace(now);
            e.next_wakeup(now)
        };
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(c) => engine.borrow_mut().command(c, Instant::now()),
                None => return,
            },
            () = sleep => {}
            () = notify.notified() => {}
        }
    }
}

impl Engine {
    fn count(&self, f: impl Fn(&Atomics) -> &AtomicU64) {
        f(&self.shared.counters).fetch_add(1, Ordering::Relaxed);
    }

    fn command(&mut self, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::Phase(op, devices, pacing, reply) => {
                if self.phase.is_some() {
                    self.queued
                        .push_back(Cmd::Phase(op, devices, pacing, reply));
                    return;
                }
                self.phase_ids += 1;
                self.phase = Some(Phase {
                    id: self.phase_ids,
                    op,
                    report: PhaseReport {
                        requested: devices.len() as u64,
                        ..PhaseReport::default()
                    },
                    devices,
                    pacing,
                    next: 0,
                    started: 0,
                    inflight: 0,
                    t0: now,
                    reply,
                });
            }
            Cmd::Sleep(devices, reply) => {
                let mut n = 0;
                for i in 0..devices.len() {
                    let d = devices.get(i);
                    if (d as usize) < self.slots.len()
                        && self.slots[d as usize].flags & FLAG_AWAKE != 0
                    {
                        self.fall_asleep(d, now);
                        n += 1;
                    }
                }
                let _ = reply.send(n);
            }
            Cmd::Snapshot(d, reply) => {
                let _ = reply.send(self.snapshot(d));
            }
            Cmd::Latencies(reply) => {
                let _ = reply.send(self.latencies.clone());
            }
        }
    }

    fn snapshot(&self, d: u32) -> Option<DeviceSnapshot> {
        let s = self.slots.get(d as usize)?;
        Some(DeviceSnapshot {
            node_id: node_id(self.cfg.first_node + u64::from(d)),
            state: match s.state {
                ST_REGISTERED => DeviceState::Registered,
                ST_FAILED => DeviceState::Failed,
                _ => DeviceState::Unregistered,
            },
            awake: s.flags & FLAG_AWAKE != 0,
            location: (s.loc_len > 0).then(|| self.location(s)),
            observe_token: (s.token_len != NO_TOKEN)
                .then(|| s.observe_token[..usize::from(s.token_len)].to_vec()),
            commands: s.commands,
            local_addr: self
                .socks
                .get(s.socket as usize)
                .and_then(|k| k.socket.local_addr().ok()),
        })
    }

    fn location(&self, s: &Slot) -> String {
        let start = s.loc_off as usize;
        String::from_utf8_lossy(&self.locations[start..start + usize::from(s.loc_len)]).into_owned()
    }

    /// When the main loop must look again: the next timer, the pacer's next start, the
    /// phase's deadline (an hour when idle: commands and datagrams wake it anyway).
    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut next = now + Duration::from_secs(3600);
        if let Some(Reverse((at, _))) = self.timers.peek() {
            next = next.min(*at);
        }
        if let Some(p) = &self.phase {
            next = next.min(p.t0 + p.pacing.timeout);
        }
        if let Some(at) = self.pacer_wake {
            next = next.min(at);
        }
        next.max(now)
    }

    /// Starts the current phase's devices that are due, within the in-flight bound and the
    /// free sockets; ends the phase when done or past its timeout.
    fn pace(&mut self, now: Instant) {
        self.pacer_wake = None;
        loop {
            let Some(p) = &mut self.phase else {
                return;
            };
            if p.next >= p.devices.len() && p.inflight == 0 || now >= p.t0 + p.pacing.timeout {
                let mut p = self.phase.take().unwrap_or_else(|| unreachable!());
                p.report.unfinished =
                    p.report.requested - p.report.ok - p.report.failed - p.report.skipped;
                p.report.elapsed_us = now.duration_since(p.t0).as_micros() as u64;
                let _ = p.reply.send(p.report);
                if let Some(c) = self.queued.pop_front() {
                    self.command(c, now);
                    continue;
                }
                return;
            }
            let due = (now.duration_since(p.t0).as_secs_f64() * p.pacing.rate).floor() as u64 + 1;
            if p.started >= due && p.next < p.devices.len() {
                let rate = p.pacing.rate.max(1e-3);
                self.pacer_wake = Some(p.t0 + Duration::from_secs_f64(p.started as f64 / rate));
                return;
            }
            if p.next >= p.devices.len() || p.inflight >= p.pacing.max_inflight {
                // Woken by the end of an exchange.
                return;
            }
            let d = p.devices.get(p.next);
            let op = p.op;
            let id = p.id;
            let Some(slot) = self.slots.get(d as usize) else {
                p.next += 1;
                p.report.skipped += 1;
                continue;
            };
            let skip = slot.flags & FLAG_BUSY != 0
                || (op != Op::Register && slot.state == ST_UNREGISTERED);
            if skip {
                p.next += 1;
                p.report.skipped += 1;
                continue;
            }
            if slot.flags & FLAG_AWAKE != 0 {
                // Rebind: the device moves to another socket.
                self.fall_asleep(d, now);
            }
            let sock = match self.take_socket(d, now) {
                Ok(s) => s,
                Err(at) => {
                    // None: woken when a device falls asleep (a timer) or by a command.
                    self.pacer_wake = at;
                    return;
                }
            };
            let Some(p) = &mut self.phase else {
                return;
            };
            p.next += 1;
            p.started += 1;
            p.inflight += 1;
            self.start(d, sock, op, id, now);
        }
    }

    /// A free socket (ready for reuse), another than the device's last one when possible;
    /// the device is awake on it afterwards.
    ///
    /// Without one, when to look again (`None`: after the next event). A device never gets its
    /// last socket back unless the fleet has only one.
    fn take_socket(&mut self, d: u32, now: Instant) -> Result<u32, Option<Instant>> {
        let last = self.slots[d as usize].socket;
        // The queue is in order of reuse time (the reuse delay is constant).
        let pick = if self.socks.len() == 1 {
            0
        } else {
            match self.free.iter().position(|&(s, _)| s != last) {
                Some(i) if i <= 1 => i,
                // Only `last` is free: wait for another socket.
                _ => return Err(None),
            }
        };
        let Some(&(s, at)) = self.free.get(pick) else {
            return Err(None);
        };
        if at > now {
            return Err(Some(at));
        }
        self.free.remove(pick);
        let k = &mut self.socks[s as usize];
        k.owner = d;
        k.since = now;
        k.commanded = false;
        let slot = &mut self.slots[d as usize];
        slot.socket = s;
        slot.flags |= FLAG_AWAKE;
        self.count(|c| &c.wakes);
        self.count(|c| &c.awake);
        Ok(s)
    }

    /// The device releases its socket (reusable after the reuse delay); an exchange in flight
    /// fails as `slept`.
    fn fall_asleep(&mut self, d: u32, now: Instant) {
        if self.exchanges.contains_key(&d) {
            self.finish(d, Err("slept".into()), now);
        }
        let slot = &mut self.slots[d as usize];
        if slot.flags & FLAG_AWAKE == 0 {
            return;
        }
        slot.flags &= !FLAG_AWAKE;
        let s = slot.socket;
        self.socks[s as usize].owner = NONE;
        self.free.push_back((s, now + self.cfg.socket_reuse_delay));
        self.shared.counters.awake.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends on socket `s` without waiting: tokio knows a fresh socket's write readiness only
    /// after its first poll, so a send it turns away as "would block" is finished by a task.
    fn send_to(&self, s: u32, bytes: &[u8], to: SocketAddr) {
        let socket = &self.socks[s as usize].socket;
        match socket.try_send_to(bytes, to) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let socket = Rc::clone(socket);
                let bytes = bytes.to_vec();
                let shared = Arc::clone(&self.shared);
                tokio::task::spawn_local(async move {
                    if socket.send_to(&bytes, to).await.is_err() {
                        shared.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            Err(_) => self.count(|c| &c.send_errors),
        }
    }

    /// Sends a device's datagram to the server; the device stays awake `awake_for` after it.
    fn send(&mut self, s: u32, bytes: &[u8], now: Instant) {
        self.send_to(s, bytes, self.cfg.server);
        let k = &mut self.socks[s as usize];
        k.sleep_at = now + self.cfg.awake_for;
        if !k.sleep_armed {
            k.sleep_armed = true;
            self.timers
                .push(Reverse((k.sleep_at, Timer::Sleep { socket: s })));
        }
    }

    /// Starts `op` for device `d`, awake on socket `s`.
    fn start(&mut self, d: u32, s: u32, op: Op, phase: u64, now: Instant) {
        let slot = self.slots[d as usize];
        let op = match op {
            Op::Wake(WakeBy::Notification { confirmable }) if slot.token_len != NO_TOKEN => {
                Op::Notify { confirmable }
            }
            Op::Wake(_) => Op::Update,
            op => op,
        };
        let k = &mut self.socks[s as usize];
        k.next_mid = k.next_mid.wrapping_add(1);
        let mid = k.next_mid;
        self.nonce = self.nonce.wrapping_add(1);
        let mut token = [0u8; 8];
        token[..4].copy_from_slice(&d.to_be_bytes());
        token[4..].copy_from_slice(&self.nonce.to_be_bytes());
        if op == Op::Register {
            // A new registration is observed anew (the server's GET may beat the 2.01).
            self.slots[d as usize].token_len = NO_TOKEN;
        }
        let packet = match op {
            Op::Register => wire::register_request(
                mid,
                &token,
                &node_id(self.cfg.first_node + u64::from(d)),
                self.cfg.lifetime,
                self.cfg.version,
                self.cfg.queue_mode,
            ),
            Op::Update | Op::Wake(_) => {
                wire::update_request(mid, &token, &self.location(&slot), None)
            }
            Op::Deregister => wire::deregister_request(mid, &token, &self.location(&slot)),
            Op::Notify { confirmable } => {
                let seq = (slot.observe_seq + 1) % OBSERVE_MODULUS;
                self.slots[d as usize].observe_seq = seq;
                let mut report = self.cfg.report;
                report.reading = report.reading.wrapping_add(seq);
                let otoken = &slot.observe_token[..usize::from(slot.token_len)];
                token[..otoken.len()].copy_from_slice(otoken);
                wire::notification(mid, otoken, seq, &report.encode(), confirmable)
            }
        };
        let bytes = wire::bytes(&packet).into_boxed_slice();
        self.send(s, &bytes, now);
        if let Op::Notify { confirmable: false } = op {
            self.count(|c| &c.notifications);
            self.complete_phase(phase, Ok(()));
            return;
        }
        let timeout = self.cfg.transmission.initial_timeout(&mut self.rng);
        self.timers.push(Reverse((
            now + timeout,
            Timer::Retransmit { device: d, mid },
        )));
        self.by_mid.insert((s, mid), d);
        self.slots[d as usize].flags |= FLAG_BUSY;
        self.exchanges.insert(
            d,
            Exchange {
                op,
                phase,
                mid,
                socket: s,
                token,
                bytes,
                started: now,
                sent: 1,
                timeout,
                acked_at: None,
            },
        );
    }

    fn complete_phase(&mut self, id: u64, result: Result<(), String>) {
        if let Some(p) = &mut self.phase
            && p.id == id
        {
            p.inflight = p.inflight.saturating_sub(1);
            match result {
                Ok(()) => p.report.ok += 1,
                Err(reason) => {
                    p.report.failed += 1;
                    *p.report.failures.entry(reason).or_default() += 1;
                }
            }
        }
    }

    /// Ends device `d`'s exchange with `result` (the response, or a failure reason).
    fn finish(&mut self, d: u32, result: Result<Packet, String>, now: Instant) {
        let Some(x) = self.exchanges.remove(&d) else {
            return;
        };
        self.by_mid.remove(&(x.socket, x.mid));
        let latency = now.duration_since(x.started).as_micros() as u64;
        let slot = &mut self.slots[d as usize];
        slot.flags &= !FLAG_BUSY;
        let outcome = match result {
            Err(reason) => Err(reason),
            Ok(resp) => {
                let code = Code::from(resp.header.code);
                let want = match x.op {
                    Op::Register => Code::CREATED,
                    Op::Deregister => Code::DELETED,
                    Op::Notify { .. } => Code::EMPTY,
                    _ => Code::CHANGED,
                };
                if code == want {
                    Ok(resp)
                } else if resp.header.get_type() == MessageType::Reset {
                    Err("reset".to_owned())
                } else {
                    Err(code.to_string())
                }
            }
        };
        let c = &self.shared.counters;
        match (&outcome, x.op) {
            (Ok(resp), Op::Register) => {
                let loc = wire::location_path(resp);
                let slot = &mut self.slots[d as usize];
                if loc.len() <= usize::from(slot.loc_len) {
                    let off = slot.loc_off as usize;
                    self.locations[off..off + loc.len()].copy_from_slice(loc.as_bytes());
                } else {
                    slot.loc_off = self.locations.len() as u32;
                    self.locations.extend_from_slice(loc.as_bytes());
                }
                slot.loc_len = loc.len().min(255) as u8;
                slot.state = ST_REGISTERED;
                c.registered.fetch_add(1, Ordering::Relaxed);
                let _ = self.latencies.register.record(latency.max(1));
            }
            (Ok(_), Op::Deregister) => {
                slot.state = ST_UNREGISTERED;
                slot.loc_len = 0;
                slot.token_len = NO_TOKEN;
                c.deregistered.fetch_add(1, Ordering::Relaxed);
                let _ = self.latencies.deregister.record(latency.max(1));
            }
            (Ok(_), Op::Notify { .. }) => {
                c.notifications.fetch_add(1, Ordering::Relaxed);
                let _ = self.latencies.notification.record(latency.max(1));
            }
            (Ok(_), _) => {
                slot.state = ST_REGISTERED;
                c.updates.fetch_add(1, Ordering::Relaxed);
                let _ = self.latencies.update.record(latency.max(1));
            }
            (Err(e), op) => {
                match op {
                    Op::Register => {
                        slot.state = ST_FAILED;
                        c.register_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Op::Deregister => {
                        c.deregister_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Op::Notify { .. } => {
                        c.notifications.fetch_add(1, Ordering::Relaxed);
                        c.notification_failed.fetch_add(1, Ordering::Relaxed);
                        if e == "reset" {
                            slot.token_len = NO_TOKEN;
                        }
                    }
                    _ => {
                        c.update_failed.fetch_add(1, Ordering::Relaxed);
                        if e == "4.04" {
                            slot.state = ST_FAILED;
                        }
                    }
                }
                match e.as_str() {
                    "timeout" => c.timeouts.fetch_add(1, Ordering::Relaxed),
                    "reset" => c.resets.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }
        // The device stays awake `awake_for` after its exchange.
        if let Some(k) = self.socks.get_mut(x.socket as usize)
            && k.owner == d
        {
            k.sleep_at = k.sleep_at.max(now + self.cfg.awake_for);
        }
        self.complete_phase(x.phase, outcome.map(drop));
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            match timer {
                Timer::Retransmit { device, mid } => {
                    let max = self.cfg.transmission.max_retransmit;
                    let Some(x) = self.exchanges.get_mut(&device) else {
                        continue;
                    };
                    if x.mid != mid || x.acked_at.is_some() {
                        continue;
                    }
                    if x.sent > max {
                        self.finish(device, Err("timeout".into()), now);
                        continue;
                    }
                    x.sent += 1;
                    x.timeout *= 2;
                    let (s, next) = (x.socket, now + x.timeout);
                    let bytes = x.bytes.clone();
                    self.count(|c| &c.retransmissions);
                    self.send(s, &bytes, now);
                    self.timers
                        .push(Reverse((next, Timer::Retransmit { device, mid })));
                }
                Timer::Response { device, mid } => {
                    if self.exchanges.get(&device).is_some_and(|x| x.mid == mid) {
                        self.finish(device, Err("timeout".into()), now);
                    }
                }
                Timer::Sleep { socket } => {
                    let k = &mut self.socks[socket as usize];
                    k.sleep_armed = false;
                    if k.owner == NONE {
                        continue;
                    }
                    let owner = k.owner;
                    if k.sleep_at > now || self.exchanges.contains_key(&owner) {
                        let at = k
                            .sleep_at
                            .max(now + (self.cfg.awake_for / 4).max(Duration::from_millis(1)));
                        let k = &mut self.socks[socket as usize];
                        k.sleep_armed = true;
                        self.timers.push(Reverse((at, Timer::Sleep { socket })));
                    } else {
                        self.fall_asleep(owner, now);
                    }
                }
            }
        }
    }

    /// Handles one datagram on socket `s`; true when it may let the pacer go on.
    fn on_datagram(&mut self, s: u32, from: SocketAddr, data: &[u8], now: Instant) -> bool {
        let Ok(p) = Packet::from_bytes(data) else {
            self.count(|c| &c.malformed);
            return false;
        };
        let mid = p.header.message_id;
        let kind = p.header.get_type();
        let code = Code::from(p.header.code);
        match kind {
            MessageType::Acknowledgement | MessageType::Reset => {
                let Some(&d) = self.by_mid.get(&(s, mid)) else {
                    self.count(|c| &c.unmatched);
                    return false;
                };
                let Some(x) = self.exchanges.get_mut(&d) else {
                    self.count(|c| &c.unmatched);
                    return false;
                };
                let notify = matches!(x.op, Op::Notify { .. });
                if kind == MessageType::Reset {
                    self.finish(d, Ok(p), now);
                    return true;
                }
                if code == Code::EMPTY && !notify {
                    if x.acked_at.is_none() {
                        x.acked_at = Some(now);
                        self.timers.push(Reverse((
                            now + self.cfg.response_timeout,
                            Timer::Response { device: d, mid },
                        )));
                    }
                    return false;
                }
                if !notify && p.get_token() != x.token {
                    self.count(|c| &c.unmatched);
                    return false;
                }
                self.finish(d, Ok(p), now);
                true
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let con = kind == MessageType::Confirmable;
                if code.class() != 0 {
                    return self.on_separate_response(s, from, &p, con, now);
                }
                let owner = self.socks[s as usize].owner;
                if owner == NONE {
                    self.count(|c| &c.dropped_asleep);
                    return false;
                }
                if con && let Some(a) = self.answered.get(&(s, mid)) {
                    if !a.is_empty() {
                        let a = a.clone();
                        self.send_to(s, &a, from);
                    }
                    self.count(|c| &c.duplicates);
                    return false;
                }
                let answer = if code == Code::EMPTY {
                    con.then(|| wire::empty(MessageType::Reset, mid))
                } else {
                    self.on_request(owner, s, &p, con, now)
                };
                if let Some(a) = &answer {
                    self.send_to(s, a, from);
                    let k = &mut self.socks[s as usize];
                    k.sleep_at = k.sleep_at.max(now + self.cfg.awake_for);
                }
                if con {
                    self.remember(s, mid, answer.unwrap_or_default(), now);
                }
                false
            }
        }
    }

    fn remember(&mut self, s: u32, mid: u16, answer: Vec<u8>, now: Instant) {
        while let Some(&(at, k, m)) = self.answered_order.front() {
            if now.duration_since(at) < EXCHANGE_LIFETIME {
                break;
            }
            self.answered_order.pop_front();
            self.answered.remove(&(k, m));
        }
        if self
            .answered
            .insert((s, mid), answer.into_boxed_slice())
            .is_none()
        {
            self.answered_order.push_back((now, s, mid));
        }
    }

    /// A CON/NON response: the separate response to a device's request (its token names the
    /// device).
    fn on_separate_response(
        &mut self,
        s: u32,
        from: SocketAddr,
        p: &Packet,
        con: bool,
        now: Instant,
    ) -> bool {
        let mid = p.header.message_id;
        if con && let Some(a) = self.answered.get(&(s, mid)) {
            let a = a.clone();
            self.send_to(s, &a, from);
            self.count(|c| &c.duplicates);
            return false;
        }
        let token = p.get_token();
        let device = <[u8; 4]>::try_from(token.get(..4).unwrap_or_default())
            .ok()
            .map(u32::from_be_bytes);
        let matched = device.filter(|d| {
            self.exchanges
                .get(d)
                .is_some_and(|x| x.socket == s && x.token == token)
        });
        let answer = match matched {
            Some(_) => wire::empty(MessageType::Acknowledgement, mid),
            None => {
                self.count(|c| &c.unmatched);
                wire::empty(MessageType::Reset, mid)
            }
        };
        if con {
            self.send_to(s, &answer, from);
            self.remember(s, mid, answer, now);
        }
        match matched {
            Some(d) => {
                self.finish(d, Ok(p.clone()), now);
                true
            }
            None => false,
        }
    }

    /// Answers the server's request to awake device `d`.
    fn on_request(
        &mut self,
        d: u32,
        s: u32,
        req: &Packet,
        con: bool,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let path = wire::uri_path(req);
        let method = Code::from(req.header.code);
        let mid = req.header.message_id;
        let (code, payload, cf, observe) = if wire::is_report_resource(&path) && method == Code::GET
        {
            let slot = &mut self.slots[d as usize];
            let observe = match wire::uint_of(req, CoapOption::Observe) {
                Some(0) => {
                    let t = req.get_token();
                    slot.token_len = t.len().min(8) as u8;
                    slot.observe_token[..t.len().min(8)].copy_from_slice(&t[..t.len().min(8)]);
                    self.shared
                        .counters
                        .observes
                        .fetch_add(1, Ordering::Relaxed);
                    Some(slot.observe_seq)
                }
                Some(1) => {
                    slot.token_len = NO_TOKEN;
                    None
                }
                _ => None,
            };
            (
                Code::CONTENT,
                self.cfg.report.encode().to_vec(),
                Some(CF_OCTET_STREAM),
                observe,
            )
        } else if wire::is_command_resource(&path) && method == Code::POST {
            let slot = &mut self.slots[d as usize];
            slot.commands = slot.commands.saturating_add(1);
            let decoded = Command::decode(&req.payload).is_ok();
            let k = &mut self.socks[s as usize];
            if !k.commanded {
                k.commanded = true;
                let us = now.duration_since(k.since).as_micros() as u64;
                let _ = self.latencies.wake_to_command.record(us.max(1));
            }
            if !decoded {
                self.count(|c| &c.commands_undecodable);
            }
            {
                let _g = self
                    .shared
                    .command_lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.count(|c| &c.commands);
                self.shared.command_signal.notify_all();
            }
            match self.cfg.command_behaviour {
                FleetCommandBehaviour::Ignore => return None,
                FleetCommandBehaviour::Reset => {
                    return Some(wire::empty(MessageType::Reset, mid));
                }
                FleetCommandBehaviour::Error(code) => (code, Vec::new(), None, None),
                _ if !decoded => (Code::BAD_REQUEST, b"bad command frame".to_vec(), None, None),
                FleetCommandBehaviour::NoPayload => (Code::CHANGED, Vec::new(), None, None),
                FleetCommandBehaviour::Piggybacked { result } => (
                    Code::CHANGED,
                    Command::response(result).to_vec(),
                    Some(CF_OCTET_STREAM),
                    None,
                ),
            }
        } else if wire::is_report_resource(&path) || wire::is_command_resource(&path) {
            (Code::METHOD_NOT_ALLOWED, Vec::new(), None, None)
        } else {
            (Code::NOT_FOUND, Vec::new(), None, None)
        };
        let mut resp = if con {
            wire::piggybacked(req, code, &[])
        } else {
            let k = &mut self.socks[s as usize];
            k.next_mid = k.next_mid.wrapping_add(1);
            wire::packet(
                MessageType::NonConfirmable,
                code,
                k.next_mid,
                req.get_token(),
            )
        };
        if let Some(seq) = observe {
            resp.add_option(CoapOption::Observe, wire::uint_option(seq));
        }
        if let Some(cf) = cf {
            wire::set_content_format(&mut resp, cf);
        }
        resp.payload = payload;
        Some(wire::bytes(&resp))
    }
}

#[cfg(test)]
mod size {
    #[test]
    fn a_device_costs_28_bytes_plus_its_location() {
        // 1,000,000 devices: 28 MB of slots, plus ~10 bytes of location each.
        assert_eq!(std::mem::size_of::<super::Slot>(), 28);
    }
}
