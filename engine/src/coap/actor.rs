//! The in-memory state of an *awake* CoAP device: where it is, until when it listens, and the
//! requests fleetgate has for it (one confirmable request outstanding at a time, RFC 7252
//! `NSTART` = 1). A sleeping device has no actor: its registration in storage is all there is,
//! and the next datagram revives it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use fleetgate_codec::coap::reliability::Retransmission;
use fleetgate_model::lwm2m::RegistrationId;
use fleetgate_model::{AppId, CommandId, DeviceId, ProductId};

/// Why fleetgate asked the device something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// `GET /19/0/0` with Observe: the device's reports.
    Observe,
    /// `POST /19/1/0`: a command.
    Command(CommandId),
}

/// A request on its way to the device.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) token: [u8; 8],
    pub(crate) mid: u16,
    pub(crate) bytes: Vec<u8>,
    pub(crate) purpose: Purpose,
    /// Set once sent: the retransmission schedule.
    pub(crate) retransmission: Option<Retransmission>,
    /// Where it was sent (the ACK comes from there; retransmissions go there).
    pub(crate) to: SocketAddr,
}

/// An awake device.
#[derive(Debug)]
pub(crate) struct Actor {
    pub(crate) location: RegistrationId,
    pub(crate) device: DeviceId,
    pub(crate) app: AppId,
    pub(crate) product: ProductId,
    pub(crate) addr: SocketAddr,
    pub(crate) queue_mode: bool,
    /// Until when the device listens (queue mode: the awake window; otherwise its lifetime).
    pub(crate) awake_until: Instant,
    /// The confirmable request waiting for its ACK.
    pub(crate) outstanding: Option<Outgoing>,
    /// Requests waiting for their turn.
    pub(crate) waiting: VecDeque<Outgoing>,
    /// Requests acknowledged with an empty ACK whose response comes separately.
    pub(crate) awaiting: Vec<([u8; 8], Purpose)>,
    /// Sequence of the next token.
    pub(crate) next_tag: u8,
    /// The time of the actor's live timer entry; entries for other times are stale.
    pub(crate) armed: Option<Instant>,
}

impl Actor {
    /// The next token: a tag (1–255; 0 is the observation's) and the location's 7 low bytes.
    pub(crate) fn token(&mut self) -> [u8; 8] {
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        token_of(self.location, self.next_tag)
    }

    /// When the actor's timer should fire next at `now`: the outstanding retransmission, or
    /// the end of its awake window while that is ahead.
    pub(crate) fn deadline(&self, now: Instant) -> Instant {
        let retransmit = self
            .outstanding
            .as_ref()
            .and_then(|o| o.retransmission.as_ref())
            .map(Retransmission::next_deadline);
        match retransmit {
            Some(r) if self.awake_until > now => r.min(self.awake_until),
            Some(r) => r,
            None => self.awake_until,
        }
    }

    /// Records that the timer must fire by the actor's deadline at `now`; returns the time of
    /// a new timer entry, or `None` when the live entry fires at or before it (that entry
    /// re-arms when it runs).
    pub(crate) fn rearm(&mut self, now: Instant) -> Option<Instant> {
        let at = self.deadline(now);
        if self.armed.is_some_and(|t| t <= at) {
            return None;
        }
        self.armed = Some(at);
        Some(at)
    }

    /// Whether the device may be sent to at `now`.
    pub(crate) fn awake(&self, now: Instant) -> bool {
        now < self.awake_until
    }

    /// Whether the actor has nothing left to do and may hibernate at `now`.
    pub(crate) fn idle(&self, now: Instant) -> bool {
        !self.awake(now) && self.outstanding.is_none()
    }
}

/// The token of an exchange: `tag` then the location's low 56 bits (locations are 56-bit).
pub(crate) fn token_of(location: RegistrationId, tag: u8) -> [u8; 8] {
    let mut t = location.as_u64().to_be_bytes();
    t[0] = tag;
    t
}

/// The location and tag a token names, when it is one of ours (8 bytes).
pub(crate) fn parse_token(token: &[u8]) -> Option<(RegistrationId, u8)> {
    let t: [u8; 8] = token.try_into().ok()?;
    let tag = t[0];
    let mut l = t;
    l[0] = 0;
    Some((RegistrationId::from_u64(u64::from_be_bytes(l)), tag))
}
