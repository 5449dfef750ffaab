//! The writer: one task per store that turns pending appends into group commits.
//!
//! Callers hand their (already encoded) appends to the writer over a channel and wait
//! for its reply. The writer takes everything waiting, up to a budget of events, and
//! commits it in ONE transaction on its own connection. Only after `COMMIT` returns
//! does any caller get its reply. Two ways to run that transaction:
//!
//! * The fast path (`layer.rs`, one round trip): one call of a schema function per
//!   layer (`sql/schema_v3.sql`) that checks every append's expected version, takes
//!   positions, assigns versions and inserts the rows (a multi-row
//!   `INSERT ... SELECT FROM unnest(...)`); several calls are pipelined between
//!   `BEGIN` and `COMMIT`, a lone call is a transaction of its own. A conflict fails
//!   its request alone; the others commit.
//! * The careful path (two round trips): `BEGIN`, take positions, read the streams'
//!   versions and which event ids are stored; decide in Rust (`careful.rs`,
//!   `group.rs`: the exact rules of `rewind::MemoryStore`); insert; commit.
//!
//! The settled head is read in the same round trip, right after `COMMIT`; the writer
//! moves the store's head watch to it and hands its last position to the listener
//! task ([`crate::listener`]), which waits until that is settled too and tells other
//! processes.
//!
//! Requests the fast path cannot decide (event ids stored already: a retry or a
//! duplicate; an id repeated within one request; any SQL error) go to the careful
//! path, in a transaction after the fast one. If the careful transaction fails with
//! an SQL error, each of its requests is retried in a transaction of its own, so one
//! bad request fails alone. If the connection is lost, or a round trip gets no answer
//! within the connection's `query_timeout` ([`crate::connection`]: the connection is
//! then dropped), the requests not yet answered get [`StoreError::Backend`] (outcome
//! unknown, as the trait allows) and the next group reconnects. If no connection can
//! be made, nothing was sent: they get [`StoreError::Unavailable`].
//!
//! # Why followers never skip an event
//!
//! Transactions of many processes commit concurrently, so positions cannot be
//! committed in order; instead a reader waits until the positions below an event
//! are *settled*. Three rules make that checkable in one comparison:
//!
//! 1. A transaction takes its positions once, before it writes anything, in
//!    `take_positions` (`sql/schema_v3.sql`): under the schema's advisory lock it
//!    gets its transaction id (`pg_current_xact_id()`, which assigns it) and the next
//!    positions of a sequence, then releases the lock. The lock covers microseconds,
//!    not the transaction. So for any two transactions holding positions, the one
//!    with the lower positions has the lower transaction id.
//! 2. Every event row records its transaction's id (`tx`, a column default).
//! 3. Reads of the global order and the head (`sql/read_all.sql`, `sql/head.sql`)
//!    keep only rows with `tx < pg_snapshot_xmin(pg_current_snapshot())`: rows of
//!    transactions older than every transaction still running when the statement's
//!    snapshot was taken.
//!
//! Take a row at position `p` that a read returns. Any position `q < p` was taken by
//! a transaction with an id below `p`'s (rule 1), hence below the snapshot's xmin,
//! hence finished when the snapshot was taken: committed, so its row at `q` is in
//! the same snapshot, or rolled back, so `q` stays a hole forever. A reader doing
//! `position > last_seen` therefore never skips an event that commits late, and
//! never waits on a hole. The rows a read keeps are a prefix of the positions above
//! `from` (ids grow with positions), so a page never jumps over a row it withholds.
//!
//! The price: an event is readable only once every transaction older than its own
//! has ended, anywhere on the server (xmin does not know which transactions append
//! here). Short transactions delay it by their length; a stalled client is ended by
//! `idle_in_transaction_session_timeout` ([`crate::connection`]). Appends never wait
//! for it, only readers.
//!
//! Version checks no longer run under a lock: two transactions that decide the same
//! stream version race, and the unique index on `(stream_id, stream_version)`
//! refuses the second one (at READ COMMITTED, a check that read before the first
//! committed still fails at its INSERT). The writer then decides the group again on
//! the careful path, which reads the new state (and retries while it keeps losing
//! such races). Event ids are decided the same way by their unique index. A
//! transaction refused after taking positions leaves a hole; an `ExpectedVersion`
//! conflict found by the check takes none.
//!
//! The writer's connection sets `default_transaction_isolation` to READ COMMITTED,
//! and every `BEGIN` of the writer names the level, so each statement reads the
//! latest committed state whatever the server's or role's default.
//!
//! Both paths run with `enable_seqscan = off` and generic plans on the writer's
//! connection (see `prepare`).

use crate::careful::run_careful;
use crate::connection::{ConnectError, Connector, Driver};
use crate::error::{from_pg, from_pg_ref};
use crate::group::PreparedAppend;
use crate::layer::run_fast;
use crate::listener::advance;
use crate::options::SlowCommits;
use crate::sql::Sql;
use rewind::{AppendResult, GlobalPosition, StoreError};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// What the writer answers one request with.
pub(crate) type Reply = Result<Vec<AppendResult>, StoreError>;

/// One caller's request: a single append or an atomic `append_batch`.
pub(crate) struct Pending {
    pub appends: Vec<PreparedAppend>,
    pub reply: oneshot::Sender<Reply>,
    /// The caller's span, where the size of its group is recorded.
    pub span: tracing::Span,
}

impl Pending {
    pub(crate) fn event_count(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }
}

/// Counts of the writer's work since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Append transactions committed (each carries one group).
    pub transactions: u64,
    /// Requests (`append` or `append_batch` calls) answered with success.
    pub appends: u64,
    /// Events written.
    pub events: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    transactions: AtomicU64,
    appends: AtomicU64,
    events: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }
}

/// The statements of the writer's connection, prepared once per connection.
pub(crate) struct Statements {
    pub append_layer: Statement,
    pub append_one: Statement,
    pub take_positions: Statement,
    pub head: Statement,
    pub versions: Statement,
    pub stored_ids: Statement,
    pub insert: Statement,
    pub sleep: Statement,
}

/// The writer's connection; its driver stops when the last holder drops it.
pub(crate) struct Connection {
    pub client: Client,
    pub statements: Statements,
    _driver: Driver,
}

/// Everything the writer task owns.
pub(crate) struct Writer {
    connector: Connector,
    sql: Arc<Sql>,
    connection: Option<Arc<Connection>>,
    head: Arc<watch::Sender<GlobalPosition>>,
    /// The head after this writer's last commit, for the listener to announce.
    committed: watch::Sender<GlobalPosition>,
    counters: Arc<Counters>,
    max_group_events: usize,
    slow: Option<SlowCommits>,
    groups: u64,
}

/// Why a group transaction failed.
enum GroupError {
    /// No answer ([`Failure`]).
    Lost(Failure),
    /// An SQL error; the transaction was rolled back and wrote nothing.
    Sql(tokio_postgres::Error),
}

/// Why requests went unanswered, as the message they are answered with.
enum Failure {
    /// No connection could be made: nothing was sent.
    Unreachable(String),
    /// The connection was lost or stalled during the transaction: outcome unknown.
    Lost(String),
}

impl From<ConnectError> for Failure {
    fn from(error: ConnectError) -> Failure {
        Failure::Unreachable(error.to_string())
    }
}

/// Settings the writer takes from the store.
pub(crate) struct WriterSetup {
    pub connector: Connector,
    pub sql: Arc<Sql>,
    pub head: Arc<watch::Sender<GlobalPosition>>,
    pub committed: watch::Sender<GlobalPosition>,
    pub counters: Arc<Counters>,
    pub max_group_events: usize,
    pub slow: Option<SlowCommits>,
}

impl Writer {
    /// A writer starting on `client` (already migrated).
    pub(crate) async fn new(setup: WriterSetup, (client, driver): (Client, Driver)) -> Result<Writer, StoreError> {
        let statements = prepare(&client, &setup.sql).await.map_err(from_pg)?;
        Ok(Writer {
            connector: setup.connector,
            sql: setup.sql,
            connection: Some(Arc::new(Connection { client, statements, _driver: driver })),
            head: setup.head,
            committed: setup.committed,
            counters: setup.counters,
            max_group_events: setup.max_group_events,
            slow: setup.slow,
            groups: 0,
        })
    }

    /// Serves requests until every sender is dropped (the store was dropped); requests
    /// already queued are still committed and answered.
    ///
    /// Up to [`MAX_FLIGHTS`] fast-path groups are in flight on the connection at once
    /// (a group's whole transaction is sent before the writer moves on, so flights
    /// reach the server in order). The careful path runs inline, with no new group
    /// sent until it is done.
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Pending>) {
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut open = true;
        while open || !flights.is_empty() {
            let can_launch = open && flights.len() < MAX_FLIGHTS;
            tokio::select! {
                biased;
                landed = next_landing(&mut flights) => {
                    flights.pop_front();
                    self.land(landed).await;
                }
                received = requests.recv(), if can_launch => match received {
                    Some(first) => {
                        let group = self.gather(first, &mut requests);
                        let events = group.iter().map(Pending::event_count).sum();
                        rewind::telemetry::record_group_commit(group.iter().map(|pending| &pending.span), events);
                        self.launch(group, &mut flights).await;
                    }
                    None => open = false,
                },
            }
        }
    }

    /// Takes the first request and everything waiting behind it, up to the budget.
    fn gather(&self, first: Pending, requests: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
        let mut events = first.event_count();
        let mut group = vec![first];
        while events < self.max_group_events {
            let Ok(next) = requests.try_recv() else { break };
            events += next.event_count();
            group.push(next);
        }
        group
    }

    /// Sends a group's fast-path transaction (all of it, before returning) and queues
    /// it, or commits the group inline if nothing of it can take the fast path.
    async fn launch(&mut self, group: Vec<Pending>, flights: &mut VecDeque<Flight>) {
        let (careful, fast): (Vec<usize>, Vec<usize>) = (0..group.len()).partition(|&i| repeats_ids(&group[i]));
        if fast.is_empty() {
            let landed = Landed { group, fast, careful, result: None, connection: None };
            return self.land(landed).await;
        }
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => {
                let unanswered = group.iter().map(|_| None).collect();
                return answer(group, finish(unanswered, &Some(error)));
            }
        };
        let sleep = self.sleep();
        let connector = self.connector.clone();
        let mut flight: Flight = Box::pin(async move {
            let result = {
                let pending: Vec<&Pending> = fast.iter().map(|&i| &group[i]).collect();
                connector.bounded(run_fast(&connection, &pending, sleep)).await
            };
            let result = match result {
                Ok(Ok(done)) => Ok(done),
                Ok(Err(error)) if connection.client.is_closed() => {
                    Err(GroupError::Lost(Failure::Lost(error.to_string())))
                }
                Ok(Err(error)) => Err(GroupError::Sql(error)),
                // `land` drops the stalled connection.
                Err(stalled) => Err(GroupError::Lost(Failure::Lost(stalled.to_string()))),
            };
            Landed { group, fast, careful, result: Some(result), connection: Some(connection) }
        });
        // The first poll sends every message of the transaction, so flights reach the
        // server in launch order.
        match futures_util::poll!(flight.as_mut()) {
            std::task::Poll::Ready(landed) => self.land(landed).await,
            std::task::Poll::Pending => flights.push_back(flight),
        }
    }

    /// Finishes a group whose fast path is done: records it, decides on the careful
    /// path what the fast path left, and answers every request.
    ///
    /// The careful path takes what the fast path could not decide (stored event ids,
    /// ids repeated within a request, an SQL error) in one transaction; if that fails
    /// with an SQL error, each of its requests gets a transaction of its own, so a bad
    /// request fails alone.
    async fn land(&mut self, landed: Landed) {
        let Landed { group, fast, mut careful, result, connection } = landed;
        let mut replies: Vec<Option<Reply>> = group.iter().map(|_| None).collect();
        match result {
            None => {}
            Some(Ok(done)) => {
                for (i, outcome) in fast.into_iter().zip(self.record(done)) {
                    match outcome {
                        Some(reply) => replies[i] = Some(reply),
                        None => careful.push(i),
                    }
                }
            }
            // The pipeline's own COMMIT ended the failed transaction (as a rollback).
            Some(Err(GroupError::Sql(_))) => careful.extend(fast),
            Some(Err(GroupError::Lost(error))) => {
                // Forget the broken connection, not a newer one a later flight opened.
                if let (Some(ours), Some(broken)) = (&self.connection, &connection)
                    && Arc::ptr_eq(ours, broken)
                {
                    self.connection = None;
                }
                return answer(group, finish(replies, &Some(error)));
            }
        }
        careful.sort_unstable();
        if !careful.is_empty()
            && let Err(error) = self.careful(&group, &careful, &mut replies).await
        {
            return answer(group, finish(replies, &Some(error)));
        }
        answer(group, finish(replies, &None))
    }

    /// Decides `careful` (indexes into `group`) on the careful path.
    async fn careful(
        &mut self,
        group: &[Pending],
        careful: &[usize],
        replies: &mut [Option<Reply>],
    ) -> Result<(), Failure> {
        let pending: Vec<&Pending> = careful.iter().map(|&i| &group[i]).collect();
        match self.attempt_careful_until_settled(&pending).await {
            Ok(outcomes) => {
                for (&i, outcome) in careful.iter().zip(outcomes) {
                    replies[i] = outcome;
                }
            }
            Err(GroupError::Lost(error)) => return Err(error),
            Err(GroupError::Sql(error)) if careful.len() == 1 => replies[careful[0]] = Some(Err(from_pg_ref(&error))),
            Err(GroupError::Sql(_)) => {
                for &i in careful {
                    replies[i] = match self.attempt_careful_until_settled(&[&group[i]]).await {
                        Ok(mut outcomes) => outcomes.pop().flatten(),
                        Err(GroupError::Sql(error)) => Some(Err(from_pg_ref(&error))),
                        Err(GroupError::Lost(error)) => return Err(error),
                    };
                }
            }
        }
        Ok(())
    }

    /// The connection, made anew if it was dropped; on `Err` nothing was sent.
    async fn connection(&mut self) -> Result<Arc<Connection>, Failure> {
        if self.connection.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.connection = None;
        }
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let (client, driver) = self.connector.connect().await?;
        let statements = match self.connector.bounded(prepare(&client, &self.sql)).await {
            Ok(Ok(statements)) => statements,
            Ok(Err(error)) => return Err(Failure::Unreachable(error.to_string())),
            Err(stalled) => return Err(Failure::Unreachable(stalled.to_string())),
        };
        let connection = Arc::new(Connection { client, statements, _driver: driver });
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// The test hook's pause for the next transaction, if any.
    fn sleep(&mut self) -> Option<f64> {
        self.groups += 1;
        self.slow.filter(|s| self.groups.is_multiple_of(s.every.max(1))).map(|s| s.delay.as_secs_f64())
    }

    /// Moves the head and the counters after a commit; returns the replies. The
    /// head moves to the settled head; the listener announces it, and if this
    /// group's events are not settled yet, watches until they are.
    fn record(&mut self, done: Done) -> Vec<Option<Reply>> {
        advance(&self.head, GlobalPosition(done.settled));
        if done.events > 0 {
            advance(&self.committed, GlobalPosition(done.last));
        }
        self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        self.counters.events.fetch_add(done.events, Ordering::Relaxed);
        let ok = done.replies.iter().filter(|r| matches!(r, Some(Ok(_)))).count() as u64;
        self.counters.appends.fetch_add(ok, Ordering::Relaxed);
        done.replies
    }

    /// [`Writer::attempt_careful`], again while it loses a race: a unique violation
    /// means another transaction wrote the same stream version or event id since
    /// this one read, and deciding again against the new state settles it; a
    /// deadlock means two transactions (of different processes) each waited on a
    /// row the other had inserted, and PostgreSQL cancelled one of them.
    async fn attempt_careful_until_settled(&mut self, group: &[&Pending]) -> Result<Vec<Option<Reply>>, GroupError> {
        let mut attempts = 1;
        loop {
            match self.attempt_careful(group).await {
                Err(GroupError::Sql(error)) if attempts < MAX_CAREFUL_ATTEMPTS && lost_a_race(&error) => {
                    attempts += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// One careful transaction; on `Err` it is rolled back or the connection is gone.
    async fn attempt_careful(&mut self, group: &[&Pending]) -> Result<Vec<Option<Reply>>, GroupError> {
        let sleep = self.sleep();
        let sql = self.sql.clone();
        let connection = self.connection().await.map_err(GroupError::Lost)?;
        let error = match self.connector.bounded(run_careful(&connection, &sql, group, sleep)).await {
            Ok(Ok(done)) => return Ok(self.record(done)),
            Ok(Err(error)) => error,
            Err(stalled) => {
                self.connection = None;
                return Err(GroupError::Lost(Failure::Lost(stalled.to_string())));
            }
        };
        let client = &connection.client;
        let rolled_back =
            !client.is_closed() && matches!(self.connector.bounded(client.batch_execute("ROLLBACK")).await, Ok(Ok(())));
        if rolled_back {
            Err(GroupError::Sql(error))
        } else {
            self.connection = None;
            Err(GroupError::Lost(Failure::Lost(error.to_string())))
        }
    }
}

/// Fast-path transactions sent and not yet answered, at most.
///
/// With 2, the next group is sent while one commits, so the server never waits a
/// round trip between groups; but each group is then smaller, and on the 2-core
/// development machine, where PostgreSQL and the application share the CPU, more
/// and smaller transactions lost: 32 appenders reached about 17,000 appends/s with 2
/// and about 20,000/s with 1 (benches/append.rs). Worth measuring again on more cores.
const MAX_FLIGHTS: usize = 1;

/// Careful transactions tried for one set of requests while each loses a race to
/// another process (each lost race means that process's transaction committed).
const MAX_CAREFUL_ATTEMPTS: u32 = 16;

/// Whether a transaction failed only because a concurrent one wrote the same row
/// first (or the two deadlocked doing so): deciding again settles it.
fn lost_a_race(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    [SqlState::UNIQUE_VIOLATION, SqlState::T_R_DEADLOCK_DETECTED].iter().any(|code| error.code() == Some(code))
}

/// A fast-path transaction in flight; it hands its group back when it lands.
type Flight = Pin<Box<dyn Future<Output = Landed> + Send>>;

/// A group back from its fast path (`result` is `None` if it had no fast part).
struct Landed {
    group: Vec<Pending>,
    /// Indexes of the requests that took the fast path, in order.
    fast: Vec<usize>,
    /// Indexes of the requests left to the careful path.
    careful: Vec<usize>,
    result: Option<Result<Done, GroupError>>,
    /// The connection the fast path ran on.
    connection: Option<Arc<Connection>>,
}

/// The oldest flight's landing (flights land in launch order); pending if none.
async fn next_landing(flights: &mut VecDeque<Flight>) -> Landed {
    match flights.front_mut() {
        Some(flight) => flight.await,
        None => std::future::pending().await,
    }
}

/// Sends each request its reply.
fn answer(group: Vec<Pending>, replies: Vec<Reply>) {
    for (pending, reply) in group.into_iter().zip(replies) {
        // The caller may have stopped waiting; its append stands regardless.
        let _ = pending.reply.send(reply);
    }
}

/// A committed group: the replies, the last position it wrote (0 if none), the
/// settled head read after its commit, the events it wrote.
pub(crate) struct Done {
    pub replies: Vec<Option<Reply>>,
    pub last: u64,
    pub settled: u64,
    pub events: u64,
}

/// The settled head ([`crate::listener`]); pipelined after a group's `COMMIT`.
pub(crate) async fn settled_head(connection: &Connection) -> Result<u64, tokio_postgres::Error> {
    let row = connection.client.query_one(&connection.statements.head, &[]).await?;
    Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
}

async fn prepare(client: &Client, sql: &Sql) -> Result<Statements, tokio_postgres::Error> {
    // Every writer statement is made of index lookups, but while a table has no
    // statistics PostgreSQL may cost `event_id = ANY($1)` as cheaper by sequential
    // scan, a cost that then grows with the log. The writer never wants a sequential
    // scan; without that choice its plans do not depend on the parameters, so generic
    // plans are used from the first execution (planning the fast path's statement
    // each time would cost about as much as running it).
    client
        .batch_execute(
            "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; \
             SET default_transaction_isolation = 'read committed'",
        )
        .await?;
    Ok(Statements {
        append_layer: client.prepare(&sql.append_layer).await?,
        append_one: client.prepare(&sql.append_one).await?,
        take_positions: client.prepare(&sql.take_positions).await?,
        head: client.prepare(&sql.head).await?,
        versions: client.prepare(&sql.stream_versions).await?,
        stored_ids: client.prepare(&sql.stored_ids).await?,
        insert: client.prepare(&sql.insert_events).await?,
        sleep: client.prepare("SELECT pg_sleep($1)").await?,
    })
}

/// Statement parameters, bound before the statements are pipelined.
pub(crate) type Params<'a, const N: usize> = [&'a (dyn ToSql + Sync); N];

/// The test hook's pause, pipelined before `COMMIT`.
pub(crate) async fn slow_down(connection: &Connection, sleep: Option<f64>) -> Result<(), tokio_postgres::Error> {
    match sleep {
        Some(seconds) => connection.client.execute(&connection.statements.sleep, &[&seconds]).await.map(drop),
        None => Ok(()),
    }
}

/// Whether a request carries an event id twice (decided on the careful path, where
/// the rule "the first failing check wins" can be kept).
fn repeats_ids(pending: &Pending) -> bool {
    let mut ids = HashSet::new();
    !pending.appends.iter().flat_map(|a| &a.events).all(|e| ids.insert(e.event_id))
}

/// Completes the replies; requests still unanswered get `lost_with`'s error.
fn finish(replies: Vec<Option<Reply>>, lost_with: &Option<Failure>) -> Vec<Reply> {
    match lost_with {
        Some(Failure::Lost(error)) => tracing::warn!(%error, "event store writer lost its connection"),
        Some(Failure::Unreachable(error)) => tracing::warn!(%error, "event store writer cannot reach the database"),
        None => {}
    }
    replies
        .into_iter()
        .map(|reply| {
            reply.unwrap_or_else(|| {
                Err(match lost_with {
                    Some(Failure::Lost(error)) => lost(error),
                    Some(Failure::Unreachable(error)) => StoreError::Unavailable(error.clone().into()),
                    None => StoreError::Corrupt("the writer left an append unanswered".into()),
                })
            })
        })
        .collect()
}

/// The connection died or stalled during the transaction: the outcome is unknown.
fn lost(error: &str) -> StoreError {
    StoreError::backend(std::io::Error::other(format!(
        "connection lost during append, outcome unknown (read the stream to find out): {error}"
    )))
}
