//! Appends from two stores on one schema commit concurrently, and a follower still
//! never passes a position that a running transaction may fill.
//!
//! Store A's transaction takes position 1 and is held open for seconds (the slow
//! commit hook sleeps before `COMMIT`); meanwhile store B's transaction takes
//! position 2 and commits. Both are seen sleeping at once in `pg_stat_activity`
//! (with the append lock held across `COMMIT`, B would wait on the lock instead).
//! B's append is acknowledged while A's is open, and a third store reads nothing
//! yet: position 2 is committed but not settled. Once A commits, both are read, in
//! position order.

mod common;

use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition};
use rewind_postgres::PostgresStore;
use rewind_postgres::options::SlowCommits;
use std::sync::Arc;
use std::time::Duration;

/// Sessions of this test sleeping inside an append transaction.
async fn sleepers(raw: &tokio_postgres::Client, application: &str) -> i64 {
    let sql = "SELECT count(*) FROM pg_stat_activity \
               WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'";
    raw.query_one(sql, &[&application]).await.expect("pg_stat_activity").get(0)
}

/// Polls until `count` sessions sleep at once; false if that never happens in time.
async fn until_sleeping(raw: &tokio_postgres::Client, application: &str, count: i64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if sleepers(raw, application).await >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_of_two_stores_commit_concurrently_and_followers_wait_for_the_older() {
    let Some(url) = common::database_url("appends_of_two_stores_commit_concurrently") else { return };
    let schema = common::fresh_schema();
    let application = format!("concurrent-{schema}");
    let tagged = format!("{url}{}application_name={application}", if url.contains('?') { '&' } else { '?' });
    let reader = common::open(&url, &schema).await;
    let slow = |seconds| SlowCommits { every: 1, delay: Duration::from_millis(seconds) };
    let open = |delay| {
        let options = common::options(&tagged, &schema).slow_commits(slow(delay));
        async move { Arc::new(PostgresStore::connect_with(options).await.expect("open")) }
    };
    let (a, b) = (open(6_000).await, open(300).await);
    let raw = common::raw_client(&url).await;

    let first = {
        let a = a.clone();
        tokio::spawn(async move {
            a.append("a", ExpectedVersion::NoStream, vec![rewind::conformance::event("A", serde_json::json!(1))]).await
        })
    };
    assert!(until_sleeping(&raw, &application, 1, Duration::from_secs(10)).await, "A's transaction is open");
    let second = {
        let b = b.clone();
        tokio::spawn(async move {
            b.append("b", ExpectedVersion::NoStream, vec![rewind::conformance::event("B", serde_json::json!(2))]).await
        })
    };
    assert!(
        until_sleeping(&raw, &application, 2, Duration::from_secs(3)).await,
        "B's transaction runs while A's is open (no lock across COMMIT)"
    );
    let second = second.await.expect("task").expect("B's append");
    assert!(!first.is_finished(), "A's transaction is still open");
    assert_eq!(second.first_position, GlobalPosition(2), "B took its position after A");
    let early = reader.read_all(GlobalPosition::START, 10, &EventFilter::all()).await.expect("read");
    assert!(early.is_empty(), "position 2 is committed but not settled while A may still write 1: {early:?}");
    assert!(reader.head_position().await.expect("head") < GlobalPosition(2), "the settled head waits for A");

    let first = first.await.expect("task").expect("A's append");
    assert_eq!(first.first_position, GlobalPosition(1));
    rewind::conformance::settled(&reader, second.last_position).await;
    let all = reader.read_all(GlobalPosition::START, 10, &EventFilter::all()).await.expect("read");
    let seen: Vec<(u64, &str)> = all.iter().map(|e| (e.position.0, e.stream_id.as_str())).collect();
    assert_eq!(seen, [(1, "a"), (2, "b")]);
}
