//! Reads: a small pool of reader threads, each owning one read connection, and the
//! queries they run.
//!
//! A read is a job sent to the pool; whichever reader is free runs it with its
//! cached prepared statements and answers through a oneshot, so blocking SQLite
//! work never runs on the async workers and reads run in parallel with each other
//! and with the writer (WAL readers see the last committed state and take no lock
//! the writer waits for). Each query is one statement, hence one consistent
//! snapshot of the file.

use crate::config::SqliteConfig;
use crate::connection::open_reader;
use crate::error::store_error;
use crate::row::{optional_u64, recorded_event, snapshot, sql_int};
use rewind::{Direction, EventFilter, GlobalPosition, RecordedEvent, Snapshot, StoreError, StreamInfo, StreamVersion};
use rusqlite::{Connection, Params, Statement, params};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A read to run on some reader's connection.
type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The reader threads and the queue they take jobs from.
pub(crate) struct ReaderPool {
    jobs: mpsc::Sender<Job>,
    threads: Vec<JoinHandle<Result<(), StoreError>>>,
}

impl ReaderPool {
    /// Opens `config.readers` read connections, each on its own thread.
    pub(crate) async fn start(path: &Path, config: &SqliteConfig) -> Result<ReaderPool, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        // Idle readers take turns waiting on the queue; the lock is held only while
        // waiting for the next job, never while running one.
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(config.readers);
        let mut opened = Vec::with_capacity(config.readers);
        for index in 0..config.readers {
            let (ready, open) = oneshot::channel();
            let (path, queue) = (path.to_owned(), queue.clone());
            let thread = std::thread::Builder::new()
                .name(format!("rewind-sqlite-reader-{index}"))
                .spawn(move || match open_reader(&path) {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        serve(conn, &queue)
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        Ok(())
                    }
                })
                .map_err(StoreError::backend)?;
            threads.push(thread);
            opened.push(open);
        }
        let pool = ReaderPool { jobs, threads };
        for open in opened {
            open.await.map_err(|_| StoreError::Closed)??;
        }
        Ok(pool)
    }

    /// Runs `read` on a free reader and returns its answer.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(read(conn));
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops taking reads; the threads end once the queued reads are answered.
    pub(crate) fn stop(self) -> Vec<JoinHandle<Result<(), StoreError>>> {
        drop(self.jobs);
        self.threads
    }
}

fn serve(conn: Connection, queue: &Mutex<mpsc::Receiver<Job>>) -> Result<(), StoreError> {
    loop {
        // A reader that panicked while waiting left the receiver intact.
        let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        match next {
            Ok(job) => job(&conn),
            Err(mpsc::RecvError) => break,
        }
    }
    conn.close().map_err(|(_, error)| store_error(error))
}

/// Events of one stream, from `from` (inclusive) in `direction`, at most `limit`.
pub(crate) fn read_stream(
    conn: &Connection,
    stream_id: &str,
    from: StreamVersion,
    direction: Direction,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let sql = match direction {
        Direction::Forward => include_str!("reader/read_stream_forward.sql"),
        Direction::Backward => include_str!("reader/read_stream_backward.sql"),
    };
    let mut statement = conn.prepare_cached(sql).map_err(store_error)?;
    collect(&mut statement, params![stream_id, sql_int(from.0)], limit)
}

/// Events of the global order from `from` (inclusive) that pass `filter`, at most `limit`.
pub(crate) fn read_all(
    conn: &Connection,
    from: GlobalPosition,
    limit: usize,
    filter: &EventFilter,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let from = sql_int(from.0);
    if filter.is_all() {
        let mut statement = conn.prepare_cached(include_str!("reader/read_all.sql")).map_err(store_error)?;
        return collect(&mut statement, params![from], limit);
    }
    let prefix = filter.stream_prefix.as_deref().map(str::as_bytes);
    let types = if filter.event_types.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&filter.event_types).map_err(StoreError::backend)?)
    };
    let mut statement = conn.prepare_cached(include_str!("reader/read_all_filtered.sql")).map_err(store_error)?;
    collect(&mut statement, params![from, prefix, types], limit)
}

/// A stream's current version ([`StreamVersion::NONE`] if it has no events).
pub(crate) fn stream_version(conn: &Connection, stream_id: &str) -> Result<StreamVersion, StoreError> {
    let mut statement = conn.prepare_cached(include_str!("reader/stream_version.sql")).map_err(store_error)?;
    let version = statement.query_row([stream_id], |row| optional_u64(row, 0)).map_err(store_error)?;
    Ok(StreamVersion(version.unwrap_or(0)))
}

/// The event stored with this id, if any (the unique index on `event_id`).
pub(crate) fn read_event(conn: &Connection, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
    let mut statement = conn.prepare_cached(include_str!("reader/read_event.sql")).map_err(store_error)?;
    Ok(collect(&mut statement, [event_id.as_bytes()], 1)?.pop())
}

/// A page of streams whose id starts with `prefix`, after `after`, in id order.
pub(crate) fn list_streams(
    conn: &Connection,
    prefix: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<StreamInfo>, StoreError> {
    // Two index probes per stream, however many events each holds.
    let mut next = conn.prepare_cached(include_str!("reader/next_stream.sql")).map_err(store_error)?;
    let mut streams = Vec::with_capacity(limit.min(1_024));
    let mut last = after.to_owned();
    while streams.len() < limit {
        let found: Option<String> = next.query_row(params![last, prefix], |row| row.get(0)).map_err(store_error)?;
        let Some(stream_id) = found.filter(|id| id.starts_with(prefix)) else { break };
        let version = stream_version(conn, &stream_id)?;
        last.clone_from(&stream_id);
        streams.push(StreamInfo { stream_id, version });
    }
    Ok(streams)
}

/// The stored snapshot of a stream.
pub(crate) fn load_snapshot(conn: &Connection, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
    let mut statement = conn.prepare_cached(include_str!("reader/load_snapshot.sql")).map_err(store_error)?;
    let mut rows = statement.query([stream_id]).map_err(store_error)?;
    rows.next().map_err(store_error)?.map(snapshot).transpose()
}

fn collect(statement: &mut Statement<'_>, params: impl Params, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut rows = statement.query(params).map_err(store_error)?;
    let mut events = Vec::with_capacity(limit.min(1_024));
    while events.len() < limit {
        let Some(row) = rows.next().map_err(store_error)? else { break };
        events.push(recorded_event(row)?);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::append::Appender;
    use rewind::store::StreamAppend;
    use rewind::{ExpectedVersion, Metadata, NewEvent};
    use rusqlite::StatementStatus;

    /// A migrated in-memory store holding `n` events in one stream.
    fn store_with(n: usize) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        crate::schema::migrate(&conn).expect("migrate");
        let events = (0..n)
            .map(|i| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "E".into(),
                data: format!("{{\"i\":{i}}}"),
                metadata: Metadata::default(),
            })
            .collect();
        let append = StreamAppend { stream_id: "s".into(), expected: ExpectedVersion::Any, events };
        Appender::new(&conn, 0, 0).apply(&[append]).expect("append");
        conn
    }

    #[test]
    fn reads_with_different_limits_reuse_one_prepared_statement() {
        let conn = store_with(20);
        let reprepares = || {
            [
                include_str!("reader/read_all.sql"),
                include_str!("reader/read_stream_forward.sql"),
                include_str!("reader/stream_version.sql"),
                include_str!("reader/next_stream.sql"),
            ]
            .map(|sql| conn.prepare_cached(sql).expect("cached").get_status(StatementStatus::RePrepare))
        };
        let mut before = None;
        for limit in [1, 5, 3, 20, 7, 2, 9] {
            let events = read_all(&conn, GlobalPosition(1), limit, &EventFilter::all()).expect("read");
            assert_eq!(events.len(), limit);
            let forward = read_stream(&conn, "s", StreamVersion(1), Direction::Forward, limit).expect("read");
            assert_eq!(forward.len(), limit);
            assert_eq!(stream_version(&conn, "s").expect("version"), StreamVersion(20));
            assert_eq!(list_streams(&conn, "", "", limit).expect("list").len(), 1);
            // A bound LIMIT, or `stream_id = ?1` with ORDER BY, makes SQLite re-plan
            // the statement on every execution.
            let now = reprepares();
            assert_eq!(*before.get_or_insert(now), now, "re-prepared at limit {limit}");
        }
    }
}
