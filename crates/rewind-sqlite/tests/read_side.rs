//! The read side on SQLite: subscription bookkeeping conformance, projectors that
//! apply each event exactly once (across a kill -9), failure isolation in a batch,
//! and rebuilds.

use rewind::{
    ErrorPolicy, EventStore, ExpectedVersion, GlobalPosition, SubscriptionOptions, SubscriptionStore, Subscriptions,
};
use rewind_sqlite::{SqliteProjector, SqliteReadModel, SqliteStore, SqliteSubscriptionStore};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

mod common;

use common::{StreamCounts, counted};
use tempfile::TempDir;

async fn make_bookkeeping() -> Option<(SqliteSubscriptionStore, TempDir)> {
    let dir = tempfile::tempdir().expect("dir");
    let model = SqliteReadModel::open(dir.path().join("read.db")).await.expect("open");
    Some((SqliteSubscriptionStore::open(&model).await.expect("bookkeeping"), dir))
}

rewind::subscription_store_conformance!(make_bookkeeping);

/// Leases hold across separately opened bookkeeping on one file (as two processes
/// would open it), and are released on drop.
#[tokio::test]
async fn leases_hold_across_separately_opened_bookkeeping() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("read.db");
    let first = SqliteSubscriptionStore::open(&SqliteReadModel::open(&path).await.expect("open")).await.expect("open");
    let second = SqliteSubscriptionStore::open(&SqliteReadModel::open(&path).await.expect("open")).await.expect("open");
    let held = first.try_lease("projector/ä").await.expect("lease").expect("free at first");
    assert!(second.try_lease("projector/ä").await.expect("lease").is_none(), "held by the other opener");
    assert!(second.try_lease("another").await.expect("lease").is_some(), "names are independent");
    drop(held);
    assert!(second.try_lease("projector/ä").await.expect("lease").is_some(), "released on drop");
}

/// Appends `per_stream` events to each of `streams` streams, in batches.
async fn seed(store: &SqliteStore, streams: usize, per_stream: usize) {
    for s in 0..streams {
        let events = (0..per_stream).map(|i| counted(i as i64)).collect();
        store.append(&format!("s-{s}"), ExpectedVersion::Any, events).await.expect("append");
    }
}

async fn counts(model: &SqliteReadModel) -> HashMap<String, i64> {
    model
        .read(|conn| {
            let mut statement = conn.prepare("SELECT stream_id, n FROM stream_counts")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
        .expect("counts")
}

/// The store, its read model in the same file, and the bookkeeping.
async fn open_all(path: &Path) -> (rewind::Application, SqliteReadModel, Arc<SqliteSubscriptionStore>) {
    let store = Arc::new(SqliteStore::open(path).await.expect("store"));
    let model = SqliteReadModel::sharing(store.clone()).await.expect("model");
    let bookkeeping = Arc::new(SqliteSubscriptionStore::open(&model).await.expect("bookkeeping"));
    (rewind::Application::builder(store).build(), model, bookkeeping)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_applies_every_event_once_and_resumes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    {
        let store = SqliteStore::open(&path).await.expect("store");
        seed(&store, 10, 30).await;
        store.close().await.expect("close");
    }
    let (app, model, bookkeeping) = open_all(&path).await;
    let projector = SqliteProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping.clone())
        .consumer("counts", Arc::new(projector), SubscriptionOptions::new().batch_size(64))
        .start()
        .expect("start");
    subs.wait_for("counts", GlobalPosition(300)).await.expect("caught up");
    subs.shutdown().await;
    let first = counts(&model).await;
    assert_eq!(first.len(), 10);
    assert!(first.values().all(|n| *n == 30));

    let projector = SqliteProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping)
        .consumer("counts", Arc::new(projector), SubscriptionOptions::new())
        .start()
        .expect("start");
    app.store().append("s-0", ExpectedVersion::Any, vec![counted(0)]).await.expect("append");
    subs.wait_for("counts", GlobalPosition(301)).await.expect("live");
    assert_eq!(counts(&model).await["s-0"], 31, "resumed from the checkpoint, nothing applied twice");
    subs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_isolated_from_its_batch() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    let (app, model, bookkeeping) = open_all(&path).await;
    for i in 0..20 {
        app.store().append(&format!("s-{}", i % 4), ExpectedVersion::Any, vec![counted(i)]).await.expect("append");
    }
    let projector = SqliteProjector::new("counts", StreamCounts { poison: Some(13) }, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping.clone())
        .consumer("counts", Arc::new(projector), SubscriptionOptions::new().on_error(ErrorPolicy::Skip))
        .start()
        .expect("start");
    subs.wait_for("counts", GlobalPosition(20)).await.expect("past the poison");
    let counts = counts(&model).await;
    assert_eq!(counts.values().sum::<i64>(), 19, "every other event of the batch applied");
    assert_eq!(counts["s-1"], 4, "event 14 (n = 13, stream s-1) skipped");
    let letters = bookkeeping.dead_letters(Some("counts")).await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event.position, letters[0].error.as_str()), (GlobalPosition(14), "poisoned event 14"));
    subs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reproduces_the_read_model() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    let (app, model, bookkeeping) = open_all(&path).await;
    for i in 0..50 {
        app.store().append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![counted(i)]).await.expect("append");
    }
    let projector = SqliteProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping)
        .consumer("counts", Arc::new(projector), SubscriptionOptions::new().batch_size(8))
        .start()
        .expect("start");
    subs.wait_for("counts", GlobalPosition(50)).await.expect("caught up");
    let live = counts(&model).await;
    subs.rebuild("counts").await.expect("rebuild");
    subs.wait_for("counts", GlobalPosition(50)).await.expect("rebuilt");
    assert_eq!(counts(&model).await, live);
    subs.shutdown().await;
}

const CHILD_DB: &str = "REWIND_SQLITE_PROJECTOR_CHILD_DB";
const STREAMS: usize = 20;
const PER_STREAM: usize = 500;

#[test]
#[ignore = "the child process of a_projector_killed_mid_batch_applies_each_event_once; does nothing alone"]
fn projector_child_runs_until_killed() {
    let Some(path) = std::env::var_os(CHILD_DB) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let (app, model, bookkeeping) = open_all(Path::new(&path)).await;
        let projector = SqliteProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
        let subs = Subscriptions::builder(&app, bookkeeping)
            .consumer("counts", Arc::new(projector), SubscriptionOptions::new().batch_size(25))
            .start()
            .expect("start");
        for position in (25..=(STREAMS * PER_STREAM) as u64).step_by(25) {
            subs.wait_for("counts", GlobalPosition(position)).await.expect("wait");
            println!("PROGRESS {position}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_batch_applies_each_event_once() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    {
        let store = SqliteStore::open(&path).await.expect("store");
        seed(&store, STREAMS, PER_STREAM).await;
        store.close().await.expect("close");
    }
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "projector_child_runs_until_killed",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let kill_after = 3 + rand::random_range(0..20) + round * 10;
        let mut progress = 0;
        for line in BufReader::new(stdout).lines() {
            if line.expect("line").starts_with("PROGRESS") {
                progress += 1;
                if progress == kill_after {
                    break;
                }
            }
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        assert!(progress > 0, "round {round}: the child made progress before it was killed");
    }
    let (app, model, bookkeeping) = open_all(&path).await;
    let projector = SqliteProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping)
        .consumer("counts", Arc::new(projector), SubscriptionOptions::new())
        .start()
        .expect("start");
    subs.wait_for("counts", GlobalPosition((STREAMS * PER_STREAM) as u64)).await.expect("finish");
    let counts = counts(&model).await;
    assert_eq!(counts.len(), STREAMS);
    for (stream, n) in counts {
        assert_eq!(n, PER_STREAM as i64, "{stream}: every event applied exactly once");
    }
    subs.shutdown().await;
}

/// Fails with `SQLITE_BUSY` (another connection holding the write lock past the busy
/// handler's patience) the first `busy` times it is called, and with a real
/// constraint violation on the event whose `n` is `duplicate`.
struct Contended {
    busy: std::sync::atomic::AtomicU32,
    duplicate: i64,
}

impl rewind_sqlite::SqliteProjection for Contended {
    fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS seen (n INTEGER PRIMARY KEY)")
    }
    fn project(&self, conn: &rusqlite::Connection, event: &rewind::RecordedEvent) -> Result<(), rewind::ConsumerError> {
        use std::sync::atomic::Ordering;
        if self.busy.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let busy = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
            return Err(Box::new(rusqlite::Error::SqliteFailure(busy, Some("database is locked".into()))));
        }
        let n = serde_json::from_str::<serde_json::Value>(&event.data)?["n"].as_i64().unwrap_or(-1);
        conn.execute("INSERT INTO seen VALUES (?1)", [n])?;
        if n == self.duplicate {
            conn.execute("INSERT INTO seen VALUES (?1)", [n])?;
        }
        Ok(())
    }
    fn reset(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM seen")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_is_retried_and_only_the_projections_own_refusal_is_skipped() {
    let dir = tempfile::tempdir().expect("dir");
    let (app, model, bookkeeping) = open_all(&dir.path().join("bank.db")).await;
    for n in 1..=10 {
        app.store().append("s", ExpectedVersion::Any, vec![counted(n)]).await.expect("append");
    }
    let projection = Contended { busy: 8.into(), duplicate: 7 };
    let projector = SqliteProjector::new("contended", projection, &model).await.expect("projector");
    let backoff = rewind::Backoff::new(std::time::Duration::from_millis(5), std::time::Duration::from_millis(50));
    let options = SubscriptionOptions::new().batch_size(4).on_error(ErrorPolicy::Skip).backoff(backoff);
    let subs = Subscriptions::builder(&app, bookkeeping.clone())
        .consumer("contended", Arc::new(projector), options)
        .start()
        .expect("start");
    subs.wait_for("contended", GlobalPosition(10)).await.expect("caught up");
    let seen: Vec<i64> = model
        .read(|conn| conn.prepare("SELECT n FROM seen ORDER BY n")?.query_map([], |r| r.get(0))?.collect())
        .await
        .expect("seen");
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 8, 9, 10], "every event once, except the one the projection refused");
    let letters = bookkeeping.dead_letters(Some("contended")).await.expect("letters");
    assert_eq!(letters.iter().map(|l| l.event.position).collect::<Vec<_>>(), [GlobalPosition(7)]);
    assert!(letters[0].error.contains("UNIQUE constraint failed"), "{}", letters[0].error);
    let status = subs.status_of("contended").expect("status");
    assert_eq!((status.transient_failures, status.deterministic_failures), (8, 1));
    subs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_projector_keeps_its_promises_inline_too() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    // In the store's file, so every partition is also written inline.
    let (app, model, bookkeeping) = open_all(&path).await;
    let other: Arc<dyn SubscriptionStore> = Arc::new(SqliteSubscriptionStore::open(&model).await.expect("bookkeeping"));
    rewind::partition_conformance::partitioned_projectors(&app, Arc::new(model), [bookkeeping, other]).await;
}
