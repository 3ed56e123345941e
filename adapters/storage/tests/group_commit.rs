//! Group commit, observed through the writer's `banter_store_batch_size` metric: with it off,
//! every post is committed in a transaction of its own; with it on, concurrent posts share.
//!
//! A binary of its own, because it installs a process-wide metrics recorder: its tests take
//! turns (`TURN`) so that each one reads only the batches of its own store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::{Arc, Mutex, OnceLock};

use banter_adapter_storage::{DatabaseUrl, Store, StoreConfig};
use banter_domain::Appended;
use banter_domain::ports::MessageStore;
use banter_testkit::TestDatabase;
use banter_testkit::contract::store::post;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// The size of every batch committed since the last [`take_batch_sizes`].
#[derive(Debug, Default)]
struct BatchSizes(Mutex<Vec<f64>>);

impl HistogramFn for BatchSizes {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps the batch sizes; every other metric goes nowhere.
#[derive(Debug)]
struct BatchSizeProbe(Arc<BatchSizes>);

impl Recorder for BatchSizeProbe {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == "banter_store_batch_size" {
            Histogram::from_arc(Arc::clone(&self.0))
        } else {
            Histogram::noop()
        }
    }
}

fn batch_sizes() -> &'static Arc<BatchSizes> {
    static SIZES: OnceLock<Arc<BatchSizes>> = OnceLock::new();
    SIZES.get_or_init(|| {
        let sizes = Arc::new(BatchSizes::default());
        metrics::set_global_recorder(BatchSizeProbe(Arc::clone(&sizes)))
            .expect("no other recorder in this binary");
        sizes
    })
}

fn take_batch_sizes() -> Vec<usize> {
    let mut sizes = batch_sizes().0.lock().unwrap();
    sizes.drain(..).map(|size| size as usize).collect()
}

/// One test at a time: the recorder is shared by the whole process.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Posts 20 resends of one client id at once and returns (stored, duplicates, batch sizes).
async fn twenty_concurrent_resends(
    url: DatabaseUrl,
    max_batch: usize,
) -> (usize, usize, Vec<usize>) {
    let store = Store::open(StoreConfig {
        max_batch,
        ..StoreConfig::new(url)
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    take_batch_sizes();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(post("general", "alice", &format!("m{i}"), Some("same")))
                .await
                .unwrap()
        }));
    }
    let mut kinds = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Appended::Stored(_) => kinds.0 += 1,
            Appended::Duplicate(_) => kinds.1 += 1,
        }
    }
    // Closing waits for the writers, so every batch has been recorded.
    store.close().await;
    (kinds.0, kinds.1, take_batch_sizes())
}

async fn without_group_commit_every_post_is_its_own_transaction(url: DatabaseUrl) {
    let (stored, duplicates, batches) = twenty_concurrent_resends(url, 1).await;
    // A resend is found also when its original was committed by another transaction.
    assert_eq!((stored, duplicates), (1, 19));
    assert_eq!(batches, vec![1; 20], "one transaction per post");
}

async fn with_group_commit_concurrent_posts_share_transactions(url: DatabaseUrl) {
    let (stored, duplicates, batches) = twenty_concurrent_resends(url, 512).await;
    assert_eq!((stored, duplicates), (1, 19));
    assert_eq!(
        batches.iter().sum::<usize>(),
        20,
        "every post committed once"
    );
    // The 19 posts that queue while the first commit runs are gathered together.
    assert!(
        batches.iter().any(|&size| size > 1),
        "posts sent together were committed one by one: {batches:?}"
    );
}

macro_rules! for_each_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let _turn = super::TURN.lock().await;
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("banter.db").display().to_string();
                    super::$case(super::DatabaseUrl::Sqlite { path }).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let _turn = super::TURN.lock().await;
                    let Some(db) = super::TestDatabase::create().await else { return };
                    super::$case(super::DatabaseUrl::Postgres { url: db.url.clone() }).await;
                    db.drop_now().await;
                }
            )*
        }
    };
}

for_each_backend!(
    without_group_commit_every_post_is_its_own_transaction,
    with_group_commit_concurrent_posts_share_transactions,
);
