//! [`SqliteStore`]: the [`EventStore`] on one SQLite file.
//!
//! The store itself holds no data and no connection; it routes each call. Appends
//! and snapshot saves go to the writer thread (`writer.rs`), which commits them in
//! groups; reads go to the reader pool (`reader.rs`); the head position comes from
//! the watch the syncer raises once a commit is durable (`syncer.rs`). It keeps every promise of
//! [`rewind::event_store`], with the same decisions as [`rewind::MemoryStore`].
//!
//! One process should own a file. Another process appending to the same file
//! corrupts nothing (each group re-reads the head inside its write lock), but this
//! store's head watch does not see those appends until it commits one of its own.

use crate::append::validate;
use crate::config::SqliteConfig;
use crate::inline::{InlineProjection, InlineProjections};
use crate::reader::{self, ReaderPool};
use crate::stats::{SqliteStats, StatsCounters};
use crate::writer::{Work, WriterHandle};
use rewind::store::StreamAppend;
use rewind::{
    AppendResult, Direction, EventFilter, EventStore, GlobalPosition, RecordedEvent, Snapshot, StoreError, StreamInfo,
    StreamVersion,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// An [`EventStore`] in one SQLite file (WAL mode; every commit fsynced before it is acknowledged, by default).
///
/// Share it behind an `Arc`; every method takes `&self`. Appends are acknowledged
/// once committed (and, with the default [`Synchronous::Full`](crate::Synchronous),
/// fsynced); concurrent appends share commits. An append whose future is dropped
/// after it was handed to the writer is not withdrawn: it may still commit, so read
/// the stream (or re-append the same event ids) to find out.
pub struct SqliteStore {
    path: PathBuf,
    writer: WriterHandle,
    readers: ReaderPool,
    head: watch::Receiver<GlobalPosition>,
    stats: Arc<StatsCounters>,
    inline: Arc<InlineProjections>,
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file and its schema if
    /// needed and migrating an older schema, with the default [`SqliteConfig`]
    /// (every commit fsynced).
    ///
    /// Fails with [`StoreError::Corrupt`] if the file is not a Rewind store or its
    /// schema is newer than this crate knows (the file is left untouched), and with
    /// [`StoreError::Backend`] if the file cannot be opened.
    ///
    /// ```
    /// use rewind::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamVersion};
    /// use rewind_sqlite::SqliteStore;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteStore::open(dir.path().join("events.db")).await.unwrap();
    /// let opened = NewEvent {
    ///     event_id: uuid::Uuid::now_v7(),
    ///     event_type: "AccountOpened".into(),
    ///     data: r#"{"owner":"Ada"}"#.into(),
    ///     metadata: Metadata::default(),
    /// };
    /// let result = store.append("account-1", ExpectedVersion::NoStream, vec![opened]).await.unwrap();
    /// assert_eq!(result.stream_version, StreamVersion(1));
    /// store.close().await.unwrap();
    ///
    /// // The events outlive the process: reopening finds them.
    /// let store = SqliteStore::open(dir.path().join("events.db")).await.unwrap();
    /// assert_eq!(store.stream_version("account-1").await.unwrap(), StreamVersion(1));
    /// # });
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteConfig::default()).await
    }

    /// Opens the store at `path` with the given options. See [`SqliteStore::open`].
    pub async fn open_with(path: impl AsRef<Path>, config: SqliteConfig) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_owned();
        let stats = Arc::new(StatsCounters::default());
        let inline = Arc::new(InlineProjections::default());
        let (writer, head) = WriterHandle::start(path.clone(), &config, stats.clone(), inline.clone()).await?;
        let readers = match ReaderPool::start(&path, &config).await {
            Ok(readers) => readers,
            Err(error) => {
                drop(writer.stop());
                return Err(error);
            }
        };
        Ok(SqliteStore { path, writer, readers, head, stats, inline })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done since the store was opened (commits, requests,
    /// events), e.g. to see how many appends shared each commit.
    pub fn stats(&self) -> SqliteStats {
        self.stats.snapshot()
    }

    /// Runs `work` on the write connection inside the writer's next group
    /// transaction (in a savepoint of its own): `Ok` once that transaction committed;
    /// on `Err` the work's writes were rolled back. For read models in this file.
    pub(crate) async fn run_in_group(&self, work: crate::writer::RunWork) -> Result<(), StoreError> {
        self.writer.submit(Work::Run(std::cell::Cell::new(Some(work)))).await.map(drop)
    }

    /// Registers a projector to be written in the transaction of every group of
    /// appends (`inline.rs`).
    pub(crate) fn add_inline(&self, projection: InlineProjection) {
        self.inline.add(projection);
    }

    /// Closes the store: answers every request already queued, then closes all
    /// connections (the last one checkpoints the write-ahead log into the file).
    /// Dropping the store instead does the same in the background.
    ///
    /// An error here concerns closing only; every append acknowledged before stays.
    pub async fn close(self) -> Result<(), StoreError> {
        let SqliteStore { writer, readers, .. } = self;
        let mut threads = readers.stop();
        threads.push(writer.stop());
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().map(|thread| thread.join().unwrap_or(Err(StoreError::Closed))).collect::<Vec<_>>()
        })
        .await
        .map_err(StoreError::backend)?;
        joined.into_iter().collect()
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).field("head", &*self.head.borrow()).finish()
    }
}

impl EventStore for SqliteStore {
    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        validate(&appends)?;
        self.writer.submit(Work::Append(appends)).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.readers.run(move |conn| reader::read_stream(conn, &stream_id, from, direction, limit)).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Events this process committed but has not made durable yet must not reach
        // subscribers (they could act on an event a power loss takes back): while a
        // commit of ours is past the durable head, the read stops at that head. Only
        // when every commit of ours is durable may the read pass the head: what lies
        // beyond it then came from other processes.
        let durable = *self.head.borrow();
        let filter = filter.clone();
        let mut events = self.readers.run(move |conn| reader::read_all(conn, from, limit, &filter)).await?;
        if self.writer.committing() > durable.0 {
            events.retain(|event| event.position <= durable);
        }
        Ok(events)
    }

    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        let stream_id = stream_id.to_owned();
        self.readers.run(move |conn| reader::stream_version(conn, &stream_id)).await
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.readers.run(move |conn| reader::read_event(conn, event_id)).await
    }

    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        Ok(*self.head.borrow())
    }

    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.head.clone()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.writer.submit(Work::SaveSnapshot(snapshot)).await.map(drop)
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.readers.run(move |conn| reader::load_snapshot(conn, &stream_id)).await
    }

    async fn list_streams(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<StreamInfo>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.to_owned());
        self.readers.run(move |conn| reader::list_streams(conn, &prefix, &after, limit)).await
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        let Some(last) = events.last().map(|e| e.position) else { return self.head_position().await };
        self.writer.submit(Work::Import(events)).await?;
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind::{ExpectedVersion, Metadata, NewEvent};

    fn positions(events: &[RecordedEvent]) -> Vec<u64> {
        events.iter().map(|event| event.position.0).collect()
    }

    /// Subscribers must not act on an event a power loss could take back: while a
    /// commit of this process is past the durable head, `read_all` stops at the head;
    /// with none under way, what lies past the head is another process's and is read.
    #[tokio::test]
    async fn read_all_withholds_this_process_commits_until_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let event = || NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "E".into(),
            data: "{}".into(),
            metadata: Metadata::default(),
        };
        store.append("s", ExpectedVersion::Any, vec![event(), event()]).await.expect("append");
        assert_eq!(store.head_position().await.expect("head"), GlobalPosition(2));
        // Positions 3 and 4 committed in the file but not announced, as a commit of
        // ours waiting for its fsync would be (or another process's commit).
        let other = rusqlite::Connection::open(&path).expect("second connection");
        other
            .execute_batch(
                "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, data, created_at)
                 VALUES (3, x'00000000000000000000000000000003', 't', 1, 'E', '{}', 0),
                        (4, x'00000000000000000000000000000004', 't', 2, 'E', '{}', 0)",
            )
            .expect("rows past the head");
        let all = EventFilter::all();

        store.writer.pretend_committing(4);
        let read = store.read_all(GlobalPosition(1), 10, &all).await.expect("read");
        assert_eq!(positions(&read), [1, 2], "our commit past the head is not durable yet");

        store.writer.pretend_committing(2);
        let read = store.read_all(GlobalPosition(1), 10, &all).await.expect("read");
        assert_eq!(positions(&read), [1, 2, 3, 4], "nothing of ours pending: the rows are another process's");
    }
}
