//! Bounded queues that take memory only for what they hold.
//!
//! crossbeam's `bounded` channel allocates and initialises every slot when it is created: the
//! default inboxes and upstream queue (65,536 slots each) were about 30 MB resident before
//! the first connection. These queues are crossbeam's linked-block channel, whose blocks come
//! and go with the messages, with the capacity checked on every non-blocking send. Several
//! senders racing at the limit may overshoot it by one message each, which is harmless for a
//! limit that only keeps memory bounded.

use crossbeam_channel::{Receiver, SendError, Sender, TrySendError, unbounded};

/// The sending side of a bounded queue.
#[derive(Debug)]
pub struct BoundedSender<T> {
    tx: Sender<T>,
    capacity: usize,
}

impl<T> Clone for BoundedSender<T> {
    fn clone(&self) -> Self {
        BoundedSender {
            tx: self.tx.clone(),
            capacity: self.capacity,
        }
    }
}

impl<T> BoundedSender<T> {
    /// Queues `msg` unless the queue holds `capacity` messages or its receiver is gone.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.tx.len() >= self.capacity {
            return Err(TrySendError::Full(msg));
        }
        self.tx.try_send(msg)
    }

    /// Queues `msg` whatever the queue holds: for the few control messages (stop) that must
    /// get through a full queue.
    pub fn force_send(&self, msg: T) -> Result<(), SendError<T>> {
        self.tx.send(msg)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A queue of at most `capacity` messages (at least 1).
pub fn bounded<T>(capacity: usize) -> (BoundedSender<T>, Receiver<T>) {
    let (tx, rx) = unbounded();
    (
        BoundedSender {
            tx,
            capacity: capacity.max(1),
        },
        rx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_its_capacity_and_takes_again_once_drained() {
        let (tx, rx) = bounded(2);
        assert!(tx.try_send(1).is_ok());
        assert!(tx.try_send(2).is_ok());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert!(tx.force_send(4).is_ok(), "control messages pass");
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2, 4]);
        assert!(tx.try_send(5).is_ok());
        drop(rx);
        assert!(matches!(tx.try_send(6), Err(TrySendError::Disconnected(6))));
    }
}
