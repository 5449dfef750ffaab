//! The partitioned projector's promises, checked on a backend's read model: run it
//! from a backend's tests with [`partitioned_projectors`].
//!
//! What it proves, with a projector whose plain increments show an event applied
//! twice or missed: four partitions together apply every event once; each is its
//! own subscription; a rebuild named by one partition rebuilds them all; a second
//! set (a second process) gets half of the partitions, and every one when the
//! first stops; and a new
//! partition count starts from empty tables instead of applying history again.

use crate::RecordedEvent;
use crate::application::Application;
use crate::envelope::{Metadata, NewEvent};
use crate::event_store::EventStore;
use crate::partition::Partition;
use crate::projector::{Projector, ReadModel};
use crate::sql::{Dialect, Sql};
use crate::store::StreamAppend;
use crate::stream::ExpectedVersion;
use crate::subscription::{ConsumerError, ConsumerKind, SubscriptionOptions, SubscriptionState};
use crate::subscription_store::SubscriptionStore;
use crate::subscriptions::Subscriptions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const STREAMS: usize = 24;
const ROUNDS: usize = 25;
const NAME: &str = "partition_counts";

/// Events per stream, by plain increments.
struct Counts;

impl Projector for Counts {
    fn name(&self) -> &str {
        NAME
    }
    fn schema(&self, _: Dialect) -> &'static str {
        "CREATE TABLE IF NOT EXISTS partition_counts (stream_id TEXT PRIMARY KEY, n BIGINT NOT NULL)"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["partition_counts"]
    }
    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        sql.execute(
            "INSERT INTO partition_counts (stream_id, n) VALUES ($1, 1)
             ON CONFLICT (stream_id) DO UPDATE SET n = partition_counts.n + 1",
            (event.stream_id.as_str(),),
        );
        Ok(())
    }
}

fn counted() -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Counted".into(),
        data: "{}".into(),
        metadata: Metadata::default(),
    }
}

/// One event on every stream, in one atomic batch.
async fn round(app: &Application) {
    let appends = (0..STREAMS)
        .map(|s| StreamAppend { stream_id: format!("p-{s}"), expected: ExpectedVersion::Any, events: vec![counted()] })
        .collect();
    app.store().append_batch(appends).await.expect("append a round");
}

async fn counts(read_model: &dyn ReadModel) -> BTreeMap<String, i64> {
    let rows = read_model.query("SELECT stream_id, n FROM partition_counts", ()).await.expect("counts");
    rows.iter().map(|row| (row.get(0).expect("stream"), row.get(1).expect("n"))).collect()
}

async fn start(
    app: &Application,
    read_model: &Arc<dyn ReadModel>,
    bookkeeping: &Arc<dyn SubscriptionStore>,
    concurrency: u32,
) -> Subscriptions {
    let options =
        SubscriptionOptions::new().concurrency(concurrency).batch_size(7).lease_retry(Duration::from_millis(50));
    Subscriptions::builder(app, bookkeeping.clone())
        .read_model(read_model.clone())
        .projector_with(Counts, options)
        .await
        .expect("register the partitions")
        .start()
        .expect("start")
}

/// Waits until every partition of `subscriptions` has done the settled head.
async fn caught_up(app: &Application, subscriptions: &Subscriptions) {
    let head = app.store().settled_head().await.expect("head");
    tokio::time::timeout(Duration::from_secs(60), subscriptions.wait_for(NAME, head))
        .await
        .expect("caught up in time")
        .expect("known");
}

/// The partitions a set runs now (holds the lease of), rather than stands by for.
fn active(subscriptions: &Subscriptions) -> usize {
    subscriptions
        .status()
        .iter()
        .filter(|s| !matches!(s.state, SubscriptionState::Standby | SubscriptionState::Stopped))
        .count()
}

/// Waits until each set runs the given number of partitions. Nothing signals a
/// lease changing hands in another set, so this looks, every 20 ms, for 30 s at most.
async fn spread(sets: &[&Subscriptions], running: &[usize]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<usize> = sets.iter().map(|set| active(set)).collect();
        if now == running {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the partitions did not spread: {now:?}, not {running:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the partitions a set runs have done the settled head.
async fn active_caught_up(app: &Application, subscriptions: &Subscriptions) {
    let head = app.store().settled_head().await.expect("head");
    for status in subscriptions.status() {
        if !matches!(status.state, SubscriptionState::Standby | SubscriptionState::Stopped) {
            let done = subscriptions.wait_for(&status.name, head);
            tokio::time::timeout(Duration::from_secs(60), done).await.expect("caught up in time").expect("known");
        }
    }
}

fn assert_each(counts: &BTreeMap<String, i64>, n: i64, when: &str) {
    assert_eq!(counts.len(), STREAMS, "{when}: every stream projected");
    for (stream, count) in counts {
        assert_eq!(*count, n, "{when}: {stream} applied {count} events of {n}");
    }
}

/// Runs the suite. `app` is on a fresh store; `read_model` is the backend's read
/// model for it; the two bookkeeping stores are on the same database but must hold
/// leases apart, as two processes would (two connections on PostgreSQL).
pub async fn partitioned_projectors(
    app: &Application,
    read_model: Arc<dyn ReadModel>,
    bookkeeping: [Arc<dyn SubscriptionStore>; 2],
) {
    for _ in 0..ROUNDS {
        round(app).await;
    }
    let first = start(app, &read_model, &bookkeeping[0], 4).await;
    let names: Vec<String> = first
        .status()
        .into_iter()
        .map(|s| (s.name, s.kind))
        .map(|(n, k)| {
            assert_eq!(k, ConsumerKind::Projector);
            n
        })
        .collect();
    let expected: Vec<String> = Partition::all(4).map(|p| p.name(NAME)).collect();
    assert_eq!(names, expected, "one subscription per partition");
    caught_up(app, &first).await;
    assert_each(&counts(&*read_model).await, ROUNDS as i64, "four partitions");
    assert_eq!(first.projectors(), [NAME], "the partitions are one projector");

    // Rebuild by one partition's name: the reset empties the shared table, so all
    // four must replay, or the streams of the other three would be missing.
    first.rebuild(&Partition::all(4).nth(1).expect("p1").name(NAME)).await.expect("rebuild");
    caught_up(app, &first).await;
    assert_each(&counts(&*read_model).await, ROUNDS as i64, "rebuilt through one partition's name");

    // A second set, as a second process would: the partitions spread over both, and
    // together they apply every event once.
    let second = start(app, &read_model, &bookkeeping[1], 4).await;
    spread(&[&first, &second], &[2, 2]).await;
    round(app).await;
    for set in [&first, &second] {
        active_caught_up(app, set).await;
    }
    assert_each(&counts(&*read_model).await, ROUNDS as i64 + 1, "spread over two sets");

    // The first set stops: the second takes every partition over.
    first.shutdown().await;
    spread(&[&second], &[4]).await;
    round(app).await;
    caught_up(app, &second).await;
    assert_each(&counts(&*read_model).await, ROUNDS as i64 + 2, "taken over by the second set");
    second.shutdown().await;

    // Two partitions are a new set: it starts from empty tables.
    let halves = start(app, &read_model, &bookkeeping[1], 2).await;
    caught_up(app, &halves).await;
    assert_each(&counts(&*read_model).await, ROUNDS as i64 + 2, "a new count, rebuilt from the origin");
    halves.shutdown().await;
}
