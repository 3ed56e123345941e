//! The ports' contracts (`banter_testkit::contract`) on the application's fakes: the same
//! cases the real adapters pass, so a fake the use-case tests lean on cannot drift from them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;

use banter_testkit::contract::{Cluster, Fixture, StoreFixture};
use fakes::{AnnouncingPresence, FakeBroadcaster, FakeClock, FakePresence, FakeStore};

/// Each subscriber's queue bound, as in the adapters' runs of the contract.
const QUEUE: usize = 256;

/// One fake database: every store opened on it is a clone sharing its messages.
struct FakeDatabase {
    store: FakeStore,
}

impl FakeDatabase {
    async fn start() -> Option<FakeDatabase> {
        Some(FakeDatabase {
            store: FakeStore::new(FakeClock::default()),
        })
    }
}

impl Fixture for FakeDatabase {}

impl StoreFixture for FakeDatabase {
    type Store = FakeStore;

    async fn open(&self) -> FakeStore {
        self.store.clone()
    }

    async fn close(&self, _store: FakeStore) {}
}

/// The fake broker: every node is a clone of the same broadcaster and registry.
struct FakeCluster<P> {
    broadcaster: FakeBroadcaster,
    presence: P,
}

async fn fake_cluster() -> Option<FakeCluster<FakePresence>> {
    Some(FakeCluster {
        broadcaster: FakeBroadcaster::with_capacity(QUEUE),
        presence: FakePresence::default(),
    })
}

/// The registry announces on the cluster's broadcaster, as a shared one does.
async fn announcing_cluster() -> Option<FakeCluster<AnnouncingPresence>> {
    let broadcaster = FakeBroadcaster::with_capacity(QUEUE);
    let presence = AnnouncingPresence {
        inner: FakePresence::default(),
        broadcaster: broadcaster.clone(),
    };
    Some(FakeCluster {
        broadcaster,
        presence,
    })
}

impl<P> Fixture for FakeCluster<P> {}

impl<P: banter_domain::ports::PresenceRegistry> Cluster for FakeCluster<P> {
    type Broadcaster = FakeBroadcaster;
    type Presence = P;

    async fn node(&self) -> (FakeBroadcaster, P) {
        (self.broadcaster.clone(), self.presence.clone())
    }

    fn queue_capacity(&self) -> usize {
        QUEUE
    }
}

banter_testkit::store_contract!(fake_store, crate::FakeDatabase::start());
banter_testkit::broadcaster_contract!(fake_broadcaster, crate::fake_cluster());
banter_testkit::presence_contract!(fake_presence, crate::fake_cluster());
banter_testkit::presence_contract!(announcing_fake_presence, crate::announcing_cluster());
banter_testkit::announcing_presence_contract!(announcing_fake, crate::announcing_cluster());
