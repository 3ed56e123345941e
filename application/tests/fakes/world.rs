//! One chat over fresh fakes, and the names most tests use.

use banter_application::{Chat, ChatSettings, Joined};
use banter_domain::{RoomName, Seq, Username};

use super::{FakeBroadcaster, FakeClock, FakePresence, FakeStore};

pub type TestChat = Chat<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;
pub type TestJoined = Joined<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;

/// A chat and the fakes behind it, for inspection.
pub struct World {
    pub chat: TestChat,
    pub store: FakeStore,
    pub broadcaster: FakeBroadcaster,
}

pub fn world_with(settings: ChatSettings) -> World {
    let clock = FakeClock::default();
    let store = FakeStore::new(clock.clone());
    let broadcaster = FakeBroadcaster::default();
    let chat = Chat::new(
        store.clone(),
        broadcaster.clone(),
        FakePresence::default(),
        clock,
        settings,
    );
    World {
        chat,
        store,
        broadcaster,
    }
}

pub fn world() -> World {
    world_with(ChatSettings::default())
}

/// The room most tests use.
pub fn room() -> RoomName {
    RoomName::parse("general").expect("a valid room")
}

pub fn user(name: &str) -> Username {
    Username::parse(name).expect("a valid username")
}

pub fn seq(n: u64) -> Seq {
    Seq::new(n).expect("a positive seq")
}
