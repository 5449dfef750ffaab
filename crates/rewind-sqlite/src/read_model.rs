//! A read model database on SQLite: transactions for projectors and a small pool of
//! read connections for queries.
//!
//! Two ways to write. On a file of its own, the read model keeps one write
//! connection, serialized by a mutex and used only on blocking threads. On the event
//! store's own file ([`SqliteReadModel::sharing`], the BankAPI's default), every
//! transaction runs on the store's writer thread inside its group commit: events and
//! read model then share one writer (no lock hand-over between connections) and one
//! fsync per group. Either way WAL mode lets queries read while writes go on.

use crate::connection::retry_soon;
use crate::sqlite_store::SqliteStore;
use rewind::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A SQLite read model database. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let model = rewind_sqlite::SqliteReadModel::open(dir.path().join("read.db")).await.unwrap();
/// model
///     .transaction(|conn| conn.execute_batch("CREATE TABLE t (x INTEGER)").map_err(rewind::StoreError::backend))
///     .await
///     .unwrap();
/// let count: i64 = model.read(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))).await.unwrap();
/// assert_eq!(count, 0);
/// # });
/// ```
#[derive(Clone)]
pub struct SqliteReadModel {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    /// Idle read connections; a busy pool opens another.
    readers: Mutex<Vec<Connection>>,
}

enum Writer {
    /// Held only on blocking threads, for one transaction at a time.
    Own(Mutex<Connection>),
    /// The event store's writer thread.
    Store(Arc<SqliteStore>),
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::backend(error)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|join| StoreError::Backend(Box::new(join)))?
}

fn execute(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

impl SqliteReadModel {
    /// Opens (creating if needed) a read model database of its own, in WAL mode with
    /// `synchronous=FULL`, with its projector checkpoint table.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteReadModel, StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer_path = path.clone();
        let conn = blocking(move || {
            let mut conn = Connection::open(&writer_path).map_err(backend)?;
            conn.busy_handler(Some(retry_soon)).map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
            conn.set_prepared_statement_cache_capacity(64);
            Ok(conn)
        })
        .await?;
        SqliteReadModel::with_writer(path, Writer::Own(Mutex::new(conn))).await
    }

    /// A read model in the event store's own file, written through the store's writer
    /// (see the module docs).
    pub async fn sharing(store: Arc<SqliteStore>) -> Result<SqliteReadModel, StoreError> {
        let path = store.path().to_path_buf();
        SqliteReadModel::with_writer(path, Writer::Store(store)).await
    }

    async fn with_writer(path: PathBuf, writer: Writer) -> Result<SqliteReadModel, StoreError> {
        let model = SqliteReadModel { inner: Arc::new(Inner { path, writer, readers: Mutex::new(Vec::new()) }) };
        model
            .transaction(|conn| conn.execute_batch(include_str!("read_model/checkpoints.sql")).map_err(backend))
            .await?;
        Ok(model)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this model lives in an event store's file, written through its writer
    /// ([`SqliteReadModel::sharing`]), so projectors can be written inline
    /// ([`SqliteProjector::inline`](crate::SqliteProjector::inline)).
    pub fn is_sharing(&self) -> bool {
        self.store().is_some()
    }

    /// The event store whose file and writer this model shares, if it does.
    pub(crate) fn store(&self) -> Option<&Arc<SqliteStore>> {
        match &self.inner.writer {
            Writer::Store(store) => Some(store),
            Writer::Own(_) => None,
        }
    }

    /// Runs `work` in one write transaction: committed if it returns `Ok`, rolled
    /// back if it returns `Err` (that error is returned). A failed commit is returned
    /// as `E::from(StoreError)`.
    pub async fn transaction<T, E>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.inner.writer {
            Writer::Own(_) => {
                let inner = self.inner.clone();
                let outcome = blocking(move || {
                    let Writer::Own(conn) = &inner.writer else {
                        return Err(StoreError::Invalid("read model has no connection of its own".into()));
                    };
                    let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    execute(&conn, "BEGIN IMMEDIATE").map_err(backend)?;
                    let result = work(&conn);
                    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
                    if let Err(error) = execute(&conn, end) {
                        let _ = execute(&conn, "ROLLBACK");
                        return Err(backend(error));
                    }
                    Ok(result)
                })
                .await;
                outcome.map_err(E::from)?
            }
            Writer::Store(store) => {
                // The writer answers only "committed" or "rolled back"; the work's own
                // value or error comes back through this slot.
                let slot: Arc<Mutex<Option<Result<T, E>>>> = Arc::default();
                let filled = slot.clone();
                let run = store
                    .run_in_group(Box::new(move |conn| {
                        let result = work(conn);
                        let failed = result.is_err();
                        *filled.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                        if failed {
                            Err(StoreError::Invalid("read-model work failed; rolled back".into()))
                        } else {
                            Ok(())
                        }
                    }))
                    .await;
                let result = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                match (run, result) {
                    (Ok(()), Some(result)) => result,
                    (Err(_), Some(Err(own))) => Err(own),
                    (Err(error), _) => Err(E::from(error)),
                    (Ok(()), None) => Err(E::from(StoreError::Invalid("read-model work did not run".into()))),
                }
            }
        }
    }

    /// Runs a query on a read connection on a blocking thread. For queries that may
    /// take a while (scans, lists); see [`lookup`](SqliteReadModel::lookup) for short ones.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.query(query)).await
    }

    /// Runs a short query — a lookup by key, a few microseconds — right on the
    /// calling thread. Handing such a query to a blocking thread and back costs more
    /// than the query (two thread wake-ups), so the BankAPI's answers use this. It
    /// blocks the caller for as long as the query runs: keep scans on
    /// [`read`](SqliteReadModel::read).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let model = rewind_sqlite::SqliteReadModel::open(dir.path().join("read.db")).await.unwrap();
    /// let two: i64 = model.lookup(|conn| conn.query_row("SELECT 1 + 1", [], |r| r.get(0))).unwrap();
    /// assert_eq!(two, 2);
    /// # });
    /// ```
    pub fn lookup<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.inner.query(query)
    }
}

impl Inner {
    /// Runs `query` on an idle read connection (opening one if none is idle).
    fn query<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let mut conn = Connection::open_with_flags(&self.path, flags).map_err(backend)?;
                conn.busy_handler(Some(retry_soon)).map_err(backend)?;
                conn.pragma_update(None, "query_only", true).map_err(backend)?;
                conn
            }
        };
        let result = query(&conn).map_err(backend);
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        result
    }
}
