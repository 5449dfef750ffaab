//! Several store instances on one schema, as several processes would run them: the
//! global order is safe to follow, version checks hold across instances, and a new
//! instance continues where the old ones stopped.

mod common;

use rewind::conformance::event;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, StoreError, StreamVersion};
use rewind_postgres::PostgresStore;
use rewind_postgres::options::SlowCommits;
use std::sync::Arc;
use std::time::Duration;

/// 16 instances × 2 writer tasks × 160 appends, some transactions held open on purpose
/// after their positions are assigned, some appends failing their version check; a
/// follower on a 17th instance sees every acknowledged event once, in increasing
/// position order, and nothing of a failed append. (Positions may have holes: an
/// append that lost a race to another instance rolls back after taking positions.)
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
    let writers: Vec<_> = writers.iter().flat_map(|s| [s.clone(), s.clone()]).collect();
    let report = rewind::conformance::follow_across(follower_store.clone(), writers, 160).await;
    let seen = report.seen;
    let positions: Vec<u64> = seen.iter().map(|(p, _)| p.0).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "increasing positions");
    let last = positions.last().copied().expect("events were seen");
    assert!(report.failed > 100, "the load included failing appends ({})", report.failed);
    assert!(report.acknowledged > 2_000, "thousands of events ({})", report.acknowledged);
    let head = follower_store.watch_head();
    tokio::time::timeout(Duration::from_secs(5), head.clone().wait_for(|h| h.0 == last))
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
    rewind::conformance::settled(&first, last.last_position).await;
    let before = first.read_all(GlobalPosition::START, 100, &EventFilter::all()).await.expect("read");
    drop(first);
    let second = common::open(&url, &schema).await;
    assert_eq!(second.stream_version("a").await.expect("version"), StreamVersion(2));
    assert_eq!(second.settled_head().await.expect("head"), last.last_position);
    rewind::conformance::settled(&second, last.last_position).await; // the watch starts at, or reaches, the stored head
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

/// A schema at version 1 (before the fast path's functions) is brought to the
/// current version on open, keeping its events, and appends go on from them.
#[tokio::test]
async fn version_1_schema_is_migrated() {
    let Some(url) = common::database_url("version_1_schema_is_migrated") else { return };
    let schema = common::fresh_schema();
    let store = common::open(&url, &schema).await;
    let first =
        store.append("a", ExpectedVersion::NoStream, vec![event("One", serde_json::json!(1))]).await.expect("append");
    drop(store);
    // What version 1 left: no functions, no sequence, no `tx`, one version row.
    let raw = common::raw_client(&url).await;
    raw.batch_execute(&format!(
        "DROP FUNCTION \"{schema}\".append_layer; DROP FUNCTION \"{schema}\".append_one; \
         DROP FUNCTION \"{schema}\".layer_positions; DROP FUNCTION \"{schema}\".take_positions; \
         DROP FUNCTION \"{schema}\".take_import_positions; DROP SEQUENCE \"{schema}\".positions; \
         ALTER TABLE \"{schema}\".events DROP COLUMN tx; \
         DELETE FROM \"{schema}\".schema_version WHERE version > 1"
    ))
    .await
    .expect("back to version 1");
    let store = common::open(&url, &schema).await;
    let next = store
        .append("a", ExpectedVersion::Exact(StreamVersion(1)), vec![event("Two", serde_json::json!(2))])
        .await
        .expect("append after migrating");
    assert_eq!((next.stream_version, next.first_position), (StreamVersion(2), first.last_position.next()));
    let rows = raw.query(&format!("SELECT version FROM \"{schema}\".schema_version"), &[]).await.expect("versions");
    assert_eq!(rows.len(), rewind_postgres::SCHEMA_VERSION_CURRENT as usize);
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
