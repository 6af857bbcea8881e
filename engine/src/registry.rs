//! The registry of sessions: which shard and slot holds each device's session
//! (docs/architecture.md, "The engine"). A device id has at most one entry; claiming it
//! returns the previous holder, which the new session takes over.

use dashmap::DashMap;
use fleetgate_model::DeviceId;

/// Where a session lives. `generation` tells a reused slot from its previous occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionRef {
    /// The shard.
    pub shard: u16,
    /// The slot in the shard's table.
    pub slot: u32,
    /// The slot's generation.
    pub generation: u32,
    /// Whether a connection is attached (false: a persistent session of an offline device).
    pub live: bool,
}

impl SessionRef {
    /// Whether both name the same shard slot and generation.
    pub fn same_slot(self, other: SessionRef) -> bool {
        self.shard == other.shard && self.slot == other.slot && self.generation == other.generation
    }
}

/// Device id → session.
#[derive(Debug, Default)]
pub struct Registry {
    map: DashMap<DeviceId, SessionRef>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `me` the session of `device` and returns the previous one.
    pub fn claim(&self, device: &DeviceId, me: SessionRef) -> Option<SessionRef> {
        self.map.insert(device.clone(), me)
    }

    /// Removes the entry if it is still `me`; a newer session's entry is left alone.
    pub fn release(&self, device: &DeviceId, me: SessionRef) -> bool {
        self.map.remove_if(device, |_, v| v.same_slot(me)).is_some()
    }

    /// Re-points the entry from `old` to `new` in one step if it is still `old` (a session
    /// detaching from its connection); a newer session's entry is left alone. The device is
    /// never absent in between, so a message routed meanwhile finds a session.
    pub fn replace(&self, device: &DeviceId, old: SessionRef, new: SessionRef) -> bool {
        match self.map.get_mut(device) {
            Some(mut v) if v.same_slot(old) => {
                *v = new;
                true
            }
            _ => false,
        }
    }

    /// The session of `device`.
    pub fn get(&self, device: &DeviceId) -> Option<SessionRef> {
        self.map.get(device).map(|v| *v)
    }

    /// Whether `device` has a live connection.
    pub fn is_online(&self, device: &DeviceId) -> bool {
        self.get(device).is_some_and(|r| r.live)
    }

    /// Sessions, live or detached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Visits every entry (for listings); the map may change meanwhile.
    pub fn for_each(&self, mut f: impl FnMut(&DeviceId, SessionRef)) {
        for e in self.map.iter() {
            f(e.key(), *e.value());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(shard: u16, slot: u32, generation: u32) -> SessionRef {
        SessionRef {
            shard,
            slot,
            generation,
            live: true,
        }
    }

    #[test]
    fn claim_release_takeover() {
        let reg = Registry::new();
        let d = DeviceId::new("d").unwrap();
        assert_eq!(reg.claim(&d, r(0, 1, 1)), None);
        assert_eq!(reg.claim(&d, r(1, 7, 3)), Some(r(0, 1, 1)));
        assert!(
            !reg.release(&d, r(0, 1, 1)),
            "the old session cannot remove the new one"
        );
        assert!(reg.is_online(&d));
        let detached = SessionRef {
            live: false,
            ..r(1, 8, 4)
        };
        assert!(
            !reg.replace(&d, r(0, 1, 1), detached),
            "only the current session detaches"
        );
        assert!(reg.replace(&d, r(1, 7, 3), detached));
        assert!(!reg.is_online(&d));
        assert!(!reg.release(&d, r(1, 7, 3)));
        assert!(reg.release(&d, r(1, 8, 4)));
        assert!(reg.is_empty());
    }
}
