//! [`SimDevice`]: one simulated LwM2M device with a blocking API, for integration tests.
//!
//! The device owns one UDP socket at a time and one receive thread blocked in `recv_from` on
//! it; state lives behind a mutex with a condition variable that every change signals. A
//! blocking call (register, update, a confirmable notification) sends its request and waits on
//! the condition variable, retransmitting on RFC 7252's schedule from the calling thread, until
//! the receive thread files the answer. A separate command response is sent (and retransmitted)
//! by a short-lived thread of its own. `wake` binds a new socket (so a new port) before it
//! retires the old one: the old receive thread is woken by an empty datagram it sends itself,
//! sees that its socket is retired and ends.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};

use super::watermeter::{Command, FrameError, Report};
use super::wire::{
    self, CF_OCTET_STREAM, Code, EXCHANGE_LIFETIME, Lwm2mVersion, OBSERVE_MODULUS, Rng,
    Transmission,
};

/// How a device answers a command (`POST /19/1/0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBehaviour {
    /// `2.04 Changed` piggybacked on the ACK with the response frame `0xA0, result`.
    Piggybacked {
        /// The result byte (0 success, else an error code).
        result: u8,
    },
    /// `2.04 Changed` piggybacked, without payload.
    NoPayload,
    /// An empty ACK at once, then after `delay` a separate confirmable `2.04` with the same
    /// token and the frame `0xA0, result`, retransmitted until acknowledged.
    Separate {
        /// Time between the empty ACK and the response.
        delay: Duration,
        /// The result byte.
        result: u8,
    },
    /// No answer at all, as if asleep (the command is still recorded).
    Ignore,
    /// An RST.
    Reset,
    /// A piggybacked error code (4.xx/5.xx) with a diagnostic payload.
    Error {
        /// The response code.
        code: Code,
        /// The diagnostic payload (may be empty).
        diagnostic: String,
    },
}

impl Default for CommandBehaviour {
    /// Piggybacked success (`0xA0 0x00`).
    fn default() -> Self {
        CommandBehaviour::Piggybacked { result: 0 }
    }
}

/// How a [`SimDevice`] registers and behaves.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Registration lifetime `lt`, seconds.
    pub lifetime: u32,
    /// LwM2M version (`lwm2m=`).
    pub version: Lwm2mVersion,
    /// Queue mode (`b=UQ` in 1.0, `Q` in 1.1+); `b=U` without.
    pub queue_mode: bool,
    /// Local address to bind (port 0 always). `None`: 127.0.0.1 when the server is on
    /// loopback, else the unspecified address of the server's family.
    pub bind: Option<IpAddr>,
    /// Retransmission of the device's own confirmable messages.
    pub transmission: Transmission,
    /// How long to wait for a separate response after an empty ACK.
    pub response_timeout: Duration,
    /// How commands are answered (changeable later with
    /// [`SimDevice::set_command_behaviour`]).
    pub command_behaviour: CommandBehaviour,
    /// The report the observe answer carries (changeable with [`SimDevice::set_report`];
    /// a notification also replaces it).
    pub report: Report,
}

impl Default for DeviceOptions {
    /// LwM2M 1.1 in queue mode, `lt` 86400, RFC 7252 timing, 93 s for separate responses,
    /// piggybacked success.
    fn default() -> Self {
        DeviceOptions {
            lifetime: 86_400,
            version: Lwm2mVersion::V1_1,
            queue_mode: true,
            bind: None,
            transmission: Transmission::default(),
            response_timeout: Duration::from_secs(93),
            command_behaviour: CommandBehaviour::default(),
            report: Report::default(),
        }
    }
}

impl DeviceOptions {
    /// The defaults with short timeouts for loopback tests ([`Transmission::fast`], 5 s for
    /// separate responses).
    pub fn fast() -> Self {
        DeviceOptions {
            transmission: Transmission::fast(),
            response_timeout: Duration::from_secs(5),
            ..DeviceOptions::default()
        }
    }
}

/// A command the device received, in order of arrival (retransmissions are not repeated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedCommand {
    /// The payload as received.
    pub frame: Vec<u8>,
    /// The decoded `watermeter-v1` command, or why it does not decode.
    pub command: Result<Command, FrameError>,
    /// The request's message id.
    pub mid: u16,
    /// The request's token.
    pub token: Vec<u8>,
    /// Whether the request was confirmable.
    pub confirmable: bool,
    /// The request's content format, if any (42 expected).
    pub content_format: Option<u32>,
    /// Where it came from.
    pub from: SocketAddr,
    /// When it arrived.
    pub received_at: Instant,
}

/// What a device saw besides its exchanges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Datagrams that arrived while asleep (dropped unread).
    pub dropped_asleep: u64,
    /// Retransmitted confirmable requests of the server answered again from the cache.
    pub duplicates: u64,
    /// Retransmissions of the device's own confirmable messages.
    pub retransmissions: u64,
    /// `GET /19/0/0` requests answered (with or without Observe).
    pub observe_requests: u64,
    /// Notifications sent.
    pub notifications: u64,
    /// Datagrams that are not CoAP.
    pub malformed: u64,
    /// ACKs, RSTs and responses that matched no exchange of the device.
    pub unmatched: u64,
}

/// Why a simulator call failed.
#[derive(Debug)]
pub enum SimError {
    /// The server answered with an error code (4.xx/5.xx) or another unexpected code.
    Refused {
        /// The response code.
        code: Code,
        /// The diagnostic payload, as text.
        diagnostic: String,
        /// The Max-Age option (4.29, 5.03), seconds.
        max_age: Option<u32>,
    },
    /// No ACK after every retransmission, or no separate response in time.
    Timeout {
        /// Transmissions sent (first + retransmissions).
        attempts: u32,
    },
    /// The server answered with an RST.
    Reset,
    /// The call needs a registration (location) the device does not have.
    NotRegistered,
    /// A notification needs an observation the server has not made (or cancelled).
    NoObservation,
    /// The device is asleep (or was put to sleep during the exchange).
    Asleep,
    /// The device was dropped during the call.
    Closed,
    /// A wait for commands ended with fewer than wanted.
    WaitTimeout {
        /// Commands wanted.
        wanted: usize,
        /// Commands received.
        got: usize,
    },
    /// A socket error.
    Io(io::Error),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Refused {
                code,
                diagnostic,
                max_age,
            } => {
                write!(f, "refused with {code}")?;
                if !diagnostic.is_empty() {
                    write!(f, ": {diagnostic}")?;
                }
                if let Some(a) = max_age {
                    write!(f, " (Max-Age {a})")?;
                }
                Ok(())
            }
            SimError::Timeout { attempts } => {
                write!(f, "no answer after {attempts} transmissions")
            }
            SimError::Reset => f.write_str("reset by the server"),
            SimError::NotRegistered => f.write_str("not registered"),
            SimError::NoObservation => f.write_str("no observation of /19/0/0"),
            SimError::Asleep => f.write_str("device asleep"),
            SimError::Closed => f.write_str("device closed"),
            SimError::WaitTimeout { wanted, got } => {
                write!(f, "got {got} of {wanted} commands in time")
            }
            SimError::Io(e) => write!(f, "socket: {e}"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for SimError {
    fn from(e: io::Error) -> Self {
        SimError::Io(e)
    }
}

/// One simulated LwM2M device (one endpoint name) with a blocking API; see the module docs.
/// Dropping it stops its threads and closes its socket (without de-registering).
#[derive(Debug)]
pub struct SimDevice {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: String,
    server: SocketAddr,
    bind: IpAddr,
    version: Lwm2mVersion,
    queue_mode: bool,
    transmission: Transmission,
    response_timeout: Duration,
    state: Mutex<State>,
    changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct State {
    socket: Arc<UdpSocket>,
    generation: u64,
    asleep: bool,
    closed: bool,
    lifetime: u32,
    location: Option<String>,
    observe_token: Option<Vec<u8>>,
    observe_seq: u32,
    observations: u64,
    report: Report,
    behaviour: CommandBehaviour,
    commands: Vec<ReceivedCommand>,
    rng: Rng,
    next_mid: u16,
    pending: HashMap<u16, Pending>,
    answered: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    answered_order: VecDeque<(Instant, SocketAddr, u16)>,
    stats: DeviceStats,
}

/// One of the device's own confirmable messages awaiting its ACK (and response).
#[derive(Debug)]
struct Pending {
    token: Vec<u8>,
    wants_response: bool,
    acked_at: Option<Instant>,
    response: Option<Packet>,
    reset: bool,
}

impl State {
    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn token(&mut self) -> Vec<u8> {
        self.rng.next_u64().to_be_bytes().to_vec()
    }

    fn send(&self, bytes: &[u8], to: SocketAddr) {
        // UDP: a failed send is a lost datagram, which retransmission covers.
        let _ = self.socket.send_to(bytes, to);
    }

    /// Remembers the answer to a confirmable request for `EXCHANGE_LIFETIME`.
    fn remember(&mut self, from: SocketAddr, mid: u16, answer: Option<Vec<u8>>, now: Instant) {
        while let Some(&(at, f, m)) = self.answered_order.front() {
            if now.duration_since(at) < EXCHANGE_LIFETIME {
                break;
            }
            self.answered_order.pop_front();
            self.answered.remove(&(f, m));
        }
        if self.answered.insert((from, mid), answer).is_none() {
            self.answered_order.push_back((now, from, mid));
        }
    }
}

/// The answer to a server request: sent at once, plus maybe a separate response later.
struct Answer {
    now: Option<Vec<u8>>,
    separate: Option<(Duration, Vec<u8>, Vec<u8>)>,
}

impl SimDevice {
    /// Binds a socket, starts the device and registers it (`POST /rd`); fails with the
    /// server's code and diagnostic when refused.
    pub fn register(
        server: SocketAddr,
        endpoint: &str,
        opts: DeviceOptions,
    ) -> Result<SimDevice, SimError> {
        let d = SimDevice::new(server, endpoint, opts)?;
        d.register_again()?;
        Ok(d)
    }

    /// Binds a socket and starts the device without registering it (then
    /// [`register_again`](Self::register_again)).
    pub fn new(
        server: SocketAddr,
        endpoint: &str,
        opts: DeviceOptions,
    ) -> Result<SimDevice, SimError> {
        let bind = opts.bind.unwrap_or(match server.ip() {
            ip if ip.is_loopback() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let socket = Arc::new(UdpSocket::bind((bind, 0))?);
        let mut rng = Rng::seeded();
        let next_mid = rng.next_u64() as u16;
        let inner = Arc::new(Inner {
            endpoint: endpoint.to_owned(),
            server,
            bind,
            version: opts.version,
            queue_mode: opts.queue_mode,
            transmission: opts.transmission,
            response_timeout: opts.response_timeout,
            state: Mutex::new(State {
                socket: Arc::clone(&socket),
                generation: 0,
                asleep: false,
                closed: false,
                lifetime: opts.lifetime,
                location: None,
                observe_token: None,
                observe_seq: 0,
                observations: 0,
                report: opts.report,
                behaviour: opts.command_behaviour,
                commands: Vec::new(),
                rng,
                next_mid,
                pending: HashMap::new(),
                answered: HashMap::new(),
                answered_order: VecDeque::new(),
                stats: DeviceStats::default(),
            }),
            changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        });
        Inner::spawn_receiver(&inner, socket, 0)?;
        Ok(SimDevice { inner })
    }

    /// Registers (again): `POST /rd?ep=…` with the link-format body; remembers the
    /// Location-Path of the `2.01 Created`.
    pub fn register_again(&self) -> Result<(), SimError> {
        let inner = &self.inner;
        let lifetime = {
            let mut st = inner.lock();
            // A new registration is observed anew (the server's GET may beat the 2.01).
            st.observe_token = None;
            st.lifetime
        };
        let resp = inner.exchange(None, true, |mid, token| {
            wire::register_request(
                mid,
                token,
                &inner.endpoint,
                lifetime,
                inner.version,
                inner.queue_mode,
            )
        })?;
        expect(&resp, &[Code::CREATED])?;
        let location = wire::location_path(&resp);
        inner.lock().location = Some(location);
        Ok(())
    }

    /// Registration update `POST /{location}` without parameters.
    pub fn update(&self) -> Result<(), SimError> {
        self.update_inner(None)
    }

    /// Registration update with a new lifetime (`?lt=`), kept for later registrations.
    pub fn update_with_lifetime(&self, lifetime: u32) -> Result<(), SimError> {
        self.update_inner(Some(lifetime))?;
        self.inner.lock().lifetime = lifetime;
        Ok(())
    }

    fn update_inner(&self, lifetime: Option<u32>) -> Result<(), SimError> {
        let location = self.inner.location()?;
        let resp = self.inner.exchange(None, true, |mid, token| {
            wire::update_request(mid, token, &location, lifetime)
        })?;
        expect(&resp, &[Code::CHANGED]).map(drop)
    }

    /// De-registers (`DELETE /{location}`, `2.02 Deleted`) and forgets the location.
    pub fn deregister(&self) -> Result<(), SimError> {
        let location = self.inner.location()?;
        let resp = self.inner.exchange(None, true, |mid, token| {
            wire::deregister_request(mid, token, &location)
        })?;
        expect(&resp, &[Code::DELETED])?;
        let mut st = self.inner.lock();
        st.location = None;
        st.observe_token = None;
        Ok(())
    }

    /// Sends a confirmable notification carrying `report` on the observe token and waits for
    /// its ACK (an RST cancels the observation and is [`SimError::Reset`]).
    pub fn notify(&self, report: Report) -> Result<(), SimError> {
        self.inner.notify(report, true)
    }

    /// Sends a non-confirmable notification carrying `report`; returns once sent.
    pub fn notify_non(&self, report: Report) -> Result<(), SimError> {
        self.inner.notify(report, false)
    }

    /// Stops answering: every datagram is dropped (and counted) until [`wake`](Self::wake).
    /// A blocking call in progress ends with [`SimError::Asleep`].
    pub fn sleep(&self) {
        let mut st = self.inner.lock();
        st.asleep = true;
        self.inner.changed.notify_all();
    }

    /// Wakes up from a new local UDP port (as after a NAT rebinding) and sends a registration
    /// update from it; answers again from then on. Also rebinds a device that is awake.
    pub fn wake(&self) -> Result<(), SimError> {
        self.inner.rebind()?;
        self.update()
    }

    /// As [`wake`](Self::wake), but the first datagram is a notification carrying `report`
    /// (confirmable or not) instead of an update.
    pub fn wake_with_notification(
        &self,
        report: Report,
        confirmable: bool,
    ) -> Result<(), SimError> {
        self.inner.rebind()?;
        self.inner.notify(report, confirmable)
    }

    /// Whether the device is asleep.
    pub fn is_asleep(&self) -> bool {
        self.inner.lock().asleep
    }

    /// Changes how the following commands are answered.
    pub fn set_command_behaviour(&self, behaviour: CommandBehaviour) {
        self.inner.lock().behaviour = behaviour;
    }

    /// Changes the report the observe answer carries.
    pub fn set_report(&self, report: Report) {
        self.inner.lock().report = report;
    }

    /// Every command received so far, in order.
    pub fn commands_received(&self) -> Vec<ReceivedCommand> {
        self.inner.lock().commands.clone()
    }

    /// Waits until at least `n` commands were received (all of them returned) or `timeout`
    /// passes ([`SimError::WaitTimeout`]).
    pub fn wait_for_commands(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedCommand>, SimError> {
        let st = self.inner.wait_until(timeout, |st| st.commands.len() >= n);
        if st.commands.len() >= n {
            Ok(st.commands.clone())
        } else {
            Err(SimError::WaitTimeout {
                wanted: n,
                got: st.commands.len(),
            })
        }
    }

    /// Waits until the server observes `/19/0/0` (a token is known); false on timeout.
    pub fn wait_observed(&self, timeout: Duration) -> bool {
        self.inner
            .wait_until(timeout, |st| st.observe_token.is_some())
            .observe_token
            .is_some()
    }

    /// The observe token of the current observation.
    pub fn observe_token(&self) -> Option<Vec<u8>> {
        self.inner.lock().observe_token.clone()
    }

    /// The registration location (`rd/…`), while registered.
    pub fn location(&self) -> Option<String> {
        self.inner.lock().location.clone()
    }

    /// The endpoint name (`ep`).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The current local address (changes with every wake).
    pub fn local_addr(&self) -> SocketAddr {
        let st = self.inner.lock();
        st.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.inner.bind, 0))
    }

    /// Counters of what the device saw.
    pub fn stats(&self) -> DeviceStats {
        self.inner.lock().stats
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        {
            let mut st = self.inner.lock();
            st.closed = true;
            poke(&st.socket);
            self.inner.changed.notify_all();
        }
        let handles = std::mem::take(&mut *self.inner.threads_lock());
        for h in handles {
            let _ = h.join();
        }
    }
}

/// Checks a response's code against the expected ones.
fn expect(resp: &Packet, ok: &[Code]) -> Result<Code, SimError> {
    let code = Code::from(resp.header.code);
    if ok.contains(&code) {
        Ok(code)
    } else {
        Err(SimError::Refused {
            code,
            diagnostic: wire::diagnostic(resp),
            max_age: wire::uint_of(resp, CoapOption::MaxAge),
        })
    }
}

/// Wakes a receive thread blocked on `socket` with an empty datagram from itself.
fn poke(socket: &UdpSocket) {
    if let Ok(mut addr) = socket.local_addr() {
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let _ = socket.send_to(&[], addr);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a receive thread must not hide the test's own failure: take the state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn threads_lock(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn location(&self) -> Result<String, SimError> {
        let st = self.lock();
        if st.asleep {
            return Err(SimError::Asleep);
        }
        st.location.clone().ok_or(SimError::NotRegistered)
    }

    /// Waits on the condition variable until `done` or `timeout`.
    fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !done(&st) && !st.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        st
    }

    fn spawn_receiver(
        this: &Arc<Inner>,
        socket: Arc<UdpSocket>,
        generation: u64,
    ) -> io::Result<()> {
        let inner = Arc::clone(this);
        let h = thread::Builder::new()
            .name(format!("coap-sim-{}", this.endpoint))
            .spawn(move || inner.receive_loop(&socket, generation))?;
        let mut threads = this.threads_lock();
        threads.retain(|t| !t.is_finished());
        threads.push(h);
        Ok(())
    }

    /// Binds a new socket (a new port, since the old one is still open), makes it current and
    /// retires the old one; the device is awake afterwards.
    fn rebind(self: &Arc<Inner>) -> Result<(), SimError> {
        let socket = Arc::new(UdpSocket::bind((self.bind, 0))?);
        let generation = {
            let mut st = self.lock();
            if st.closed {
                return Err(SimError::Closed);
            }
            let old = std::mem::replace(&mut st.socket, Arc::clone(&socket));
            st.generation += 1;
            st.asleep = false;
            poke(&old);
            st.generation
        };
        Inner::spawn_receiver(self, socket, generation)?;
        Ok(())
    }

    fn notify(self: &Arc<Inner>, report: Report, confirmable: bool) -> Result<(), SimError> {
        let frame = report.encode();
        let (token, seq) = {
            let mut st = self.lock();
            if st.asleep {
                return Err(SimError::Asleep);
            }
            let token = st.observe_token.clone().ok_or(SimError::NoObservation)?;
            st.observe_seq = (st.observe_seq + 1) % OBSERVE_MODULUS;
            st.report = report;
            st.stats.notifications += 1;
            if !confirmable {
                let mid = st.mid();
                let p = wire::notification(mid, &token, st.observe_seq, &frame, false);
                st.send(&wire::bytes(&p), self.server);
                return Ok(());
            }
            (token, st.observe_seq)
        };
        let result = self.exchange(Some(token), false, |mid, token| {
            wire::notification(mid, token, seq, &frame, true)
        });
        if matches!(result, Err(SimError::Reset)) {
            // The server does not know the token: the observation is gone.
            self.lock().observe_token = None;
        }
        result.map(drop)
    }

    /// Sends a confirmable message built by `build(mid, token)` to the server and waits for
    /// its ACK (and, with `wants_response`, for the response, piggybacked or separate),
    /// retransmitting on the RFC 7252 schedule. Returns the response (the empty ACK without
    /// `wants_response`).
    fn exchange(
        &self,
        token: Option<Vec<u8>>,
        wants_response: bool,
        build: impl FnOnce(u16, &[u8]) -> Packet,
    ) -> Result<Packet, SimError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SimError::Closed);
        }
        if st.asleep {
            return Err(SimError::Asleep);
        }
        let mid = st.mid();
        let token = token.unwrap_or_else(|| st.token());
        let bytes = wire::bytes(&build(mid, &token));
        st.pending.insert(
            mid,
            Pending {
                token,
                wants_response,
                acked_at: None,
                response: None,
                reset: false,
            },
        );
        st.send(&bytes, self.server);
        let mut timeout = self.transmission.initial_timeout(&mut st.rng);
        let mut next = Instant::now() + timeout;
        let mut sent = 1u32;
        loop {
            let now = Instant::now();
            let Some(p) = st.pending.get_mut(&mid) else {
                return Err(SimError::Closed);
            };
            let outcome = if p.reset {
                Some(Err(SimError::Reset))
            } else if let Some(r) = p.response.take() {
                Some(Ok(r))
            } else if let Some(at) = p.acked_at {
                if !p.wants_response {
                    Some(Ok(wire::packet(
                        MessageType::Acknowledgement,
                        Code::EMPTY,
                        mid,
                        &[],
                    )))
                } else if now >= at + self.response_timeout {
                    Some(Err(SimError::Timeout { attempts: sent }))
                } else {
                    next = at + self.response_timeout;
                    None
                }
            } else if now >= next {
                if sent > self.transmission.max_retransmit {
                    Some(Err(SimError::Timeout { attempts: sent }))
                } else {
                    st.send(&bytes, self.server);
                    st.stats.retransmissions += 1;
                    sent += 1;
                    timeout *= 2;
                    next = now + timeout;
                    None
                }
            } else if st.closed {
                Some(Err(SimError::Closed))
            } else if st.asleep {
                Some(Err(SimError::Asleep))
            } else {
                None
            };
            if let Some(o) = outcome {
                st.pending.remove(&mid);
                return o;
            }
            let wait = next.saturating_duration_since(Instant::now());
            st = self
                .changed
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn receive_loop(self: Arc<Inner>, socket: &UdpSocket, generation: u64) {
        let mut buf = vec![0u8; 2048];
        loop {
            let got = socket.recv_from(&mut buf);
            let mut st = self.lock();
            if st.closed || st.generation != generation {
                return;
            }
            let (n, from) = match got {
                Ok(x) => x,
                Err(_) => {
                    // ICMP errors and the like: nothing to read; avoid spinning on a broken
                    // socket.
                    drop(st);
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if st.asleep {
                st.stats.dropped_asleep += 1;
                continue;
            }
            let separate = self.on_datagram(&mut st, &buf[..n], from);
            self.changed.notify_all();
            drop(st);
            if let Some((delay, token, payload)) = separate {
                let inner = Arc::clone(&self);
                let spawned = thread::Builder::new()
                    .name(format!("coap-sim-sep-{}", self.endpoint))
                    .spawn(move || inner.separate_response(delay, token, payload));
                if let Ok(h) = spawned {
                    let mut threads = self.threads_lock();
                    threads.retain(|t| !t.is_finished());
                    threads.push(h);
                }
            }
        }
    }

    /// Sends a separate `2.04` response after `delay` (unless the device sleeps or closes).
    fn separate_response(&self, delay: Duration, token: Vec<u8>, payload: Vec<u8>) {
        let st = self.wait_until(delay, |st| st.asleep);
        if st.closed || st.asleep {
            return;
        }
        drop(st);
        let _ = self.exchange(Some(token), false, |mid, token| {
            let mut p = wire::packet(MessageType::Confirmable, Code::CHANGED, mid, token);
            wire::set_content_format(&mut p, CF_OCTET_STREAM);
            p.payload = payload;
            p
        });
    }

    /// Handles one datagram; returns a separate response to schedule.
    fn on_datagram(
        &self,
        st: &mut State,
        data: &[u8],
        from: SocketAddr,
    ) -> Option<(Duration, Vec<u8>, Vec<u8>)> {
        let Ok(p) = Packet::from_bytes(data) else {
            st.stats.malformed += 1;
            return None;
        };
        let mid = p.header.message_id;
        let kind = p.header.get_type();
        let code = Code::from(p.header.code);
        let now = Instant::now();
        match kind {
            MessageType::Acknowledgement | MessageType::Reset => {
                match st.pending.get_mut(&mid) {
                    Some(pend) if kind == MessageType::Reset => pend.reset = true,
                    Some(pend) if code == Code::EMPTY => {
                        pend.acked_at.get_or_insert(now);
                    }
                    Some(pend) if p.get_token() == pend.token.as_slice() => {
                        pend.acked_at.get_or_insert(now);
                        pend.response = Some(p);
                    }
                    _ => st.stats.unmatched += 1,
                }
                None
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let con = kind == MessageType::Confirmable;
                if con && let Some(answer) = st.answered.get(&(from, mid)) {
                    if let Some(a) = answer.clone() {
                        st.send(&a, from);
                    }
                    st.stats.duplicates += 1;
                    return None;
                }
                let answer = if code == Code::EMPTY {
                    // CoAP ping (or nonsense): RST.
                    Answer {
                        now: con.then(|| wire::empty(MessageType::Reset, mid)),
                        separate: None,
                    }
                } else if code.class() == 0 {
                    self.on_request(st, &p, from, now)
                } else {
                    // A separate response to one of our requests.
                    let token = p.get_token();
                    let pend = st
                        .pending
                        .values_mut()
                        .find(|x| x.wants_response && x.token.as_slice() == token);
                    let matched = match pend {
                        Some(x) => {
                            x.acked_at.get_or_insert(now);
                            x.response = Some(p);
                            true
                        }
                        None => {
                            st.stats.unmatched += 1;
                            false
                        }
                    };
                    let kind = if matched {
                        MessageType::Acknowledgement
                    } else {
                        MessageType::Reset
                    };
                    Answer {
                        now: con.then(|| wire::empty(kind, mid)),
                        separate: None,
                    }
                };
                if let Some(a) = &answer.now {
                    st.send(a, from);
                }
                if con {
                    st.remember(from, mid, answer.now, now);
                }
                answer.separate
            }
        }
    }

    /// Answers a request of the server: the observe `GET`, commands, else 4.04/4.05.
    fn on_request(&self, st: &mut State, req: &Packet, from: SocketAddr, now: Instant) -> Answer {
        let con = req.header.get_type() == MessageType::Confirmable;
        let path = wire::uri_path(req);
        let method = Code::from(req.header.code);
        let mut separate = None;
        let (code, payload, cf, observe): (Code, Vec<u8>, Option<u16>, Option<u32>) =
            if wire::is_report_resource(&path) && method == Code::GET {
                st.stats.observe_requests += 1;
                let observe = match wire::uint_of(req, CoapOption::Observe) {
                    Some(0) => {
                        st.observe_token = Some(req.get_token().to_vec());
                        st.observations += 1;
                        Some(st.observe_seq)
                    }
                    Some(1) => {
                        if st.observe_token.as_deref() == Some(req.get_token()) {
                            st.observe_token = None;
                        }
                        None
                    }
                    _ => None,
                };
                (
                    Code::CONTENT,
                    st.report.encode().to_vec(),
                    Some(CF_OCTET_STREAM),
                    observe,
                )
            } else if wire::is_command_resource(&path) && method == Code::POST {
                let command = Command::decode(&req.payload);
                let decoded = command.is_ok();
                st.commands.push(ReceivedCommand {
                    frame: req.payload.clone(),
                    command,
                    mid: req.header.message_id,
                    token: req.get_token().to_vec(),
                    confirmable: con,
                    content_format: wire::uint_of(req, CoapOption::ContentFormat),
                    from,
                    received_at: now,
                });
                match st.behaviour.clone() {
                    CommandBehaviour::Ignore => {
                        return Answer {
                            now: None,
                            separate: None,
                        };
                    }
                    CommandBehaviour::Reset => {
                        return Answer {
                            now: Some(wire::empty(MessageType::Reset, req.header.message_id)),
                            separate: None,
                        };
                    }
                    CommandBehaviour::Error { code, diagnostic } => {
                        (code, diagnostic.into_bytes(), None, None)
                    }
                    _ if !decoded => (Code::BAD_REQUEST, b"bad command frame".to_vec(), None, None),
                    CommandBehaviour::NoPayload => (Code::CHANGED, Vec::new(), None, None),
                    CommandBehaviour::Piggybacked { result } => (
                        Code::CHANGED,
                        Command::response(result).to_vec(),
                        Some(CF_OCTET_STREAM),
                        None,
                    ),
                    CommandBehaviour::Separate { delay, result } => {
                        separate = Some((
                            delay,
                            req.get_token().to_vec(),
                            Command::response(result).to_vec(),
                        ));
                        return Answer {
                            now: con.then(|| {
                                wire::empty(MessageType::Acknowledgement, req.header.message_id)
                            }),
                            separate,
                        };
                    }
                }
            } else if wire::is_report_resource(&path) || wire::is_command_resource(&path) {
                (Code::METHOD_NOT_ALLOWED, Vec::new(), None, None)
            } else {
                (Code::NOT_FOUND, Vec::new(), None, None)
            };
        let mut resp = if con {
            wire::piggybacked(req, code, &[])
        } else {
            let mid = st.mid();
            wire::packet(MessageType::NonConfirmable, code, mid, req.get_token())
        };
        if let Some(seq) = observe {
            resp.add_option(CoapOption::Observe, wire::uint_option(seq));
        }
        if let Some(cf) = cf {
            wire::set_content_format(&mut resp, cf);
        }
        resp.payload = payload;
        Answer {
            now: Some(wire::bytes(&resp)),
            separate,
        }
    }
}
