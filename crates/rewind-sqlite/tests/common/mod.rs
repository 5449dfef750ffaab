//! What the SQLite store's integration tests share: a store on a fresh temporary
//! file that deletes the file when dropped, small event helpers, and a projection
//! that shows an event applied twice.

#![allow(dead_code)] // each test file uses a different part

use rewind::store::StreamAppend;
use rewind::{
    AppendResult, Direction, EventFilter, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    RecordedEvent, Snapshot, StoreError, StreamVersion,
};
use rewind_sqlite::{SqliteConfig, SqliteStore};
use tempfile::TempDir;
use tokio::sync::watch;

/// A [`SqliteStore`] on a file in its own temporary directory, removed on drop
/// (after the store, which is declared first, has closed its connections).
pub struct TempStore {
    pub store: SqliteStore,
    pub dir: TempDir,
}

impl TempStore {
    pub async fn new() -> TempStore {
        TempStore::with_config(SqliteConfig::default()).await
    }

    pub async fn with_config(config: SqliteConfig) -> TempStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_with(dir.path().join("events.db"), config).await.expect("open store");
        TempStore { store, dir }
    }
}

impl EventStore for TempStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.store.append(stream_id, expected, events).await
    }

    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        self.store.append_batch(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.read_stream(stream_id, from, direction, limit).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.read_all(from, limit, filter).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        self.store.stream_version(stream_id).await
    }
    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.store.read_event(event_id).await
    }

    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        self.store.head_position().await
    }

    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.store.watch_head()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.store.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.store.load_snapshot(stream_id).await
    }
    async fn list_streams(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<rewind::StreamInfo>, StoreError> {
        self.store.list_streams(prefix, after, limit).await
    }
    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        self.store.import(events).await
    }
}

/// `n` small events with fresh ids.
pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "Happened".into(),
            data: format!(r#"{{"i":{i}}}"#),
            metadata: Metadata::default(),
        })
        .collect()
}

/// Every event of the global order.
pub async fn read_everything(store: &impl EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut from = GlobalPosition::START.next();
    loop {
        let batch = store.read_all(from, 1_000, &EventFilter::all()).await.expect("read_all");
        let Some(last) = batch.last() else { return all };
        from = last.position.next();
        all.extend(batch);
    }
}

/// Counts events per stream with a plain increment, so applying an event twice shows.
pub struct StreamCounts {
    /// Data value that makes `project` fail.
    pub poison: Option<i64>,
}

impl rewind_sqlite::SqliteProjection for StreamCounts {
    fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS stream_counts (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    }
    fn project(&self, conn: &rusqlite::Connection, event: &RecordedEvent) -> Result<(), rewind::ConsumerError> {
        let value: serde_json::Value = serde_json::from_str(&event.data)?;
        if self.poison.is_some() && value["n"].as_i64() == self.poison {
            return Err(format!("poisoned event {}", event.position).into());
        }
        conn.execute(
            "INSERT INTO stream_counts VALUES (?1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = n + 1",
            [&event.stream_id],
        )?;
        Ok(())
    }
    fn reset(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM stream_counts")
    }
}

/// An event `{"n": n}` for [`StreamCounts`].
pub fn counted(n: i64) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Counted".into(),
        data: format!(r#"{{"n":{n}}}"#),
        metadata: Metadata::default(),
    }
}
