//! The event store conformance suite: the [`EventStore`] contract written once and
//! run against every backend.
//!
//! A backend runs the whole suite with one line in its tests:
//!
//! ```ignore
//! async fn make_store() -> Option<(MyStore, tempfile::TempDir)> {
//!     let dir = tempfile::tempdir().unwrap();
//!     Some((MyStore::open(dir.path().join("events.db")).await.unwrap(), dir))
//! }
//! rewind::event_store_conformance!(make_store);
//! ```
//!
//! `make_store` returns a fresh, empty store for each test together with a guard
//! that must outlive it (a temporary directory; `()` when there is none), or `None`
//! to skip (for a backend whose database is not configured). Each check panics with a
//! message saying which promise broke.

use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::event_store::{AppendOutcome, EventFilter, EventStore, Snapshot, StoreError, StreamAppend, StreamInfo};
use crate::stream::{Direction, ExpectedVersion, GlobalPosition, StreamVersion};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Generates one `#[tokio::test]` per conformance check. See the module docs.
#[macro_export]
macro_rules! event_store_conformance {
    ($make_store:path) => {
        $crate::event_store_conformance!(@tests $make_store;
            append_creates_stream_with_dense_versions,
            expected_version_any,
            expected_version_no_stream,
            expected_version_stream_exists,
            expected_version_exact,
            empty_append_only_checks_the_version,
            empty_stream_id_is_rejected,
            data_that_is_not_json_is_rejected,
            concurrent_appends_with_one_expected_version_have_one_winner,
            reappending_the_same_events_is_idempotent,
            partially_duplicated_append_is_rejected,
            event_id_from_another_stream_is_rejected,
            repeated_id_within_one_append_is_rejected,
            read_stream_forward_with_limits,
            read_stream_backward_with_limits,
            read_missing_stream_is_empty,
            read_all_in_global_order_with_limits,
            read_all_filters_by_prefix_and_type,
            envelope_round_trips,
            unicode_stream_ids_and_data,
            large_events,
            many_streams,
            head_position_and_watch_follow_appends,
            snapshots_save_load_and_keep_newest,
            batch_append_is_atomic,
            concurrent_writers_to_distinct_streams_lose_nothing,
            follower_never_skips_or_reorders,
            list_streams_pages_by_prefix,
            import_keeps_every_envelope_field,
            import_keeps_holes_in_positions,
            import_must_continue_the_store,
            read_event_finds_an_event_by_id,
            empty_append_in_a_batch_guards_the_others,
            command_outcomes_outlive_the_process
        );
    };
    (@tests $make_store:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                match $make_store().await {
                    Some((store, _guard)) => $crate::conformance::$name(::std::sync::Arc::new(store)).await,
                    None => eprintln!("skipped {}: store not configured", stringify!($name)),
                }
            }
        )*
    };
}

/// A small event with a fresh id.
pub fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    crate::testing::new_event(event_type, data)
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event("Happened", serde_json::json!({ "i": i }))).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version.0).collect()
}

/// Waits until the store's head reaches `position`. An appended event is readable
/// in the global order once the head passes it: at once on the memory and SQLite
/// stores, on PostgreSQL once every transaction older than its append has ended.
pub async fn settled<S: EventStore>(store: &S, position: GlobalPosition) {
    let mut head = store.watch_head();
    let reached = tokio::time::timeout(Duration::from_secs(120), head.wait_for(|head| *head >= position)).await;
    assert!(matches!(reached, Ok(Ok(_))), "the head never reached {position}");
}

async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut from = GlobalPosition::START.next();
    loop {
        let batch = store.read_all(from, 1_000, &EventFilter::all()).await.expect("read_all");
        let Some(last) = batch.last() else { return all };
        from = last.position.next();
        all.extend(batch);
    }
}

fn assert_conflict(result: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{what}: expected a Conflict, got {other:?}"),
    }
}

/// Versions run 1..=n per stream; the result reports the last.
pub async fn append_creates_stream_with_dense_versions<S: EventStore>(store: Arc<S>) {
    let first = store.append("s-1", ExpectedVersion::NoStream, events(3)).await.expect("append");
    assert_eq!(first.outcome, AppendOutcome::Appended);
    assert_eq!(first.stream_version, StreamVersion(3));
    assert!(first.first_position.0 >= 1 && first.last_position.0 >= first.first_position.0 + 2);
    let second = store.append("s-1", ExpectedVersion::Exact(StreamVersion(3)), events(2)).await.expect("append");
    assert_eq!(second.stream_version, StreamVersion(5));
    assert!(second.first_position > first.last_position, "positions grow");
    let read = store.read_stream("s-1", StreamVersion(1), Direction::Forward, 100).await.expect("read");
    assert_eq!(versions(&read), vec![1, 2, 3, 4, 5]);
    assert_eq!(store.stream_version("s-1").await.expect("version"), StreamVersion(5));
}

/// `Any` appends whatever the stream's state.
pub async fn expected_version_any<S: EventStore>(store: Arc<S>) {
    store.append("s", ExpectedVersion::Any, events(1)).await.expect("any on a new stream");
    let r = store.append("s", ExpectedVersion::Any, events(1)).await.expect("any on an existing stream");
    assert_eq!(r.stream_version, StreamVersion(2));
}

/// `NoStream` succeeds once.
pub async fn expected_version_no_stream<S: EventStore>(store: Arc<S>) {
    store.append("s", ExpectedVersion::NoStream, events(1)).await.expect("first");
    assert_conflict(store.append("s", ExpectedVersion::NoStream, events(1)).await, "NoStream on an existing stream");
    assert_eq!(store.stream_version("s").await.expect("version"), StreamVersion(1));
}

/// `StreamExists` needs at least one event.
pub async fn expected_version_stream_exists<S: EventStore>(store: Arc<S>) {
    assert_conflict(store.append("s", ExpectedVersion::StreamExists, events(1)).await, "StreamExists on a new stream");
    assert_eq!(store.stream_version("s").await.expect("version"), StreamVersion::NONE);
    store.append("s", ExpectedVersion::Any, events(1)).await.expect("create");
    store.append("s", ExpectedVersion::StreamExists, events(1)).await.expect("StreamExists on an existing stream");
}

/// `Exact(n)` matches only version n; a conflict writes nothing and reports the actual version.
pub async fn expected_version_exact<S: EventStore>(store: Arc<S>) {
    store.append("s", ExpectedVersion::Exact(StreamVersion::NONE), events(2)).await.expect("Exact(0) on new stream");
    match store.append("s", ExpectedVersion::Exact(StreamVersion(1)), events(1)).await {
        Err(StoreError::Conflict { actual, stream, .. }) => {
            assert_eq!(actual, StreamVersion(2));
            assert_eq!(stream, "s");
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_conflict(
        store.append("s", ExpectedVersion::Exact(StreamVersion(3)), events(1)).await,
        "ahead of the stream",
    );
    let last = store.append("s", ExpectedVersion::Exact(StreamVersion(2)), events(1)).await.expect("right version");
    settled(&*store, last.last_position).await;
    assert_eq!(read_everything(store.as_ref()).await.len(), 3, "conflicts wrote nothing");
}

/// Appending no events checks the version and writes nothing.
pub async fn empty_append_only_checks_the_version<S: EventStore>(store: Arc<S>) {
    let r = store.append("s", ExpectedVersion::NoStream, Vec::new()).await.expect("empty append");
    assert_eq!(r.stream_version, StreamVersion::NONE);
    assert_conflict(store.append("s", ExpectedVersion::StreamExists, Vec::new()).await, "empty append, wrong version");
    assert!(read_everything(store.as_ref()).await.is_empty());
}

/// A stream needs a name.
pub async fn empty_stream_id_is_rejected<S: EventStore>(store: Arc<S>) {
    match store.append("", ExpectedVersion::Any, events(1)).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Event data must be JSON; nothing of a refused append is written.
pub async fn data_that_is_not_json_is_rejected<S: EventStore>(store: Arc<S>) {
    let mut bad = event("Happened", serde_json::json!({}));
    bad.data = "{not json".into();
    let batch = vec![event("Happened", serde_json::json!(1)), bad];
    match store.append("s", ExpectedVersion::Any, batch).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(store.stream_version("s").await.expect("version"), StreamVersion::NONE);
}

/// Many writers expecting the same version: exactly one wins each version.
pub async fn concurrent_appends_with_one_expected_version_have_one_winner<S: EventStore>(store: Arc<S>) {
    for round in 0..5u64 {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.append("contested", ExpectedVersion::Exact(StreamVersion(round)), events(1)).await
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
    assert_eq!(store.stream_version("contested").await.expect("version"), StreamVersion(5));
}

/// The same event ids again: reported as already appended, stored once.
pub async fn reappending_the_same_events_is_idempotent<S: EventStore>(store: Arc<S>) {
    store.append("s", ExpectedVersion::Any, events(1)).await.expect("first");
    let batch = events(3);
    let first = store.append("s", ExpectedVersion::Exact(StreamVersion(1)), batch.clone()).await.expect("append");
    for expected in [ExpectedVersion::Exact(StreamVersion(1)), ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let again = store.append("s", expected, batch.clone()).await.expect("re-append");
        assert_eq!(again.outcome, AppendOutcome::AlreadyAppended);
        assert_eq!(again.stream_version, first.stream_version);
        assert_eq!((again.first_position, again.last_position), (first.first_position, first.last_position));
    }
    assert_eq!(store.stream_version("s").await.expect("version"), StreamVersion(4));
    settled(&*store, first.last_position).await;
    assert_eq!(read_everything(store.as_ref()).await.len(), 4);
}

/// Some ids stored, some new: rejected, nothing written.
pub async fn partially_duplicated_append_is_rejected<S: EventStore>(store: Arc<S>) {
    let batch = events(2);
    store.append("s", ExpectedVersion::Any, batch.clone()).await.expect("append");
    let mut mixed = vec![batch[0].clone()];
    mixed.extend(events(1));
    match store.append("s", ExpectedVersion::Any, mixed).await {
        Err(StoreError::DuplicateEvent { .. }) => {}
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    let mut new_then_old = events(1);
    new_then_old.push(batch[1].clone());
    match store.append("s", ExpectedVersion::Any, new_then_old).await {
        Err(StoreError::DuplicateEvent { .. }) => {}
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_eq!(store.stream_version("s").await.expect("version"), StreamVersion(2));
}

/// Event ids are unique across the whole store.
pub async fn event_id_from_another_stream_is_rejected<S: EventStore>(store: Arc<S>) {
    let batch = events(1);
    store.append("a", ExpectedVersion::Any, batch.clone()).await.expect("append");
    match store.append("b", ExpectedVersion::Any, batch).await {
        Err(StoreError::DuplicateEvent { .. }) => {}
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_eq!(store.stream_version("b").await.expect("version"), StreamVersion::NONE);
}

/// One append may not carry an id twice.
pub async fn repeated_id_within_one_append_is_rejected<S: EventStore>(store: Arc<S>) {
    let one = event("Happened", serde_json::json!({}));
    let result = store.append("s", ExpectedVersion::Any, vec![one.clone(), one]).await;
    assert!(matches!(result, Err(StoreError::DuplicateEvent { .. })), "got {result:?}");
    assert_eq!(store.stream_version("s").await.expect("version"), StreamVersion::NONE);
}

/// Forward reads start at `from` (inclusive) and stop at `limit` or the end.
pub async fn read_stream_forward_with_limits<S: EventStore>(store: Arc<S>) {
    store.append("s", ExpectedVersion::Any, events(10)).await.expect("append");
    store.append("other", ExpectedVersion::Any, events(3)).await.expect("append");
    let read = |from, limit| {
        let store = store.clone();
        async move { versions(&store.read_stream("s", StreamVersion(from), Direction::Forward, limit).await.expect("read")) }
    };
    assert_eq!(read(1, 3).await, vec![1, 2, 3]);
    assert_eq!(read(0, 2).await, vec![1, 2], "version 0 reads from the start");
    assert_eq!(read(8, 10).await, vec![8, 9, 10]);
    assert_eq!(read(11, 10).await, Vec::<u64>::new());
    assert_eq!(read(5, 0).await, Vec::<u64>::new());
}

/// Backward reads start at `from` (inclusive; `END` = last) and go down.
pub async fn read_stream_backward_with_limits<S: EventStore>(store: Arc<S>) {
    store.append("s", ExpectedVersion::Any, events(10)).await.expect("append");
    let read = |from, limit| {
        let store = store.clone();
        async move {
            versions(&store.read_stream("s", StreamVersion(from), Direction::Backward, limit).await.expect("read"))
        }
    };
    assert_eq!(read(u64::MAX, 3).await, vec![10, 9, 8]);
    assert_eq!(read(4, 10).await, vec![4, 3, 2, 1]);
    assert_eq!(read(20, 2).await, vec![10, 9]);
    assert_eq!(read(0, 5).await, Vec::<u64>::new());
}

/// A stream that does not exist reads as empty, at version 0.
pub async fn read_missing_stream_is_empty<S: EventStore>(store: Arc<S>) {
    for direction in [Direction::Forward, Direction::Backward] {
        let read = store.read_stream("missing", StreamVersion::END, direction, 10).await.expect("read");
        assert!(read.is_empty());
    }
    assert_eq!(store.stream_version("missing").await.expect("version"), StreamVersion::NONE);
}

/// `$all` interleaves streams in commit order; `from` is inclusive.
pub async fn read_all_in_global_order_with_limits<S: EventStore>(store: Arc<S>) {
    let mut last = GlobalPosition::START;
    for i in 0..10 {
        last =
            store.append(&format!("s-{}", i % 3), ExpectedVersion::Any, events(2)).await.expect("append").last_position;
    }
    settled(&*store, last).await;
    let all = read_everything(store.as_ref()).await;
    assert_eq!(all.len(), 20);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position), "positions strictly increase");
    let first = all[0].position;
    let page = store.read_all(all[5].position, 4, &EventFilter::all()).await.expect("read");
    assert_eq!(
        page.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        all[5..9].iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(store.read_all(all[19].position.next(), 10, &EventFilter::all()).await.expect("read").is_empty());
    assert_eq!(store.read_all(GlobalPosition::START, 1, &EventFilter::all()).await.expect("read")[0].position, first);
    let mut per_stream: HashMap<&str, u64> = HashMap::new();
    for e in &all {
        let last = per_stream.entry(&e.stream_id).or_insert(0);
        assert_eq!(e.stream_version.0, *last + 1, "stream order is kept inside the global order");
        *last += 1;
    }
}

/// Filters keep matching events and their global positions.
pub async fn read_all_filters_by_prefix_and_type<S: EventStore>(store: Arc<S>) {
    store
        .append(
            "account-1",
            ExpectedVersion::Any,
            vec![event("Opened", serde_json::json!({})), event("Deposited", serde_json::json!({}))],
        )
        .await
        .expect("append");
    store
        .append("transfer-1", ExpectedVersion::Any, vec![event("Requested", serde_json::json!({}))])
        .await
        .expect("append");
    let last = store
        .append("account-2", ExpectedVersion::Any, vec![event("Opened", serde_json::json!({}))])
        .await
        .expect("append");
    settled(&*store, last.last_position).await;
    let by_prefix = EventFilter { stream_prefix: Some("account-".into()), event_types: vec![] };
    let read = store.read_all(GlobalPosition::START, 100, &by_prefix).await.expect("read");
    assert_eq!(read.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(), ["account-1", "account-1", "account-2"]);
    let by_type = EventFilter { stream_prefix: None, event_types: vec!["Opened".into(), "Requested".into()] };
    let read = store.read_all(GlobalPosition::START, 2, &by_type).await.expect("read");
    assert_eq!(
        read.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["Opened", "Requested"],
        "limit counts matches"
    );
    let both = EventFilter { stream_prefix: Some("account-".into()), event_types: vec!["Opened".into()] };
    let read = store.read_all(read[1].position, 10, &both).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].stream_id, "account-2");
}

/// Every envelope field comes back as written, plus what the store assigns.
pub async fn envelope_round_trips<S: EventStore>(store: Arc<S>) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mut custom = serde_json::Map::new();
    custom.insert("user".into(), serde_json::json!("u-1"));
    custom.insert("nested".into(), serde_json::json!({"a": [1, 2]}));
    let metadata = Metadata {
        causation_id: Some(Uuid::new_v4()),
        command_id: Some(Uuid::new_v4()),
        fingerprint: Some(Uuid::new_v4()),
        correlation_id: Some(Uuid::new_v4()),
        custom,
    };
    let written = NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "AccountOpened".into(),
        data: serde_json::json!({"balance": 1000, "name": "x"}).to_string(),
        metadata: metadata.clone(),
    };
    let bare = event("Bare", serde_json::json!(null));
    let result = store.append("s", ExpectedVersion::Any, vec![written.clone(), bare.clone()]).await.expect("append");
    let read = store.read_stream("s", StreamVersion(1), Direction::Forward, 10).await.expect("read");
    let e = &read[0];
    assert_eq!(e.event_id, written.event_id);
    assert_eq!(e.stream_id, "s");
    assert_eq!(e.stream_version, StreamVersion(1));
    assert_eq!(e.position, result.first_position);
    assert_eq!(e.event_type, "AccountOpened");
    let data: serde_json::Value = serde_json::from_str(&e.data).expect("data is JSON");
    assert_eq!(data, serde_json::json!({"balance": 1000, "name": "x"}));
    assert_eq!(e.metadata, metadata);
    assert!(e.created_at > before && e.created_at < chrono::Utc::now() + chrono::Duration::seconds(5));
    assert_eq!(read[1].metadata, Metadata::default());
    assert_eq!(serde_json::from_str::<serde_json::Value>(&read[1].data).expect("json"), serde_json::Value::Null);
    assert_eq!(read[1].created_at, e.created_at, "one append, one commit time");
    settled(&*store, result.last_position).await;
    let from_all = store.read_all(result.first_position, 1, &EventFilter::all()).await.expect("read_all");
    assert_eq!(&from_all[0], e, "read_all and read_stream agree");
}

/// Stream ids and data are Unicode text.
pub async fn unicode_stream_ids_and_data<S: EventStore>(store: Arc<S>) {
    let stream = "konto-ÄÖÜ-口座-🦀";
    let data = serde_json::json!({"name": "Zoë 🦀 \u{0}\"quoted\"", "emoji": "👩‍👩‍👧"});
    let written =
        store.append(stream, ExpectedVersion::NoStream, vec![event("Ünïcode", data.clone())]).await.expect("append");
    settled(&*store, written.last_position).await;
    let read = store.read_stream(stream, StreamVersion(1), Direction::Forward, 1).await.expect("read");
    assert_eq!(read[0].stream_id, stream);
    assert_eq!(read[0].event_type, "Ünïcode");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&read[0].data).expect("json"), data);
    let prefixed = EventFilter { stream_prefix: Some("konto-ÄÖÜ".into()), event_types: vec![] };
    assert_eq!(store.read_all(GlobalPosition::START, 10, &prefixed).await.expect("read").len(), 1);
}

/// A 1 MiB event is stored and read back whole.
pub async fn large_events<S: EventStore>(store: Arc<S>) {
    let blob = "x".repeat(1 << 20);
    store
        .append("big", ExpectedVersion::Any, vec![event("Big", serde_json::json!({ "blob": blob }))])
        .await
        .expect("append");
    let read = store.read_stream("big", StreamVersion(1), Direction::Forward, 1).await.expect("read");
    let data: serde_json::Value = serde_json::from_str(&read[0].data).expect("json");
    assert_eq!(data["blob"].as_str().map(str::len), Some(1 << 20));
}

/// 100,000 streams, each at version 1.
pub async fn many_streams<S: EventStore>(store: Arc<S>) {
    const STREAMS: usize = 100_000;
    const PER_BATCH: usize = 1_000;
    let mut last = GlobalPosition::START;
    for batch in 0..STREAMS / PER_BATCH {
        let appends = (0..PER_BATCH)
            .map(|i| StreamAppend {
                stream_id: format!("stream-{}", batch * PER_BATCH + i),
                expected: ExpectedVersion::NoStream,
                events: events(1),
            })
            .collect();
        let results = store.append_batch(appends).await.expect("batch");
        last = results.iter().map(|r| r.last_position).max().unwrap_or(last);
    }
    settled(&*store, last).await;
    for probe in [0, 1, 54_321, STREAMS - 1] {
        assert_eq!(store.stream_version(&format!("stream-{probe}")).await.expect("version"), StreamVersion(1));
    }
    assert_eq!(read_everything(store.as_ref()).await.len(), STREAMS);
}

/// The head and its watch move with each append.
pub async fn head_position_and_watch_follow_appends<S: EventStore>(store: Arc<S>) {
    assert_eq!(store.head_position().await.expect("head"), GlobalPosition::START);
    let mut watch = store.watch_head();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.append("s", ExpectedVersion::Any, events(2)).await })
    };
    let appended = writer.await.expect("task").expect("append");
    tokio::time::timeout(Duration::from_secs(60), watch.wait_for(|head| *head >= appended.last_position))
        .await
        .expect("watch woke within 60 s")
        .expect("watch open");
    assert_eq!(store.head_position().await.expect("head"), appended.last_position);
}

/// Snapshots: none at first; newest wins; an older save is ignored.
pub async fn snapshots_save_load_and_keep_newest<S: EventStore>(store: Arc<S>) {
    assert_eq!(store.load_snapshot("s").await.expect("load"), None);
    let snapshot = |version, data: &str| Snapshot {
        stream_id: "s".into(),
        version: StreamVersion(version),
        tag: "thing:v1".into(),
        data: data.into(),
        created_at: chrono::Utc::now(),
    };
    store.save_snapshot(snapshot(10, r#"{"n":10}"#)).await.expect("save");
    store.save_snapshot(snapshot(20, r#"{"n":20}"#)).await.expect("save");
    store.save_snapshot(snapshot(15, r#"{"n":15}"#)).await.expect("save older");
    let loaded = store.load_snapshot("s").await.expect("load").expect("present");
    assert_eq!(
        (loaded.version, loaded.tag.as_str(), loaded.data.as_str()),
        (StreamVersion(20), "thing:v1", r#"{"n":20}"#)
    );
    assert_eq!(store.load_snapshot("other").await.expect("load"), None);
}

/// A multi-stream append is all or nothing.
pub async fn batch_append_is_atomic<S: EventStore>(store: Arc<S>) {
    store.append("b", ExpectedVersion::Any, events(1)).await.expect("append");
    let batch = |b_expected| {
        vec![
            StreamAppend { stream_id: "a".into(), expected: ExpectedVersion::NoStream, events: events(2) },
            StreamAppend { stream_id: "b".into(), expected: b_expected, events: events(1) },
        ]
    };
    assert_conflict(store.append_batch(batch(ExpectedVersion::NoStream)).await, "one stream conflicts");
    assert_eq!(store.stream_version("a").await.expect("version"), StreamVersion::NONE, "nothing written");
    let results = store.append_batch(batch(ExpectedVersion::Exact(StreamVersion(1)))).await.expect("batch");
    assert_eq!(results.iter().map(|r| r.stream_version.0).collect::<Vec<_>>(), vec![2, 2]);
    assert!(results[1].first_position > results[0].last_position);
    let twice = vec![
        StreamAppend { stream_id: "c".into(), expected: ExpectedVersion::Any, events: events(1) },
        StreamAppend { stream_id: "c".into(), expected: ExpectedVersion::Any, events: events(1) },
    ];
    assert!(matches!(store.append_batch(twice).await, Err(StoreError::Invalid(_))));
    settled(&*store, results[1].last_position).await;
    assert_eq!(read_everything(store.as_ref()).await.len(), 4);
}

/// An event is found by its id, wherever it is; an unknown id finds nothing.
pub async fn read_event_finds_an_event_by_id<S: EventStore>(store: Arc<S>) {
    store.append("a", ExpectedVersion::Any, events(2)).await.expect("append");
    let wanted = event("Wanted", serde_json::json!({"x": 1}));
    let id = wanted.event_id;
    store.append("b", ExpectedVersion::Any, vec![wanted]).await.expect("append");
    let found = store.read_event(id).await.expect("read_event").expect("found");
    let in_stream = store.read_stream("b", StreamVersion(1), Direction::Forward, 1).await.expect("read");
    assert_eq!(Some(&found), in_stream.first());
    assert_eq!((found.stream_id.as_str(), found.position), ("b", GlobalPosition(3)));
    assert!(store.read_event(Uuid::new_v4()).await.expect("read_event").is_none());
}

/// A batch may carry an append of no events: it only checks its stream's version,
/// and when that check fails nothing in the batch is written (how a command's
/// failure is recorded only for the state it was decided on).
pub async fn empty_append_in_a_batch_guards_the_others<S: EventStore>(store: Arc<S>) {
    store.append("guarded", ExpectedVersion::Any, events(2)).await.expect("append");
    let batch = |version| {
        vec![
            StreamAppend {
                stream_id: "guarded".into(),
                expected: ExpectedVersion::Exact(StreamVersion(version)),
                events: Vec::new(),
            },
            StreamAppend { stream_id: "$side".into(), expected: ExpectedVersion::Any, events: events(1) },
        ]
    };
    assert_conflict(store.append_batch(batch(1)).await, "guard at an old version");
    assert_eq!(store.stream_version("$side").await.expect("version"), StreamVersion::NONE, "nothing written");
    let results = store.append_batch(batch(2)).await.expect("guard at the current version");
    assert_eq!(results[0].stream_version, StreamVersion(2), "the guarded stream is unchanged");
    assert_eq!(results[1].stream_version, StreamVersion(1));
    assert_eq!(store.stream_version("guarded").await.expect("version"), StreamVersion(2));
    settled(&*store, results[1].last_position).await;
    assert_eq!(read_everything(store.as_ref()).await.len(), 3);
}

/// 32 writers × 50 appends to their own streams: everything is there, once.
pub async fn concurrent_writers_to_distinct_streams_lose_nothing<S: EventStore>(store: Arc<S>) {
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut ids, mut last) = (Vec::new(), GlobalPosition::START);
                for i in 0..50u64 {
                    let batch = events(1 + (i as usize % 2));
                    ids.extend(batch.iter().map(|e| e.event_id));
                    let written = store
                        .append(&format!("w-{w}"), ExpectedVersion::Exact(StreamVersion(i + i / 2)), batch)
                        .await
                        .expect("append");
                    last = last.max(written.last_position);
                }
                (ids, last)
            })
        })
        .collect();
    let (mut written, mut last) = (HashSet::new(), GlobalPosition::START);
    for writer in writers {
        let (ids, writer_last) = writer.await.expect("writer");
        written.extend(ids);
        last = last.max(writer_last);
    }
    settled(&*store, last).await;
    let all = read_everything(store.as_ref()).await;
    let read: HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(all.len(), read.len(), "no event twice");
    assert_eq!(read, written, "every acknowledged event, nothing else");
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

/// A follower tailing `$all` while 16 writers append (some failing their version
/// check) sees every acknowledged event exactly once, in position order, and never
/// an event of a failed append.
pub async fn follower_never_skips_or_reorders<S: EventStore>(store: Arc<S>) {
    follow_while_writing(store, 16, 300).await;
}

/// The follower check with a chosen load on one store; backends call it with more appends.
pub async fn follow_while_writing<S: EventStore>(
    store: Arc<S>,
    writers: usize,
    appends_per_writer: usize,
) -> FollowReport {
    follow_across(store.clone(), vec![store; writers], appends_per_writer).await
}

/// What a follower saw while writers appended, after every check passed.
#[derive(Debug)]
pub struct FollowReport {
    /// (position, event id) in delivery order.
    pub seen: Vec<(GlobalPosition, Uuid)>,
    /// Events of acknowledged appends.
    pub acknowledged: usize,
    /// Events of appends that failed their version check.
    pub failed: usize,
}

/// The follower check across store instances (as separate processes would open them):
/// one writer task per entry of `writers`, each appending to random streams with some
/// stale expected versions and some two-stream batches, while `follower` tails `$all`.
/// Panics unless the follower saw every acknowledged event exactly once, in position
/// order, and nothing of a failed append.
pub async fn follow_across<F: EventStore, W: EventStore>(
    follower: Arc<F>,
    writers: Vec<Arc<W>>,
    appends_per_writer: usize,
) -> FollowReport {
    let done = Arc::new(tokio::sync::Notify::new());
    let follower = tokio::spawn(follow(follower, done.clone()));
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, store)| tokio::spawn(write_randomly(store, w, appends_per_writer)))
        .collect();
    let mut acknowledged = HashSet::new();
    let mut failed = HashSet::new();
    for task in tasks {
        let (a, f) = task.await.expect("writer");
        acknowledged.extend(a);
        failed.extend(f);
    }
    done.notify_one();
    let seen = follower.await.expect("follower");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "follower saw positions in strictly increasing order");
    let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event delivered twice");
    assert!(seen_ids.is_disjoint(&failed), "an event of a failed append was delivered");
    let missed = acknowledged.difference(&seen_ids).count();
    assert_eq!(missed, 0, "follower skipped {missed} acknowledged events");
    assert_eq!(seen_ids, acknowledged);
    assert!(!failed.is_empty(), "the load included failing appends");
    FollowReport { seen, acknowledged: acknowledged.len(), failed: failed.len() }
}

/// Tails `$all` until `done` is notified, then drains what is left up to the
/// [settled head](EventStore::settled_head) (everything acknowledged before `done`);
/// returns every (position, event id) seen, in order. The follower of
/// [`follow_across`], for tests whose writers run elsewhere (other processes).
pub async fn follow<S: EventStore>(store: Arc<S>, done: Arc<tokio::sync::Notify>) -> Vec<(GlobalPosition, Uuid)> {
    let mut seen = Vec::new();
    let mut watch = store.watch_head();
    let mut from = GlobalPosition::START.next();
    let mut until = None;
    loop {
        let batch = store.read_all(from, 500, &EventFilter::all()).await.expect("read_all");
        if let Some(last) = batch.last() {
            from = last.position.next();
            seen.extend(batch.iter().map(|e| (e.position, e.event_id)));
            continue;
        }
        if until.is_some_and(|until: GlobalPosition| from > until) {
            return seen;
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = done.notified(), if until.is_none() => {
                until = Some(store.settled_head().await.expect("settled head"));
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// One writer of [`follow_across`]: `appends` appends to random streams (writer
/// `writer`'s share of them), every fifth with a stale expected version, some as
/// two-stream batches. Returns (acknowledged ids, failed ids); panics on any error but
/// a conflict.
pub async fn write_randomly<S: EventStore>(store: Arc<S>, writer: usize, appends: usize) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for i in 0..appends {
        let stream = format!("gap-{}", (writer * 7 + i * 13) % 24);
        let version = store.stream_version(&stream).await.expect("version");
        // Every fifth append expects a stale version and must fail.
        let expected = if i % 5 == 4 && version.0 > 0 {
            ExpectedVersion::Exact(StreamVersion(version.0 - 1))
        } else {
            ExpectedVersion::Exact(version)
        };
        let batch = events(1 + i % 3);
        let mut ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        let result = if i % 10 == 7 {
            // Now and then a two-stream batch, all or nothing.
            let side = events(1);
            ids.extend(side.iter().map(|e| e.event_id));
            let side = StreamAppend {
                stream_id: format!("side-{}", Uuid::new_v4()),
                expected: ExpectedVersion::NoStream,
                events: side,
            };
            store.append_batch(vec![StreamAppend { stream_id: stream, expected, events: batch }, side]).await.map(drop)
        } else {
            store.append(&stream, expected, batch).await.map(drop)
        };
        match result {
            Ok(()) => acknowledged.extend(ids),
            Err(StoreError::Conflict { .. }) => failed.extend(ids),
            Err(other) => panic!("append failed: {other}"),
        }
    }
    (acknowledged, failed)
}

/// Streams are listed in id order, filtered by prefix, a page at a time.
pub async fn list_streams_pages_by_prefix<S: EventStore>(store: Arc<S>) {
    for (stream, n) in [("acc-b", 2), ("acc-a", 1), ("other", 3), ("acc-c", 1)] {
        store.append(stream, ExpectedVersion::Any, events(n)).await.expect("append");
    }
    let info = |id: &str, v| StreamInfo { stream_id: id.into(), version: StreamVersion(v) };
    let first = store.list_streams("acc-", "", 2).await.expect("list");
    assert_eq!(first, vec![info("acc-a", 1), info("acc-b", 2)], "first page, in id order");
    let next = store.list_streams("acc-", "acc-b", 2).await.expect("list");
    assert_eq!(next, vec![info("acc-c", 1)], "the page after acc-b");
    let all = store.list_streams("", "", 100).await.expect("list");
    assert_eq!(all.len(), 4);
    assert_eq!(all[3], info("other", 3));
}

/// Recorded events copied from one store into another through `import` read back
/// identical (data compared as JSON), and the store continues after them.
pub async fn import_keeps_every_envelope_field<S: EventStore>(store: Arc<S>) {
    let source = crate::memory_store::MemoryStore::new();
    let mut custom = serde_json::Map::new();
    custom.insert("user".into(), serde_json::json!("ünï"));
    let mut with_metadata = event("Opened", serde_json::json!({"b": 1, "a": [1, 2]}));
    with_metadata.metadata = Metadata {
        causation_id: Some(Uuid::new_v4()),
        command_id: Some(Uuid::new_v4()),
        fingerprint: Some(Uuid::new_v4()),
        correlation_id: None,
        custom,
    };
    source.append("s-1", ExpectedVersion::NoStream, vec![with_metadata]).await.expect("append");
    source.append("s-2", ExpectedVersion::NoStream, events(3)).await.expect("append");
    source.append("s-1", ExpectedVersion::Any, events(2)).await.expect("append");
    let mut original = read_everything(&source).await;
    // An old commit time, as an export from long ago carries.
    let past = chrono::DateTime::parse_from_rfc3339("2024-02-29T12:34:56.789012Z").expect("time").to_utc();
    original[0].created_at = past;
    let head = store.import(original[..2].to_vec()).await.expect("import the first part");
    assert_eq!(head, GlobalPosition(2));
    settled(&*store, head).await; // the head watch follows an import
    assert_eq!(store.import(original[2..].to_vec()).await.expect("import the rest"), GlobalPosition(6));
    settled(&*store, GlobalPosition(6)).await;
    let copied = read_everything(&*store).await;
    assert_eq!(copied.len(), original.len());
    for (copy, source) in copied.iter().zip(&original) {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
        assert_eq!(json(&copy.data), json(&source.data), "data of {}", source.position);
        let mut copy = copy.clone();
        copy.data = source.data.clone();
        assert_eq!(&copy, source, "every other field is kept");
    }
    assert_eq!(store.stream_version("s-1").await.expect("version"), StreamVersion(3));
    let next = store.append("s-1", ExpectedVersion::Exact(StreamVersion(3)), events(1)).await.expect("append after");
    assert_eq!((next.first_position, next.stream_version), (GlobalPosition(7), StreamVersion(4)));
    let again = store.append("s-2", ExpectedVersion::Any, vec![]).await.expect("check");
    assert_eq!(again.stream_version, StreamVersion(3));
}

/// Positions may have holes (PostgreSQL leaves one where a transaction rolled back
/// after taking positions); a copy keeps them, reads step over them and appends
/// continue after the last position.
pub async fn import_keeps_holes_in_positions<S: EventStore>(store: Arc<S>) {
    let source = crate::memory_store::MemoryStore::new();
    source.append("a", ExpectedVersion::NoStream, events(2)).await.expect("append");
    source.append("b", ExpectedVersion::NoStream, events(1)).await.expect("append");
    let mut original = read_everything(&source).await;
    original[1].position = GlobalPosition(4);
    original[2].position = GlobalPosition(9);
    assert_eq!(store.import(original.clone()).await.expect("import with holes"), GlobalPosition(9));
    settled(&*store, GlobalPosition(9)).await;
    assert_eq!(store.head_position().await.expect("head"), GlobalPosition(9));
    let positions = |events: Vec<RecordedEvent>| events.iter().map(|e| e.position.0).collect::<Vec<_>>();
    assert_eq!(positions(read_everything(&*store).await), [1, 4, 9]);
    let from_hole = store.read_all(GlobalPosition(2), 10, &EventFilter::all()).await.expect("read");
    assert_eq!(positions(from_hole), [4, 9], "a read from a hole starts at the next event");
    let next = store.append("a", ExpectedVersion::Exact(StreamVersion(2)), events(1)).await.expect("append after");
    assert_eq!((next.first_position, next.stream_version), (GlobalPosition(10), StreamVersion(3)));
    let mut behind = original[2].clone();
    behind.event_id = Uuid::new_v4();
    behind.stream_id = "c".into();
    behind.stream_version = StreamVersion(1);
    behind.position = GlobalPosition(10);
    let refused = store.import(vec![behind]).await;
    assert!(matches!(refused, Err(StoreError::Invalid(_))), "position 10 is taken: {refused:?}");
}

/// An import that does not continue the store writes nothing.
pub async fn import_must_continue_the_store<S: EventStore>(store: Arc<S>) {
    let written = store.append("s", ExpectedVersion::NoStream, events(2)).await.expect("append");
    settled(&*store, written.last_position).await;
    let source = crate::memory_store::MemoryStore::new();
    source.append("t", ExpectedVersion::NoStream, events(1)).await.expect("append");
    source.append("s", ExpectedVersion::NoStream, events(1)).await.expect("append");
    let recorded = read_everything(&source).await;
    let refused = store.import(recorded.clone()).await;
    assert!(matches!(refused, Err(StoreError::Invalid(_))), "positions 1.. do not follow head 2: {refused:?}");
    let mut moved = recorded.clone();
    for (i, event) in moved.iter_mut().enumerate() {
        event.position = GlobalPosition(3 + i as u64);
    }
    let refused = store.import(moved.clone()).await;
    assert!(matches!(refused, Err(StoreError::Invalid(_))), "stream s is at 2, not 0: {refused:?}");
    assert_eq!(read_everything(&*store).await.len(), 2, "nothing of a refused import is written");
    assert_eq!(store.head_position().await.expect("head"), GlobalPosition(2));
    moved[1].stream_version = StreamVersion(3);
    assert_eq!(store.import(moved).await.expect("continues"), GlobalPosition(4));
}

/// A tiny aggregate for the command-outcome check: a purse that refuses to go below 0.
mod purse {
    use crate::{Aggregate, Command, Execute};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    pub struct Purse(pub i64);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum PurseEvent {
        Moved { by: i64 },
    }
    impl crate::Event for PurseEvent {}

    #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
    pub enum PurseError {
        #[error("not enough: {have}")]
        NotEnough { have: i64 },
    }

    impl Aggregate for Purse {
        const NAME: &'static str = "purse";
        type Event = PurseEvent;
        type Error = PurseError;
        fn apply(&mut self, PurseEvent::Moved { by }: &PurseEvent) {
            self.0 += by;
        }
    }

    #[derive(Debug)]
    pub struct Move(pub i64);
    impl Command for Move {
        type Aggregate = Purse;
        fn aggregate_id(&self) -> String {
            "p".into()
        }
    }
    impl Execute<Move> for Purse {
        fn execute(&self, Move(by): &Move) -> Result<Vec<PurseEvent>, PurseError> {
            if self.0 + by < 0 {
                return Err(PurseError::NotEnough { have: self.0 });
            }
            Ok(vec![PurseEvent::Moved { by: *by }])
        }
    }
}

/// A command's first outcome is kept by the store: a second application on the same
/// store (another process, or this one restarted, its cache and snapshots no help)
/// answers a repeated command id with the first success or the first typed refusal.
pub async fn command_outcomes_outlive_the_process<S: EventStore>(store: Arc<S>) {
    use crate::{AggregateConfig, Application, DispatchError, DispatchOptions, Router};
    use purse::{Move, Purse, PurseError};
    let app = || {
        let config = AggregateConfig::<Purse>::new().identity_prefix("purse-").snapshot_every(1, 1);
        Application::builder(store.clone()).router(Router::new().aggregate(config).command::<Move>()).build()
    };
    let (first, second) = (app(), app());
    let with = |id: Uuid| DispatchOptions::new().command_id(id);
    let (paid, refused) = (Uuid::new_v4(), Uuid::new_v4());
    let done = first.dispatch_with(Move(10), with(paid)).await.expect("pay in");
    match first.dispatch_with(Move(-50), with(refused)).await {
        Err(DispatchError::Domain(PurseError::NotEnough { have: 10 })) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    first.dispatch(Move(100)).await.expect("more money");
    let again = second.dispatch_with(Move(10), with(paid)).await.expect("repeat of a success");
    assert!(again.duplicate && again.version == done.version, "{again:?}");
    match second.dispatch_with(Move(-50), with(refused)).await {
        Err(DispatchError::Domain(PurseError::NotEnough { have: 10 })) => {}
        other => panic!("a repeat of a refusal is refused as it was first: {other:?}"),
    }
    assert_eq!(store.stream_version("purse-p").await.expect("version"), StreamVersion(2), "nothing appended");
    // An id used for one request cannot name another: the log keeps each outcome's
    // fingerprint, so a fresh process (whose instance loads from a snapshot and
    // remembers nothing) refuses the reuse as the first one does.
    let (fingerprint, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (kept, kept_refusal) = (Uuid::new_v4(), Uuid::new_v4());
    let keyed = |id: Uuid, fingerprint: Uuid| with(id).fingerprint(fingerprint);
    first.dispatch_with(Move(1), keyed(kept, fingerprint)).await.expect("pay in");
    assert!(first.dispatch_with(Move(-1_000), keyed(kept_refusal, fingerprint)).await.is_err(), "refused");
    let third = app();
    for app in [&first, &second, &third] {
        for id in [kept, kept_refusal] {
            match app.dispatch_with(Move(7), keyed(id, other)).await {
                Err(DispatchError::CommandIdReused { command_id }) => assert_eq!(command_id, id),
                result => panic!("a reused command id with another fingerprint was not refused: {result:?}"),
            }
        }
        let repeat = app.dispatch_with(Move(1), keyed(kept, fingerprint)).await.expect("the same request again");
        assert!(repeat.duplicate, "{repeat:?}");
    }
    assert_eq!(store.stream_version("purse-p").await.expect("version"), StreamVersion(3), "nothing more appended");
}
