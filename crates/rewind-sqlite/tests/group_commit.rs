//! Group commit: appends that arrive together share one transaction (one fsync),
//! and each keeps its own expected-version check.

mod common;

use common::{TempStore, events, read_everything};
use futures_util::future::join_all;
use rewind::store::StreamAppend;
use rewind::{AppendResult, EventStore, ExpectedVersion, StoreError, StreamVersion};
use rewind_sqlite::{SqliteConfig, Synchronous};
use std::pin::pin;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let store = TempStore::new().await;
    let appends = (0..64).map(|i| {
        let stream = format!("s-{i}");
        let store = &store;
        async move { store.append(&stream, ExpectedVersion::NoStream, events(1)).await }
    });
    for result in join_all(appends).await {
        result.expect("append");
    }
    let stats = store.store.stats();
    assert_eq!((stats.requests, stats.events), (64, 64));
    assert!(stats.commits < 64, "64 concurrent appends took {} commits", stats.commits);
    assert!(stats.largest_group > 1);
    assert_eq!(read_everything(&store).await.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflicting_append_fails_alone_and_its_group_commits() {
    let store = TempStore::new().await;
    let setup = (0..64)
        .map(|i| StreamAppend { stream_id: format!("c-{i}"), expected: ExpectedVersion::NoStream, events: events(1) })
        .collect();
    store.append_batch(setup).await.expect("setup");
    let before = store.store.stats();

    // Hold the file's write lock from another connection, so the writer stalls on
    // its first group while every append below queues up behind it.
    let blocker = rusqlite::Connection::open(store.dir.path().join("events.db")).expect("raw open");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    let stale = |i: usize| i % 8 == 5;
    let appends = (0..64).map(|i| {
        let store = &store;
        let expected = ExpectedVersion::Exact(StreamVersion(if stale(i) { 0 } else { 1 }));
        // One event each: appends that need no savepoint of their own.
        async move { store.append(&format!("c-{i}"), expected, events(1)).await }
    });
    let mut all = pin!(join_all(appends));
    // One poll sends every request to the writer's queue.
    assert!(futures_util::poll!(all.as_mut()).is_pending());
    blocker.execute_batch("COMMIT").expect("release the write lock");
    let results = all.await;

    for (i, result) in results.into_iter().enumerate() {
        match (stale(i), result) {
            (true, Err(StoreError::Conflict { actual, .. })) => assert_eq!(actual, StreamVersion(1)),
            (false, Ok(appended)) => assert_eq!(appended.stream_version, StreamVersion(2)),
            (_, other) => panic!("append {i}: unexpected {other:?}"),
        }
    }
    let stats = store.store.stats();
    assert_eq!(stats.requests - before.requests, 64);
    assert!(stats.commits - before.commits <= 2, "64 queued appends took {} commits", stats.commits - before.commits);
    assert_eq!(stats.events - before.events, 56, "only the conflicting appends wrote nothing");
    for i in 0..64 {
        let expected = if stale(i) { 1 } else { 2 };
        assert_eq!(store.stream_version(&format!("c-{i}")).await.expect("version"), StreamVersion(expected));
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 64 + 56);
    assert!(all.iter().enumerate().all(|(i, e)| e.position.0 == i as u64 + 1), "positions stay dense");
}

/// Requests that fail after writing part of themselves (a duplicate id late in an
/// append, a batch whose second stream conflicts) are rolled back alone, inside a
/// group whose other requests commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partly_written_requests_roll_back_alone_inside_a_group() {
    let store = TempStore::new().await;
    let stored = events(1);
    store.append("old", ExpectedVersion::NoStream, stored.clone()).await.expect("setup");
    store.append("busy", ExpectedVersion::NoStream, events(1)).await.expect("setup");
    let before = store.store.stats();

    let blocker = rusqlite::Connection::open(store.dir.path().join("events.db")).expect("raw open");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    let mut new_then_old = events(2);
    new_then_old.push(stored[0].clone());
    let conflicting_batch = vec![
        StreamAppend { stream_id: "batch-a".into(), expected: ExpectedVersion::NoStream, events: events(3) },
        StreamAppend { stream_id: "busy".into(), expected: ExpectedVersion::NoStream, events: events(1) },
    ];
    let good_batch = vec![
        StreamAppend { stream_id: "batch-b".into(), expected: ExpectedVersion::NoStream, events: events(2) },
        StreamAppend { stream_id: "batch-c".into(), expected: ExpectedVersion::NoStream, events: events(2) },
    ];
    let store_ref = &store;
    let mut all = pin!(async move {
        tokio::join!(
            store_ref.append("ok-1", ExpectedVersion::NoStream, events(2)),
            store_ref.append("dup", ExpectedVersion::NoStream, new_then_old),
            store_ref.append_batch(conflicting_batch),
            store_ref.append_batch(good_batch),
            store_ref.append("ok-2", ExpectedVersion::NoStream, events(2)),
        )
    });
    assert!(futures_util::poll!(all.as_mut()).is_pending());
    blocker.execute_batch("COMMIT").expect("release the write lock");
    let (ok_1, dup, conflicting, good, ok_2) = all.await;

    let check_ok = |result: Result<AppendResult, StoreError>| assert_eq!(result.expect("append").stream_version.0, 2);
    check_ok(ok_1);
    check_ok(ok_2);
    assert!(matches!(dup, Err(StoreError::DuplicateEvent { .. })), "got {dup:?}");
    assert!(matches!(conflicting, Err(StoreError::Conflict { .. })), "got {conflicting:?}");
    assert_eq!(good.expect("batch").len(), 2);
    assert!(store.store.stats().commits - before.commits <= 2);
    for (stream, version) in [("dup", 0), ("batch-a", 0), ("busy", 1), ("batch-b", 2), ("batch-c", 2), ("ok-1", 2)] {
        assert_eq!(store.stream_version(stream).await.expect("version"), StreamVersion(version), "{stream}");
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 2 + 2 + 4 + 2, "rolled-back requests left nothing behind");
    assert!(all.iter().enumerate().all(|(i, e)| e.position.0 == i as u64 + 1), "positions stay dense");
}

/// Without fsync (`Synchronous::Normal`) the writer answers every group itself:
/// concurrent appends are all answered, and the head and the global order show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_without_fsync_are_answered_and_announced() {
    let store = TempStore::with_config(SqliteConfig::default().synchronous(Synchronous::Normal)).await;
    let streams: Vec<String> = (0..16).map(|i| format!("s-{i}")).collect();
    let appends = streams.iter().map(|stream| store.append(stream, ExpectedVersion::NoStream, events(2)));
    for result in join_all(appends).await {
        result.expect("append");
    }
    assert_eq!(*store.watch_head().borrow(), rewind::GlobalPosition(32));
    assert_eq!(read_everything(&store).await.len(), 32);
}
