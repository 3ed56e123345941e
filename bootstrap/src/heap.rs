//! The process's allocator and its gauges.
//!
//! jemalloc rather than glibc's malloc: a soak with reconnect storms showed glibc keeping what
//! the storms freed in its per-thread arenas, so RSS crept up long after warm-up
//! (docs/performance.md, "Soak"). jemalloc hands dirty pages back to the system after
//! `dirty_decay_ms` (10 s by default). Its statistics separate the live heap
//! (`banter_heap_allocated_bytes`) from what the process holds (`banter_heap_resident_bytes`),
//! which is how an operator tells a leak (both grow) from fragmentation (only the second does).

use std::time::Duration;

use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often the heap gauges are refreshed: they are totals, cheap to read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Describes the heap gauges and refreshes them every second for the life of the runtime.
pub fn spawn_heap_gauges() {
    metrics::describe_gauge!(
        "banter_heap_allocated_bytes",
        metrics::Unit::Bytes,
        "Bytes the process has allocated and not freed (the live heap; jemalloc's stats.allocated)."
    );
    metrics::describe_gauge!(
        "banter_heap_resident_bytes",
        metrics::Unit::Bytes,
        "Bytes of physical memory the allocator holds, live or cached (jemalloc's stats.resident)."
    );
    let (Ok(epoch_key), Ok(allocated_key), Ok(resident_key)) = (
        epoch::mib(),
        stats::allocated::mib(),
        stats::resident::mib(),
    ) else {
        tracing::warn!("the allocator's statistics are unavailable; the heap gauges stay unset");
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // jemalloc caches its totals; advancing the epoch refreshes them.
            if epoch_key.advance().is_err() {
                continue;
            }
            if let (Ok(allocated), Ok(resident)) = (allocated_key.read(), resident_key.read()) {
                metrics::gauge!("banter_heap_allocated_bytes").set(allocated as f64);
                metrics::gauge!("banter_heap_resident_bytes").set(resident as f64);
            }
        }
    });
}
