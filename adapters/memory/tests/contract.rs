//! The broadcaster and presence ports' contracts (`banter_testkit::contract`) on the in-memory
//! adapters: every "node" of this one-process cluster is a clone of the same two adapters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use banter_adapter_memory::{MemoryBroadcaster, MemoryPresence};
use banter_testkit::contract::{Cluster, Fixture};

/// Each subscriber's queue bound.
const QUEUE: usize = 256;

#[derive(Debug)]
struct Memory {
    broadcaster: MemoryBroadcaster,
    presence: MemoryPresence,
}

impl Memory {
    async fn start() -> Option<Memory> {
        Some(Memory {
            broadcaster: MemoryBroadcaster::new(QUEUE),
            presence: MemoryPresence::default(),
        })
    }
}

impl Fixture for Memory {}

impl Cluster for Memory {
    type Broadcaster = MemoryBroadcaster;
    type Presence = MemoryPresence;

    async fn node(&self) -> (MemoryBroadcaster, MemoryPresence) {
        (self.broadcaster.clone(), self.presence.clone())
    }

    fn queue_capacity(&self) -> usize {
        QUEUE
    }
}

banter_testkit::broadcaster_contract!(broadcaster_contract, crate::Memory::start());
banter_testkit::presence_contract!(presence_contract, crate::Memory::start());
