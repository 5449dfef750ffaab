//! A read model database on SQLite: one write connection that projectors share and a
//! small pool of read connections for queries.
//!
//! The write connection is serialized by a mutex and used only on blocking threads
//! (`spawn_blocking`), so projector transactions never stall the async workers. The
//! file may be the event store's own file (the default in the BankAPI) or another;
//! WAL mode lets queries read while a projector writes.

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
/// model.write(|conn| conn.execute_batch("CREATE TABLE t (x INTEGER)").map_err(rewind::StoreError::backend)).await.unwrap();
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
    /// Held only on blocking threads, for one transaction at a time.
    writer: Mutex<Connection>,
    /// Idle read connections; a busy pool opens another.
    readers: Mutex<Vec<Connection>>,
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::backend(error)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|join| StoreError::Backend(Box::new(join)))?
}

impl SqliteReadModel {
    /// Opens (creating if needed) a read model database in WAL mode with
    /// `synchronous=FULL`, and its projector checkpoint table.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteReadModel, StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer_path = path.clone();
        let writer = blocking(move || {
            let mut conn = Connection::open(&writer_path).map_err(backend)?;
            conn.busy_handler(Some(crate::connection::retry_soon)).map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
            conn.execute_batch(include_str!("read_model/checkpoints.sql")).map_err(backend)?;
            Ok(conn)
        })
        .await?;
        Ok(SqliteReadModel {
            inner: Arc::new(Inner { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` with the write connection on a blocking thread.
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut conn)
        })
        .await
    }

    /// Runs a query on a read connection on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let idle = inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => {
                    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let mut conn = Connection::open_with_flags(&inner.path, flags).map_err(backend)?;
                    conn.busy_handler(Some(crate::connection::retry_soon)).map_err(backend)?;
                    conn.pragma_update(None, "query_only", true).map_err(backend)?;
                    conn
                }
            };
            let result = query(&conn).map_err(backend);
            inner.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
    }
}
