//! The writer task: turns queued posts into batch transactions and answers every caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use banter_domain::{Appended, NewMessage};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tokio::sync::{mpsc, oneshot};

use crate::batch::{Batch, RowOutcome, commit_batch_body};
use crate::pool::Pools;
use crate::{StorageError, now_ms};

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Job {
    Append {
        post: NewMessage,
        reply: oneshot::Sender<Result<Appended, StorageError>>,
    },
    /// Commit what is queued, then stop.
    Close,
}

/// How often a batch is retried after losing a race on a client id to another process.
const UNIQUE_RACE_RETRIES: usize = 3;

pub(crate) struct Writer {
    pools: Pools,
    max_batch: usize,
    linger: std::time::Duration,
    /// Nanoseconds spent committing, summed over every writer: how busy posting keeps the
    /// database, which the search indexer yields to.
    busy: Arc<AtomicU64>,
}

impl Writer {
    pub fn new(
        pools: Pools,
        max_batch: usize,
        linger: std::time::Duration,
        busy: Arc<AtomicU64>,
    ) -> Self {
        Self {
            pools,
            max_batch,
            linger,
            busy,
        }
    }

    /// Takes batches from its queue until the queue is closed and empty. Each writer owns the
    /// rooms routed to its queue, so writers never wait on each other's room locks.
    pub async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        let mut previous_batch = 0;
        loop {
            if queue.recv_many(&mut jobs, self.max_batch).await == 0 {
                break;
            }
            // Posters answered by the previous batch are coming back: waiting a moment for
            // them fills this batch instead of committing a handful now and the rest after.
            // At low load the previous batch was small and nobody waits.
            let deadline = tokio::time::Instant::now() + self.linger;
            while jobs.len() < previous_batch.min(self.max_batch) {
                let room_left = self.max_batch - jobs.len();
                match tokio::time::timeout_at(deadline, queue.recv_many(&mut jobs, room_left)).await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if jobs.iter().any(|job| matches!(job, Job::Close)) {
                // Whatever was queued before the close is still committed; then the
                // writer finds its queue closed and empty, and stops.
                queue.close();
                while let Ok(job) = queue.try_recv() {
                    jobs.push(job);
                }
            }
            let mut posts = Vec::with_capacity(jobs.len());
            let mut replies = Vec::with_capacity(jobs.len());
            for job in jobs.drain(..) {
                if let Job::Append { post, reply } = job {
                    posts.push(post);
                    replies.push(reply);
                }
            }
            if posts.is_empty() {
                continue;
            }
            previous_batch = posts.len();
            let size = posts.len();
            let started = std::time::Instant::now();
            let result = self.commit(Batch::new(posts)).await;
            let took = started.elapsed();
            self.busy.fetch_add(
                u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            metrics::histogram!("banter_store_batch_size").record(size as f64);
            metrics::histogram!("banter_store_commit_seconds").record(took.as_secs_f64());
            match result {
                Ok(outcomes) => {
                    let stored = outcomes
                        .iter()
                        .filter(|o| matches!(o, RowOutcome::Stored(_)))
                        .count();
                    metrics::counter!("banter_messages_stored_total").increment(stored as u64);
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let appended = match outcome {
                            RowOutcome::Stored(row) => row.into_message().map(Appended::Stored),
                            RowOutcome::Duplicate(row) => {
                                row.into_message().map(Appended::Duplicate)
                            }
                        };
                        // A caller that gave up waiting is no reason to stop.
                        let _ = reply.send(appended);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, posts = size, "batch not committed");
                    let reason = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(StorageError::Commit(reason.clone())));
                    }
                }
            }
        }
        tracing::debug!("store writer stopped");
    }

    /// Commits a batch, retrying when another process committed one of its client ids first
    /// (the retry finds that message and answers with it as a duplicate).
    async fn commit(&self, batch: Batch) -> Result<Vec<RowOutcome>, StorageError> {
        let batch = Arc::new(batch);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.commit_once(Arc::clone(&batch)).await {
                Err(StorageError::Query(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    info,
                ))) if attempt <= UNIQUE_RACE_RETRIES => {
                    tracing::info!(
                        attempt,
                        detail = info.message(),
                        "batch lost a race on a unique key; retrying"
                    );
                }
                other => return other,
            }
        }
    }

    async fn commit_once(&self, batch: Arc<Batch>) -> Result<Vec<RowOutcome>, StorageError> {
        let now = now_ms();
        match &self.pools {
            Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                // The whole transaction runs on one blocking thread with sync diesel, which
                // saves a thread hop per statement (a batch runs one INSERT per message).
                let outcomes = pooled
                    .spawn_blocking(move |conn| {
                        conn.immediate_transaction(|conn| {
                            commit_batch_body!(conn, crate::statements::sqlite, &batch, now, [])
                        })
                    })
                    .await?;
                Ok(outcomes)
            }
            Pools::Postgres(pool) => {
                use diesel_async::AsyncConnection;
                let mut pooled = pool.get().await?;
                let conn = &mut *pooled;
                let outcomes = conn
                    .transaction::<_, DieselError, _>(async |conn| {
                        commit_batch_body!(conn, crate::statements::postgres, &batch, now, [.await])
                    })
                    .await?;
                Ok(outcomes)
            }
        }
    }
}
