//! The writer thread: the only owner of the write connection, and the place where
//! group commit happens.
//!
//! Requests (appends, batches, snapshot saves) arrive on a channel. The writer
//! takes every request waiting at that moment (up to
//! [`SqliteConfig::max_group_events`](crate::SqliteConfig::max_group_events)) into
//! one transaction, so appends that arrive together share one `COMMIT` and one
//! fsync. Each request keeps its own fate: one that fails (a version conflict, a
//! duplicate id) is undone alone, by a savepoint when it could have written part
//! of itself (see `Writer::apply_group`), and the rest of the group still commits.
//! A batch is one request, so all its streams commit or none does. Inline
//! projectors (`inline.rs`) are written in the same transaction, after the
//! requests.
//!
//! The writer does not wait for the disk while others wait for it: it hands each
//! committed group to the syncer (`syncer.rs`) and starts the next one. A group
//! alone is committed with `synchronous=FULL` and answered by the writer. While
//! requests come one right after another's answer, the writer polls for the next
//! one briefly instead of sleeping (`Writer::next_request`).
//!
//! Promises:
//! * A caller is answered only after `COMMIT` returned and (with
//!   [`Synchronous::Full`]) an fsync of the log covered it: SQLite's own inside
//!   `COMMIT` for a group alone, the syncer's otherwise.
//! * The head [`watch`] is raised (by the syncer's code, on the writer thread for a
//!   group alone) to the last durable position, so followers wake without polling;
//!   positions are assigned in commit order by this one thread, so everything below
//!   the published head is committed.
//! * If the transaction itself fails, every request of the group that had not
//!   already failed gets [`StoreError::Backend`]; the writer goes on with the next
//!   group, unless the failure was an fsync inside `COMMIT`, which poisons the
//!   store as a failed fsync of the syncer does (`syncer.rs`). A full disk
//!   (`SQLITE_FULL`) fails only its group: nothing was promised, and appends
//!   succeed again once there is room.

use crate::append::Appender;
use crate::config::{SqliteConfig, Synchronous};
use crate::connection::open_writer;
use crate::error::{GroupError, is_failed_fsync, store_error};
use crate::inline::{self, InlineProjections, Progress};
use crate::row::{get_u64, micros, sql_int};
use crate::schema::migrate;
use crate::stats::StatsCounters;
use crate::syncer::{Committed, Syncer};
use chrono::{DateTime, Utc};
use rewind::store::StreamAppend;
use rewind::{AppendResult, GlobalPosition, RecordedEvent, Snapshot, StoreError};
use rusqlite::{Connection, params};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};

/// How many requests may wait for the writer before senders wait for room.
const QUEUE: usize = 4_096;

/// How long the writer polls for the next request before it sleeps, when requests
/// have been coming that soon. Waking a sleeping thread took 30–50 µs on the
/// 2-core VM the benchmarks ran on (an idle virtual CPU halts), a tenth of a
/// 100-event append; a caller appending in a loop sends its next request about
/// 40 µs after its answer, so polling catches it (`BENCHMARKS.md`, issue 3).
const POLL: Duration = Duration::from_micros(150);

/// Work run on the write connection inside a group's transaction.
pub(crate) type RunWork = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

/// What a request asks the writer to do.
pub(crate) enum Work {
    /// `append` (one element) or `append_batch`: one atomic unit.
    Append(Vec<StreamAppend>),
    /// `save_snapshot`.
    SaveSnapshot(Snapshot),
    /// `import`: events copied verbatim from another store; one atomic unit.
    Import(Vec<RecordedEvent>),
    /// A read-model transaction sharing the file (a projector's batch): it joins the
    /// group, so events and read model share one commit and one fsync. Taken out of
    /// its cell when applied (groups are applied by reference).
    Run(std::cell::Cell<Option<RunWork>>),
}

impl Work {
    /// Roughly how much of a group this request fills.
    fn weight(&self) -> usize {
        match self {
            Work::Append(appends) => appends.iter().map(|a| a.events.len()).sum::<usize>().max(1),
            Work::Import(events) => events.len().max(1),
            Work::SaveSnapshot(_) | Work::Run(_) => 1,
        }
    }

    /// Whether the request writes with at most one statement that can fail by its
    /// own decision, so that a failure leaves nothing of it behind without a
    /// savepoint: a snapshot save, or a single append of at most one event. (A
    /// batch can fail in a later stream after writing an earlier one.)
    fn writes_at_most_once(&self) -> bool {
        match self {
            Work::Append(appends) => appends.len() == 1 && appends[0].events.len() <= 1,
            Work::SaveSnapshot(_) => true,
            Work::Run(_) | Work::Import(_) => false,
        }
    }
}

/// What a request ends with: its results (empty for a snapshot save) or its error.
pub(crate) type Outcome = Result<Vec<AppendResult>, StoreError>;

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Outcome>;

/// One request with the channel its caller waits on.
pub(crate) struct Request {
    pub(crate) work: Work,
    pub(crate) reply: Reply,
    /// The caller's span, where the size of its group is recorded.
    pub(crate) span: tracing::Span,
}

/// The store's side of the writer: where requests go, and the thread to join.
pub(crate) struct WriterHandle {
    requests: mpsc::Sender<Request>,
    thread: JoinHandle<Result<(), StoreError>>,
    committing: Arc<AtomicU64>,
}

impl WriterHandle {
    /// Starts the writer thread: opens and migrates the file, then serves requests.
    /// Returns once the file is ready, with the head watch set to the last position.
    pub(crate) async fn start(
        path: PathBuf,
        config: &SqliteConfig,
        stats: Arc<StatsCounters>,
        inline: Arc<InlineProjections>,
    ) -> Result<(WriterHandle, watch::Receiver<GlobalPosition>), StoreError> {
        let (requests, receiver) = mpsc::channel(QUEUE);
        let (head, watcher) = watch::channel(GlobalPosition::START);
        let (ready, opened) = oneshot::channel();
        let config = config.clone();
        let committing = Arc::new(AtomicU64::new(0));
        let raised = committing.clone();
        let thread = std::thread::Builder::new()
            .name("rewind-sqlite-writer".into())
            .spawn(move || {
                let writer = match Writer::open(path, &config, head, stats, inline, raised) {
                    Ok(writer) => writer,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return Ok(());
                    }
                };
                let _ = ready.send(Ok(()));
                writer.run(receiver)
            })
            .map_err(StoreError::backend)?;
        opened.await.map_err(|_| StoreError::Closed)??;
        Ok((WriterHandle { requests, thread, committing }, watcher))
    }

    /// Hands a request to the writer and waits for its answer.
    pub(crate) async fn submit(&self, work: Work) -> Result<Vec<AppendResult>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        self.requests.send(Request { work, reply, span }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The last position this writer has committed or is committing (raised just
    /// before each `COMMIT`); above the head while a commit is not yet durable.
    pub(crate) fn committing(&self) -> u64 {
        self.committing.load(Ordering::SeqCst)
    }

    /// Makes the store believe a commit of its own up to `position` is under way
    /// (or none, at the head), to test what reads do meanwhile.
    #[cfg(test)]
    pub(crate) fn pretend_committing(&self, position: u64) {
        self.committing.store(position, Ordering::SeqCst);
    }

    /// Stops taking requests and returns the thread, which ends once it has
    /// answered every request already queued.
    pub(crate) fn stop(self) -> JoinHandle<Result<(), StoreError>> {
        drop(self.requests);
        self.thread
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    /// Makes each committed group durable, then answers it and raises the head.
    syncer: Syncer,
    /// Projectors written in each group's transaction.
    inline: Arc<InlineProjections>,
    /// See [`WriterHandle::committing`].
    committing: Arc<AtomicU64>,
    stats: Arc<StatsCounters>,
    max_group_events: usize,
    /// Whether acknowledged groups must be fsynced (`Synchronous::Full`).
    fsync: bool,
    /// Whether the connection is at `synchronous=FULL` now (SQLite syncs the log
    /// inside `COMMIT`) rather than `NORMAL` (the syncer does, after it).
    sync_in_commit: Cell<bool>,
    /// Whether no request arrived while the last group committed.
    quiet: Cell<bool>,
    /// Whether to poll for the next request before sleeping (see `next_request`).
    poll: Cell<bool>,
}

impl Writer {
    fn open(
        path: PathBuf,
        config: &SqliteConfig,
        head: watch::Sender<GlobalPosition>,
        stats: Arc<StatsCounters>,
        inline: Arc<InlineProjections>,
        committing: Arc<AtomicU64>,
    ) -> Result<Writer, StoreError> {
        let conn = open_writer(&path, config)?;
        migrate(&conn)?;
        let last = read_head(&conn).map_err(store_error)?;
        head.send_replace(GlobalPosition(last));
        committing.store(last, Ordering::SeqCst);
        let fsync = config.synchronous == Synchronous::Full;
        let syncer = Syncer::start(&path, fsync, head)?;
        let max_group_events = config.max_group_events;
        let (sync_in_commit, quiet, poll) = (Cell::new(false), Cell::new(true), Cell::new(false));
        Ok(Writer { conn, syncer, inline, committing, stats, max_group_events, fsync, sync_in_commit, quiet, poll })
    }

    fn run(self, mut requests: mpsc::Receiver<Request>) -> Result<(), StoreError> {
        while let Some(first) = self.next_request(&mut requests) {
            let group = self.gather(first, &mut requests);
            let events = group.iter().map(|request| request.work.weight()).sum();
            rewind::telemetry::record_group_commit(group.iter().map(|request| &request.span), events);
            // A group alone (nothing waiting, nothing being synced, and nothing
            // arrived while the previous group committed, so no one is likely to
            // arrive during this one) has nothing to overlap its fsync with: SQLite
            // syncs the log inside its COMMIT, which measured about a tenth faster
            // for 100-event appends than an fdatasync right after it
            // (benches/append.rs), and the writer answers it. Under concurrent load
            // the syncer's overlap wins, hence the check on the previous group.
            let alone = self.fsync && self.quiet.get() && requests.is_empty() && self.syncer.idle();
            let durable = self.set_sync_in_commit(alone) && alone;
            let committed = self.commit_group(group, durable);
            let more = !requests.is_empty();
            self.quiet.set(!more);
            self.syncer.finish_group(committed, more);
        }
        let Writer { conn, syncer, .. } = self;
        // Every committed group is answered before the connection closes.
        syncer.finish();
        conn.close().map_err(|(_, error)| store_error(error))
    }

    /// Waits for the next request: first polls for up to [`POLL`] if the last one
    /// came that soon after the group before it, then sleeps.
    ///
    /// Polling yields the CPU on every turn, so a runnable thread is not kept
    /// waiting, and it stops after one miss until a request again comes soon: an
    /// idle store does not poll. It is skipped while the syncer has a group in
    /// flight: the next group could not be answered before that fsync anyway, and
    /// waiting lets it gather more requests.
    fn next_request(&self, requests: &mut mpsc::Receiver<Request>) -> Option<Request> {
        let finished = Instant::now();
        if self.poll.get() && self.syncer.idle() {
            loop {
                match requests.try_recv() {
                    Ok(request) => return Some(request),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) if finished.elapsed() < POLL => std::thread::yield_now(),
                    Err(TryRecvError::Empty) => break,
                }
            }
        }
        let request = requests.blocking_recv();
        self.poll.set(finished.elapsed() < POLL);
        request
    }

    /// The first request plus whatever else is already waiting, up to the limit.
    fn gather(&self, first: Request, requests: &mut mpsc::Receiver<Request>) -> Vec<Request> {
        let mut weight = first.work.weight();
        let mut group = vec![first];
        while weight < self.max_group_events {
            let Ok(next) = requests.try_recv() else { break };
            weight += next.work.weight();
            group.push(next);
        }
        group
    }

    /// Sets `synchronous` to FULL (`on`) or NORMAL between transactions; false if
    /// the connection could not be switched (it stays as it was).
    fn set_sync_in_commit(&self, on: bool) -> bool {
        if self.sync_in_commit.get() == on {
            return true;
        }
        let pragma = if on { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
        match execute(&self.conn, pragma) {
            Ok(()) => {
                self.sync_in_commit.set(on);
                true
            }
            Err(error) => {
                tracing::warn!(%error, pragma, "could not switch the writer's synchronous level");
                false
            }
        }
    }

    /// Writes the group (`durable`: its COMMIT syncs the log); the syncer answers
    /// it once durable.
    fn commit_group(&self, group: Vec<Request>, durable: bool) -> Committed {
        let (works, replies): (Vec<Work>, Vec<Reply>) = group.into_iter().map(|r| (r.work, r.reply)).unzip();
        let (outcomes, written) = self.write_group(&works);
        debug_assert_eq!(outcomes.len(), replies.len(), "one outcome per request");
        let (head, progress) = written.map_or((None, Vec::new()), |(head, progress)| (Some(head), progress));
        Committed { replies, outcomes, head, progress, durable }
    }

    /// Runs one group in one transaction; returns one outcome per request, and if
    /// the transaction committed, the new head and the inline projectors' progress.
    fn write_group(&self, works: &[Work]) -> (Vec<Outcome>, Option<(u64, Vec<Progress>)>) {
        if let Some(refusal) = self.syncer.refusal() {
            return (self.fail_group(works.len(), refusal), None);
        }
        if let Err(error) = execute(&self.conn, "BEGIN IMMEDIATE") {
            return (self.fail_group(works.len(), store_error(error)), None);
        }
        let mut outcomes = Vec::with_capacity(works.len());
        // Stored to the microsecond; inline projections see exactly what readers will.
        let now = Utc::now();
        let now = DateTime::from_timestamp_micros(micros(now)).unwrap_or(now);
        let (before, after) = match self.apply_group(works, &mut outcomes, now) {
            Ok(heads) => heads,
            Err(error) => {
                let _ = execute(&self.conn, "ROLLBACK");
                return (self.fail_group(works.len(), error), None);
            }
        };
        if works.len() == 1 && outcomes[0].is_err() {
            let _ = execute(&self.conn, "ROLLBACK");
            self.stats.record_group(1, 0, false);
            return (outcomes, None);
        }
        let progress = if after > before && !self.inline.is_empty() {
            let events = inline::appended_events(works, &outcomes, now);
            events.map(|events| self.inline.project(&self.conn, &events)).unwrap_or_default()
        } else {
            Vec::new()
        };
        // Raised before the commit can become visible to any reader (see `SqliteStore::read_all`).
        let previous = self.committing.fetch_max(after, Ordering::SeqCst);
        if let Err(error) = execute(&self.conn, "COMMIT") {
            if is_failed_fsync(&error) {
                // The log may hold this group's frames, and the kernel may have dropped
                // pages of earlier ones: nothing later can be promised durable.
                self.syncer.poison();
            }
            self.committing.store(previous, Ordering::SeqCst);
            let _ = execute(&self.conn, "ROLLBACK");
            let failed = self.fail_group(works.len(), store_error(error));
            // Requests that failed on their own keep their own error.
            return (outcomes.into_iter().zip(failed).map(|(own, group)| own.and(group)).collect(), None);
        }
        debug_assert!(after >= before, "a transaction only appends");
        self.stats.record_group(works.len() as u64, after - before, true);
        (outcomes, Some((after, progress)))
    }

    /// Applies each request of the group in turn, pushing its outcome. Returns the
    /// head before and after; an error dooms the whole group.
    ///
    /// Savepoints cost two statements per request, so a request gets one only when
    /// it could fail after writing part of itself while others share the
    /// transaction. A request alone in its group needs none (if it fails, the
    /// transaction is rolled back), and neither does a single append of at most one
    /// event or a snapshot save: its own decisions (conflict, duplicate) come before
    /// it writes, and a failed statement undoes itself; any other error fails the
    /// group.
    fn apply_group(
        &self,
        works: &[Work],
        outcomes: &mut Vec<Outcome>,
        now: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let head = read_head(&self.conn).map_err(store_error)?;
        let mut appender = Appender::new(&self.conn, head, micros(now));
        let alone = works.len() == 1;
        for work in works {
            let outcome = if alone || work.writes_at_most_once() {
                let before = appender.head;
                match apply(&self.conn, &mut appender, work) {
                    Err(error) if !alone && !is_decision(&error) => return Err(error),
                    outcome => {
                        debug_assert!(alone || outcome.is_ok() || appender.head == before, "a decision wrote nothing");
                        outcome
                    }
                }
            } else {
                apply_in_savepoint(&self.conn, &mut appender, work).map_err(store_error)?
            };
            outcomes.push(outcome);
        }
        Ok((head, appender.head))
    }

    /// The outcome of every request of a group whose transaction failed.
    fn fail_group(&self, requests: usize, error: StoreError) -> Vec<Outcome> {
        tracing::warn!(%error, requests, "sqlite group commit failed");
        self.stats.record_group(requests as u64, 0, false);
        let shared = GroupError(Arc::new(error));
        (0..requests).map(|_| Err(shared.to_store_error())).collect()
    }
}

/// Whether a request failed by its own decision (which it takes before writing)
/// rather than because the database failed.
fn is_decision(error: &StoreError) -> bool {
    matches!(error, StoreError::Conflict { .. } | StoreError::DuplicateEvent { .. } | StoreError::Invalid(_))
}

/// Runs one request in a savepoint, rolled back if the request fails. The outer
/// error is a failure of the savepoint itself, which dooms the whole group.
fn apply_in_savepoint(conn: &Connection, appender: &mut Appender<'_>, work: &Work) -> Result<Outcome, rusqlite::Error> {
    execute(conn, "SAVEPOINT request")?;
    let head = appender.head;
    let outcome = apply(conn, appender, work);
    if outcome.is_err() {
        execute(conn, "ROLLBACK TO request")?;
        appender.head = head;
    }
    execute(conn, "RELEASE request")?;
    Ok(outcome)
}

/// Runs one request; on error it may have written part of itself, which the caller
/// must roll back.
fn apply(conn: &Connection, appender: &mut Appender<'_>, work: &Work) -> Outcome {
    match work {
        Work::Append(appends) => appender.apply(appends),
        Work::SaveSnapshot(snapshot) => save_snapshot(conn, snapshot).map(|()| Vec::new()),
        Work::Import(events) => appender.import(events).map(|()| Vec::new()),
        Work::Run(cell) => {
            let work = cell.take().ok_or_else(|| StoreError::Invalid("read-model work ran twice".into()))?;
            // The writer thread must survive whatever the caller's code does.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))) {
                Ok(result) => result.map(|()| Vec::new()),
                Err(_) => Err(StoreError::Backend("read-model work panicked; rolled back".into())),
            }
        }
    }
}

fn save_snapshot(conn: &Connection, snapshot: &Snapshot) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(include_str!("writer/save_snapshot.sql")).map_err(store_error)?;
    statement
        .execute(params![
            snapshot.stream_id,
            sql_int(snapshot.version.0),
            snapshot.tag,
            snapshot.data,
            micros(snapshot.created_at)
        ])
        .map_err(store_error)?;
    Ok(())
}

fn read_head(conn: &Connection) -> Result<u64, rusqlite::Error> {
    conn.prepare_cached(include_str!("writer/head.sql"))?.query_row([], |row| get_u64(row, 0))
}

/// Runs a transaction-control statement, prepared once per connection.
fn execute(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
