//! The epoll driver (through mio): readiness, then reads into the shard's one scratch buffer,
//! so an idle connection holds no read buffer; writes go out directly and only what the socket
//! would not take waits for writability. Chosen when io_uring is unavailable or configured.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use fleetgate_codec::mqtt::bytes::{Buf, BytesMut};
use mio::net::{TcpListener as MioListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::AcceptBackoff;
use crate::metrics::Counter;
use crate::shard::{ConnId, Io, ShardCore};

const WAKER: Token = Token(usize::MAX);
/// The shard's CoAP socket (listener tokens end in 0x0, connection tokens in 0xF).
const UDP: Token = Token(0x7);
const SCRATCH: usize = 64 * 1024;

fn conn_token(id: ConnId) -> Token {
    // Listener tokens are small indexes; connection tokens carry the id above them.
    Token(((id.to_u64() as usize) << 4) | 0xF)
}

fn token_conn(t: Token) -> Option<ConnId> {
    (t.0 & 0xF == 0xF && t != WAKER).then(|| ConnId::from_u64((t.0 >> 4) as u64))
}

struct Conn {
    id: ConnId,
    stream: TcpStream,
    pending: BytesMut,
    reading: bool,
    closing: bool,
    /// Readiness was seen while reading was paused: read when it resumes.
    readable: bool,
}

struct EpollIo<'a> {
    registry: &'a Registry,
    conns: &'a mut Vec<Option<Conn>>,
    released: Vec<ConnId>,
    resumed: Vec<ConnId>,
}

impl EpollIo<'_> {
    fn get(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.id == id)
    }

    /// Writes what is pending; returns false when the connection failed.
    fn write_pending(conn: &mut Conn) -> bool {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(0) => return false,
                Ok(n) => conn.pending.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // An emptied buffer still owns its allocation: an idle connection keeps none.
        conn.pending = BytesMut::new();
        true
    }

    fn drop_conn(&mut self, id: ConnId) {
        if let Some(slot) = self.conns.get_mut(id.slot as usize)
            && let Some(mut c) = slot.take()
        {
            let _ = self.registry.deregister(&mut c.stream);
        }
        self.released.push(id);
    }
}

impl Io for EpollIo<'_> {
    fn send(&mut self, id: ConnId, bytes: BytesMut) {
        let Some(conn) = self.get(id) else { return };
        if conn.pending.is_empty() {
            conn.pending = bytes;
        } else {
            conn.pending.extend_from_slice(&bytes);
        }
        if !Self::write_pending(conn) {
            // The peer is gone; the read side will see it and close.
            conn.pending.clear();
        }
    }

    fn close(&mut self, id: ConnId) {
        let Some(conn) = self.get(id) else { return };
        conn.closing = true;
        if conn.pending.is_empty() || !Self::write_pending(conn) || conn.pending.is_empty() {
            self.drop_conn(id);
        }
    }

    fn set_reading(&mut self, id: ConnId, on: bool) {
        let Some(conn) = self.get(id) else { return };
        let was = conn.reading;
        conn.reading = on;
        if on && !was {
            // Edge-triggered: data that arrived while paused raises no new event.
            self.resumed.push(id);
        }
    }
}

/// Runs one shard on epoll until it is told to stop.
pub(super) fn run(
    mut core: ShardCore,
    listeners: Vec<TcpListener>,
    datagrams: Option<super::Datagrams>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listeners: Vec<MioListener> = listeners
        .into_iter()
        .map(|l| {
            l.set_nonblocking(true)?;
            Ok(MioListener::from_std(l))
        })
        .collect::<io::Result<_>>()?;
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(l, Token(i << 4), Interest::READABLE)?;
    }
    let mut udp = match datagrams {
        Some((sock, endpoint)) => {
            let mut sock = mio::net::UdpSocket::from_std(sock);
            poll.registry()
                .register(&mut sock, UDP, Interest::READABLE)?;
            Some((sock, endpoint))
        }
        None => None,
    };
    let waker_fd = core.waker().fd().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&waker_fd), WAKER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut scratch = vec![0u8; SCRATCH];
    let mut backoff = AcceptBackoff::default();
    let metrics = core.metrics();
    let mut stop_listening = false;
    loop {
        let mut io = EpollIo {
            registry: poll.registry(),
            conns: &mut conns,
            released: Vec::new(),
            resumed: Vec::new(),
        };
        let next = core.poll(&mut io);
        finish_turn(&mut core, &mut io, &mut scratch);
        if core.is_stopped() {
            if let Some((mut sock, _)) = udp.take() {
                let _ = poll.registry().deregister(&mut sock);
            }
            return Ok(());
        }
        if core.is_stopping() && !stop_listening {
            for l in &mut listeners {
                let _ = poll.registry().deregister(l);
            }
            stop_listening = true;
        }
        let mut timeout = next.map(|at| core.until(at));
        if backoff.active() {
            timeout = Some(timeout.map_or(AcceptBackoff::PAUSE, |t| t.min(AcceptBackoff::PAUSE)));
        }
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(e);
        }
        core.refresh_clock();
        let mut io = EpollIo {
            registry: poll.registry(),
            conns: &mut conns,
            released: Vec::new(),
            resumed: Vec::new(),
        };
        let mut accept_ready = backoff.retry_due();
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER {
                continue;
            }
            if token == UDP {
                if let Some((sock, endpoint)) = &udp {
                    receive_datagrams(sock, endpoint, &mut scratch);
                }
                continue;
            }
            let Some(id) = token_conn(token) else {
                accept_ready = true;
                continue;
            };
            if ev.is_writable()
                && let Some(conn) = io.get(id)
            {
                let ok = EpollIo::write_pending(conn);
                if conn.closing && (!ok || conn.pending.is_empty()) {
                    io.drop_conn(id);
                    continue;
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                read(&mut core, &mut io, id, &mut scratch);
            }
        }
        if accept_ready && !stop_listening {
            for l in &mut listeners {
                accept(&mut core, &mut io, l, &mut backoff, &metrics);
            }
        }
        finish_turn(&mut core, &mut io, &mut scratch);
    }
}

/// Reads every waiting datagram (edge-triggered: until WouldBlock) and hands each to the CoAP
/// endpoint.
fn receive_datagrams(
    sock: &mio::net::UdpSocket,
    endpoint: &crate::coap::CoapEndpoint,
    scratch: &mut [u8],
) {
    let mut errors = 0;
    loop {
        match sock.recv_from(scratch) {
            Ok((n, peer)) => endpoint.on_datagram(peer, &scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // ICMP errors of earlier sends (port unreachable) surface here once each.
            Err(_) => {
                errors += 1;
                if errors > 64 {
                    return;
                }
            }
        }
    }
}

/// Reads resumed connections and releases closed ones.
fn finish_turn(core: &mut ShardCore, io: &mut EpollIo<'_>, scratch: &mut [u8]) {
    loop {
        let resumed = std::mem::take(&mut io.resumed);
        let released = std::mem::take(&mut io.released);
        if resumed.is_empty() && released.is_empty() {
            return;
        }
        for id in released {
            core.release(id);
        }
        for id in resumed {
            read(core, io, id, scratch);
        }
    }
}

fn read(core: &mut ShardCore, io: &mut EpollIo<'_>, id: ConnId, scratch: &mut [u8]) {
    loop {
        let Some(conn) = io.get(id) else { return };
        if conn.closing {
            return;
        }
        if !conn.reading || !core.wants_read(id) {
            conn.readable = true;
            return;
        }
        conn.readable = false;
        match conn.stream.read(scratch) {
            Ok(0) => {
                core.on_hangup(id, false, io);
                return;
            }
            // Edge-triggered: keep reading until the socket says WouldBlock.
            Ok(n) => core.on_read(id, &scratch[..n], io),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                core.on_hangup(id, true, io);
                return;
            }
        }
    }
}

fn accept(
    core: &mut ShardCore,
    io: &mut EpollIo<'_>,
    listener: &mut MioListener,
    backoff: &mut AcceptBackoff,
    metrics: &crate::metrics::ShardMetrics,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let Some(id) = core.accept(peer) else {
                    continue;
                };
                if io
                    .registry
                    .register(
                        &mut stream,
                        conn_token(id),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_err()
                {
                    core.on_hangup(id, true, io);
                    continue;
                }
                let slot = id.slot as usize;
                if io.conns.len() <= slot {
                    io.conns.resize_with(slot + 1, || None);
                }
                io.conns[slot] = Some(Conn {
                    id,
                    stream,
                    pending: BytesMut::new(),
                    reading: true,
                    closing: false,
                    readable: false,
                });
                // The client may already have sent its CONNECT.
                io.resumed.push(id);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                metrics.add(Counter::AcceptErrors, 1);
                backoff.failed(&e);
                return;
            }
        }
    }
}
