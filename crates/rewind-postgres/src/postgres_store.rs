//! [`PostgresStore`]: the [`EventStore`] on PostgreSQL.
//!
//! Appends go to the store's [writer](crate::writer) task, which group-commits them;
//! reads go through a connection pool and see only settled events; the head watch
//! is fed by the writer, by LISTEN/NOTIFY and by polling ([`crate::listener`]).
//! Several `PostgresStore`s, in one process or many, may share one schema: their
//! transactions commit concurrently and they all see one global order.

use crate::codec::{EncodedEvent, decode_row, to_i64, to_u64};
use crate::connection::Connector;
use crate::error::{corrupt, from_pg, from_pool};
use crate::group::PreparedAppend;
use crate::listener::Listener;
use crate::options::PostgresOptions;
use crate::schema::migrate;
use crate::sql::Sql;
use crate::writer::{Counters, Pending, Writer, WriterSetup, WriterStats};
use deadpool_postgres::{Object, Pool};
use futures_util::TryStreamExt;
use rewind::store::StreamAppend;
use rewind::{
    AppendResult, Direction, EventFilter, EventStore, GlobalPosition, RecordedEvent, Snapshot, StoreError, StreamInfo,
    StreamVersion,
};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// An event store in one PostgreSQL schema. See the crate docs.
pub struct PostgresStore {
    schema: String,
    sql: Arc<Sql>,
    connector: Connector,
    pool: Pool,
    writer: mpsc::Sender<Pending>,
    head: Arc<watch::Sender<GlobalPosition>>,
    counters: Arc<Counters>,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Opens the store in PostgreSQL schema `schema` of the database at `url`, creating
    /// or migrating the schema first. Must be called inside a Tokio runtime; the store
    /// runs a writer task and a listener task there until it is dropped.
    ///
    /// Errors: [`StoreError::Invalid`] for a bad URL or schema name,
    /// [`StoreError::Corrupt`] if the schema is newer than this crate, and
    /// [`StoreError::Unavailable`] if the database cannot be reached. Nothing is left
    /// running on error; a migration either completed or changed nothing.
    ///
    /// ```no_run
    /// use rewind::{EventStore, ExpectedVersion, NewEvent};
    /// use rewind_postgres::PostgresStore;
    ///
    /// # async fn example() -> Result<(), rewind::StoreError> {
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/bank", "rewind").await?;
    /// let event = NewEvent {
    ///     event_id: uuid::Uuid::now_v7(),
    ///     event_type: "AccountOpened".into(),
    ///     data: r#"{"owner":"ada"}"#.into(),
    ///     metadata: Default::default(),
    /// };
    /// store.append("account-1", ExpectedVersion::NoStream, vec![event]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(PostgresOptions::new(url, schema)).await
    }

    /// [`PostgresStore::connect`] with settings.
    pub async fn connect_with(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        options.validate_schema()?;
        let connector = options.connector()?;
        let schema = options.schema.clone();
        let (mut client, driver) = connector.connect().await.map_err(|e| e.into_store())?;
        connector.bounded(migrate(&mut client, &schema)).await.map_err(StoreError::backend)??;
        let sql = Arc::new(Sql::new(&schema));
        let row = client.query_one(&sql.head, &[]).await.map_err(from_pg)?;
        let start = to_u64(row.try_get(0).map_err(from_pg)?, "position")?;
        let head = Arc::new(watch::channel(GlobalPosition(start)).0);
        let counters = Arc::new(Counters::default());
        let (committed, committed_watch) = watch::channel(GlobalPosition(start));
        let channel = crate::sql::channel(&schema);
        let setup = WriterSetup {
            connector: connector.clone(),
            sql: sql.clone(),
            head: head.clone(),
            committed,
            counters: counters.clone(),
            max_group_events: options.max_group_events,
            slow: options.slow_commits,
        };
        let writer = Writer::new(setup, (client, driver)).await?;
        let pool = connector.pool(options.pool_size)?;
        let (sender, requests) = mpsc::channel(1024);
        tokio::spawn(writer.run(requests));
        let listener = Listener {
            connector: connector.clone(),
            channel,
            head_sql: sql.head.clone(),
            head: head.clone(),
            committed: committed_watch,
            poll_interval: options.poll_interval,
        }
        .spawn();
        Ok(PostgresStore { schema, sql, connector, pool, writer: sender, head, counters, listener })
    }

    /// Whether schema `schema` of the database at `url` holds a Rewind store, without
    /// creating anything (operators' tools refuse to work on a store that is not there).
    pub async fn exists(url: &str, schema: &str) -> Result<bool, StoreError> {
        let options = PostgresOptions::new(url, schema);
        options.validate_schema()?;
        let (client, _driver) = options.connector()?.connect().await.map_err(|e| e.into_store())?;
        let row = client
            .query_one("SELECT to_regclass(format('%I.events', $1::text)) IS NOT NULL", &[&schema])
            .await
            .map_err(from_pg)?;
        row.try_get(0).map_err(from_pg)
    }

    /// The PostgreSQL schema holding this store.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// What the writer has done since this store was opened.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// A pooled connection for one bounded piece of work ([`Unfinished`]).
    async fn checkout(&self) -> Result<Unfinished, StoreError> {
        Ok(Unfinished(Some(self.pool.get().await.map_err(from_pool)?)))
    }

    /// Runs `sql` on a pooled connection, bounded by `query_timeout`
    /// ([`crate::connection`]).
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.checkout().await?;
        let rows = self
            .connector
            .bounded(async {
                let statement = client.prepare_cached(sql).await.map_err(from_pg)?;
                client.query(&statement, params).await.map_err(from_pg)
            })
            .await
            .map_err(StoreError::backend)?;
        client.finished();
        rows
    }

    /// Decodes each row as it arrives rather than after the whole result: the
    /// decoding overlaps the server producing the rest, and the rows' buffers are
    /// freed as it goes (reading the global order 1.6× as fast, `BENCHMARKS.md`).
    async fn query_events(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.checkout().await?;
        let events = self
            .connector
            .bounded(async {
                let statement = client.prepare_cached(sql).await.map_err(from_pg)?;
                let rows = client.query_raw(&statement, params.iter().copied()).await.map_err(from_pg)?;
                let mut rows = std::pin::pin!(rows);
                let mut events = Vec::new();
                while let Some(row) = rows.try_next().await.map_err(from_pg)? {
                    events.push(decode_row(&row)?);
                }
                Ok(events)
            })
            .await
            .map_err(StoreError::backend)?;
        client.finished();
        events
    }

    async fn query_number(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let rows = self.query(sql, params).await?;
        let row = rows.first().ok_or_else(|| corrupt("a count query returned no row"))?;
        to_u64(row.try_get(0).map_err(from_pg)?, "number")
    }
}

/// A pooled connection that goes back to the pool only through [`Unfinished::finished`];
/// dropped otherwise (its work stalled, or the caller stopped waiting), it is
/// detached from the pool and closed, never handed out again with an answer still
/// owed on it.
pub(crate) struct Unfinished(Option<Object>);

impl Unfinished {
    /// The work is done: the connection goes back to the pool.
    pub(crate) fn finished(mut self) {
        self.0.take();
    }
}

impl std::ops::Deref for Unfinished {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.0.as_ref().expect("an Unfinished holds its connection until dropped")
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The writer stops by itself once `writer` (the last sender) is dropped, after
        // answering what is queued; the listener would run forever.
        self.listener.abort();
    }
}

/// Checks a request's shape and encodes its events, on the caller's task.
fn prepare(appends: Vec<StreamAppend>) -> Result<Vec<PreparedAppend>, StoreError> {
    let mut streams = HashSet::with_capacity(appends.len());
    let mut prepared = Vec::with_capacity(appends.len());
    for append in appends {
        if append.stream_id.is_empty() {
            return Err(StoreError::Invalid("stream id is empty".into()));
        }
        if !streams.insert(append.stream_id.clone()) {
            return Err(StoreError::Invalid(format!("stream `{}` appears twice in one batch", append.stream_id)));
        }
        let events = append.events.into_iter().map(EncodedEvent::encode).collect::<Result<Vec<_>, _>>()?;
        prepared.push(PreparedAppend { stream_id: append.stream_id, expected: append.expected, events });
    }
    Ok(prepared)
}

impl EventStore for PostgresStore {
    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        let appends = prepare(appends)?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Pending { appends, reply, span: tracing::Span::current() })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (from, limit) = (to_i64(from.0), to_i64(limit as u64));
        let sql = match direction {
            Direction::Forward => &self.sql.read_stream_forward,
            Direction::Backward => &self.sql.read_stream_backward,
        };
        self.query_events(sql, &[&stream_id, &from, &limit]).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (from, limit) = (to_i64(from.0), to_i64(limit as u64));
        if filter.is_all() {
            return self.query_events(&self.sql.read_all, &[&from, &limit]).await;
        }
        let prefix = filter.stream_prefix.as_deref();
        self.query_events(&self.sql.read_all_filtered, &[&from, &limit, &prefix, &filter.event_types]).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        self.query_number(&self.sql.stream_version, &[&stream_id]).await.map(StreamVersion)
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        Ok(self.query_events(&self.sql.read_event, &[&event_id]).await?.pop())
    }

    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        self.query_number(&self.sql.head, &[]).await.map(GlobalPosition)
    }

    /// Waits until every transaction that had an id when it was called has ended (the
    /// snapshot's xmin passes the xmax of the call's snapshot), then reads the head.
    async fn settled_head(&self) -> Result<GlobalPosition, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let now = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text";
        let xmax: String = client.query_one(now, &[]).await.map_err(from_pg)?.try_get(0).map_err(from_pg)?;
        let ended = "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8";
        let mut pause = std::time::Duration::from_micros(500);
        while !client.query_one(ended, &[&xmax]).await.map_err(from_pg)?.try_get::<_, bool>(0).map_err(from_pg)? {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
        }
        drop(client);
        self.head_position().await
    }

    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.head.subscribe()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let version = to_i64(snapshot.version.0);
        let params: [&(dyn ToSql + Sync); 5] =
            [&snapshot.stream_id, &version, &snapshot.tag, &snapshot.data, &snapshot.created_at];
        self.query(&self.sql.save_snapshot, &params).await.map(drop)
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let rows = self.query(&self.sql.load_snapshot, &[&stream_id]).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let get_err = |e| corrupt(format!("unreadable snapshot row: {e}"));
        Ok(Some(Snapshot {
            stream_id: row.try_get(0).map_err(get_err)?,
            version: StreamVersion(to_u64(row.try_get(1).map_err(get_err)?, "snapshot version")?),
            tag: row.try_get(2).map_err(get_err)?,
            data: row.try_get(3).map_err(get_err)?,
            created_at: row.try_get(4).map_err(get_err)?,
        }))
    }

    async fn list_streams(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<StreamInfo>, StoreError> {
        let limit = to_i64(limit as u64);
        let rows = self.query(&self.sql.list_streams, &[&prefix, &after, &limit]).await?;
        rows.iter()
            .map(|row| {
                Ok(StreamInfo {
                    stream_id: row.try_get(0).map_err(from_pg)?,
                    version: StreamVersion(to_u64(row.try_get(1).map_err(from_pg)?, "stream version")?),
                })
            })
            .collect()
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        if events.is_empty() {
            return self.head_position().await;
        }
        let head = crate::import::import(&self.pool, &self.sql.import, &events).await?;
        // This process's followers wake once it is settled (at once, unless an append
        // that took lower positions is still running); others learn it from a poll.
        crate::listener::advance(&self.head, self.head_position().await?);
        Ok(head)
    }
}
