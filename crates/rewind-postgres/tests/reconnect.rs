//! A store outlives its connections: after the server drops every connection of a
//! store, appends, reads and the head watch work again.

mod common;

use rewind::conformance::event;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, StoreError};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recovers_after_its_connections_are_terminated() {
    let Some(url) = common::database_url("store_recovers_after_its_connections_are_terminated") else { return };
    let schema = common::fresh_schema();
    let store = common::open(&url, &schema).await;
    store.append("s", ExpectedVersion::Any, vec![event("Before", serde_json::json!({}))]).await.expect("append");
    store.read_all(GlobalPosition::START, 10, &EventFilter::all()).await.expect("a pooled read");
    let raw = common::raw_client(&url).await;
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1";
    let killed: i64 = raw.query_one(terminate, &[&format!("rewind:{schema}")]).await.expect("terminate").get(0);
    assert!(killed >= 3, "the writer, listener and pooled connections were terminated ({killed})");

    // The first append may find the old connection broken (outcome unknown); a later
    // one must succeed on a new connection.
    let mut appended = None;
    for _ in 0..5 {
        match store.append("s", ExpectedVersion::Any, vec![event("After", serde_json::json!({}))]).await {
            Ok(result) => {
                appended = Some(result);
                break;
            }
            Err(StoreError::Backend(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    let appended = appended.expect("an append succeeded after reconnecting");
    let mut read = Err(StoreError::Closed);
    for _ in 0..5 {
        read = store.read_all(GlobalPosition::START, 100, &EventFilter::all()).await;
        if read.is_ok() {
            break;
        }
    }
    assert!(read.expect("reads work again").iter().any(|e| e.event_type == "After"));

    // Another instance's commit reaches this store's watch through its new listener.
    let other = common::open(&url, &schema).await;
    let later = other.append("t", ExpectedVersion::Any, vec![event("Elsewhere", serde_json::json!({}))]).await;
    let later = later.expect("append elsewhere").last_position;
    assert!(later > appended.last_position);
    let mut watch = store.watch_head();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|head| *head >= later))
        .await
        .expect("the watch saw the other instance's commit")
        .expect("watch open");
}
