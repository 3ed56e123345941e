//! # banter-adapter-memory
//!
//! In-process adapters for a single node: the [`MemoryBroadcaster`] (one bounded fan-out per
//! room), the [`MemoryPresence`] registry and the [`SystemClock`].
//!
//! May depend on: `banter-domain`, tokio (sync and time), async-broadcast (the room channels)
//! and metrics (the facade).

mod broadcaster;
mod clock;
mod presence;

pub use broadcaster::{MemoryBroadcaster, MemorySubscription};
pub use clock::SystemClock;
pub use presence::MemoryPresence;
