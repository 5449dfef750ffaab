//! A store outlives its connections and its server: after the server drops every
//! connection of a store, and after the server was stopped and started again,
//! appends, reads and the head watch work again; while it is down they fail fast,
//! with a transient error.

mod common;

use common::cluster::Cluster;
use rewind::conformance::event;
use rewind::{
    Aggregate, Application, DispatchError, EventFilter, EventStore, Execute, ExpectedVersion, GlobalPosition, Router,
    StoreError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        // Readable once the transactions running now, other tests' too, have ended.
        read = match store.settled_head().await {
            Ok(_) => store.read_all(GlobalPosition::START, 100, &EventFilter::all()).await,
            Err(error) => Err(error),
        };
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

/// A counter, so the test sees what a dispatch answers while the server is away.
#[derive(Debug, Default, Clone)]
struct Counter;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Counted {
    Added,
}

impl rewind::Event for Counted {}

impl Aggregate for Counter {
    const NAME: &'static str = "counter";
    type Event = Counted;
    type Error = rewind::Never;
    fn apply(&mut self, _: &Counted) {}
}

#[derive(Debug)]
struct Add;

impl rewind::Command for Add {
    type Aggregate = Counter;
    fn aggregate_id(&self) -> String {
        "c".into()
    }
}

impl Execute<Add> for Counter {
    fn execute(&self, _: &Add) -> Result<Vec<Counted>, rewind::Never> {
        Ok(vec![Counted::Added])
    }
}

/// What a stopped server may take at most to refuse a call.
const FAST: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_the_server_is_down_and_work_once_it_is_back() {
    let test = "calls_fail_fast_while_the_server_is_down_and_work_once_it_is_back";
    if common::database_url(test).is_none() {
        return;
    }
    let Some(cluster) = Cluster::create(test) else { return };
    let store = Arc::new(common::open(&cluster.url(), "rewind").await);
    let app = Application::builder(store.clone()).router(Router::new().command::<Add>()).build();
    app.dispatch(Add).await.expect("a dispatch while the server is up");

    assert!(cluster.stop("fast"), "pg_ctl stop");
    for attempt in 0..5 {
        let started = Instant::now();
        let appended = store.append("s", ExpectedVersion::Any, vec![event("Down", serde_json::json!({}))]).await;
        // The writer's old connection may not have noticed the shutdown yet: sending on
        // it is an unknown outcome. After that no connection can be made, so nothing
        // was sent: unavailable, and a dispatch says so (not "outcome unknown").
        let expected = match attempt {
            0 => matches!(&appended, Err(StoreError::Backend(_) | StoreError::Unavailable(_))),
            _ => matches!(&appended, Err(StoreError::Unavailable(_))),
        };
        assert!(expected && appended.as_ref().is_err_and(StoreError::is_transient), "{appended:?}");
        let dispatched = app.dispatch(Add).await;
        assert!(
            matches!(&dispatched, Err(DispatchError::Store(error @ StoreError::Unavailable(_))) if error.is_transient()),
            "{dispatched:?}"
        );
        let read = store.read_all(GlobalPosition::START, 10, &EventFilter::all()).await;
        assert!(matches!(&read, Err(error) if error.is_transient()), "{read:?}");
        assert!(started.elapsed() < FAST, "an append, a dispatch and a read refused in {:?}", started.elapsed());
    }

    cluster.start();
    // The writer and the pool reconnect on their next use: the first calls succeed.
    let appended = store.append("s", ExpectedVersion::Any, vec![event("Back", serde_json::json!({}))]).await;
    let appended = appended.expect("the first append after the restart");
    app.dispatch(Add).await.expect("the first dispatch after the restart");
    let read = store.read_all(GlobalPosition::START, 100, &EventFilter::all()).await.expect("the first read");
    assert!(read.iter().any(|e| e.event_type == "Back"));
    assert!(!read.iter().any(|e| e.event_type == "Down"), "nothing refused was written");

    // The listener reconnected (with backoff) and hears another store's commit.
    let other = common::open(&cluster.url(), "rewind").await;
    let later = other.append("t", ExpectedVersion::Any, vec![event("Elsewhere", serde_json::json!({}))]).await;
    let later = later.expect("append elsewhere").last_position;
    assert!(later > appended.last_position);
    let mut watch = store.watch_head();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|head| *head >= later))
        .await
        .expect("the watch saw the other store's commit")
        .expect("watch open");
}
