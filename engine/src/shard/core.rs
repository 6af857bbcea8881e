//! [`ShardCore`]: connections, sessions, timers and the inbox of one shard.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(test)]
use crate::session::SubscriptionSet;
use crossbeam_channel::Receiver;
use fleetgate_codec::mqtt::bytes::BytesMut;
use fleetgate_codec::mqtt::{self, QoS, v5};
use fleetgate_model::{DeviceId, Timestamp};

use super::ConnId;
use super::msg::{ShardMsg, Waker};
use super::timer::TimerWheel;
use crate::acl::DeviceInfo;
use crate::config::UpstreamPolicy;
use crate::engine::Shared;
use crate::flow::{Rate, TokenBucket};
use crate::metrics::{CloseReason, Counter, ShardMetrics, Throttle};
use crate::registry::SessionRef;
use crate::session::{Action, Detached, Downlink, Env, Persistent, Phase, Pushed, SessionState};
use crate::time::Millis;
use crate::upstream::{Connected, Disconnected, Enqueue, Published, UpstreamEvent};
use crate::workers::WorkerJob;

/// What the core asks of its driver.
pub trait Io {
    /// Writes `bytes` to the connection, after anything written before.
    fn send(&mut self, id: ConnId, bytes: BytesMut);
    /// Closes the connection once pending writes are done (or failed), then calls
    /// [`ShardCore::release`].
    fn close(&mut self, id: ConnId);
    /// Starts or stops reading from the connection (flow control, back-pressure).
    fn set_reading(&mut self, id: ConnId, on: bool);
}

/// A live connection.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    session: SessionState,
    /// Bytes of an incomplete frame, or frames held back while authenticating or paused.
    rbuf: Vec<u8>,
    out: BytesMut,
    /// Reading is paused until then (flow control).
    paused_until: Option<Millis>,
    /// A publication waiting for room in the upstream queue (back-pressure).
    stalled: Option<Box<UpstreamEvent>>,
    /// The deadline the timer wheel holds an entry for.
    timer_at: Option<Millis>,
    /// Set once the session has ended; the slot is freed when the driver releases it.
    closed: bool,
    /// A CONNACK refusal to give instead of authenticating (server busy, connect rate).
    refuse: Option<v5::ConnectAckReason>,
    /// Waiting for [`ShardMsg::HandOff`] from another shard.
    awaiting_handoff: bool,
    /// When CONNACK was sent (wall clock; the epoch until then), for [`crate::ops`].
    connected_at: Timestamp,
}

/// A persistent session whose device is offline.
#[derive(Debug)]
struct DetachedSession {
    device: Arc<DeviceInfo>,
    persistent: Box<Persistent>,
    expires_at: Millis,
    will: Option<(Published, Millis)>,
    timer_at: Option<Millis>,
}

#[derive(Debug)]
enum Slot {
    Free,
    Conn(Box<Conn>),
    Detached(Box<DetachedSession>),
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    slot: Slot,
}

/// Most bytes a connection may hold back (frames waiting for authentication or flow control).
fn hold_limit(max_packet: u32) -> usize {
    (max_packet as usize).saturating_mul(2).max(64 * 1024)
}

/// One shard's connections and sessions.
#[derive(Debug)]
pub struct ShardCore {
    id: u16,
    shared: Arc<Shared>,
    metrics: Arc<ShardMetrics>,
    inbox: Receiver<ShardMsg>,
    waker: Arc<Waker>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    timers: TimerWheel<ConnId>,
    now: Millis,
    wall: Timestamp,
    connect_rate: Rate,
    connect_bucket: TokenBucket,
    lifecycle_backlog: VecDeque<UpstreamEvent>,
    stalled: Vec<ConnId>,
    /// Hand-offs between two connections of this shard, delivered on the next poll.
    pending_handoffs: Vec<(ConnId, Option<Box<Persistent>>)>,
    /// Connections that were taken over while waiting for a hand-off: the state they were
    /// waiting for goes on to the connection that took them over.
    forwards: std::collections::HashMap<ConnId, (u16, ConnId)>,
    live: usize,
    stopping: bool,
}

mod ops;

/// Whether a takeover produced the old session's state now, or will forward it later.
enum TakenOver {
    Now(Option<Box<Persistent>>),
    Later,
}

impl ShardCore {
    /// A shard core. `shards` divides the listener connect rate among the shards.
    pub fn new(
        id: u16,
        shards: usize,
        shared: Arc<Shared>,
        inbox: Receiver<ShardMsg>,
        waker: Arc<Waker>,
    ) -> Self {
        let now = shared.clock.now();
        let flow = &shared.config.flow;
        let n = shards.max(1) as u32;
        let connect_rate = Rate {
            per_sec: flow.listener_connects_per_sec.div_ceil(n),
            burst: flow.listener_connect_burst.div_ceil(n).max(1),
        };
        ShardCore {
            id,
            metrics: Arc::clone(&shared.metrics[usize::from(id)]),
            shared,
            inbox,
            waker,
            entries: Vec::new(),
            free: Vec::new(),
            timers: TimerWheel::new(now),
            now,
            wall: Timestamp::now(),
            connect_rate,
            connect_bucket: TokenBucket::full(connect_rate, now),
            lifecycle_backlog: VecDeque::new(),
            stalled: Vec::new(),
            pending_handoffs: Vec::new(),
            forwards: std::collections::HashMap::new(),
            live: 0,
            stopping: false,
        }
    }

    /// The shard's number.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The shard's waker (the driver watches its eventfd).
    pub fn waker(&self) -> &Arc<Waker> {
        &self.waker
    }

    /// Reads the clocks; drivers call this once per loop turn.
    pub fn refresh_clock(&mut self) {
        self.now = self.shared.clock.now();
        self.wall = Timestamp::now();
    }

    /// The shard's counters.
    pub fn metrics(&self) -> Arc<ShardMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Whether the shard has been told to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Time from now until `at` on the engine clock.
    pub fn until(&self, at: Millis) -> std::time::Duration {
        self.shared.clock.until(at)
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.live
    }

    /// Whether the shard has been told to stop and every connection is gone.
    pub fn is_stopped(&self) -> bool {
        self.stopping && self.live == 0
    }

    /// Whether the driver should read from `id` now.
    pub fn wants_read(&self, id: ConnId) -> bool {
        match self.conn(id) {
            Some(c) => {
                !c.closed
                    && c.paused_until.is_none()
                    && c.stalled.is_none()
                    && c.rbuf.len() < hold_limit(self.shared.config.session.max_packet_size)
            }
            None => false,
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        match self.entries.get(id.slot as usize) {
            Some(Entry {
                generation,
                slot: Slot::Conn(c),
            }) if *generation == id.generation => Some(c),
            _ => None,
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.entries.get_mut(id.slot as usize) {
            Some(Entry {
                generation,
                slot: Slot::Conn(c),
            }) if *generation == id.generation => Some(c),
            _ => None,
        }
    }

    fn session_ref(&self, id: ConnId, live: bool) -> SessionRef {
        SessionRef {
            shard: self.id,
            slot: id.slot,
            generation: id.generation,
            live,
        }
    }

    fn allocate(&mut self, slot: Slot) -> ConnId {
        match self.free.pop() {
            Some(i) => {
                let e = &mut self.entries[i as usize];
                e.generation = e.generation.wrapping_add(1);
                e.slot = slot;
                ConnId {
                    slot: i,
                    generation: e.generation,
                }
            }
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    slot,
                });
                ConnId {
                    slot: (self.entries.len() - 1) as u32,
                    generation: 0,
                }
            }
        }
    }

    fn free_slot(&mut self, id: ConnId) {
        if let Some(e) = self.entries.get_mut(id.slot as usize)
            && e.generation == id.generation
        {
            e.slot = Slot::Free;
            self.free.push(id.slot);
        }
    }

    /// A connection was accepted. Returns its id, or `None` when it must be closed at once
    /// (far beyond the connection limit).
    pub fn accept(&mut self, peer: SocketAddr) -> Option<ConnId> {
        let shared = Arc::clone(&self.shared);
        let total = shared
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        // Connections over the limit get a polite CONNACK refusal; far over it (more than the
        // headroom kept for refusals) they are closed without a word.
        let refuse = if self.stopping {
            Some(v5::ConnectAckReason::ServerUnavailable)
        } else if total > shared.max_connections {
            self.metrics.throttled(Throttle::MaxConnections);
            if total > shared.max_connections + shared.refusal_headroom {
                shared
                    .connections
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            Some(v5::ConnectAckReason::ServerBusy)
        } else if !self.connect_bucket.try_take(1, self.connect_rate, self.now) {
            self.metrics.throttled(Throttle::ConnectRate);
            Some(v5::ConnectAckReason::ConnectionRateExceeded)
        } else {
            None
        };
        let conn = Conn {
            peer,
            session: SessionState::new(self.now),
            rbuf: Vec::new(),
            out: BytesMut::new(),
            paused_until: None,
            stalled: None,
            timer_at: None,
            closed: false,
            refuse,
            awaiting_handoff: false,
            connected_at: Timestamp::default(),
        };
        let id = self.allocate(Slot::Conn(Box::new(conn)));
        self.live += 1;
        self.metrics.opened();
        self.schedule(id);
        Some(id)
    }

    /// Bytes arrived on `id`.
    pub fn on_read<I: Io>(&mut self, id: ConnId, data: &[u8], io: &mut I) {
        self.metrics.add(Counter::BytesIn, data.len() as u64);
        let limit = hold_limit(self.shared.config.session.max_packet_size);
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.closed {
            return;
        }
        let holding =
            !conn.session.accepts_frames() || conn.paused_until.is_some() || conn.stalled.is_some();
        if holding && conn.rbuf.len() + data.len() > limit {
            // The client keeps sending while it is held back (authentication, flow control):
            // it does not respect TCP flow control, and the connection ends.
            self.close_now(id, CloseReason::Throttled, io);
            return;
        }
        if conn.rbuf.is_empty() {
            let consumed = self.process(id, data, io);
            if let Some(conn) = self.conn_mut(id)
                && !conn.closed
                && consumed < data.len()
            {
                conn.rbuf.extend_from_slice(&data[consumed..]);
            }
        } else {
            conn.rbuf.extend_from_slice(data);
            self.process_buffered(id, io);
        }
        self.flush(id, io);
    }

    /// Frames held in the read buffer, processed when the session can take them again.
    fn process_buffered<I: Io>(&mut self, id: ConnId, io: &mut I) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let buf = std::mem::take(&mut conn.rbuf);
        let consumed = self.process(id, &buf, io);
        if let Some(conn) = self.conn_mut(id)
            && !conn.closed
        {
            let mut rest = buf;
            rest.drain(..consumed.min(rest.len()));
            if rest.is_empty() {
                rest = Vec::new();
            }
            conn.rbuf = rest;
        }
    }

    /// Feeds complete frames of `data` to the session while it accepts them; returns the
    /// bytes consumed.
    fn process<I: Io>(&mut self, id: ConnId, data: &[u8], io: &mut I) -> usize {
        let max = self.shared.config.session.max_packet_size;
        let mut at = 0;
        loop {
            let Some(conn) = self.conn(id) else { return at };
            if conn.closed
                || !conn.session.accepts_frames()
                || conn.paused_until.is_some()
                || conn.stalled.is_some()
            {
                return at;
            }
            let rest = &data[at..];
            match mqtt::frame_len(rest, max) {
                Ok(Some(n)) => {
                    let frame = &rest[..n];
                    at += n;
                    if let Some(code) = conn
                        .refuse
                        .filter(|_| conn.session.phase() == Phase::AwaitConnect)
                    {
                        self.refuse_connect(id, frame, code, io);
                        return at;
                    }
                    self.run(id, io, |s, env| s.on_frame(frame, env));
                }
                Ok(None) => return at,
                Err(e) => {
                    tracing::debug!(shard = self.id, error = %e, "unframeable input");
                    let code = e.disconnect_reason();
                    self.run(id, io, |s, env| {
                        s.close_by_server(CloseReason::ProtocolError, code, env)
                    });
                    return data.len();
                }
            }
        }
    }

    /// Answers a CONNECT with a refusal (server busy, connect rate exceeded) and closes.
    fn refuse_connect<I: Io>(
        &mut self,
        id: ConnId,
        frame: &[u8],
        code: v5::ConnectAckReason,
        io: &mut I,
    ) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let version = mqtt::connect_version(frame).unwrap_or(mqtt::Version::V311);
        let ack = v5::ConnectAck {
            reason_code: code,
            ..Default::default()
        };
        let _ = mqtt::encode(
            &v5::Packet::ConnectAck(Box::new(ack)),
            version,
            &mut conn.out,
        );
        let reason = if code == v5::ConnectAckReason::ConnectionRateExceeded {
            CloseReason::Throttled
        } else {
            CloseReason::ServerBusy
        };
        self.close_now(id, reason, io);
    }

    /// Runs one session call, then every action it produced (some of which call back into
    /// the session).
    fn run<I: Io>(
        &mut self,
        id: ConnId,
        io: &mut I,
        f: impl FnOnce(&mut SessionState, &mut Env<'_>),
    ) {
        let mut actions = Vec::new();
        if !self.with_session(id, &mut actions, f) {
            return;
        }
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let mut more = Vec::new();
            self.act(id, action, &mut more, io);
            queue.extend(more);
        }
        self.schedule(id);
    }

    fn with_session(
        &mut self,
        id: ConnId,
        actions: &mut Vec<Action>,
        f: impl FnOnce(&mut SessionState, &mut Env<'_>),
    ) -> bool {
        let acl = self.shared.acl.load();
        let (now, wall) = (self.now, self.wall);
        let config = &self.shared.config.session;
        let metrics = &*self.metrics;
        let Some(Entry {
            generation,
            slot: Slot::Conn(conn),
        }) = self.entries.get_mut(id.slot as usize)
        else {
            return false;
        };
        if *generation != id.generation || conn.closed {
            return false;
        }
        let mut env = Env {
            now,
            wall,
            config,
            acl: &acl,
            metrics,
            out: &mut conn.out,
            actions,
        };
        f(&mut conn.session, &mut env);
        true
    }

    fn act<I: Io>(&mut self, id: ConnId, action: Action, more: &mut Vec<Action>, io: &mut I) {
        match action {
            Action::Authenticate(req) => {
                if let Some(outcome) = self.shared.auth.verify_cached(&req, self.wall) {
                    self.with_session(id, more, |s, env| s.on_auth(outcome, env));
                } else if let Err(job) = self.shared.workers.try_send(WorkerJob::Auth {
                    shard: self.id,
                    conn: id,
                    req,
                }) {
                    tracing::warn!(
                        shard = self.id,
                        "storage workers are saturated; refusing a CONNECT"
                    );
                    drop(job);
                    self.with_session(id, more, |s, env| {
                        s.on_auth(Err(crate::auth::AuthError::Unavailable), env)
                    });
                }
            }
            Action::Register {
                device_id,
                clean_start,
            } => self.register(id, device_id, clean_start, more, io),
            Action::Established { session_present } => self.established(id, session_present),
            Action::Upstream(p) => self.upstream(id, p, io),
            Action::PauseReads(until) => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.paused_until = Some(until);
                    io.set_reading(id, false);
                }
            }
            Action::Route { filter, qos } => {
                if let Some((device, app)) = self
                    .conn(id)
                    .and_then(|c| c.session.device())
                    .map(|d| (d.device_id.clone(), d.product.app_id.clone()))
                {
                    match qos {
                        Some(q) => self.shared.router.subscribe(&device, &app, filter, q),
                        None => self.shared.router.unsubscribe(&device, &filter),
                    }
                }
            }
            Action::Close(reason) => self.close_now(id, reason, io),
        }
    }

    /// Claims the device in the registry and takes over any older session.
    fn register<I: Io>(
        &mut self,
        id: ConnId,
        device: DeviceId,
        clean_start: bool,
        more: &mut Vec<Action>,
        io: &mut I,
    ) {
        let me = self.session_ref(id, true);
        let previous = self.shared.registry.claim(&device, me);
        let resume = !clean_start;
        let now_or_later = match previous {
            None => TakenOver::Now(None),
            Some(prev) if prev.shard == self.id => {
                self.take_over_local(prev, (self.id, id), resume, io)
            }
            Some(prev) => {
                let msg = ShardMsg::TakeOver {
                    device,
                    target: prev,
                    requester: (self.id, id),
                    resume,
                };
                match self.shared.shard(prev.shard).map(|h| h.send(msg)) {
                    Some(Ok(())) => TakenOver::Later,
                    // The other shard cannot be reached: start afresh.
                    _ => TakenOver::Now(None),
                }
            }
        };
        match now_or_later {
            TakenOver::Now(state) => {
                self.with_session(id, more, |s, env| s.on_registered(state, env));
            }
            TakenOver::Later => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.awaiting_handoff = true;
                }
            }
        }
    }

    /// Ends the session in `target` (this shard) for a takeover by `requester`; its persistent
    /// state comes back when `resume`.
    fn take_over_local<I: Io>(
        &mut self,
        target: SessionRef,
        requester: (u16, ConnId),
        resume: bool,
        io: &mut I,
    ) -> TakenOver {
        let tid = ConnId::from(target);
        let Some(entry) = self
            .entries
            .get_mut(target.slot as usize)
            .filter(|e| e.generation == target.generation)
        else {
            return TakenOver::Now(None);
        };
        match &mut entry.slot {
            Slot::Detached(_) => {
                let Slot::Detached(d) = std::mem::replace(&mut entry.slot, Slot::Free) else {
                    return TakenOver::Now(None);
                };
                self.free.push(target.slot);
                self.metrics.detached(-1);
                // A resumed session cancels a pending will; a fresh one publishes it now.
                if let (false, Some((will, _))) = (resume, d.will) {
                    self.metrics.add(Counter::WillsPublished, 1);
                    self.push_upstream_event(UpstreamEvent::Published(will));
                }
                TakenOver::Now(resume.then_some(d.persistent))
            }
            Slot::Conn(c) if c.awaiting_handoff && !c.closed => {
                // Taken over while waiting for its own hand-off: it closes, and the state it
                // waits for goes on to the requester when it arrives.
                self.forwards.insert(tid, requester);
                self.close_for_takeover(tid, false, io);
                TakenOver::Later
            }
            Slot::Conn(_) => TakenOver::Now(self.close_for_takeover(tid, resume, io)),
            Slot::Free => TakenOver::Now(None),
        }
    }

    fn close_for_takeover<I: Io>(
        &mut self,
        id: ConnId,
        resume: bool,
        io: &mut I,
    ) -> Option<Box<Persistent>> {
        let mut actions = Vec::new();
        self.with_session(id, &mut actions, |s, env| {
            s.close_by_server(
                CloseReason::TakenOver,
                v5::DisconnectReasonCode::SessionTakenOver,
                env,
            )
        });
        let detached = self.finish(id, CloseReason::TakenOver, resume, false, io);
        detached.and_then(|d| if resume { d.persistent } else { None })
    }

    fn established(&mut self, id: ConnId, session_present: bool) {
        let wall = self.wall;
        if let Some(conn) = self.conn_mut(id) {
            conn.connected_at = wall;
        }
        let Some(conn) = self.conn(id) else { return };
        let Some(device) = conn.session.device() else {
            return;
        };
        let ev = UpstreamEvent::Connected(Connected {
            device_id: device.device_id.clone(),
            client_id: conn.session.client_id().to_owned(),
            peer: conn.peer,
            protocol: conn.session.version().level(),
            keepalive_secs: conn.session.keepalive_secs(),
            session_present,
            at: self.wall,
        });
        self.push_upstream_event(ev);
    }

    /// Lifecycle events are never dropped: when the queue is full they wait in the shard.
    fn push_upstream_event(&mut self, ev: UpstreamEvent) {
        if !self.lifecycle_backlog.is_empty() {
            self.lifecycle_backlog.push_back(ev);
            return;
        }
        if let Enqueue::Full(ev) = self.shared.upstream.try_send(ev) {
            self.lifecycle_backlog.push_back(ev);
        }
    }

    fn upstream<I: Io>(&mut self, id: ConnId, p: Published, io: &mut I) {
        match self.shared.upstream.try_send(UpstreamEvent::Published(p)) {
            Enqueue::Done | Enqueue::Closed => {}
            Enqueue::Full(ev) => match self.shared.upstream.policy() {
                UpstreamPolicy::Drop => self.metrics.add(Counter::UpstreamDropped, 1),
                UpstreamPolicy::Backpressure => {
                    self.metrics.add(Counter::UpstreamStalled, 1);
                    if let Some(conn) = self.conn_mut(id) {
                        conn.stalled = Some(Box::new(ev));
                        io.set_reading(id, false);
                        self.stalled.push(id);
                    } else {
                        // A will of a closing connection: keep it like a lifecycle event.
                        self.lifecycle_backlog.push_back(ev);
                    }
                }
            },
        }
    }

    /// Ends the session of `id` now: output is flushed, the driver closes the socket.
    fn close_now<I: Io>(&mut self, id: ConnId, reason: CloseReason, io: &mut I) {
        self.finish(id, reason, false, true, io);
    }

    /// The session ends: registry, lifecycle event, will, persistent state. The slot stays
    /// until the driver releases it. Returns what the session left behind unless it was kept
    /// here as a detached session (`keep`).
    fn finish<I: Io>(
        &mut self,
        id: ConnId,
        reason: CloseReason,
        resumed: bool,
        keep: bool,
        io: &mut I,
    ) -> Option<Detached> {
        let mut actions = Vec::new();
        let detached;
        let acl = self.shared.acl.load();
        {
            let (now, wall) = (self.now, self.wall);
            let config = &self.shared.config.session;
            let metrics = &*self.metrics;
            let Some(Entry {
                generation,
                slot: Slot::Conn(conn),
            }) = self.entries.get_mut(id.slot as usize)
            else {
                return None;
            };
            if *generation != id.generation || conn.closed {
                return None;
            }
            conn.closed = true;
            let mut env = Env {
                now,
                wall,
                config,
                acl: &acl,
                metrics,
                out: &mut conn.out,
                actions: &mut actions,
            };
            detached = Some(conn.session.on_closed(resumed, &mut env));
        }
        drop(acl);
        self.metrics.closed(reason);
        // A will without delay comes out as an action.
        for a in actions {
            if let Action::Upstream(p) = a {
                self.upstream(id, p, io);
            }
        }
        let (device, client_id, peer, was_established) = match self.conn(id) {
            Some(c) => (
                c.session.device().cloned(),
                c.session.client_id().to_owned(),
                c.peer,
                c.session.connected_once(),
            ),
            None => return detached,
        };
        let mut detached = detached?;
        let mut session_kept = false;
        if let Some(device) = device.as_ref() {
            let me = self.session_ref(id, true);
            if keep && detached.persistent.is_some() && reason != CloseReason::TakenOver {
                session_kept = self.detach(id, device, &mut detached);
            } else if reason != CloseReason::TakenOver {
                self.shared.registry.release(&device.device_id, me);
                self.shared.router.forget(&device.device_id);
            }
            if was_established {
                self.push_upstream_event(UpstreamEvent::Disconnected(Disconnected {
                    device_id: device.device_id.clone(),
                    client_id,
                    peer,
                    reason,
                    session_kept,
                    at: self.wall,
                }));
            }
        }
        // Messages the session held while registering follow the device.
        let undelivered = std::mem::take(&mut detached.undelivered);
        if let Some(device) = device.as_ref() {
            let me = self.session_ref(id, true);
            for msg in undelivered {
                self.deliver(&device.device_id, me, msg, 1, io);
            }
        }
        self.flush(id, io);
        io.close(id);
        Some(detached)
    }

    /// Keeps a persistent session in this shard after its connection ended. The slot of the
    /// connection is reused for it once the driver releases the socket, so a new slot is taken.
    fn detach(&mut self, id: ConnId, device: &Arc<DeviceInfo>, d: &mut Detached) -> bool {
        let Some(persistent) = d.persistent.take() else {
            return false;
        };
        let expires_at = self.now.plus(u64::from(persistent.expiry_secs) * 1000);
        let will = d
            .delayed_will
            .take()
            .map(|(p, delay)| (p, self.now.plus(u64::from(delay) * 1000)));
        let new_id = self.allocate(Slot::Detached(Box::new(DetachedSession {
            device: Arc::clone(device),
            persistent,
            expires_at,
            will,
            timer_at: None,
        })));
        let old = self.session_ref(id, true);
        let new = self.session_ref(new_id, false);
        // Re-point the registry from the connection to the detached session, unless a newer
        // session already owns the device.
        if !self.shared.registry.replace(&device.device_id, old, new) {
            self.free_slot(new_id);
            return false;
        }
        self.metrics.detached(1);
        self.schedule(new_id);
        true
    }

    fn hand_off(&mut self, (shard, conn): (u16, ConnId), state: Option<Box<Persistent>>) {
        if shard == self.id {
            self.pending_handoffs.push((conn, state));
        } else if let Some(h) = self.shared.shard(shard) {
            let _ = h.send(ShardMsg::HandOff { conn, state });
        }
    }

    /// The driver is done with `id` (socket closed, no operation pending): the slot is freed.
    pub fn release(&mut self, id: ConnId) {
        let is_conn = matches!(self.entries.get(id.slot as usize), Some(Entry { generation, slot: Slot::Conn(_) }) if *generation == id.generation);
        if is_conn {
            self.free_slot(id);
            self.live -= 1;
            self.shared
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The peer closed the connection or the transport failed.
    pub fn on_hangup<I: Io>(&mut self, id: ConnId, error: bool, io: &mut I) {
        let reason = if error {
            CloseReason::TransportError
        } else {
            CloseReason::ClientGone
        };
        let reason = match self.conn(id) {
            // A client that sent DISCONNECT and then closed is a normal disconnect.
            Some(c) if c.closed => return,
            Some(_) => reason,
            None => return,
        };
        self.finish(id, reason, false, true, io);
    }

    /// Moves the connection's output to the driver.
    fn flush<I: Io>(&mut self, id: ConnId, io: &mut I) {
        if let Some(conn) = self.conn_mut(id)
            && !conn.out.is_empty()
        {
            // Move the buffer out whole: a split would leave the idle connection holding a
            // reference to the allocation of its last packet.
            let bytes = std::mem::take(&mut conn.out);
            let n = bytes.len() as u64;
            io.send(id, bytes);
            self.metrics.add(Counter::BytesOut, n);
        }
    }

    fn schedule(&mut self, id: ConnId) {
        let config = &self.shared.config.session;
        let Some(entry) = self
            .entries
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation)
        else {
            return;
        };
        let (deadline, timer_at) = match &mut entry.slot {
            Slot::Conn(c) if !c.closed => {
                let d = [c.session.next_deadline(config), c.paused_until]
                    .into_iter()
                    .flatten()
                    .min();
                (d, &mut c.timer_at)
            }
            Slot::Detached(d) => {
                let next = d
                    .will
                    .as_ref()
                    .map(|(_, at)| *at)
                    .into_iter()
                    .chain([d.expires_at])
                    .min();
                (next, &mut d.timer_at)
            }
            _ => return,
        };
        if let Some(d) = deadline
            && timer_at.is_none_or(|t| d < t)
        {
            *timer_at = Some(d);
            self.timers.insert(id, d);
        }
    }

    /// Does everything that is not driven by socket events: the inbox, timers, waiting
    /// lifecycle events and stalled publications. Returns when the driver should call again
    /// at the latest.
    pub fn poll<I: Io>(&mut self, io: &mut I) -> Option<Millis> {
        self.refresh_clock();
        self.waker.reset();
        for _ in 0..4096 {
            let Ok(msg) = self.inbox.try_recv() else {
                break;
            };
            self.on_msg(msg, io);
        }
        let handoffs = std::mem::take(&mut self.pending_handoffs);
        for (conn, state) in handoffs {
            self.on_msg(ShardMsg::HandOff { conn, state }, io);
        }
        let mut due = Vec::new();
        self.timers.advance(self.now, &mut due);
        for id in due {
            self.on_timer(id, io);
        }
        self.retry_upstream(io);
        if !self.inbox.is_empty() || !self.pending_handoffs.is_empty() {
            // More work is waiting: come back at once.
            return Some(self.now);
        }
        let backlog = (!self.lifecycle_backlog.is_empty() || !self.stalled.is_empty())
            .then(|| self.now.plus(10));
        [self.timers.next_wake(), backlog]
            .into_iter()
            .flatten()
            .min()
    }

    fn retry_upstream<I: Io>(&mut self, io: &mut I) {
        while let Some(ev) = self.lifecycle_backlog.pop_front() {
            if let Enqueue::Full(ev) = self.shared.upstream.try_send(ev) {
                self.lifecycle_backlog.push_front(ev);
                return;
            }
        }
        let stalled = std::mem::take(&mut self.stalled);
        for id in stalled {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            let Some(ev) = conn.stalled.take() else {
                continue;
            };
            match self.shared.upstream.try_send(*ev) {
                Enqueue::Full(ev) => {
                    if let Some(conn) = self.conn_mut(id) {
                        conn.stalled = Some(Box::new(ev));
                    }
                    self.stalled.push(id);
                }
                _ => self.resume_reading(id, io),
            }
        }
    }

    fn resume_reading<I: Io>(&mut self, id: ConnId, io: &mut I) {
        let Some(conn) = self.conn(id) else { return };
        if conn.paused_until.is_some() || conn.stalled.is_some() || conn.closed {
            return;
        }
        io.set_reading(id, true);
        self.process_buffered(id, io);
        self.flush(id, io);
        self.schedule(id);
    }

    fn on_timer<I: Io>(&mut self, id: ConnId, io: &mut I) {
        let now = self.now;
        let Some(entry) = self
            .entries
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation)
        else {
            return;
        };
        match &mut entry.slot {
            Slot::Conn(c) if !c.closed => {
                c.timer_at = None;
                if c.paused_until.is_some_and(|t| t <= now) {
                    c.paused_until = None;
                    self.resume_reading(id, io);
                }
                self.run(id, io, |s, env| s.on_tick(env));
                self.flush(id, io);
            }
            Slot::Detached(d) => {
                d.timer_at = None;
                if d.will.as_ref().is_some_and(|(_, at)| *at <= now)
                    && let Some((will, _)) = d.will.take()
                {
                    self.metrics.add(Counter::WillsPublished, 1);
                    self.push_upstream_event(UpstreamEvent::Published(will));
                }
                let expired = match &self.entries[id.slot as usize].slot {
                    Slot::Detached(d) => d.expires_at <= now,
                    _ => false,
                };
                if expired {
                    self.expire(id);
                } else {
                    self.schedule(id);
                }
            }
            _ => {}
        }
    }

    fn expire(&mut self, id: ConnId) {
        let device = match &self.entries[id.slot as usize].slot {
            Slot::Detached(d) => d.device.device_id.clone(),
            _ => return,
        };
        self.shared
            .registry
            .release(&device, self.session_ref(id, false));
        self.shared.router.forget(&device);
        self.free_slot(id);
        self.metrics.detached(-1);
        self.metrics.add(Counter::SessionsExpired, 1);
    }

    fn on_msg<I: Io>(&mut self, msg: ShardMsg, io: &mut I) {
        match msg {
            ShardMsg::AuthDone { conn, outcome } => {
                self.run(conn, io, |s, env| s.on_auth(outcome, env));
                self.after_unblock(conn, io);
            }
            ShardMsg::Deliver {
                device,
                target,
                msg,
                hops,
            } => self.deliver(&device, target, msg, hops, io),
            ShardMsg::TakeOver {
                target,
                requester,
                resume,
                ..
            } => {
                if let TakenOver::Now(state) = self.take_over_local(target, requester, resume, io) {
                    self.hand_off(requester, state);
                }
            }
            ShardMsg::HandOff { conn, state } => {
                if let Some(requester) = self.forwards.remove(&conn) {
                    // This connection was taken over meanwhile: pass the state on.
                    self.hand_off(requester, state);
                    return;
                }
                if let Some(c) = self.conn_mut(conn) {
                    c.awaiting_handoff = false;
                }
                self.run(conn, io, |s, env| s.on_registered(state, env));
                self.after_unblock(conn, io);
            }
            ShardMsg::Kick { target, reason, .. } => {
                let id = ConnId::from(target);
                if self.conn(id).is_some() {
                    self.run(id, io, |s, env| {
                        s.close_by_server(
                            reason,
                            v5::DisconnectReasonCode::AdministrativeAction,
                            env,
                        )
                    });
                } else if matches!(self.entries.get(id.slot as usize), Some(Entry { generation, slot: Slot::Detached(_) }) if *generation == id.generation)
                {
                    self.expire(id);
                }
            }
            ShardMsg::Ops(req) => self.on_ops(*req, io),
            ShardMsg::Shutdown => self.shutdown(io),
        }
    }

    /// After authentication or a hand-off, frames held back may be processed.
    fn after_unblock<I: Io>(&mut self, id: ConnId, io: &mut I) {
        if self
            .conn(id)
            .is_some_and(|c| c.session.accepts_frames() && !c.rbuf.is_empty())
        {
            self.process_buffered(id, io);
        }
        self.flush(id, io);
    }

    /// Hands a message to the session `target` of `device`. A session moves while messages
    /// are on their way to it — from its connection to a detached slot, from a detached slot
    /// or a closing connection to a new connection, possibly on another shard — so a target
    /// that is no longer here is looked up again and the message follows the session.
    fn deliver<I: Io>(
        &mut self,
        device: &DeviceId,
        target: SessionRef,
        msg: Downlink,
        hops: u8,
        io: &mut I,
    ) {
        /// Forwards beyond this count mean the session keeps moving faster than messages
        /// reach it; the message is then counted as undeliverable.
        const MAX_HOPS: u8 = 4;
        let id = ConnId::from(target);
        let max_queue = self.shared.config.session.max_queued_messages as usize;
        match self.entries.get_mut(id.slot as usize) {
            Some(Entry {
                generation,
                slot: Slot::Conn(c),
            }) if *generation == id.generation && !c.closed => {
                self.run(id, io, |s, env| s.on_deliver(msg, env));
                self.flush(id, io);
            }
            Some(Entry {
                generation,
                slot: Slot::Detached(d),
            }) if *generation == id.generation => {
                let granted = d.persistent.subscriptions.qos_for(&d.device, &msg.topic);
                match granted.map(|g| msg.qos.less_value(g)) {
                    Some(QoS::AtLeastOnce | QoS::ExactlyOnce) => {
                        let qos = msg.qos.less_value(granted.unwrap_or(QoS::AtMostOnce));
                        if matches!(
                            d.persistent
                                .outbox
                                .push_offline(Downlink { qos, ..msg }, max_queue),
                            Pushed::Dropped | Pushed::DroppedOldest
                        ) {
                            self.metrics.add(Counter::QueueDropped, 1);
                        }
                    }
                    // QoS 0 messages are not kept for offline devices.
                    _ => self.metrics.add(Counter::Undeliverable, 1),
                }
            }
            _ => match self.shared.registry.get(device) {
                Some(now) if !now.same_slot(target) && hops < MAX_HOPS => {
                    if now.shard == self.id {
                        self.deliver(device, now, msg, hops + 1, io);
                    } else {
                        let forwarded = self.shared.shard(now.shard).map(|h| {
                            h.send(ShardMsg::Deliver {
                                device: device.clone(),
                                target: now,
                                msg,
                                hops: hops + 1,
                            })
                        });
                        if !matches!(forwarded, Some(Ok(()))) {
                            self.metrics.add(Counter::Undeliverable, 1);
                        }
                    }
                }
                _ => self.metrics.add(Counter::Undeliverable, 1),
            },
        }
    }

    fn shutdown<I: Io>(&mut self, io: &mut I) {
        self.stopping = true;
        let ids: Vec<ConnId> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.slot {
                Slot::Conn(c) if !c.closed => Some(ConnId {
                    slot: i as u32,
                    generation: e.generation,
                }),
                _ => None,
            })
            .collect();
        for id in ids {
            self.run(id, io, |s, env| {
                s.close_by_server(
                    CloseReason::ServerShutdown,
                    v5::DisconnectReasonCode::ServerShuttingDown,
                    env,
                )
            });
            // A session that had not answered CONNECT yet closes without a word.
            if self.conn(id).is_some_and(|c| !c.closed) {
                self.close_now(id, CloseReason::ServerShutdown, io);
            }
        }
    }

    /// The subscriptions a detached session of `device` holds (tests).
    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn detached_subscriptions(&self, device: &DeviceId) -> Option<SubscriptionSet> {
        self.entries.iter().find_map(|e| match &e.slot {
            Slot::Detached(d) if &d.device.device_id == device => {
                Some(d.persistent.subscriptions.clone())
            }
            _ => None,
        })
    }
}
