//! Opening and configuring the two kinds of connection the store uses: the one
//! write connection (owned by the writer thread) and the read connections (one per
//! reader thread).
//!
//! Both run in WAL mode, so readers see the last committed state and never block
//! the writer or each other.

use crate::config::SqliteConfig;
use crate::error::store_error;
use rewind::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// How long a connection waits for the file's write lock (held by a projector
/// sharing the file, a long checkpoint) before failing with "database is locked".
const BUSY_LIMIT: Duration = Duration::from_secs(30);
const BUSY_POLL: Duration = Duration::from_micros(100);

/// The busy handler of every connection: re-try every 100 µs, up to [`BUSY_LIMIT`].
/// SQLite's own handler sleeps 1, 2, 5, 10, … 100 ms between tries, which turned each
/// brief overlap between the store's writer and a projector into milliseconds of
/// latency (about a fifth of the BankAPI's HTTP throughput).
pub(crate) fn retry_soon(attempt: i32) -> bool {
    if BUSY_POLL.saturating_mul(attempt.max(0) as u32) >= BUSY_LIMIT {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

/// Page cache per connection, in KiB (SQLite takes a negative `cache_size` as KiB).
const CACHE_KIB: i64 = 16 * 1024;

/// The commit that grows the write-ahead log past this many pages also copies it
/// into the database file, and the writer waits for that. Half SQLite's default:
/// shorter waits (BankAPI deposits at 7,500/s: p99 6.4–7.0 ms instead of 7.4–10.7 ms)
/// for about 5% of throughput (`BENCHMARKS.md`, BankAPI over HTTP).
const CHECKPOINT_PAGES: i64 = 500;

/// After a checkpoint, the write-ahead log file is truncated to at most this many
/// bytes, so one large batch does not leave a large file behind.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens (creating if needed) the write connection: WAL, the configured
/// `synchronous` level.
pub(crate) fn open_writer(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(store_error)?;
    conn.busy_handler(Some(retry_soon)).map_err(store_error)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(store_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid(format!(
            "{} cannot use write-ahead logging (journal mode stays `{mode}`); the store needs a file on a local disk",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value()).map_err(store_error)?;
    conn.pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |_| Ok(())).map_err(store_error)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB).map_err(store_error)?;
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(store_error)?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES).map_err(store_error)?;
    // Room for the store's statements and those of read models sharing the writer.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens a read connection. It is read-write at the file level (WAL readers need
/// the shared-memory index) but refuses to change the database.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(store_error)?;
    conn.busy_handler(Some(retry_soon)).map_err(store_error)?;
    conn.pragma_update(None, "query_only", true).map_err(store_error)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB).map_err(store_error)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}
