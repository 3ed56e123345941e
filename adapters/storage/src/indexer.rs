//! The search indexer's task: one per process, started by [`crate::Store::migrate`], stopped by
//! [`crate::Store::close`] or when the store is dropped. Each step is
//! [`crate::search::index_pending`] on a connection of the indexer's own (a pooled one, even
//! taken once, slowed Postgres group commit); between steps it pauses as [`pause`] says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::pool::Dedicated;
use crate::search::{self, Indexed};
use crate::{Inner, StorageError};

/// Writers committing more than this share of the time are what bounds posting: the search
/// indexer then yields.
const SATURATED_WRITERS: f64 = 0.5;
/// While posting is saturated, the indexer pauses this many times as long as its last batch
/// took (so it holds the database a tenth of the time at most).
const YIELD_FACTOR: u32 = 9;

/// How busy the writers were since the last look: nanoseconds spent committing, summed over
/// every writer (`crate::writer::Writer` adds to it), per wall-clock nanosecond and writer.
pub(crate) struct WriterLoad {
    busy: Arc<AtomicU64>,
    writers: f64,
    last: (Instant, u64),
}

impl WriterLoad {
    pub fn new(busy: Arc<AtomicU64>, writers: usize) -> Self {
        let last = (Instant::now(), busy.load(Ordering::Relaxed));
        Self {
            busy,
            writers: writers.max(1) as f64,
            last,
        }
    }

    /// Whether the writers spent more than half their time committing since the last call.
    fn saturated(&mut self) -> bool {
        let now = (Instant::now(), self.busy.load(Ordering::Relaxed));
        let wall = now.0.duration_since(self.last.0).as_nanos().max(1) as f64;
        let committing = now.1.saturating_sub(self.last.1) as f64;
        self.last = now;
        committing / wall / self.writers > SATURATED_WRITERS
    }
}

/// The pause after a step that took `took`. Posting comes first: while the writers are
/// saturated the indexer takes at most a tenth of the time (it shares the database, and on
/// SQLite its one write lock) and catches up once posting eases; otherwise it goes on at once
/// while messages wait, and looks again after `interval` once it has caught up.
fn pause(saturated: bool, caught_up: bool, took: Duration, interval: Duration) -> Duration {
    if saturated {
        (took * YIELD_FACTOR).max(interval)
    } else if caught_up {
        interval
    } else {
        Duration::ZERO
    }
}

/// Runs until the store is gone.
pub(crate) async fn run(store: Weak<Inner>, interval: Duration, mut load: WriterLoad) {
    let mut connection = None;
    loop {
        let started = Instant::now();
        let Some(step) = step(&store, &mut connection).await else {
            return;
        };
        let took = started.elapsed();
        let caught_up = match step {
            Ok(step) => {
                metrics::counter!("banter_search_indexed_total").increment(step.taken as u64);
                step.caught_up
            }
            Err(e) => {
                tracing::warn!(error = %e, "search indexing failed; retrying");
                true
            }
        };
        let pause = pause(load.saturated(), caught_up, took, interval);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// One indexing step on the indexer's connection (opened anew after a failure); `None` once
/// the store is gone. The store is held only for the moment it takes to open a connection, so
/// a store dropped without `close` still lets go of its pools.
async fn step(
    store: &Weak<Inner>,
    connection: &mut Option<Dedicated>,
) -> Option<Result<Indexed, StorageError>> {
    let pools = store.upgrade().map(|inner| inner.pools.clone())?;
    let mut conn = match connection.take() {
        Some(conn) => conn,
        None => match pools.dedicated().await {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e)),
        },
    };
    drop(pools);
    let step = search::index_pending(&mut conn).await;
    if step.is_ok() {
        *connection = Some(conn);
    }
    Some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexer_yields_to_saturated_writers_and_rests_once_caught_up() {
        let (ms, interval) = (Duration::from_millis, Duration::from_millis(250));
        assert_eq!(pause(true, false, ms(100), interval), ms(900));
        assert_eq!(pause(true, true, ms(1), interval), interval);
        assert_eq!(pause(false, true, ms(100), interval), interval);
        assert_eq!(pause(false, false, ms(100), interval), Duration::ZERO);
    }
}
