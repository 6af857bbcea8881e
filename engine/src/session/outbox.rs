//! Messages on their way to a device at QoS 1 and 2: an in-flight window (the device's Receive
//! Maximum, capped by ours) and a bounded queue behind it. Both survive a disconnect when the
//! session is persistent, and in-flight messages are sent again with DUP set on reconnect
//! ([MQTT-4.4.0-1]); within one connection nothing is retransmitted.

use std::collections::VecDeque;
use std::num::NonZeroU16;

use fleetgate_codec::mqtt::QoS;
use fleetgate_codec::mqtt::bytes::Bytes;
use fleetgate_codec::mqtt::bytestring::ByteString;

/// A message for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    /// The topic.
    pub topic: ByteString,
    /// The payload.
    pub payload: Bytes,
    /// The highest QoS it may be delivered with.
    pub qos: QoS,
}

/// Where an in-flight message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitComp,
}

/// One in-flight message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// Its packet identifier.
    pub packet_id: NonZeroU16,
    /// Its stage.
    pub stage: Stage,
    /// The message (kept for redelivery).
    pub msg: Downlink,
}

/// What pushing a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// It went in flight with this packet identifier: send it now.
    Inflight(NonZeroU16),
    /// The window is full; it waits in the queue.
    Queued,
    /// The queue is full; the oldest queued message was dropped to make room.
    DroppedOldest,
    /// Nothing may queue (a queue of 0); the message was dropped.
    Dropped,
}

/// In-flight window and queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    last_packet_id: u16,
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Downlink>,
}

impl Outbox {
    /// Messages in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Messages queued.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is in flight or queued.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.queue.is_empty()
    }

    fn next_packet_id(&mut self) -> NonZeroU16 {
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.last_packet_id)
                && !self.inflight.iter().any(|m| m.packet_id == id)
            {
                return id;
            }
        }
    }

    /// Adds a message with QoS 1 or 2 (capped already): in flight if the window has room,
    /// otherwise queued.
    pub fn push(&mut self, msg: Downlink, window: usize, max_queue: usize) -> Pushed {
        if self.inflight.len() < window.clamp(1, 65_535) && self.queue.is_empty() {
            let id = self.start(msg);
            return Pushed::Inflight(id);
        }
        if max_queue == 0 {
            return Pushed::Dropped;
        }
        let dropped = if self.queue.len() >= max_queue {
            self.queue.pop_front();
            true
        } else {
            false
        };
        self.queue.push_back(msg);
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        }
    }

    /// Queues a message without sending (the device is offline).
    pub fn push_offline(&mut self, msg: Downlink, max_queue: usize) -> Pushed {
        if max_queue == 0 {
            return Pushed::Dropped;
        }
        let dropped = self.queue.len() >= max_queue;
        if dropped {
            self.queue.pop_front();
        }
        self.queue.push_back(msg);
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        }
    }

    fn start(&mut self, msg: Downlink) -> NonZeroU16 {
        let id = self.next_packet_id();
        let stage = if msg.qos == QoS::ExactlyOnce {
            Stage::AwaitRec
        } else {
            Stage::AwaitAck
        };
        self.inflight.push_back(Inflight {
            packet_id: id,
            stage,
            msg,
        });
        id
    }

    /// Moves queued messages into the window while it has room; returns the packet ids to send.
    pub fn refill(&mut self, window: usize) -> Vec<NonZeroU16> {
        let mut started = Vec::new();
        while self.inflight.len() < window.clamp(1, 65_535) {
            let Some(msg) = self.queue.pop_front() else {
                break;
            };
            started.push(self.start(msg));
        }
        started
    }

    /// The in-flight message with this id.
    pub fn get(&self, id: NonZeroU16) -> Option<&Inflight> {
        self.inflight.iter().find(|m| m.packet_id == id)
    }

    /// Handles PUBACK: completes a QoS 1 message. Returns whether it matched.
    pub fn puback(&mut self, id: NonZeroU16) -> bool {
        self.complete(id, Stage::AwaitAck)
    }

    /// Handles PUBREC: a QoS 2 message moves to PUBREL. Returns whether it matched.
    pub fn pubrec(&mut self, id: NonZeroU16) -> bool {
        match self.inflight.iter_mut().find(|m| m.packet_id == id) {
            Some(m) if m.stage == Stage::AwaitRec || m.stage == Stage::AwaitComp => {
                m.stage = Stage::AwaitComp;
                true
            }
            _ => false,
        }
    }

    /// Handles PUBCOMP: completes a QoS 2 message. Returns whether it matched.
    pub fn pubcomp(&mut self, id: NonZeroU16) -> bool {
        self.complete(id, Stage::AwaitComp)
    }

    /// Drops a message the device refused (PUBACK/PUBREC with an error reason).
    pub fn abandon(&mut self, id: NonZeroU16) -> bool {
        let before = self.inflight.len();
        self.inflight.retain(|m| m.packet_id != id);
        before != self.inflight.len()
    }

    fn complete(&mut self, id: NonZeroU16, stage: Stage) -> bool {
        match self
            .inflight
            .iter()
            .position(|m| m.packet_id == id && m.stage == stage)
        {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// The in-flight messages, oldest first, for redelivery after a reconnect.
    pub fn inflight(&self) -> impl Iterator<Item = &Inflight> {
        self.inflight.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8, qos: QoS) -> Downlink {
        Downlink {
            topic: ByteString::from(format!("t/{n}")),
            payload: Bytes::from(vec![n]),
            qos,
        }
    }

    fn id(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    #[test]
    fn window_then_queue_then_drop_oldest() {
        let mut o = Outbox::default();
        assert_eq!(
            o.push(msg(1, QoS::AtLeastOnce), 2, 2),
            Pushed::Inflight(id(1))
        );
        assert_eq!(
            o.push(msg(2, QoS::AtLeastOnce), 2, 2),
            Pushed::Inflight(id(2))
        );
        assert_eq!(o.push(msg(3, QoS::AtLeastOnce), 2, 2), Pushed::Queued);
        assert_eq!(o.push(msg(4, QoS::AtLeastOnce), 2, 2), Pushed::Queued);
        assert_eq!(
            o.push(msg(5, QoS::AtLeastOnce), 2, 2),
            Pushed::DroppedOldest
        );
        assert!(o.puback(id(1)));
        assert!(!o.puback(id(1)), "already acknowledged");
        assert_eq!(o.refill(2), vec![id(3)]);
        assert_eq!(
            o.get(id(3)).unwrap().msg,
            msg(4, QoS::AtLeastOnce),
            "message 3 was dropped"
        );
        assert_eq!(o.queued_len(), 1);
    }

    #[test]
    fn qos2_flow() {
        let mut o = Outbox::default();
        assert_eq!(
            o.push(msg(1, QoS::ExactlyOnce), 5, 5),
            Pushed::Inflight(id(1))
        );
        assert!(!o.puback(id(1)), "QoS 2 is not completed by PUBACK");
        assert!(!o.pubcomp(id(1)), "PUBCOMP before PUBREC");
        assert!(o.pubrec(id(1)));
        assert_eq!(o.get(id(1)).unwrap().stage, Stage::AwaitComp);
        assert!(o.pubcomp(id(1)));
        assert!(o.is_empty());
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_use() {
        let mut o = Outbox {
            last_packet_id: 65_534,
            ..Default::default()
        };
        assert_eq!(
            o.push(msg(1, QoS::AtLeastOnce), 10, 0),
            Pushed::Inflight(id(65_535))
        );
        assert_eq!(
            o.push(msg(2, QoS::AtLeastOnce), 10, 0),
            Pushed::Inflight(id(1))
        );
        o.last_packet_id = 65_534;
        assert_eq!(
            o.push(msg(3, QoS::AtLeastOnce), 10, 0),
            Pushed::Inflight(id(2)),
            "65535 and 1 are in use"
        );
        assert_eq!(o.push_offline(msg(4, QoS::AtLeastOnce), 0), Pushed::Dropped);
    }
}
