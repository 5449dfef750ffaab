//! Keeps a store's head watch ([`rewind::EventStore::watch_head`]) current with commits
//! made by any process, and announces this store's commits to the others.
//!
//! The head is the settled head (`sql/head.sql`): the last position below which no
//! running transaction can still write, so a reader may follow up to it. The writer
//! reads it right after each commit; when its own events are not settled yet (a
//! transaction that took lower positions, in any process, is still running), this
//! task reads it again, at first every half millisecond and then less often, until
//! they are, or until another process announces a head past them.
//!
//! One task owns a dedicated connection that `LISTEN`s on the schema's channel. After
//! the writer commits and its events are settled, this task `pg_notify`s the settled
//! head there, off the append path: notifying inside the append transaction would
//! cost about as much as the rest of a small append. Announcements are
//! coalesced: while one is sent, and for 2 ms after, further commits only move the
//! head, and the next announcement carries the newest head, so other processes hear
//! of a commit within a few milliseconds. An announcement is only a wake-up (readers
//! read the log itself); the same connection reads the head every poll interval, and
//! once right after each (re)connect, so a lost notification or a broken connection
//! delays a wake-up by at most one interval and never loses one. Every query is
//! bounded by the connection's `query_timeout` ([`crate::connection`]), so a
//! connection that stopped answering without closing is noticed within one poll
//! interval plus that bound. On failure the task reconnects with backoff, forever,
//! until the store is dropped. The head only ever moves forward.

use crate::connection::{Connector, Stalled};
use futures_util::StreamExt;
use rewind::GlobalPosition;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Statement};

/// Moves the head forward to `position` (never back), waking watchers if it moved.
pub(crate) fn advance(head: &watch::Sender<GlobalPosition>, position: GlobalPosition) {
    head.send_if_modified(|current| {
        let newer = position > *current;
        if newer {
            *current = position;
        }
        newer
    });
}

/// What the listener needs.
pub(crate) struct Listener {
    pub connector: Connector,
    pub channel: String,
    pub head_sql: String,
    pub head: Arc<watch::Sender<GlobalPosition>>,
    /// The last position this store's writer committed, to settle and announce (see
    /// the module docs).
    pub committed: watch::Receiver<GlobalPosition>,
    pub poll_interval: Duration,
}

/// The least time between two announcements of one store.
const MIN_NOTIFY_INTERVAL: Duration = Duration::from_millis(2);

/// The first and the longest pause between two reads of the settled head while this
/// store's events are not settled: most waits are for another group's commit, well
/// under a millisecond; a long one is for a long transaction elsewhere.
const SETTLE_PAUSES: (Duration, Duration) = (Duration::from_micros(500), Duration::from_millis(20));

impl Listener {
    /// Starts the listener task; abort the handle to stop it.
    pub(crate) fn spawn(mut self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let error = self.listen().await;
                tracing::warn!(%error, channel = %self.channel, "event store listener failed; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }

    /// Listens, polls and announces until the connection fails.
    async fn listen(&mut self) -> ListenError {
        let (client, mut connection) = match self.connector.connect_raw().await {
            Ok(pair) => pair,
            Err(error) => return ListenError::Connect(error),
        };
        let head = self.head.clone();
        // The connection's messages are driven here; it stops when the client drops.
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => match note.payload().parse::<u64>() {
                        Ok(position) => advance(&head, GlobalPosition(position)),
                        Err(_) => tracing::warn!(payload = note.payload(), "ignored a malformed head notification"),
                    },
                    Ok(_) => {}
                    Err(error) => return Some(error),
                }
            }
            None
        });
        let _stop_driver = AbortOnDrop(driver);
        let bound = &self.connector;
        if let Err(error) = flat(bound.bounded(client.batch_execute(&format!("LISTEN \"{}\"", self.channel))).await) {
            return error;
        }
        let prepared = bound.bounded(async {
            tokio::try_join!(client.prepare(&self.head_sql), client.prepare("SELECT pg_notify($1, $2)"))
        });
        let (head_statement, notify_statement) = match flat(prepared.await) {
            Ok(statements) => statements,
            Err(error) => return error,
        };
        // Announce once after every (re)connect: an announcement may have been lost.
        self.committed.mark_changed();
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.read_head(&client, &head_statement).await {
                        return error;
                    }
                }
                Ok(()) = self.committed.changed() => {
                    let mine = *self.committed.borrow_and_update();
                    if let Err(error) = self.settle(&client, &head_statement, mine).await {
                        self.committed.mark_changed();
                        return error;
                    }
                    let head = self.head.borrow().0.to_string();
                    let sent = bound.bounded(client.execute(&notify_statement, &[&self.channel, &head])).await;
                    if let Err(error) = flat(sent) {
                        self.committed.mark_changed();
                        return error;
                    }
                    // Under load, each announcement then covers many commits.
                    tokio::time::sleep(MIN_NOTIFY_INTERVAL).await;
                }
            }
        }
    }
}

impl Listener {
    /// Reads the settled head and moves the head watch to it.
    async fn read_head(&self, client: &tokio_postgres::Client, statement: &Statement) -> Result<(), ListenError> {
        let read = self.connector.bounded(client.query_one(statement, &[])).await;
        let position = flat(read).and_then(|row| row.try_get::<_, i64>(0).map_err(ListenError::Query))?;
        advance(&self.head, GlobalPosition(position.max(0) as u64));
        Ok(())
    }

    /// Returns once the head has reached `mine` (read here, or announced by another
    /// process meanwhile).
    async fn settle(
        &self,
        client: &tokio_postgres::Client,
        statement: &Statement,
        mine: GlobalPosition,
    ) -> Result<(), ListenError> {
        let mut heads = self.head.subscribe();
        let mut pause = SETTLE_PAUSES.0;
        while *heads.borrow_and_update() < mine {
            self.read_head(client, statement).await?;
            if *heads.borrow_and_update() >= mine {
                break;
            }
            tokio::select! {
                _ = heads.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(SETTLE_PAUSES.1);
        }
        Ok(())
    }
}

/// Why the listener's connection was given up.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error(transparent)]
    Connect(crate::connection::ConnectError),
    #[error(transparent)]
    Query(tokio_postgres::Error),
    #[error(transparent)]
    Stalled(Stalled),
}

/// A bounded query's two ways to fail, as one.
fn flat<T>(result: Result<Result<T, tokio_postgres::Error>, Stalled>) -> Result<T, ListenError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ListenError::Query(error)),
        Err(stalled) => Err(ListenError::Stalled(stalled)),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<Option<tokio_postgres::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
