//! Replay and import at the library level, with an application that has a side
//! effect: the handler never runs for copied history, neither during the copy nor
//! when the copy is served afterwards, while projectors see every copied event.
//! On SQLite, and on PostgreSQL when `TEST_DATABASE_URL` is set.

use async_trait::async_trait;
use rewind::{
    Application, ConsumerError, EventHandler, EventStore, ExpectedVersion, GlobalPosition, NewEvent, RecordedEvent,
    StoreError, SubscriptionOptions, Subscriptions, SubscriptionsBuilder,
};
use rewind_cli::replay::{Until, replay};
use rewind_cli::{Backend, Database, OpenMode, ReadModel, RewindApp};
use rewind_sqlite::{SqliteProjection, SqliteProjector};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts events per stream in a table `counts`.
struct Counts;

impl SqliteProjection for Counts {
    fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    }
    fn project(&self, conn: &rusqlite::Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        conn.execute(
            "INSERT INTO counts VALUES (?1, 1) ON CONFLICT (stream) DO UPDATE SET n = n + 1",
            [&event.stream_id],
        )?;
        Ok(())
    }
    fn reset(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM counts")
    }
}

/// "Sends an email" per event: counts its calls.
#[derive(Clone, Default)]
struct Mailer(Arc<AtomicUsize>);

#[async_trait]
impl EventHandler for Mailer {
    async fn handle(&self, _: &RecordedEvent) -> Result<(), ConsumerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct App {
    mailer: Mailer,
}

#[async_trait]
impl RewindApp for App {
    fn application(&self, backend: &Backend) -> Application {
        Application::builder_shared(backend.store.clone()).build()
    }

    async fn subscriptions(
        &self,
        builder: SubscriptionsBuilder,
        backend: &Backend,
    ) -> Result<SubscriptionsBuilder, StoreError> {
        let builder = builder.handler("mailer", self.mailer.clone(), SubscriptionOptions::new());
        match &backend.read_model {
            // The counting projector is written for SQLite; on PostgreSQL the test
            // checks the handler alone.
            ReadModel::Sqlite(model) => {
                let counts = SqliteProjector::new("counts", Counts, model).await?;
                Ok(builder.consumer("counts", Arc::new(counts), SubscriptionOptions::new()))
            }
            ReadModel::Postgres(_) => Ok(builder),
        }
    }
}

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Happened".into(),
        data: format!(r#"{{"i":{i}}}"#),
        metadata: Default::default(),
    }
}

/// Source and destination databases: SQLite always, PostgreSQL when configured.
fn pairs(dir: &std::path::Path) -> Vec<(Database, Database)> {
    let mut pairs = vec![(Database::Sqlite(dir.join("source.db")), Database::Sqlite(dir.join("copy.db")))];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
            let pg = |side: &str| Database::Postgres { url: url.clone(), schema: format!("rwt_{secs}_{tag}{side}") };
            pairs.push((pg("s"), pg("d")));
        }
        _ => eprintln!("PostgreSQL part skipped: TEST_DATABASE_URL is not set"),
    }
    pairs
}

async fn counts(backend: &Backend) -> Vec<(String, i64)> {
    let ReadModel::Sqlite(model) = &backend.read_model else { return Vec::new() };
    model
        .read(|conn| {
            let mut statement = conn.prepare("SELECT stream, n FROM counts ORDER BY stream")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .expect("counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_runs_projectors_but_never_side_effects() {
    let dir = tempfile::tempdir().expect("dir");
    for (source_db, copy_db) in pairs(dir.path()) {
        let source = Backend::open(&source_db, OpenMode::Create).await.expect("source");
        for i in 0..30 {
            let stream = format!("s-{}", i % 3);
            source.store.append(&stream, ExpectedVersion::Any, vec![event(i)]).await.expect("append");
        }
        let sent = Mailer::default();
        let app = App { mailer: sent.clone() };
        let copy = Backend::open(&copy_db, OpenMode::Empty).await.expect("copy");
        let copied = replay(&app, &source, &copy, Until::Position(GlobalPosition(20))).await.expect("replay");
        assert_eq!(copied.events, 20, "{source_db}");
        assert_eq!(sent.0.load(Ordering::SeqCst), 0, "the replay itself sends nothing");
        if matches!(copy.read_model, ReadModel::Sqlite(_)) {
            assert_eq!(copied.projectors, ["counts"]);
            let expected: Vec<(String, i64)> = vec![("s-0".into(), 7), ("s-1".into(), 7), ("s-2".into(), 6)];
            assert_eq!(counts(&copy).await, expected, "the projector saw exactly the first 20 events");
        }
        assert_eq!(copy.bookkeeping.load_checkpoint("mailer").await.expect("checkpoint"), Some(GlobalPosition(20)));

        // Serving the copy: the handler runs for new events only.
        let application = app.application(&copy);
        let builder = Subscriptions::builder(&application, copy.bookkeeping.clone());
        let running = app.subscriptions(builder, &copy).await.expect("subscriptions").start().expect("start");
        let new = copy.store.append("s-9", ExpectedVersion::NoStream, vec![event(99)]).await.expect("append");
        running.wait_for("mailer", new.last_position).await.expect("wait");
        running.shutdown().await;
        assert_eq!(sent.0.load(Ordering::SeqCst), 1, "only the event appended after the copy is mailed");

        // The destination must be empty.
        let refused = Backend::open(&copy_db, OpenMode::Empty).await;
        assert!(matches!(refused, Err(rewind_cli::OpenError::NotEmpty { events: 21, .. })), "{copy_db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_until_a_time_takes_the_prefix_committed_by_then() {
    let dir = tempfile::tempdir().expect("dir");
    for (source_db, copy_db) in pairs(dir.path()) {
        let source = Backend::open(&source_db, OpenMode::Create).await.expect("source");
        for i in 0..5 {
            source.store.append("s", ExpectedVersion::Any, vec![event(i)]).await.expect("append");
        }
        source.store.settled_head().await.expect("settled head");
        let events = source.store.read_all(GlobalPosition(1), 10, &Default::default()).await.expect("read");
        let until = events[2].created_at;
        assert!(events[3].created_at > until, "separate commits have distinct times");
        let app = App { mailer: Mailer::default() };
        let copy = Backend::open(&copy_db, OpenMode::Empty).await.expect("copy");
        let copied = replay(&app, &source, &copy, Until::Time(until)).await.expect("replay");
        assert_eq!(copied.events, 3, "{source_db}");
        let read = copy.store.read_all(GlobalPosition(1), 10, &Default::default()).await.expect("read");
        assert_eq!(
            read.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            events[..3].iter().map(|e| e.event_id).collect::<Vec<_>>()
        );
    }
}
