//! Group commit: concurrent appends share transactions, and each keeps its own checks.

mod common;

use rewind::conformance::event;
use rewind::{EventStore, ExpectedVersion, NewEvent, StoreError, StreamVersion};
use rewind_postgres::PostgresStore;
use rewind_postgres::options::SlowCommits;
use std::sync::Arc;
use std::time::Duration;

/// 64 concurrent appends, one of them with a stale version and one with bad data:
/// those two fail alone, the other 62 commit, in fewer transactions than appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_transactions_and_fail_alone() {
    let Some(url) = common::database_url("concurrent_appends_share_transactions_and_fail_alone") else { return };
    // Every transaction lingers 50 ms, so appends arriving meanwhile must queue up.
    let slow = SlowCommits { every: 1, delay: Duration::from_millis(50) };
    let options = common::options(&url, &common::fresh_schema()).slow_commits(slow);
    let store = Arc::new(PostgresStore::connect_with(options).await.expect("open"));
    store.append("existing", ExpectedVersion::Any, vec![event("First", serde_json::json!({}))]).await.expect("seed");
    let before = store.stats();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                match i {
                    17 => {
                        store
                            .append("existing", ExpectedVersion::NoStream, vec![event("Stale", serde_json::json!({}))])
                            .await
                    }
                    33 => {
                        let bad = NewEvent { data: "{not json".into(), ..event("Bad", serde_json::json!({})) };
                        store.append("bad", ExpectedVersion::Any, vec![bad]).await
                    }
                    _ => {
                        store
                            .append(
                                &format!("s-{i}"),
                                ExpectedVersion::NoStream,
                                vec![event("Ok", serde_json::json!({ "i": i }))],
                            )
                            .await
                    }
                }
            })
        })
        .collect();
    let mut ok = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match (i, task.await.expect("task")) {
            (17, Err(StoreError::Conflict { actual, .. })) => assert_eq!(actual, StreamVersion(1)),
            (33, Err(StoreError::Invalid(_))) => {}
            (17 | 33, other) => panic!("append {i} should have failed, got {other:?}"),
            (_, Ok(_)) => ok += 1,
            (_, Err(e)) => panic!("append {i} failed: {e}"),
        }
    }
    assert_eq!(ok, 62);
    let stats = store.stats();
    let transactions = stats.transactions - before.transactions;
    assert_eq!(stats.appends - before.appends, 62);
    assert!(transactions < 62 / 4, "62 appends took {transactions} transactions");
    for i in [0, 16, 18, 63] {
        assert_eq!(store.stream_version(&format!("s-{i}")).await.expect("version"), StreamVersion(1));
    }
    assert_eq!(store.stream_version("existing").await.expect("version"), StreamVersion(1));
}

/// Data that `jsonb` cannot hold (the escape `\u0000`) is stored and read back as JSON.
#[tokio::test]
async fn json_with_nul_escapes_round_trips() {
    let Some(store) = common::fresh_store("json_with_nul_escapes_round_trips").await else { return };
    let data = serde_json::json!({ "a": "x\u{0}y" });
    let mut e = event("Nul", data.clone());
    e.metadata.custom.insert("k".into(), serde_json::json!("\u{0}"));
    store.append("nul", ExpectedVersion::NoStream, vec![e.clone()]).await.expect("append");
    let read = store.read_stream("nul", StreamVersion(1), rewind::Direction::Forward, 1).await.expect("read");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&read[0].data).expect("json"), data);
    assert_eq!(read[0].metadata, e.metadata);
}

/// Events of one call keep their own optional columns when only some of them have
/// one: a lone append (`append_one`) and a two-stream batch (`append_layer`), each
/// with a plain event first and causation, correlation and custom metadata further
/// on (sent as arrays padded with NULLs), and a `\u0000` fallback in a call of its own.
#[tokio::test]
async fn optional_columns_stay_with_their_events() {
    let Some(store) = common::fresh_store("optional_columns_stay_with_their_events").await else { return };
    let traced = || {
        let mut traced = event("Traced", serde_json::json!({ "n": 2 }));
        traced.metadata.causation_id = Some(uuid::Uuid::new_v4());
        traced.metadata.correlation_id = Some(uuid::Uuid::new_v4());
        traced.metadata.custom.insert("user".into(), serde_json::json!("ada"));
        traced
    };
    let nul = || {
        let mut nul = event("Nul", serde_json::json!({ "s": "x\u{0}y" }));
        nul.metadata.custom.insert("k".into(), serde_json::json!("\u{0}"));
        nul
    };
    let plain = |n| event("Plain", serde_json::json!({ "n": n }));
    let calls = [
        vec![plain(1), traced(), plain(3)],
        vec![plain(1), plain(2), traced(), traced()],
        vec![plain(1), nul(), traced(), plain(4)],
    ];
    for (call, events) in calls.iter().enumerate() {
        let lone = format!("lone-{call}");
        store.append(&lone, ExpectedVersion::NoStream, events.clone()).await.expect("lone append");
        let (first, second) = (format!("first-{call}"), format!("second-{call}"));
        let batch = |stream: &str| rewind::store::StreamAppend {
            stream_id: stream.to_owned(),
            expected: ExpectedVersion::NoStream,
            events: events.iter().map(|e| NewEvent { event_id: uuid::Uuid::new_v4(), ..e.clone() }).collect(),
        };
        store.append_batch(vec![batch(&first), batch(&second)]).await.expect("batch");
        for stream in [&lone, &first, &second] {
            let read = store.read_stream(stream, StreamVersion(1), rewind::Direction::Forward, 10).await.expect("read");
            assert_eq!(read.len(), events.len(), "{stream}");
            for (read, sent) in read.iter().zip(events) {
                assert_eq!(read.event_type, sent.event_type, "{stream}");
                let data: serde_json::Value = serde_json::from_str(&read.data).expect("json");
                assert_eq!(data, serde_json::from_str::<serde_json::Value>(&sent.data).expect("json"), "{stream}");
                assert_eq!(read.metadata, sent.metadata, "{stream} {}", sent.event_type);
            }
        }
    }
}
