//! The write-ahead log is copied back into the database file while the store stays
//! open (SQLite's checkpoint in the commit that passes 1,000 pages), so the log does
//! not grow without end.

use rewind::{EventStore, ExpectedVersion, Metadata, NewEvent};
use rewind_sqlite::SqliteStore;

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Filled".into(),
        data: format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(1_000)),
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_checkpointed_while_the_store_is_open() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let file_size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = file_size();
    // About 12 MiB of events: many times the 1,000-page checkpoint threshold.
    for batch in 0..120 {
        let events = (0..100).map(|i| event(batch * 100 + i)).collect();
        store.append(&format!("s-{batch}"), ExpectedVersion::NoStream, events).await.expect("append");
    }
    assert!(file_size() >= before + 8 * 1024 * 1024, "the database file holds the events: {} bytes", file_size());
    let log = std::fs::metadata(dir.path().join("events.db-wal")).map(|m| m.len()).unwrap_or(0);
    assert!(log < 64 * 1024 * 1024, "the log stays bounded: {log} bytes");
    store.close().await.expect("close");
}
