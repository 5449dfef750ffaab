//! A store reopened after a clean shutdown continues where it stopped.

mod common;

use common::{events, read_everything};
use rewind::{EventStore, ExpectedVersion, GlobalPosition, Snapshot, StoreError, StreamVersion};
use rewind_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_versions_and_positions_and_appends_continue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store.append("a", ExpectedVersion::NoStream, events(3)).await.expect("append");
    store.append("b", ExpectedVersion::NoStream, events(2)).await.expect("append");
    store.append("a", ExpectedVersion::Exact(StreamVersion(3)), events(1)).await.expect("append");
    let snapshot = Snapshot {
        stream_id: "a".into(),
        version: StreamVersion(4),
        tag: "thing:v1".into(),
        data: r#"{"n":4}"#.into(),
        created_at: chrono::Utc::now(),
    };
    store.save_snapshot(snapshot.clone()).await.expect("snapshot");
    let before = read_everything(&store).await;
    store.close().await.expect("close");

    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.head_position().await.expect("head"), GlobalPosition(6));
    assert_eq!(*store.watch_head().borrow(), GlobalPosition(6), "the watch starts at the stored head");
    assert_eq!(store.stream_version("a").await.expect("version"), StreamVersion(4));
    assert_eq!(store.stream_version("b").await.expect("version"), StreamVersion(2));
    assert_eq!(read_everything(&store).await, before, "every event comes back as it was");
    let loaded = store.load_snapshot("a").await.expect("load").expect("snapshot kept");
    assert_eq!((loaded.version, loaded.data), (snapshot.version, snapshot.data));

    let next = store.append("b", ExpectedVersion::Exact(StreamVersion(2)), events(2)).await.expect("append");
    assert_eq!(next.stream_version, StreamVersion(4));
    assert_eq!((next.first_position, next.last_position), (GlobalPosition(7), GlobalPosition(8)));
    let stale = store.append("a", ExpectedVersion::NoStream, events(1)).await;
    assert!(matches!(stale, Err(StoreError::Conflict { actual: StreamVersion(4), .. })), "got {stale:?}");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_close_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let appended = store.append("a", ExpectedVersion::Any, events(5)).await.expect("append");
    drop(store);
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.stream_version("a").await.expect("version"), StreamVersion(5));
    assert_eq!(store.head_position().await.expect("head"), appended.last_position);
}
