//! The upstream pipeline (docs/architecture.md): typed events from the shards — connects,
//! disconnects, accepted publications — go onto one bounded queue and a dispatcher thread hands
//! each to every registered [`UpstreamHandler`] in order. Later features (shadows, rules, push,
//! application subscriptions) attach as handlers.
//!
//! A full queue never grows memory: lifecycle events wait in their shard until there is room
//! (a shard holds at most two per connection), and publications follow
//! [`UpstreamPolicy`]: the shard stops reading the device (back-pressure) or drops and counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TrySendError};

use crate::queue::{BoundedSender, bounded};
use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_model::{AppId, DeviceId, Timestamp};

use crate::config::UpstreamPolicy;
use crate::metrics::CloseReason;

/// A device connected (CONNACK accepted).
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    /// The device.
    pub device_id: DeviceId,
    /// The MQTT client id it used.
    pub client_id: String,
    /// Its address.
    pub peer: SocketAddr,
    /// MQTT protocol level (3, 4 or 5).
    pub protocol: u8,
    /// Keep-alive in effect, seconds.
    pub keepalive_secs: u16,
    /// Whether a persistent session was resumed.
    pub session_present: bool,
    /// Wall-clock time.
    pub at: Timestamp,
}

/// A device's connection ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Disconnected {
    /// The device.
    pub device_id: DeviceId,
    /// The MQTT client id it used.
    pub client_id: String,
    /// Its address.
    pub peer: SocketAddr,
    /// Why.
    pub reason: CloseReason,
    /// Whether its persistent session is kept for a reconnect.
    pub session_kept: bool,
    /// Wall-clock time.
    pub at: Timestamp,
}

/// A publication accepted from a device (or its will).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The publishing device.
    pub device_id: DeviceId,
    /// Its application.
    pub app_id: AppId,
    /// The topic (aliases resolved).
    pub topic: ByteString,
    /// The payload, untouched.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: u8,
    /// Whether this is the device's will message.
    pub will: bool,
    /// Wall-clock receive time.
    pub at: Timestamp,
}

/// An event of the upstream pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    /// A device connected.
    Connected(Connected),
    /// A device disconnected.
    Disconnected(Disconnected),
    /// A device published.
    Published(Published),
    /// An asynchronous command changed status (the command after the change).
    CommandStatus(Box<fleetgate_model::command::Command>),
    /// A CoAP/LwM2M device sent something: it is awake and reachable for a while.
    Woke(Woke),
}

/// A sleeping device sent a datagram (LwM2M registration, update, notification).
#[derive(Debug, Clone, PartialEq)]
pub struct Woke {
    /// The device.
    pub device_id: DeviceId,
    /// Its application.
    pub app_id: AppId,
    /// Whether it (re-)registered, rather than updated or reported.
    pub registered: bool,
    /// Wall-clock time.
    pub at: Timestamp,
}

/// A consumer of upstream events. Handlers run on the dispatcher thread, in registration
/// order; they may block on storage but should not take long.
pub trait UpstreamHandler: Send + Sync {
    /// Handles one event.
    fn handle(&self, event: &UpstreamEvent);
    /// Called at least every `tick` while the queue is idle, for timed work.
    fn tick(&self) {}
}

/// The producer side, held by every shard.
#[derive(Debug, Clone)]
pub struct UpstreamSender {
    tx: BoundedSender<UpstreamEvent>,
    policy: UpstreamPolicy,
}

/// What an attempt to enqueue did.
#[derive(Debug)]
pub enum Enqueue {
    /// Queued.
    Done,
    /// The queue is full; the event is handed back.
    Full(UpstreamEvent),
    /// The pipeline has stopped.
    Closed,
}

impl UpstreamSender {
    /// Tries to enqueue without blocking.
    pub fn try_send(&self, ev: UpstreamEvent) -> Enqueue {
        match self.tx.try_send(ev) {
            Ok(()) => Enqueue::Done,
            Err(TrySendError::Full(ev)) => Enqueue::Full(ev),
            Err(TrySendError::Disconnected(_)) => Enqueue::Closed,
        }
    }

    /// The configured full-queue policy for publications.
    pub fn policy(&self) -> UpstreamPolicy {
        self.policy
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

/// A queue and its consumer end, before the dispatcher starts.
#[derive(Debug)]
pub struct UpstreamQueue {
    rx: Receiver<UpstreamEvent>,
    sender: UpstreamSender,
}

impl UpstreamQueue {
    /// A bounded queue.
    pub fn new(capacity: usize, policy: UpstreamPolicy) -> Self {
        let (tx, rx) = bounded(capacity);
        UpstreamQueue {
            rx,
            sender: UpstreamSender { tx, policy },
        }
    }

    /// The producer side.
    pub fn sender(&self) -> UpstreamSender {
        self.sender.clone()
    }

    /// Starts the dispatcher thread. It runs until [`Dispatcher::join`] and the queue is drained.
    pub fn start(
        self,
        handlers: Vec<Arc<dyn UpstreamHandler>>,
        tick: Duration,
    ) -> std::io::Result<Dispatcher> {
        let UpstreamQueue { rx, sender } = self;
        drop(sender);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("upstream".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(tick) {
                        Ok(ev) => {
                            for h in &handlers {
                                h.handle(&ev);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    for h in &handlers {
                        h.tick();
                    }
                    if stopping.load(Ordering::Acquire) && rx.is_empty() {
                        break;
                    }
                }
            })?;
        Ok(Dispatcher {
            thread: Some(thread),
            stop,
        })
    }

    /// The consumer end, for tests that read events directly.
    pub fn into_receiver(self) -> Receiver<UpstreamEvent> {
        self.rx
    }
}

/// The running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Dispatcher {
    /// Drains what is queued, then stops (call once nothing produces events any more).
    pub fn join(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
