//! CoAP and LwM2M for sleeping NB-IoT devices (docs/coap.md): the shards receive datagrams on
//! their UDP sockets (io_uring multishot receive from provided buffers, or epoll) and hand each
//! to the one [`CoapEndpoint`], which answers requests (the LwM2M registration interface),
//! matches acknowledgements and responses to what fleetgate sent, and turns notifications into
//! property reports on the upstream queue.
//!
//! A device is known by its registration location and by the tokens fleetgate gives its
//! exchanges (the location's bits are in every token), never by its address, which NAT changes
//! while it sleeps. An awake device has an [`actor::Actor`]; a sleeping one only its stored
//! registration, and the next datagram revives it. Retransmissions and the end of awake windows
//! run on one timer thread; sends go out with `sendto` on a shared socket, from whichever thread
//! has something to send (a datagram socket needs no per-connection state).

mod actor;
mod config;
mod metrics;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use dashmap::DashMap;
use fleetgate_codec::coap::block::{
    self, Block1Assembler, Block1Error, Block1Progress, BlockValue,
};
use fleetgate_codec::coap::lwm2m::{Lwm2mVersion, parse_register, parse_update};
use fleetgate_codec::coap::message;
use fleetgate_codec::coap::reliability::{
    DedupCache, Received, Retransmission, RetransmitAction, TransmissionParams,
};
use fleetgate_codec::device_codec::{self, DeviceCodec};
use fleetgate_model::command::Command;
use fleetgate_model::device::{Device, DeviceStatus};
use fleetgate_model::lwm2m::{Registration, RegistrationId};
use fleetgate_model::product::{Product, ProtocolType};
use fleetgate_model::topic::{DeviceTopic, SysTopic};
use fleetgate_model::{DeviceId, NodeId, ProductId, Timestamp};
use fleetgate_storage::Storage;
use parking_lot::{Condvar, Mutex};
use quick_cache::sync::Cache;
use serde_json::Value;

pub use self::config::Lwm2mConfig;
pub use self::metrics::{CoapMetrics, Rejected};

use self::actor::{Actor, Outgoing, Purpose, parse_token, token_of};
use crate::commands::{CommandService, CommandTransport, SendError};
use crate::metrics::Family;
use crate::upstream::{Enqueue, Published, UpstreamEvent, UpstreamSender, Woke};

/// Content format 42, `application/octet-stream`.
const OCTET_STREAM: usize = 42;
/// Content format 40, `application/link-format`.
const LINK_FORMAT: usize = 40;
/// Largest datagram fleetgate reads (larger ones are truncated by the kernel and refused).
pub const MAX_DATAGRAM: usize = 2048;

/// Where sends go: the shared socket, or a recorder in tests.
trait Wire: Send + Sync {
    fn send_to(&self, bytes: &[u8], peer: SocketAddr) -> std::io::Result<()>;
}

impl Wire for UdpSocket {
    fn send_to(&self, bytes: &[u8], peer: SocketAddr) -> std::io::Result<()> {
        UdpSocket::send_to(self, bytes, peer).map(drop)
    }
}

/// A timer entry: when, and which actor. An actor has at most one live entry (the one its
/// `armed` names); later ones are pushed only when earlier, so the heap stays bounded by the
/// awake devices however often they send.
type TimerEntry = Reverse<(Instant, u64)>;

/// The CoAP/LwM2M endpoint every shard feeds.
pub struct CoapEndpoint {
    config: Lwm2mConfig,
    params: TransmissionParams,
    storage: Arc<dyn Storage>,
    upstream: UpstreamSender,
    commands: Arc<CommandService>,
    wire: OnceLock<Box<dyn Wire>>,
    /// Awake devices by location.
    actors: DashMap<RegistrationId, Actor>,
    /// Awake devices by device id (for commands).
    by_device: DashMap<DeviceId, RegistrationId>,
    /// Confirmable messages fleetgate sent and awaits an ACK for, by (peer, message id).
    outstanding: DashMap<(SocketAddr, u16), RegistrationId>,
    /// Answers to confirmable requests, replayed for duplicates.
    dedup: Mutex<DedupCache<SocketAddr>>,
    /// Request bodies arriving in Block1 blocks, by peer and request (path and query).
    block1: Mutex<HashMap<(SocketAddr, String), (Block1Assembler, Instant)>>,
    timers: Mutex<BinaryHeap<TimerEntry>>,
    timer_cv: Condvar,
    stop: AtomicBool,
    timer_thread: Mutex<Option<JoinHandle<()>>>,
    mid: AtomicU16,
    products: Cache<ProductId, (Instant, Arc<Product>)>,
    metrics: CoapMetrics,
}

impl std::fmt::Debug for CoapEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapEndpoint")
            .field("awake", &self.actors.len())
            .finish_non_exhaustive()
    }
}

/// A random 64-bit value (the UUID generator is the engine's source of randomness).
fn random_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The answer to a request: its code, and optionally a payload and options.
struct Answer {
    code: ResponseType,
    payload: Vec<u8>,
    location: Option<String>,
    content_format: Option<usize>,
    max_age: Option<u32>,
}

impl Answer {
    fn new(code: ResponseType) -> Self {
        Answer {
            code,
            payload: Vec::new(),
            location: None,
            content_format: None,
            max_age: None,
        }
    }

    fn diagnostic(code: ResponseType, message: impl Into<String>) -> Self {
        let mut a = Answer::new(code);
        a.payload = message.into().into_bytes();
        a
    }
}

/// What happens after a request was answered.
enum After {
    Nothing,
    /// The device registered: observe its reports and wake its queue.
    Registered(RegistrationId, DeviceId),
    /// The device updated its registration: wake its queue.
    Woke(DeviceId),
}

impl CoapEndpoint {
    /// An endpoint over `storage`; it sends nothing until [`CoapEndpoint::bind`] gave it a
    /// socket.
    pub fn new(
        config: Lwm2mConfig,
        storage: Arc<dyn Storage>,
        upstream: UpstreamSender,
        commands: Arc<CommandService>,
    ) -> Arc<Self> {
        let params = TransmissionParams {
            ack_timeout: config.ack_timeout(),
            ack_random_factor: config.ack_random_factor,
            max_retransmit: config.max_retransmit,
            ..TransmissionParams::default()
        };
        let dedup = DedupCache::new(config.dedup_capacity, params.exchange_lifetime());
        Arc::new(CoapEndpoint {
            params,
            storage,
            upstream,
            commands,
            wire: OnceLock::new(),
            actors: DashMap::new(),
            by_device: DashMap::new(),
            outstanding: DashMap::new(),
            dedup: Mutex::new(dedup),
            block1: Mutex::new(HashMap::new()),
            timers: Mutex::new(BinaryHeap::new()),
            timer_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            timer_thread: Mutex::new(None),
            mid: AtomicU16::new(random_u64() as u16),
            products: Cache::new(10_000),
            metrics: CoapMetrics::default(),
            config,
        })
    }

    /// Gives the endpoint the socket it sends with (a duplicate of one shard's socket) and
    /// starts the timer thread.
    pub fn bind(self: &Arc<Self>, socket: UdpSocket) -> std::io::Result<()> {
        let _ = self.wire.set(Box::new(socket));
        let this = Arc::downgrade(self);
        let t = std::thread::Builder::new()
            .name("coap-timers".into())
            .spawn(move || timer_loop(this))?;
        *self.timer_thread.lock() = Some(t);
        Ok(())
    }

    /// Stops the timer thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.timer_cv.notify_all();
        if let Some(t) = self.timer_thread.lock().take() {
            let _ = t.join();
        }
    }

    /// The counters.
    pub fn counters(&self) -> &CoapMetrics {
        &self.metrics
    }

    /// Metric families for /metrics.
    pub fn metrics(&self) -> Vec<Family> {
        self.metrics.families(self.actors.len())
    }

    /// Counts a datagram dropped for being larger than [`MAX_DATAGRAM`] (the io_uring driver's
    /// buffers truncate it; the epoll driver's do not).
    pub fn oversized(&self) {
        self.metrics.rejected(Rejected::Format);
    }

    /// Devices awake now (with an actor in memory).
    pub fn awake(&self) -> usize {
        self.actors.len()
    }

    fn send(&self, bytes: &[u8], peer: SocketAddr) {
        let Some(w) = self.wire.get() else { return };
        match w.send_to(bytes, peer) {
            Ok(()) => self.metrics.sent(),
            Err(e) => {
                self.metrics.send_failed();
                tracing::debug!(%peer, error = %e, "coap send failed");
            }
        }
    }

    /// Records a confirmable message id from `peer`: `None` the first time, else the answer to
    /// replay (`Some(None)` while the first copy is still being handled).
    fn seen(&self, peer: SocketAddr, mid: u16) -> Option<Option<Vec<u8>>> {
        match self.dedup.lock().receive(peer, mid, Instant::now()) {
            Received::New => None,
            Received::Duplicate(a) => Some(a.map(<[u8]>::to_vec)),
        }
    }

    fn next_mid(&self) -> u16 {
        self.mid.fetch_add(1, Ordering::Relaxed)
    }

    /// Handles one datagram from `peer` (called by the shards).
    pub fn on_datagram(&self, peer: SocketAddr, data: &[u8]) {
        self.metrics.received();
        if data.len() > MAX_DATAGRAM {
            self.oversized();
            return;
        }
        let packet = match message::decode(data) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.rejected(Rejected::from_reason(e.reason()));
                // 4.02 Bad Option for a confirmable request with an unknown critical option,
                // RST for other confirmable garbage, nothing otherwise.
                if let Some(answer) = e.answer() {
                    self.send(&answer, peer);
                }
                return;
            }
        };
        let ty = packet.header.get_type();
        match packet.header.code {
            MessageClass::Request(_) => self.on_request(peer, packet),
            MessageClass::Empty => match ty {
                MessageType::Acknowledgement => self.on_ack(peer, packet.header.message_id, None),
                MessageType::Reset => self.on_reset(peer, packet.header.message_id),
                // A CoAP ping (empty CON) is answered with RST (RFC 7252 §4.3).
                MessageType::Confirmable => {
                    self.send(&reset(packet.header.message_id), peer);
                }
                MessageType::NonConfirmable => {
                    self.metrics.rejected(Rejected::Format);
                }
            },
            MessageClass::Response(_) => match ty {
                MessageType::Acknowledgement => {
                    let mid = packet.header.message_id;
                    self.on_ack(peer, mid, Some(packet));
                }
                MessageType::Confirmable | MessageType::NonConfirmable => {
                    self.on_separate_response(peer, packet)
                }
                MessageType::Reset => self.metrics.rejected(Rejected::Format),
            },
            MessageClass::Reserved(_) => {
                self.metrics.rejected(Rejected::Format);
                if ty == MessageType::Confirmable {
                    self.send(&reset(packet.header.message_id), peer);
                }
            }
        }
    }

    // ---- requests: the registration interface -------------------------------------------

    fn on_request(&self, peer: SocketAddr, req: Packet) {
        let confirmable = req.header.get_type() == MessageType::Confirmable;
        let mid = req.header.message_id;
        if confirmable && let Some(replay) = self.seen(peer, mid) {
            self.metrics.duplicate();
            if let Some(answer) = replay {
                self.send(&answer, peer);
            }
            return;
        }
        let mut extra: Vec<(CoapOption, Vec<u8>)> = Vec::new();
        let (mut answer, after) = match self.reassemble(peer, &req) {
            Ok(Some((body, last))) => {
                if let Some(b) = last {
                    extra.push((CoapOption::Block1, b));
                }
                self.answer(peer, &req, &body)
            }
            Ok(None) => {
                let b = block::block1(&req).ok().flatten();
                let mut a = Answer::new(ResponseType::Continue);
                if let Some(b) = b.and_then(|b| b.encode().ok()) {
                    extra.push((CoapOption::Block1, b));
                }
                a.payload.clear();
                (a, After::Nothing)
            }
            Err(a) => (a, After::Nothing),
        };
        // A response larger than the block size asked for (or ours) goes in Block2 blocks.
        if let Some((slice, value)) = self.block2_slice(&req, &answer.payload) {
            extra.push((CoapOption::Block2, value));
            answer.payload = slice;
        }
        let mut resp = Packet::new();
        resp.header.set_type(if confirmable {
            MessageType::Acknowledgement
        } else {
            MessageType::NonConfirmable
        });
        resp.header.message_id = if confirmable { mid } else { self.next_mid() };
        resp.header.code = MessageClass::Response(answer.code);
        resp.set_token(req.get_token().to_vec());
        if let Some(loc) = &answer.location {
            resp.add_option(CoapOption::LocationPath, b"rd".to_vec());
            resp.add_option(CoapOption::LocationPath, loc.as_bytes().to_vec());
        }
        if let Some(cf) = answer.content_format {
            resp.add_option(CoapOption::ContentFormat, message::uint_bytes(cf as u32));
        }
        if let Some(age) = answer.max_age {
            resp.add_option(CoapOption::MaxAge, message::uint_bytes(age));
        }
        for (o, v) in extra {
            resp.add_option(o, v);
        }
        resp.payload = answer.payload;
        let Ok(bytes) = resp.to_bytes() else {
            self.metrics.rejected(Rejected::Format);
            return;
        };
        if confirmable {
            self.dedup.lock().set_answer(&peer, mid, bytes.clone());
        }
        self.send(&bytes, peer);
        match after {
            After::Nothing => {}
            After::Registered(location, device) => {
                self.observe(location);
                self.commands.wake(&device);
            }
            After::Woke(device) => self.commands.wake(&device),
        }
    }

    /// The request body: as is, or reassembled from Block1 blocks. `Ok(None)`: more blocks
    /// are expected (answer 2.31 Continue); the second value of `Ok(Some)` is the Block1 option
    /// to echo in the final answer.
    #[allow(clippy::type_complexity)]
    fn reassemble(
        &self,
        peer: SocketAddr,
        req: &Packet,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, Answer> {
        let b1 = block::block1(req)
            .map_err(|e| Answer::diagnostic(ResponseType::BadOption, e.to_string()))?;
        let Some(b1) = b1 else {
            if req.payload.len() > self.config.max_body_bytes {
                return Err(Answer::new(ResponseType::RequestEntityTooLarge));
            }
            return Ok(Some((req.payload.clone(), None)));
        };
        let key = (peer, request_key(req));
        let now = Instant::now();
        let lifetime = self.params.exchange_lifetime();
        let mut map = self.block1.lock();
        if !map.contains_key(&key) {
            map.retain(|_, (_, at)| now.duration_since(*at) < lifetime);
            if map.len() >= 10_000 {
                let mut a = Answer::diagnostic(
                    ResponseType::ServiceUnavailable,
                    "too many block-wise transfers",
                );
                a.max_age = Some(30);
                return Err(a);
            }
        }
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (Block1Assembler::new(self.config.max_body_bytes), now));
        entry.1 = now;
        let progress = entry.0.push(b1, &req.payload);
        if !matches!(progress, Ok(Block1Progress::Continue)) {
            map.remove(&key);
        }
        match progress {
            Ok(Block1Progress::Continue) => Ok(None),
            Ok(Block1Progress::Complete(body)) => Ok(Some((body, b1.encode().ok()))),
            Err(Block1Error::Incomplete { .. }) => Err(Answer::diagnostic(
                ResponseType::RequestEntityIncomplete,
                "block out of order",
            )),
            Err(Block1Error::TooLarge { max }) => Err(Answer::diagnostic(
                ResponseType::RequestEntityTooLarge,
                format!("bodies are limited to {max} bytes"),
            )),
            Err(e) => Err(Answer::diagnostic(ResponseType::BadRequest, e.to_string())),
        }
    }

    /// The block of `payload` to send and its Block2 option, when it does not fit in one.
    fn block2_slice(&self, req: &Packet, payload: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let ours = block::szx_for_size(self.config.block_size).unwrap_or(6);
        let (num, szx) = match block::block2(req).ok().flatten() {
            Some(b) => (b.num, b.szx.min(ours)),
            None => (0, ours),
        };
        if num == 0 && payload.len() <= 16usize << szx {
            return None;
        }
        let (slice, more) = block::block_of(payload, num, szx)?;
        let value = BlockValue::new(num, more, szx).ok()?.encode().ok()?;
        Some((slice.to_vec(), value))
    }

    fn answer(&self, peer: SocketAddr, req: &Packet, body: &[u8]) -> (Answer, After) {
        let (path, query) = match (message::uri_path(req), message::uri_query(req)) {
            (Ok(p), Ok(q)) => (p, q),
            (Err(e), _) | (_, Err(e)) => {
                return (
                    Answer::diagnostic(ResponseType::BadRequest, e.to_string()),
                    After::Nothing,
                );
            }
        };
        let method = match req.header.code {
            MessageClass::Request(m) => m,
            _ => RequestType::UnKnown,
        };
        match (method, path.as_slice()) {
            (RequestType::Post, ["rd"]) => self.register(peer, &query, body),
            (RequestType::Post, ["rd", loc]) => self.update(peer, loc, &query, body),
            (RequestType::Delete, ["rd", loc]) => (self.deregister(loc), After::Nothing),
            (RequestType::Get, [".well-known", "core"]) => {
                let mut a = Answer::new(ResponseType::Content);
                a.payload = br#"</rd>;rt="core.rd""#.to_vec();
                a.content_format = Some(LINK_FORMAT);
                (a, After::Nothing)
            }
            (_, ["rd"] | ["rd", _] | [".well-known", "core"]) => {
                (Answer::new(ResponseType::MethodNotAllowed), After::Nothing)
            }
            _ => (Answer::new(ResponseType::NotFound), After::Nothing),
        }
    }

    fn lifetime_range(&self) -> std::ops::RangeInclusive<u32> {
        self.config.min_lifetime_secs..=self.config.max_lifetime_secs
    }

    fn register(&self, peer: SocketAddr, query: &[&str], body: &[u8]) -> (Answer, After) {
        let params = match parse_register(query, &self.lifetime_range()) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.registration(false);
                return (
                    Answer::diagnostic(ResponseType::BadRequest, e.to_string()),
                    After::Nothing,
                );
            }
        };
        let objects = match check_links(body) {
            Ok(o) => o,
            Err(e) => {
                self.metrics.registration(false);
                return (
                    Answer::diagnostic(ResponseType::BadRequest, e),
                    After::Nothing,
                );
            }
        };
        let device = match self.device_of_endpoint(&params.endpoint) {
            Ok(d) => d,
            Err(a) => {
                self.metrics.registration(false);
                return (a, After::Nothing);
            }
        };
        let now = Timestamp::now();
        let lifetime = params
            .lifetime_secs
            .unwrap_or(self.config.default_lifetime_secs);
        let location = RegistrationId::from_u64(random_u64() & 0x00FF_FFFF_FFFF_FFFF);
        let reg = Registration {
            location,
            endpoint: device.node_id.clone(),
            device_id: device.device_id.clone(),
            app_id: device.app_id.clone(),
            lifetime_secs: lifetime,
            lwm2m_version: params.version.to_string(),
            queue_mode: params.binding.queue,
            objects,
            address: peer.to_string(),
            registered_at: now,
            updated_at: now,
            expires_at: now.plus_secs(u64::from(lifetime)),
        };
        match self.storage.put_registration(&reg) {
            Ok(Some(previous)) => self.forget(previous.location),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device = %device.device_id, error = %e, "cannot store a registration");
                self.metrics.registration(false);
                let mut a = Answer::diagnostic(ResponseType::ServiceUnavailable, "try again later");
                a.max_age = Some(30);
                return (a, After::Nothing);
            }
        }
        self.metrics.registration(true);
        self.revive(&reg, &device.product_id, peer);
        self.woke(&device.device_id, &device.app_id, true);
        let mut a = Answer::new(ResponseType::Created);
        a.location = Some(location.to_string());
        (a, After::Registered(location, device.device_id))
    }

    /// The device an endpoint name stands for: a device of a CoAP product with that node id,
    /// not frozen, registered without a secret (those need DTLS, which is not served).
    fn device_of_endpoint(&self, endpoint: &str) -> Result<Device, Answer> {
        let forbidden = |m: &str| Answer::diagnostic(ResponseType::Forbidden, m);
        let node = NodeId::new(endpoint).map_err(|_| forbidden("unknown endpoint"))?;
        let ids = self
            .storage
            .find_by_node(&node)
            .map_err(|_| Answer::new(ResponseType::ServiceUnavailable))?;
        for id in ids {
            let Ok(Some(d)) = self.storage.get_device(&id) else {
                continue;
            };
            let Some(p) = self.product(&d.product_id) else {
                continue;
            };
            if p.protocol_type != ProtocolType::Coap {
                continue;
            }
            if d.status == DeviceStatus::Frozen {
                return Err(forbidden("the device is frozen"));
            }
            if d.secure {
                return Err(forbidden(
                    "the device was registered with a secret and must use DTLS",
                ));
            }
            return Ok(d);
        }
        Err(forbidden("unknown endpoint"))
    }

    fn update(&self, peer: SocketAddr, loc: &str, query: &[&str], body: &[u8]) -> (Answer, After) {
        let Ok(location) = loc.parse::<RegistrationId>() else {
            return (Answer::new(ResponseType::NotFound), After::Nothing);
        };
        let version = match self.storage.get_registration(&location) {
            Ok(Some(r)) => Lwm2mVersion::parse(&r.lwm2m_version).unwrap_or(Lwm2mVersion::V1_0),
            Ok(None) => return (Answer::new(ResponseType::NotFound), After::Nothing),
            Err(_) => {
                return (
                    Answer::new(ResponseType::ServiceUnavailable),
                    After::Nothing,
                );
            }
        };
        let params = match parse_update(query, version, &self.lifetime_range()) {
            Ok(p) => p,
            Err(e) => {
                return (
                    Answer::diagnostic(ResponseType::BadRequest, e.to_string()),
                    After::Nothing,
                );
            }
        };
        if !body.is_empty()
            && let Err(e) = check_links(body)
        {
            return (
                Answer::diagnostic(ResponseType::BadRequest, e),
                After::Nothing,
            );
        }
        let reg = match self.storage.touch_registration(
            &location,
            &peer.to_string(),
            Timestamp::now(),
            params.lifetime_secs,
        ) {
            Ok(Some(r)) => r,
            Ok(None) => return (Answer::new(ResponseType::NotFound), After::Nothing),
            Err(e) => {
                tracing::warn!(error = %e, "cannot update a registration");
                return (
                    Answer::new(ResponseType::ServiceUnavailable),
                    After::Nothing,
                );
            }
        };
        let Some(product) = self.product_of(&reg.device_id) else {
            return (Answer::new(ResponseType::NotFound), After::Nothing);
        };
        self.metrics.update();
        self.revive(&reg, &product, peer);
        self.woke(&reg.device_id, &reg.app_id, false);
        (
            Answer::new(ResponseType::Changed),
            After::Woke(reg.device_id),
        )
    }

    fn deregister(&self, loc: &str) -> Answer {
        let Ok(location) = loc.parse::<RegistrationId>() else {
            return Answer::new(ResponseType::NotFound);
        };
        match self.storage.delete_registration(&location) {
            Ok(Some(_)) => {
                self.metrics.deregistration();
                self.forget(location);
                Answer::new(ResponseType::Deleted)
            }
            Ok(None) => Answer::new(ResponseType::NotFound),
            Err(_) => Answer::new(ResponseType::ServiceUnavailable),
        }
    }

    // ---- actors ---------------------------------------------------------------------------

    fn window(&self, reg: &Registration, now: Instant) -> Instant {
        if reg.queue_mode {
            now + Duration::from_secs(u64::from(self.config.awake_window_secs))
        } else {
            let left = reg.expires_at.millis_since(Timestamp::now()).max(0);
            now + Duration::from_millis(left as u64)
        }
    }

    /// Creates or refreshes the actor of an awake device.
    fn revive(&self, reg: &Registration, product: &ProductId, peer: SocketAddr) {
        let now = Instant::now();
        let awake_until = self.window(reg, now);
        let deadline = {
            let mut a = self.actors.entry(reg.location).or_insert_with(|| Actor {
                location: reg.location,
                device: reg.device_id.clone(),
                app: reg.app_id.clone(),
                product: product.clone(),
                addr: peer,
                queue_mode: reg.queue_mode,
                awake_until,
                outstanding: None,
                waiting: Default::default(),
                awaiting: Vec::new(),
                next_tag: 0,
                armed: None,
            });
            a.addr = peer;
            a.queue_mode = reg.queue_mode;
            a.awake_until = awake_until;
            a.rearm(now)
        };
        self.by_device.insert(reg.device_id.clone(), reg.location);
        self.arm(reg.location, deadline);
    }

    /// The actor of `location`, revived from storage when the device was asleep.
    fn actor_for(&self, location: RegistrationId, peer: SocketAddr) -> bool {
        if let Some(mut a) = self.actors.get_mut(&location) {
            let now = Instant::now();
            if a.addr != peer {
                a.addr = peer;
            }
            let reg_queue = a.queue_mode;
            a.awake_until = if reg_queue {
                now + Duration::from_secs(u64::from(self.config.awake_window_secs))
            } else {
                a.awake_until.max(now)
            };
            let at = a.rearm(now);
            drop(a);
            self.arm(location, at);
            return true;
        }
        let reg = match self.storage.get_registration(&location) {
            Ok(Some(r)) if r.expires_at > Timestamp::now() => r,
            _ => return false,
        };
        if reg.address != peer.to_string() {
            let _ = self.storage.touch_registration(
                &location,
                &peer.to_string(),
                Timestamp::now(),
                None,
            );
        }
        let Some(product) = self.product_of(&reg.device_id) else {
            return false;
        };
        self.revive(&reg, &product, peer);
        true
    }

    /// Drops the actor of a registration that ended.
    fn forget(&self, location: RegistrationId) {
        if let Some((_, a)) = self.actors.remove(&location) {
            self.by_device.remove_if(&a.device, |_, l| *l == location);
            if let Some(o) = &a.outstanding {
                self.outstanding.remove(&(o.to, o.mid));
            }
        }
    }

    /// Puts a timer entry for `location` at `at` (from [`Actor::rearm`]; `None`: an entry at
    /// or before it is already there).
    fn arm(&self, location: RegistrationId, at: Option<Instant>) {
        let Some(at) = at else { return };
        let mut t = self.timers.lock();
        let earlier = t.peek().is_none_or(|Reverse((next, _))| at < *next);
        t.push(Reverse((at, location.as_u64())));
        drop(t);
        if earlier {
            self.timer_cv.notify_one();
        }
    }

    fn woke(&self, device: &DeviceId, app: &fleetgate_model::AppId, registered: bool) {
        let ev = UpstreamEvent::Woke(Woke {
            device_id: device.clone(),
            app_id: app.clone(),
            registered,
            at: Timestamp::now(),
        });
        if let Enqueue::Full(_) = self.upstream.try_send(ev) {
            self.metrics.upstream_dropped();
        }
    }

    // ---- requests fleetgate sends -----------------------------------------------------------

    /// Queues `GET /19/0/0` with Observe for a device that just registered.
    fn observe(&self, location: RegistrationId) {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Get);
        p.set_token(token_of(location, 0).to_vec());
        p.add_option(CoapOption::Observe, Vec::new());
        for seg in ["19", "0", "0"] {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        self.enqueue(location, p, Purpose::Observe, None);
    }

    /// Queues a request for an awake device and sends it when its turn comes. `token` is
    /// assigned here when `None`.
    fn enqueue(
        &self,
        location: RegistrationId,
        mut packet: Packet,
        purpose: Purpose,
        token: Option<[u8; 8]>,
    ) -> bool {
        let Some(mut a) = self.actors.get_mut(&location) else {
            return false;
        };
        let token = match (token, purpose) {
            (Some(t), _) => t,
            (None, Purpose::Observe) => token_of(location, 0),
            (None, Purpose::Command(_)) => a.token(),
        };
        let mid = self.next_mid();
        packet.header.message_id = mid;
        packet.set_token(token.to_vec());
        let Ok(bytes) = packet.to_bytes() else {
            return false;
        };
        let to = a.addr;
        a.waiting.push_back(Outgoing {
            token,
            mid,
            bytes,
            purpose,
            retransmission: None,
            to,
        });
        let next = self.start_next(&mut a);
        drop(a);
        if let Some((addr, bytes, at)) = next {
            self.send(&bytes, addr);
            self.arm(location, at);
        }
        true
    }

    /// Moves the next waiting request to outstanding when nothing is; returns what to send.
    fn start_next(&self, a: &mut Actor) -> Option<(SocketAddr, Vec<u8>, Option<Instant>)> {
        if a.outstanding.is_some() {
            return None;
        }
        let mut o = a.waiting.pop_front()?;
        let now = Instant::now();
        o.retransmission = Some(Retransmission::start(&self.params, now, random_fraction()));
        let bytes = o.bytes.clone();
        o.to = a.addr;
        self.outstanding.insert((o.to, o.mid), a.location);
        a.outstanding = Some(o);
        Some((a.addr, bytes, a.rearm(now)))
    }

    /// An ACK (empty, or with a piggybacked response) for message `mid`.
    fn on_ack(&self, peer: SocketAddr, mid: u16, response: Option<Packet>) {
        let Some((_, location)) = self.outstanding.remove(&(peer, mid)) else {
            self.metrics.rejected(Rejected::Unmatched);
            return;
        };
        let Some(mut a) = self.actors.get_mut(&location) else {
            return;
        };
        let Some(o) = a.outstanding.take().filter(|o| o.mid == mid) else {
            return;
        };
        let device = a.device.clone();
        let product = a.product.clone();
        if response.is_none() {
            a.awaiting.push((o.token, o.purpose));
            while a.awaiting.len() > 8 {
                a.awaiting.remove(0);
            }
        }
        // The device answered: it is awake for another window.
        if a.queue_mode {
            a.awake_until =
                Instant::now() + Duration::from_secs(u64::from(self.config.awake_window_secs));
        }
        let next = self.start_next(&mut a);
        let at = match &next {
            Some((_, _, at)) => *at,
            None => a.rearm(Instant::now()),
        };
        drop(a);
        if let Some((addr, bytes, _)) = next {
            self.send(&bytes, addr);
        }
        self.arm(location, at);
        match (o.purpose, response) {
            (Purpose::Command(id), None) => self.commands.acked(&device, id),
            (Purpose::Command(id), Some(resp)) => self.command_result(&device, &product, id, &resp),
            (Purpose::Observe, Some(resp)) => {
                if !resp.payload.is_empty() {
                    self.report(location, &resp.payload);
                }
            }
            (Purpose::Observe, None) => {}
        }
    }

    fn on_reset(&self, peer: SocketAddr, mid: u16) {
        let Some((_, location)) = self.outstanding.remove(&(peer, mid)) else {
            return;
        };
        let Some(mut a) = self.actors.get_mut(&location) else {
            return;
        };
        let Some(o) = a.outstanding.take().filter(|o| o.mid == mid) else {
            return;
        };
        let device = a.device.clone();
        let next = self.start_next(&mut a);
        drop(a);
        if let Some((addr, bytes, at)) = next {
            self.send(&bytes, addr);
            self.arm(location, at);
        }
        if let Purpose::Command(id) = o.purpose {
            self.commands.result(
                &device,
                id,
                false,
                Value::String("reset by the device".into()),
            );
        }
    }

    /// A separate response or a notification (CON or NON with a response code).
    fn on_separate_response(&self, peer: SocketAddr, resp: Packet) {
        let confirmable = resp.header.get_type() == MessageType::Confirmable;
        let mid = resp.header.message_id;
        let Some((location, tag)) = parse_token(resp.get_token()) else {
            self.metrics.rejected(Rejected::Unmatched);
            self.send(&reset(mid), peer);
            return;
        };
        if confirmable {
            if let Some(replay) = self.seen(peer, mid) {
                self.metrics.duplicate();
                if let Some(answer) = replay {
                    self.send(&answer, peer);
                }
                return;
            }
            let ack = empty_ack(mid);
            self.dedup.lock().set_answer(&peer, mid, ack.clone());
            // Acknowledged only when the token is ours (checked below); otherwise RST.
            if !self.actor_for(location, peer) {
                self.metrics.rejected(Rejected::Unmatched);
                self.send(&reset(mid), peer);
                return;
            }
            self.send(&ack, peer);
        } else if !self.actor_for(location, peer) {
            self.metrics.rejected(Rejected::Unmatched);
            self.send(&reset(mid), peer);
            return;
        }
        if tag == 0 {
            self.notification(location, &resp);
            return;
        }
        let Some(mut a) = self.actors.get_mut(&location) else {
            return;
        };
        let token: [u8; 8] = token_of(location, tag);
        let found = a.awaiting.iter().position(|(t, _)| *t == token);
        let purpose = found.map(|i| a.awaiting.remove(i).1);
        let (device, product) = (a.device.clone(), a.product.clone());
        drop(a);
        match purpose {
            Some(Purpose::Command(id)) => self.command_result(&device, &product, id, &resp),
            _ => self.metrics.rejected(Rejected::Unmatched),
        }
    }

    fn notification(&self, location: RegistrationId, resp: &Packet) {
        self.metrics.notification();
        let (device, app) = match self.actors.get(&location) {
            Some(a) => (a.device.clone(), a.app.clone()),
            None => return,
        };
        self.woke(&device, &app, false);
        if !resp.payload.is_empty() {
            self.report(location, &resp.payload);
        }
        self.commands.wake(&device);
    }

    /// A binary report: decoded by the product's codec and sent on as a property report.
    fn report(&self, location: RegistrationId, payload: &[u8]) {
        let Some((device, app, product)) = self
            .actors
            .get(&location)
            .map(|a| (a.device.clone(), a.app.clone(), a.product.clone()))
        else {
            return;
        };
        let Some(codec) = self.codec(&product) else {
            self.metrics.report(false);
            return;
        };
        let json = match codec.decode_uplink(payload) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.report(false);
                tracing::debug!(%device, error = %e, "report not decoded");
                return;
            }
        };
        let Ok(body) = serde_json::to_vec(&json) else {
            return;
        };
        let topic = DeviceTopic::sys(device.clone(), SysTopic::PropertiesReport).to_string();
        let ev = UpstreamEvent::Published(Published {
            device_id: device,
            app_id: app,
            topic: topic.into(),
            payload: body.into(),
            qos: 0,
            will: false,
            at: Timestamp::now(),
        });
        match self.upstream.try_send(ev) {
            Enqueue::Done => self.metrics.report(true),
            _ => self.metrics.upstream_dropped(),
        }
    }

    fn command_result(
        &self,
        device: &DeviceId,
        product: &ProductId,
        id: fleetgate_model::CommandId,
        resp: &Packet,
    ) {
        let code = match resp.header.code {
            MessageClass::Response(c) => c,
            _ => ResponseType::UnKnown,
        };
        if code.is_error() || code == ResponseType::UnKnown {
            self.commands.result(
                device,
                id,
                false,
                Value::String(format!("the device answered {}", resp.header.get_code())),
            );
            return;
        }
        if resp.payload.is_empty() {
            self.commands.result(device, id, true, Value::Null);
            return;
        }
        let decoded = self
            .codec(product)
            .ok_or_else(|| "the product has no codec".to_owned())
            .and_then(|c| {
                c.decode_command_response(&resp.payload)
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok(r) => self.commands.result(device, id, r.success, r.detail),
            Err(e) => self.commands.result(
                device,
                id,
                false,
                Value::String(format!("undecodable response: {e}")),
            ),
        }
    }

    // ---- timers ---------------------------------------------------------------------------

    /// The timer entry of `location` for `at` fired.
    fn on_timer(&self, location: RegistrationId, at: Instant) {
        let now = Instant::now();
        let Some(mut a) = self.actors.get_mut(&location) else {
            return;
        };
        if a.armed != Some(at) {
            // Superseded by an earlier entry, which already ran.
            return;
        }
        a.armed = None;
        let mut resend = None;
        let mut gave_up = false;
        if let Some(o) = a.outstanding.as_mut()
            && let Some(r) = o.retransmission.as_mut()
            && r.next_deadline() <= now
        {
            match r.on_timeout(now) {
                RetransmitAction::Resend => resend = Some((o.bytes.clone(), o.to)),
                RetransmitAction::GiveUp => gave_up = true,
            }
        }
        if gave_up {
            // No answer after every retransmission: the device went back to sleep sooner
            // than its window said. A command stays SENT until its acknowledgement deadline.
            if let Some(o) = a.outstanding.take() {
                self.outstanding.remove(&(o.to, o.mid));
            }
            a.waiting.clear();
            a.awake_until = now;
            self.metrics.gave_up();
        }
        if a.idle(now) {
            let device = a.device.clone();
            drop(a);
            // Unless a datagram revived it meanwhile (which armed its timer again).
            self.actors
                .remove_if(&location, |_, a| a.armed.is_none() && a.idle(now));
            self.by_device.remove_if(&device, |_, l| *l == location);
            self.metrics.hibernated();
            return;
        }
        let next = a.rearm(now);
        drop(a);
        if let Some((bytes, to)) = resend {
            self.metrics.retransmission();
            self.send(&bytes, to);
        }
        self.arm(location, next);
    }

    /// Ends registrations whose lifetime passed without an update: the record goes, the
    /// device is OFFLINE, nothing is sent to it any more.
    fn expire_registrations(&self) {
        let now = Timestamp::now();
        let due = match self.storage.due_registrations(now, 1024) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read expired registrations");
                return;
            }
        };
        for reg in due {
            if let Ok(Some(_)) = self.storage.delete_registration(&reg.location) {
                self.forget(reg.location);
                self.metrics.expired();
                let _ = self.storage.apply_presence_event(
                    &reg.device_id,
                    fleetgate_model::device::StatusEvent::ConnectionLost,
                    now,
                    fleetgate_storage::Durability::Buffered,
                );
            }
        }
    }

    // ---- products and codecs -----------------------------------------------------------------

    fn product(&self, id: &ProductId) -> Option<Arc<Product>> {
        if let Some((at, p)) = self.products.get(id)
            && at.elapsed() < Duration::from_secs(10)
        {
            return Some(p);
        }
        let p = Arc::new(self.storage.get_product(id).ok()??);
        self.products
            .insert(id.clone(), (Instant::now(), Arc::clone(&p)));
        Some(p)
    }

    fn product_of(&self, device: &DeviceId) -> Option<ProductId> {
        self.storage
            .get_device(device)
            .ok()
            .flatten()
            .map(|d| d.product_id)
    }

    fn codec(&self, product: &ProductId) -> Option<&'static dyn DeviceCodec> {
        let p = self.product(product)?;
        device_codec::builtin(p.codec.as_deref()?)
    }

    fn encode(&self, command: &Command) -> Result<(Vec<u8>, RegistrationId), SendError> {
        let device = self
            .storage
            .get_device(&command.device_id)
            .ok()
            .flatten()
            .ok_or(SendError::Unreachable)?;
        let codec = self
            .codec(&device.product_id)
            .ok_or_else(|| SendError::Encode("the product names no known codec".into()))?;
        let bytes = codec
            .encode_command(
                command.service_id.as_ref().map(|s| s.as_str()),
                command.command_name.as_str(),
                &command.paras,
            )
            .map_err(|e| SendError::Encode(e.to_string()))?;
        let location = self
            .by_device
            .get(&command.device_id)
            .map(|l| *l)
            .unwrap_or(RegistrationId::from_u64(0));
        Ok((bytes, location))
    }
}

/// Commands over CoAP: a confirmable `POST /19/1/0` with the codec's bytes.
impl CommandTransport for CoapEndpoint {
    fn reachable(&self, device: &DeviceId) -> bool {
        let Some(location) = self.by_device.get(device).map(|l| *l) else {
            return false;
        };
        self.actors
            .get(&location)
            .is_some_and(|a| a.awake(Instant::now()))
    }

    fn send(&self, command: &Command) -> Result<(), SendError> {
        let (payload, location) = self.encode(command)?;
        if !self.reachable(&command.device_id) {
            return Err(SendError::Unreachable);
        }
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        for seg in ["19", "1", "0"] {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p.add_option(
            CoapOption::ContentFormat,
            message::uint_bytes(OCTET_STREAM as u32),
        );
        p.payload = payload;
        if self.enqueue(location, p, Purpose::Command(command.command_id), None) {
            self.metrics.command_sent();
            Ok(())
        } else {
            Err(SendError::Unreachable)
        }
    }

    fn check(&self, command: &Command) -> Result<(), SendError> {
        self.encode(command).map(drop)
    }
}

fn timer_loop(endpoint: Weak<CoapEndpoint>) {
    let mut last_sweep = Instant::now();
    loop {
        let Some(e) = endpoint.upgrade() else { return };
        if e.stop.load(Ordering::Acquire) {
            return;
        }
        if last_sweep.elapsed() >= Duration::from_secs(5) {
            last_sweep = Instant::now();
            e.expire_registrations();
        }
        let mut due = Vec::new();
        {
            let mut t = e.timers.lock();
            let now = Instant::now();
            while let Some(Reverse((at, loc))) = t.peek().copied() {
                if at > now || due.len() >= 4096 {
                    break;
                }
                t.pop();
                due.push((loc, at));
            }
            if due.is_empty() {
                let wait = t
                    .peek()
                    .map(|Reverse((at, _))| at.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                e.timer_cv.wait_for(&mut t, wait);
                continue;
            }
        }
        for (loc, at) in due {
            e.on_timer(RegistrationId::from_u64(loc), at);
        }
    }
}

/// What identifies one block-wise request of a peer: its method, path and query.
fn request_key(req: &Packet) -> String {
    let mut k = format!("{:?}", req.header.code);
    for o in [CoapOption::UriPath, CoapOption::UriQuery] {
        if let Some(list) = req.get_option(o) {
            for v in list {
                k.push('/');
                k.push_str(&String::from_utf8_lossy(v));
            }
        }
    }
    k
}

/// Checks a registration's link-format body and returns it as text.
fn check_links(body: &[u8]) -> Result<String, String> {
    if body.is_empty() {
        return Ok(String::new());
    }
    if body.len() > 4096 {
        return Err("the object list is longer than 4096 bytes".into());
    }
    let text = std::str::from_utf8(body).map_err(|_| "the object list is not UTF-8".to_owned())?;
    fleetgate_codec::coap::link::parse(text, 1024, 4096).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn empty_ack(mid: u16) -> Vec<u8> {
    message::empty_ack_bytes(mid).to_vec()
}

fn reset(mid: u16) -> Vec<u8> {
    message::reset_bytes(mid).to_vec()
}
