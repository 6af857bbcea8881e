//! Messages into a shard: a bounded queue ([`crate::queue`]) plus an eventfd that wakes the shard's
//! event loop (docs/architecture.md, "The engine"). A wake-up is written only when the shard
//! is not already due to look at its inbox.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, TrySendError};
use fleetgate_model::DeviceId;
use rustix::event::{EventfdFlags, eventfd};

use super::ConnId;
use crate::auth::AuthOutcome;
use crate::metrics::CloseReason;
use crate::queue::{BoundedSender, bounded};
use crate::registry::SessionRef;
use crate::session::{Downlink, Persistent};

/// What one shard asks of another, or the engine of a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// A credential check finished.
    AuthDone {
        /// The connection that asked.
        conn: ConnId,
        /// The result.
        outcome: AuthOutcome,
    },
    /// A message for a device's session.
    Deliver {
        /// The device.
        device: DeviceId,
        /// The session, as the registry knew it.
        target: SessionRef,
        /// The message.
        msg: Downlink,
        /// Times the message was forwarded because the session had moved meanwhile.
        hops: u8,
    },
    /// Another shard's connection took the device over: close `target` and hand its persistent
    /// state (if wanted) to `requester`.
    TakeOver {
        /// The device.
        device: DeviceId,
        /// The session to end.
        target: SessionRef,
        /// The shard and connection taking over.
        requester: (u16, ConnId),
        /// Whether the new connection resumes the session.
        resume: bool,
    },
    /// The answer to [`ShardMsg::TakeOver`].
    HandOff {
        /// The connection taking over.
        conn: ConnId,
        /// The persistent state, when resumed.
        state: Option<Box<Persistent>>,
    },
    /// Close a device's connection (administrative kick, freeze, delete).
    Kick {
        /// The device.
        device: DeviceId,
        /// The session.
        target: SessionRef,
        /// Why, for metrics and the lifecycle event.
        reason: CloseReason,
    },
    /// An administrative query or change from the application API ([`crate::ops`]); boxed so
    /// that the hot messages stay small.
    Ops(Box<crate::ops::OpsRequest>),
    /// Close every connection and stop.
    Shutdown,
}

/// Wakes a shard's event loop.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    /// A non-blocking eventfd.
    pub fn new() -> std::io::Result<Self> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(Waker {
            fd,
            pending: AtomicBool::new(false),
        })
    }

    /// Wakes the loop unless a wake-up is already pending.
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // The counter cannot overflow with one write per wake-up; EAGAIN would mean it is
            // already non-zero, which wakes the loop just as well.
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// Called by the loop when it wakes: clears the counter and the pending flag, before the
    /// inbox is drained (so that a message sent meanwhile wakes it again).
    pub fn reset(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
        self.pending.store(false, Ordering::Release);
    }

    /// The eventfd, for the driver to watch.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The sending side of a shard's inbox.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: BoundedSender<ShardMsg>,
    waker: Arc<Waker>,
}

/// The inbox was full or the shard has stopped.
#[derive(Debug)]
pub struct Undelivered(pub ShardMsg);

impl ShardHandle {
    /// Sends without blocking and wakes the shard.
    pub fn send(&self, msg: ShardMsg) -> Result<(), Undelivered> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Err(Undelivered(m)),
        }
    }

    /// Sends even when the inbox is full (shutdown must get through) and wakes the shard;
    /// fails only when the shard is gone.
    pub fn send_control(&self, msg: ShardMsg) -> Result<(), Undelivered> {
        self.tx.force_send(msg).map_err(|e| Undelivered(e.0))?;
        self.waker.wake();
        Ok(())
    }
}

/// A shard's inbox.
pub fn inbox(capacity: usize) -> std::io::Result<(ShardHandle, Receiver<ShardMsg>, Arc<Waker>)> {
    let (tx, rx) = bounded(capacity);
    let waker = Arc::new(Waker::new()?);
    Ok((
        ShardHandle {
            tx,
            waker: Arc::clone(&waker),
        },
        rx,
        waker,
    ))
}
