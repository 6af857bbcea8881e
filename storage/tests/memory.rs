//! The conformance suite on the in-memory engine.

use std::sync::Arc;

use fleetgate_storage::conformance::Fixture;
use fleetgate_storage::{Limits, MemStore};

fn make(limits: Limits) -> Fixture {
    Fixture::new(Arc::new(MemStore::in_memory_with(limits)), ())
}

fleetgate_storage::conformance_tests!(make);
