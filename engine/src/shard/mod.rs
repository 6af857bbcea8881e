//! A shard: the connections one reactor thread owns, their sessions, the timer wheel and the
//! inbox (docs/architecture.md, "The engine"). [`ShardCore`] is the part every I/O driver shares:
//! drivers accept sockets, read bytes and write what the core hands them; the core frames
//! packets, runs the session state machines and carries out their actions. Nothing here
//! touches a socket, so the core also runs over the in-memory transport of the tests.

mod core;
pub mod msg;
pub(crate) mod timer;

pub use self::core::{Io, ShardCore};
pub use self::msg::{ShardHandle, ShardMsg, Waker, inbox};

/// A connection (or detached session) of a shard: a slot and that slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slot.
    pub slot: u32,
    /// The generation of the slot's occupant.
    pub generation: u32,
}

impl From<crate::registry::SessionRef> for ConnId {
    /// The connection a registry entry points at (in its shard).
    fn from(target: crate::registry::SessionRef) -> Self {
        ConnId {
            slot: target.slot,
            generation: target.generation,
        }
    }
}

impl ConnId {
    /// Packs into 64 bits (for io_uring user data).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }

    /// Unpacks [`ConnId::to_u64`].
    pub fn from_u64(v: u64) -> Self {
        ConnId {
            slot: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

#[cfg(test)]
mod tests;
