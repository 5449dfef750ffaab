//! Several store instances on one schema, as several processes would run them: the
//! global order is safe to follow, version checks hold across instances, and a new
//! instance continues where the old ones stopped.

mod common;

use rewind::conformance::event;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, StoreError, StreamAppend, StreamVersion};
use rewind_postgres::PostgresStore;
use rewind_postgres::options::SlowCommits;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A small deterministic generator, seeded per writer (no dependency needed).
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        XorShift(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the writers did.
#[derive(Default)]
struct Outcomes {
    acknowledged: HashSet<Uuid>,
    failed: HashSet<Uuid>,
}

/// One writer task: random streams, random batch sizes, some stale versions, some
/// two-stream batches.
async fn write(store: Arc<PostgresStore>, appends: usize) -> Outcomes {
    let mut rng = XorShift::seeded();
    let mut outcomes = Outcomes::default();
    for _ in 0..appends {
        let stream = format!("gap-{}", rng.below(24));
        let version = store.stream_version(&stream).await.expect("version");
        let stale = rng.below(5) == 0 && version.0 > 0;
        let expected = ExpectedVersion::Exact(StreamVersion(if stale { version.0 - 1 } else { version.0 }));
        let events: Vec<_> = (0..1 + rng.below(3)).map(|i| event("Happened", serde_json::json!({ "i": i }))).collect();
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let result = if rng.below(10) == 0 {
            let other = event("Also", serde_json::json!({}));
            ids.push(other.event_id);
            let side = StreamAppend {
                stream_id: format!("side-{}", Uuid::new_v4()),
                expected: ExpectedVersion::NoStream,
                events: vec![other],
            };
            let main = StreamAppend { stream_id: stream, expected, events };
            store.append_batch(vec![main, side]).await.map(drop)
        } else {
            store.append(&stream, expected, events).await.map(drop)
        };
        match result {
            Ok(()) => outcomes.acknowledged.extend(ids),
            Err(StoreError::Conflict { .. }) => outcomes.failed.extend(ids),
            Err(other) => panic!("append failed: {other}"),
        }
    }
    outcomes
}

/// Tails `$all` on its own instance until told to stop, then drains what is left.
async fn follow(store: Arc<PostgresStore>, done: Arc<tokio::sync::Notify>) -> Vec<(GlobalPosition, Uuid)> {
    let mut seen = Vec::new();
    let mut watch = store.watch_head();
    let mut from = GlobalPosition::START.next();
    let mut finished = false;
    loop {
        let batch = store.read_all(from, 100, &EventFilter::all()).await.expect("read_all");
        if let Some(last) = batch.last() {
            from = last.position.next();
            seen.extend(batch.iter().map(|e| (e.position, e.event_id)));
            continue;
        }
        if finished {
            return seen;
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = done.notified() => finished = true,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// 16 instances × 2 writer tasks × 160 appends, some transactions held open on purpose
/// after their positions are assigned, some appends failing their version check; a
/// follower on a 17th instance sees every acknowledged event once, in dense position
/// order, and nothing of a failed append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_on_another_instance_never_skips_or_reorders() {
    let Some(url) = common::database_url("follower_on_another_instance_never_skips_or_reorders") else { return };
    let schema = common::fresh_schema();
    let follower_store = Arc::new(common::open(&url, &schema).await);
    let mut writers = Vec::new();
    for w in 0..16u64 {
        let slow = SlowCommits { every: 5 + w % 7, delay: Duration::from_millis(10 + w) };
        let options = common::options(&url, &schema).pool_size(1).slow_commits(slow);
        writers.push(Arc::new(PostgresStore::connect_with(options).await.expect("open writer")));
    }
    let done = Arc::new(tokio::sync::Notify::new());
    let follower = tokio::spawn(follow(follower_store.clone(), done.clone()));
    let tasks: Vec<_> =
        writers.iter().flat_map(|s| [s.clone(), s.clone()]).map(|s| tokio::spawn(write(s, 160))).collect();
    let mut all = Outcomes::default();
    for task in tasks {
        let outcomes = task.await.expect("writer");
        all.acknowledged.extend(outcomes.acknowledged);
        all.failed.extend(outcomes.failed);
    }
    done.notify_one();
    let seen = follower.await.expect("follower");
    let positions: Vec<u64> = seen.iter().map(|(p, _)| p.0).collect();
    assert_eq!(positions, (1..=seen.len() as u64).collect::<Vec<_>>(), "dense, increasing positions");
    let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event delivered twice");
    assert!(seen_ids.is_disjoint(&all.failed), "an event of a failed append was delivered");
    let missed = all.acknowledged.difference(&seen_ids).count();
    assert_eq!(missed, 0, "follower skipped {missed} acknowledged events");
    assert_eq!(seen_ids, all.acknowledged);
    assert!(all.failed.len() > 100, "the load included failing appends ({})", all.failed.len());
    assert!(all.acknowledged.len() > 2_000, "thousands of events ({})", all.acknowledged.len());
    let head = follower_store.watch_head();
    tokio::time::timeout(Duration::from_secs(5), head.clone().wait_for(|h| h.0 == seen.len() as u64))
        .await
        .expect("the follower's watch reached the head written by other instances")
        .expect("watch open");
}

/// 16 appenders spread over 4 instances, all expecting the same version: one wins each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_winner_per_version_across_instances() {
    let Some(url) = common::database_url("one_winner_per_version_across_instances") else { return };
    let schema = common::fresh_schema();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(common::open(&url, &schema).await));
    }
    for round in 0..10u64 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                tokio::spawn(async move {
                    store
                        .append(
                            "contested",
                            ExpectedVersion::Exact(StreamVersion(round)),
                            vec![event("Won", serde_json::json!({}))],
                        )
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => winners += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one append per version");
    }
    assert_eq!(stores[0].stream_version("contested").await.expect("version"), StreamVersion(10));
}

/// A new instance on the same schema keeps versions, positions, snapshots and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_versions_and_positions() {
    let Some(url) = common::database_url("reopening_keeps_versions_and_positions") else { return };
    let schema = common::fresh_schema();
    let first = common::open(&url, &schema).await;
    first
        .append(
            "a",
            ExpectedVersion::NoStream,
            vec![event("One", serde_json::json!(1)), event("Two", serde_json::json!(2))],
        )
        .await
        .expect("append");
    let last =
        first.append("b", ExpectedVersion::NoStream, vec![event("Three", serde_json::json!(3))]).await.expect("append");
    let before = first.read_all(GlobalPosition::START, 100, &EventFilter::all()).await.expect("read");
    drop(first);
    let second = common::open(&url, &schema).await;
    assert_eq!(second.stream_version("a").await.expect("version"), StreamVersion(2));
    assert_eq!(second.head_position().await.expect("head"), last.last_position);
    assert_eq!(*second.watch_head().borrow(), last.last_position, "the watch starts at the stored head");
    assert_eq!(second.read_all(GlobalPosition::START, 100, &EventFilter::all()).await.expect("read"), before);
    let next = second
        .append("a", ExpectedVersion::Exact(StreamVersion(2)), vec![event("Four", serde_json::json!(4))])
        .await
        .expect("append");
    assert_eq!((next.stream_version, next.first_position), (StreamVersion(3), last.last_position.next()));
}

/// A schema written by a newer version of the crate is refused, not touched.
#[tokio::test]
async fn newer_schema_version_is_refused() {
    let Some(url) = common::database_url("newer_schema_version_is_refused") else { return };
    let schema = common::fresh_schema();
    drop(common::open(&url, &schema).await);
    let raw = common::raw_client(&url).await;
    raw.batch_execute(&format!("INSERT INTO \"{schema}\".schema_version (version) VALUES (999)")).await.expect("bump");
    match PostgresStore::connect(&url, &schema).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("999"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Several processes opening a new schema at once migrate it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    let Some(url) = common::database_url("concurrent_opens_migrate_once") else { return };
    let schema = common::fresh_schema();
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move { PostgresStore::connect(&url, &schema).await.map(drop) })
        })
        .collect();
    for open in opens {
        open.await.expect("task").expect("open");
    }
    let raw = common::raw_client(&url).await;
    let rows = raw.query(&format!("SELECT version FROM \"{schema}\".schema_version"), &[]).await.expect("versions");
    assert_eq!(rows.len(), rewind_postgres::SCHEMA_VERSION_CURRENT as usize);
}

/// A bad URL or schema name is rejected before anything connects.
#[tokio::test]
async fn bad_settings_are_invalid() {
    for schema in ["", "Bad", "x;drop"] {
        assert!(matches!(
            PostgresStore::connect("postgres://nobody@127.0.0.1:1/x", schema).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(matches!(PostgresStore::connect("not a url ::", "ok").await, Err(StoreError::Invalid(_))));
}
