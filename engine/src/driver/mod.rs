//! I/O drivers for the shards: io_uring ([`uring`]) when the kernel allows it, epoll
//! ([`epoll`]) otherwise (docs/architecture.md, "The engine"). Both drive the same
//! [`ShardCore`]; session code never knows which one runs it.

mod epoll;
mod uring;

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::coap::CoapEndpoint;
use crate::config::Driver;
use crate::shard::ShardCore;

/// The driver a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring: multishot accept, multishot receive from a provided-buffer ring.
    IoUring,
    /// epoll readiness with reads into a per-shard scratch buffer.
    Epoll,
}

impl DriverKind {
    /// The configuration spelling.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Picks the driver: `auto` probes io_uring and falls back to epoll with a log line.
pub fn select(configured: Driver) -> io::Result<DriverKind> {
    match configured {
        Driver::Epoll => Ok(DriverKind::Epoll),
        Driver::IoUring => match uring::probe() {
            Ok(()) => Ok(DriverKind::IoUring),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("io_uring is not available: {e}"),
            )),
        },
        Driver::Auto => match uring::probe() {
            Ok(()) => Ok(DriverKind::IoUring),
            Err(e) => {
                tracing::info!(reason = %e, "io_uring is not available; using epoll");
                Ok(DriverKind::Epoll)
            }
        },
    }
}

/// A shard's CoAP socket and the endpoint its datagrams go to.
pub type Datagrams = (UdpSocket, Arc<CoapEndpoint>);

/// Runs one shard on `kind` until it stops.
pub fn run(
    kind: DriverKind,
    core: ShardCore,
    listeners: Vec<TcpListener>,
    datagrams: Option<Datagrams>,
) -> io::Result<()> {
    match kind {
        DriverKind::IoUring => uring::run(core, listeners, datagrams),
        DriverKind::Epoll => epoll::run(core, listeners, datagrams),
    }
}

/// A non-blocking UDP socket with SO_REUSEPORT, so that every shard receives on the same port
/// (the kernel spreads peers among them by address hash).
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Bursts of registrations should wait in the kernel rather than be dropped.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A non-blocking listener with SO_REUSEPORT, so that every shard accepts on the same port
/// and the kernel spreads connections among them.
pub fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Backs off accepting after EMFILE/ENFILE and the like, and logs at most every ten seconds.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    until: Option<Instant>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    /// How long accepting pauses after a failure.
    pub(crate) const PAUSE: Duration = Duration::from_millis(100);

    pub(crate) fn failed(&mut self, e: &io::Error) {
        let now = Instant::now();
        self.until = Some(now + Self::PAUSE);
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed; pausing accepts briefly");
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.until.is_some()
    }

    /// Whether a paused accept loop should try again now.
    pub(crate) fn retry_due(&mut self) -> bool {
        match self.until {
            Some(t) if Instant::now() >= t => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}
