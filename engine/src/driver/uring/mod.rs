//! The io_uring driver: multishot accept on the shard's listeners, multishot receive from the
//! shared provided-buffer ring ([`bufring`]), one send in flight per connection, and a
//! multishot poll on the shard's eventfd for wake-ups. Submissions are batched: everything a
//! loop turn produces goes to the kernel in one `io_uring_enter`.
//!
//! Lessons applied (docs/architecture.md): a multishot receive ends when the ring runs dry
//! (`-ENOBUFS`) and is re-armed once buffers are back, at most ring-size re-arms per turn; a
//! completion without the "more" flag ends a multishot request (a full completion queue does
//! that too), so it is re-armed; buffers never move while registered.
//!
//! This is the one module of fleetgate with `unsafe` code; every block says why it is sound.

#![allow(unsafe_code)]

mod bufring;

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use fleetgate_codec::mqtt::bytes::{Buf, BytesMut};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use self::bufring::BufRing;
use super::AcceptBackoff;
use crate::metrics::Counter;
use crate::shard::{ConnId, Io, ShardCore};

const BUF_GROUP: u16 = 0;
const BUF_COUNT: u16 = 512;
const BUF_SIZE: u32 = 4096;
const ENTRIES: u32 = 4096;
/// The provided buffers of the CoAP socket: one datagram each, with room for the
/// `io_uring_recvmsg_out` header and the peer's address before the payload.
const UDP_GROUP: u16 = 1;
const UDP_COUNT: u16 = 256;
const UDP_SIZE: u32 = (crate::coap::MAX_DATAGRAM + 256) as u32;

/// What a submission was for, in the top four bits of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Cancel = 4,
    Wake = 5,
    Datagram = 6,
}

const GEN_MASK: u64 = (1 << 28) - 1;

fn user_data(op: Op, id: ConnId) -> u64 {
    ((op as u64) << 60) | ((u64::from(id.generation) & GEN_MASK) << 32) | u64::from(id.slot)
}

fn decode(data: u64) -> (u8, u32, u32) {
    (
        (data >> 60) as u8,
        ((data >> 32) & GEN_MASK) as u32,
        data as u32,
    )
}

/// Checks that io_uring can run the driver here: the syscalls are allowed (no seccomp
/// refusal), the opcodes exist, and provided-buffer rings and multishot receive are available
/// (Linux 6.0).
pub(super) fn probe() -> io::Result<()> {
    let ring = IoUring::new(8)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Close::CODE, "close"),
        (opcode::AsyncCancel::CODE, "async cancel"),
        (opcode::PollAdd::CODE, "poll"),
        (opcode::RecvMsgMulti::CODE, "recvmsg"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                ErrorKind::Unsupported,
                format!("io_uring lacks the {name} operation"),
            ));
        }
    }
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 0) {
        return Err(io::Error::new(
            ErrorKind::Unsupported,
            format!("kernel {release} has no multishot receive"),
        ));
    }
    let bufs = BufRing::new(&ring, 0, 2, 64)?;
    ring.submitter().unregister_buf_ring(0)?;
    drop(bufs);
    Ok(())
}

/// The driver's view of a connection.
struct Conn {
    id: ConnId,
    fd: OwnedFd,
    /// A multishot receive is armed (or its cancellation not yet completed).
    recv_armed: bool,
    /// Reading is wanted (not paused by the core).
    reading: bool,
    /// The buffer the kernel is sending from (it must not move or be freed until completion).
    sending: Option<BytesMut>,
    /// Bytes to send after it.
    queued: BytesMut,
    /// Submissions not yet completed.
    ops: u32,
    closing: bool,
    close_submitted: bool,
}

struct State {
    conns: Vec<Option<Conn>>,
    sqes: Vec<squeue::Entry>,
    released: Vec<ConnId>,
    /// Connections whose receive ended for lack of buffers.
    starved: Vec<ConnId>,
}

impl State {
    fn get(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.id == id)
    }

    fn by_user_data(&mut self, generation: u32, slot: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(slot as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| u64::from(c.id.generation) & GEN_MASK == u64::from(generation))
    }

    fn arm_recv(&mut self, id: ConnId) {
        let Some(c) = self.get(id) else { return };
        if c.recv_armed || c.closing || !c.reading {
            return;
        }
        c.recv_armed = true;
        c.ops += 1;
        let e = opcode::RecvMulti::new(Fd(c.fd.as_raw_fd()), BUF_GROUP)
            .build()
            .user_data(user_data(Op::Recv, id));
        self.sqes.push(e);
    }

    fn submit_send(&mut self, id: ConnId) {
        let Some(c) = self.get(id) else { return };
        let Some(buf) = c.sending.as_ref() else {
            return;
        };
        c.ops += 1;
        let e = opcode::Send::new(Fd(c.fd.as_raw_fd()), buf.as_ptr(), buf.len() as u32)
            .flags(libc_msg_nosignal())
            .build()
            .user_data(user_data(Op::Send, id));
        self.sqes.push(e);
    }

    /// Starts closing once nothing is being sent: cancel the receive, close the socket.
    fn begin_close(&mut self, id: ConnId) {
        let Some(c) = self.get(id) else { return };
        if c.close_submitted || c.sending.is_some() {
            return;
        }
        c.close_submitted = true;
        // Shutting the socket down ends a pending receive even if the cancellation races it,
        // and sends FIN after the data already written.
        let _ = rustix::net::shutdown(&c.fd, rustix::net::Shutdown::Both);
        if c.recv_armed {
            c.ops += 1;
            self.sqes.push(
                opcode::AsyncCancel::new(user_data(Op::Recv, id))
                    .build()
                    .user_data(user_data(Op::Cancel, id)),
            );
        }
        self.finish_if_idle(id);
    }

    /// Releases the connection once no submission refers to it any more.
    fn finish_if_idle(&mut self, id: ConnId) {
        let done = self
            .get(id)
            .is_some_and(|c| c.close_submitted && c.ops == 0);
        if done {
            if let Some(slot) = self.conns.get_mut(id.slot as usize) {
                // Dropping the OwnedFd closes the socket.
                slot.take();
            }
            self.released.push(id);
        }
    }
}

/// `MSG_NOSIGNAL`: a send to a closed peer must not raise SIGPIPE.
fn libc_msg_nosignal() -> i32 {
    rustix::net::SendFlags::NOSIGNAL.bits() as i32
}

impl Io for State {
    fn send(&mut self, id: ConnId, bytes: BytesMut) {
        let Some(c) = self.get(id) else { return };
        if c.sending.is_none() {
            c.sending = Some(bytes);
            self.submit_send(id);
        } else {
            c.queued.extend_from_slice(&bytes);
        }
    }

    fn close(&mut self, id: ConnId) {
        let Some(c) = self.get(id) else { return };
        c.closing = true;
        self.begin_close(id);
    }

    fn set_reading(&mut self, id: ConnId, on: bool) {
        let Some(c) = self.get(id) else { return };
        c.reading = on;
        if on {
            self.arm_recv(id);
        } else if c.recv_armed {
            c.ops += 1;
            self.sqes.push(
                opcode::AsyncCancel::new(user_data(Op::Recv, id))
                    .build()
                    .user_data(user_data(Op::Cancel, id)),
            );
        }
    }
}

/// Runs one shard on io_uring until it is told to stop.
pub(super) fn run(
    mut core: ShardCore,
    listeners: Vec<TcpListener>,
    datagrams: Option<super::Datagrams>,
) -> io::Result<()> {
    let mut ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)
        .or_else(|_| IoUring::new(ENTRIES))?;
    let mut bufs = BufRing::new(&ring, BUF_GROUP, BUF_COUNT, BUF_SIZE)?;
    let metrics = core.metrics();
    let mut st = State {
        conns: Vec::new(),
        sqes: Vec::new(),
        released: Vec::new(),
        starved: Vec::new(),
    };
    let listener_fds: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let wake_fd = core.waker().fd().as_raw_fd();
    let arm_accept = |st: &mut State, i: usize| {
        let id = ConnId {
            slot: i as u32,
            generation: 0,
        };
        st.sqes.push(
            opcode::AcceptMulti::new(Fd(listener_fds[i]))
                .build()
                .user_data(user_data(Op::Accept, id)),
        );
    };
    let arm_wake = |st: &mut State| {
        let id = ConnId {
            slot: 0,
            generation: 0,
        };
        st.sqes.push(
            opcode::PollAdd::new(Fd(wake_fd), rustix::event::PollFlags::IN.bits() as u32)
                .multi(true)
                .build()
                .user_data(user_data(Op::Wake, id)),
        );
    };
    for i in 0..listener_fds.len() {
        arm_accept(&mut st, i);
    }
    arm_wake(&mut st);
    let mut udp = match datagrams {
        Some((sock, endpoint)) => Some(Udp::new(&ring, sock, endpoint)?),
        None => None,
    };
    if let Some(u) = &mut udp {
        st.sqes.push(u.arm());
    }
    let mut backoff = AcceptBackoff::default();
    let mut accept_paused: Vec<usize> = Vec::new();
    let mut stop_listening = false;
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    loop {
        let next = core.poll(&mut st);
        release(&mut core, &mut st);
        if core.is_stopping() && !stop_listening {
            // Shutting the listeners down ends their multishot accepts.
            stop_listening = true;
            accept_paused.clear();
            for l in &listeners {
                let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Both);
            }
        }
        if core.is_stopped() && st.conns.iter().all(Option::is_none) {
            break;
        }
        // Connections starved of buffers get their receive back, no more than the ring holds.
        let starved: Vec<ConnId> = st.starved.drain(..).collect();
        let mut rearmed = 0;
        for id in starved {
            if rearmed < usize::from(bufs.count()) {
                st.arm_recv(id);
                rearmed += 1;
            } else {
                st.starved.push(id);
            }
        }
        if backoff.retry_due() && !stop_listening {
            for i in accept_paused.drain(..) {
                arm_accept(&mut st, i);
            }
        }
        if let Some(u) = &mut udp {
            if u.starved && !core.is_stopping() {
                u.starved = false;
                st.sqes.push(u.arm());
            }
            u.bufs.publish();
        }
        bufs.publish();
        push_all(&mut ring, &mut st.sqes)?;
        let mut timeout = next.map(|at| core.until(at));
        if !accept_paused.is_empty() {
            timeout = Some(timeout.map_or(AcceptBackoff::PAUSE, |t| t.min(AcceptBackoff::PAUSE)));
        }
        if !st.starved.is_empty() || !st.sqes.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        let ts = timeout.map(|t| Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos()));
        let result = match &ts {
            Some(ts) => ring
                .submitter()
                .submit_with_args(1, &SubmitArgs::new().timespec(ts)),
            None => ring.submitter().submit_and_wait(1),
        };
        if let Err(e) = result {
            match e.raw_os_error() {
                Some(code)
                    if code == rustix::io::Errno::TIME.raw_os_error()
                        || code == rustix::io::Errno::INTR.raw_os_error()
                        || code == rustix::io::Errno::BUSY.raw_os_error() => {}
                _ => return Err(e),
            }
        }
        core.refresh_clock();
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &cqes {
            let (op, generation, slot) = decode(data);
            match op {
                x if x == Op::Accept as u8 => {
                    let i = slot as usize;
                    if res >= 0 {
                        // SAFETY: a successful accept completion's result is a new file
                        // descriptor that nothing else owns.
                        let fd = unsafe { OwnedFd::from_raw_fd(res) };
                        accept(&mut core, &mut st, fd);
                    } else if !stop_listening {
                        metrics.add(Counter::AcceptErrors, 1);
                        backoff.failed(&io::Error::from_raw_os_error(-res));
                    }
                    if !cqueue::more(flags) && !stop_listening {
                        if backoff.active() {
                            accept_paused.push(i)
                        } else {
                            arm_accept(&mut st, i)
                        }
                    }
                }
                x if x == Op::Recv as u8 => {
                    on_recv(&mut core, &mut st, &mut bufs, generation, slot, res, flags)
                }
                x if x == Op::Send as u8 => on_send(&mut core, &mut st, generation, slot, res),
                x if x == Op::Cancel as u8 => {
                    if let Some(c) = st.by_user_data(generation, slot) {
                        c.ops = c.ops.saturating_sub(1);
                        let id = c.id;
                        st.finish_if_idle(id);
                    }
                }
                x if x == Op::Wake as u8 && !cqueue::more(flags) => {
                    arm_wake(&mut st);
                }
                x if x == Op::Datagram as u8 => {
                    if let Some(u) = &mut udp
                        && let Some(sqe) = u.on_completion(res, flags, core.is_stopping())
                    {
                        st.sqes.push(sqe);
                    }
                }
                _ => {}
            }
            release(&mut core, &mut st);
        }
    }
    // Nothing is in flight any more: drop the registrations before the buffers go.
    let _ = ring.submitter().unregister_buf_ring(BUF_GROUP);
    if udp.is_some() {
        let _ = ring.submitter().unregister_buf_ring(UDP_GROUP);
    }
    drop(ring);
    drop(bufs);
    drop(udp);
    Ok(())
}

/// The shard's CoAP socket: a multishot `recvmsg` into its own provided-buffer ring.
struct Udp {
    sock: std::net::UdpSocket,
    endpoint: std::sync::Arc<crate::coap::CoapEndpoint>,
    bufs: BufRing,
    /// The template the kernel reads the name and control lengths from; it lives as long as
    /// the receive request (in this struct, dropped after the ring).
    msghdr: Box<libc::msghdr>,
    /// The receive ended for lack of buffers: re-armed on the next turn.
    starved: bool,
}

impl Udp {
    fn new(
        ring: &IoUring,
        sock: std::net::UdpSocket,
        endpoint: std::sync::Arc<crate::coap::CoapEndpoint>,
    ) -> io::Result<Udp> {
        let bufs = BufRing::with_mode(ring, UDP_GROUP, UDP_COUNT, UDP_SIZE, false)?;
        // SAFETY: msghdr is a plain C struct of integers and pointers for which all-zero bytes
        // are a valid value (null pointers, zero lengths).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        Ok(Udp {
            sock,
            endpoint,
            bufs,
            msghdr,
            starved: false,
        })
    }

    fn arm(&self) -> squeue::Entry {
        let id = ConnId {
            slot: 0,
            generation: 0,
        };
        opcode::RecvMsgMulti::new(
            Fd(self.sock.as_raw_fd()),
            &*self.msghdr as *const libc::msghdr,
            UDP_GROUP,
        )
        .build()
        .user_data(user_data(Op::Datagram, id))
    }

    /// Handles one completion; returns the submission that re-arms the receive when it ended.
    fn on_completion(&mut self, res: i32, flags: u32, stopping: bool) -> Option<squeue::Entry> {
        if res >= 0
            && let Some(bid) = cqueue::buffer_select(flags)
        {
            if let Some((data, _)) = self.bufs.take(bid, res as usize, false)
                && let Ok(out) = io_uring::types::RecvMsgOut::parse(data, &self.msghdr)
            {
                match sockaddr(out.name_data()) {
                    Some(_) if out.is_payload_truncated() => self.endpoint.oversized(),
                    Some(peer) => self.endpoint.on_datagram(peer, out.payload_data()),
                    None => {}
                }
            }
            self.bufs.push(bid);
        } else if -res == rustix::io::Errno::NOBUFS.raw_os_error() {
            self.starved = true;
            return None;
        }
        (!cqueue::more(flags) && !stopping).then(|| self.arm())
    }
}

/// A socket address as the kernel writes it (`sockaddr_in` or `sockaddr_in6`).
fn sockaddr(name: &[u8]) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    let family = i32::from(u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET {
        let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 {
        let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

/// Moves queued submissions into the submission queue, submitting whenever it is full.
fn push_all(ring: &mut IoUring, sqes: &mut Vec<squeue::Entry>) -> io::Result<()> {
    for e in sqes.drain(..) {
        loop {
            // SAFETY: every entry refers to memory that outlives its completion: sockets owned
            // by `State` until their last completion, send buffers held in `Conn::sending`
            // until the send completes, and the registered buffer ring.
            let pushed = unsafe { ring.submission().push(&e) };
            if pushed.is_ok() {
                break;
            }
            ring.submit()?;
        }
    }
    Ok(())
}

fn release(core: &mut ShardCore, st: &mut State) {
    for id in st.released.drain(..) {
        core.release(id);
    }
}

fn accept(core: &mut ShardCore, st: &mut State, fd: OwnedFd) {
    let sock = socket2::SockRef::from(&fd);
    let peer = sock
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = sock.set_tcp_nodelay(true);
    let Some(id) = core.accept(peer) else { return };
    let slot = id.slot as usize;
    if st.conns.len() <= slot {
        st.conns.resize_with(slot + 1, || None);
    }
    st.conns[slot] = Some(Conn {
        id,
        fd,
        recv_armed: false,
        reading: true,
        sending: None,
        queued: BytesMut::new(),
        ops: 0,
        closing: false,
        close_submitted: false,
    });
    st.arm_recv(id);
}

fn on_recv(
    core: &mut ShardCore,
    st: &mut State,
    bufs: &mut BufRing,
    generation: u32,
    slot: u32,
    res: i32,
    flags: u32,
) {
    let more = cqueue::more(flags);
    let Some(c) = st.by_user_data(generation, slot) else {
        // A buffer of a connection that is gone goes straight back.
        if let Some(bid) = cqueue::buffer_select(flags)
            && res > 0
            && bufs
                .take(bid, res as usize, cqueue::buffer_more(flags))
                .is_some_and(|(_, r)| r)
        {
            bufs.push(bid);
        }
        return;
    };
    let id = c.id;
    if !more {
        c.recv_armed = false;
        c.ops = c.ops.saturating_sub(1);
    }
    let closing = c.closing;
    if res > 0 {
        if let Some(bid) = cqueue::buffer_select(flags) {
            let recycle = match bufs.take(bid, res as usize, cqueue::buffer_more(flags)) {
                Some((data, recycle)) => {
                    if !closing {
                        core.on_read(id, data, st);
                    }
                    recycle
                }
                None => true,
            };
            if recycle {
                bufs.push(bid);
            }
        }
        if !more {
            // A full completion queue (or a cancellation) ended the request.
            st.arm_recv(id);
        }
    } else if res == 0 {
        if !closing {
            core.on_hangup(id, false, st);
        }
    } else if -res == rustix::io::Errno::NOBUFS.raw_os_error() {
        st.starved.push(id);
    } else if -res == rustix::io::Errno::CANCELED.raw_os_error() {
        // Paused by the core; re-armed when reading resumes.
        st.arm_recv(id);
    } else if !closing {
        core.on_hangup(id, true, st);
    }
    st.finish_if_idle(id);
}

fn on_send(core: &mut ShardCore, st: &mut State, generation: u32, slot: u32, res: i32) {
    let Some(c) = st.by_user_data(generation, slot) else {
        return;
    };
    let id = c.id;
    c.ops = c.ops.saturating_sub(1);
    let mut failed = res < 0;
    if let Some(buf) = c.sending.as_mut() {
        let n = res.max(0) as usize;
        if !failed && n < buf.len() {
            buf.advance(n);
            if n == 0 {
                failed = true;
            } else {
                st.submit_send(id);
                return;
            }
        }
    }
    c.sending = None;
    if failed {
        c.queued.clear();
        let closing = c.closing;
        if closing {
            st.begin_close(id);
        } else {
            core.on_hangup(id, true, st);
        }
        st.finish_if_idle(id);
        return;
    }
    if !c.queued.is_empty() {
        c.sending = Some(std::mem::take(&mut c.queued));
        st.submit_send(id);
    } else if c.closing {
        st.begin_close(id);
    }
    st.finish_if_idle(id);
}
