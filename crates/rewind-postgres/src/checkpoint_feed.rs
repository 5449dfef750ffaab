//! Projector checkpoints announced to every process on a read model, so a strongly
//! consistent dispatch in a process that does not run the projector (another holds
//! its lease) wakes when the projection commits, instead of polling for it.
//!
//! A projector's transaction NOTIFYs its new checkpoint on the read model's channel
//! ([`CheckpointFeed::channel`]) in the statement that saves it. PostgreSQL delivers a
//! notification only once its transaction has committed, so an announced checkpoint
//! is always durable and visible: a watcher may trust it without reading the table.
//! The price: PostgreSQL commits notifying transactions one at a time (they share the
//! notification queue's lock), so projector batches of the whole database serialize
//! their commits with each other. One batch per projector at a time holds the lease
//! anyway; W5 measured no difference (BENCHMARKS.md, issue 16's section).
//!
//! One task per read model (started by the first [`CheckpointFeed::watch`]) LISTENs on
//! a dedicated connection and moves a watch per projector name. Announcements only
//! speed things up: on every (re)connect, and every [`REREAD`] after, the task reads
//! all checkpoints, so a lost notification or a dead connection costs at most that
//! long, and a waiting dispatch polls on its own too (`rewind::Consumer::announced_checkpoint`).
//! The watches only move forward (a rebuild's reset to 0 is not announced: every
//! position a dispatch waits for is newer than any checkpoint from before it).

use crate::connection::Connector;
use crate::schema::lock_key;
use futures_util::StreamExt;
use rewind::GlobalPosition;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

/// How often the task reads every checkpoint even when announcements arrive.
pub(crate) const REREAD: Duration = Duration::from_secs(2);

/// Every projector's checkpoint.
const READ_ALL: &str = "SELECT name, position FROM rewind_projections";

type Watches = Arc<Mutex<HashMap<String, watch::Sender<GlobalPosition>>>>;

/// The announced checkpoints of one read model's projectors.
pub(crate) struct CheckpointFeed {
    connector: Connector,
    channel: String,
    reread: Duration,
    watches: Watches,
    task: OnceLock<Task>,
}

impl CheckpointFeed {
    /// The feed of the read model in `schema` (nothing runs until the first watch).
    pub(crate) fn new(connector: Connector, schema: &str) -> CheckpointFeed {
        CheckpointFeed::with_reread(connector, schema, REREAD)
    }

    fn with_reread(connector: Connector, schema: &str, reread: Duration) -> CheckpointFeed {
        // A channel name is an identifier of at most 63 bytes; a hash keeps it short.
        let channel = format!("rewind_checkpoints_{:016x}", lock_key("checkpoints", schema) as u64);
        CheckpointFeed { connector, channel, reread, watches: Arc::default(), task: OnceLock::new() }
    }

    /// The channel projectors announce on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The announced checkpoint of projector `name` (the start until one is known).
    pub(crate) fn watch(&self, name: &str) -> watch::Receiver<GlobalPosition> {
        self.task.get_or_init(|| {
            let listening =
                listen_forever(self.connector.clone(), self.channel.clone(), self.reread, self.watches.clone());
            Task(tokio::spawn(listening))
        });
        // Called on every strongly consistent dispatch: no allocation once the name is known.
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = watches.get(name) {
            return sender.subscribe();
        }
        watches.entry(name.to_owned()).or_insert_with(|| watch::channel(GlobalPosition::START).0).subscribe()
    }
}

/// Moves `name`'s watch forward to `position`, if anyone watches it.
fn announce(watches: &Watches, name: &str, position: GlobalPosition) {
    let watches = watches.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(sender) = watches.get(name) {
        sender.send_if_modified(|current| {
            let newer = position > *current;
            if newer {
                *current = position;
            }
            newer
        });
    }
}

/// The payload a projector sends: `"<position> <name>"`.
fn parse(payload: &str) -> Option<(GlobalPosition, &str)> {
    let (position, name) = payload.split_once(' ')?;
    Some((GlobalPosition(position.parse().ok()?), name))
}

async fn listen_forever(connector: Connector, channel: String, reread: Duration, watches: Watches) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = listen(&connector, &channel, reread, &watches).await;
        tracing::warn!(%error, %channel, "checkpoint listener failed; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Listens and re-reads until the connection fails; returns why.
async fn listen(connector: &Connector, channel: &str, reread: Duration, watches: &Watches) -> String {
    let (client, mut connection) = match connector.connect_raw().await {
        Ok(pair) => pair,
        Err(error) => return error.to_string(),
    };
    let heard = watches.clone();
    let (ended, mut driver_ended) = tokio::sync::oneshot::channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => match parse(note.payload()) {
                    Some((position, name)) => announce(&heard, name, position),
                    None => tracing::warn!(payload = note.payload(), "ignored a malformed checkpoint notification"),
                },
                Ok(_) => {}
                Err(error) => {
                    let _ = ended.send(error.to_string());
                    return;
                }
            }
        }
        let _ = ended.send("the connection closed".to_owned());
    });
    let _driver = Task(driver);
    let listened = connector.bounded(client.batch_execute(&format!("LISTEN \"{channel}\""))).await;
    if let Err(error) = flatten(listened) {
        return error;
    }
    let mut ticker = tokio::time::interval(reread);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let read = connector.bounded(client.query(READ_ALL, &[])).await;
                match flatten(read) {
                    Ok(rows) => {
                        for row in rows {
                            let (name, position): (String, i64) = (row.get(0), row.get(1));
                            announce(watches, &name, GlobalPosition(position.max(0) as u64));
                        }
                    }
                    Err(error) => return error,
                }
            }
            why = &mut driver_ended => return why.unwrap_or_else(|_| "the connection ended".to_owned()),
        }
    }
}

fn flatten<T>(result: Result<Result<T, tokio_postgres::Error>, crate::connection::Stalled>) -> Result<T, String> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(stalled) => Err(stalled.to_string()),
    }
}

/// A task aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PostgresProjection, PostgresProjector, PostgresReadModel};
    use rewind::{Consumer, ConsumerError, RecordedEvent};
    use tokio_postgres::Transaction;

    struct Nothing;

    #[async_trait::async_trait]
    impl PostgresProjection for Nothing {
        async fn create(&self, _: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
            Ok(())
        }
        async fn project(&self, _: &Transaction<'_>, _: &RecordedEvent) -> Result<(), ConsumerError> {
            Ok(())
        }
        async fn reset(&self, _: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
            Ok(())
        }
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    enum Happened {
        Happened,
    }
    impl rewind::Event for Happened {}

    async fn reaches(watch: &mut watch::Receiver<GlobalPosition>, position: u64) {
        while watch.borrow_and_update().0 < position {
            watch.changed().await.expect("the feed is alive");
        }
    }

    /// Two read models on one schema stand for two processes: a checkpoint one commits
    /// reaches the other's feed by notification alone (its next re-read is an hour away).
    #[tokio::test]
    async fn a_checkpoint_committed_by_one_process_is_announced_to_another() {
        let Some(url) = std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty()) else {
            eprintln!("skipped checkpoint announcements: TEST_DATABASE_URL is not set");
            return;
        };
        let schema = format!("rwt_feed_{}", uuid::Uuid::new_v4().simple());
        let here = PostgresReadModel::connect(&url, &schema).await.expect("read model");
        let projector = PostgresProjector::new("counts", Nothing, &here).await.expect("projector");
        let there = PostgresReadModel::connect(&url, &schema).await.expect("read model");
        let feed = CheckpointFeed::with_reread(there.connector().clone(), &schema, Duration::from_secs(3600));
        let mut seen = feed.watch("counts");
        let event = |position| rewind::testing::recorded("s", position, &Happened::Happened).expect("event");
        projector.process(Arc::from(vec![event(1)])).await.expect("process");
        // By the feed's first read or by notification; either way it listens from now on.
        tokio::time::timeout(Duration::from_secs(30), reaches(&mut seen, 1)).await.expect("first checkpoint");
        projector.process(Arc::from(vec![event(2), event(3)])).await.expect("process");
        tokio::time::timeout(Duration::from_secs(30), reaches(&mut seen, 3)).await.expect("announced checkpoint");
        assert_eq!(seen.borrow().0, 3);

        // The listening connection dies (a restart, a proxy): the feed reconnects, reads
        // every checkpoint again and listens anew, so what committed meanwhile arrives.
        let client = here.client().await.expect("client");
        let killed = client
            .query_one(
                // The listener's last statement is its LISTEN or its read of every checkpoint.
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $3 AND pid <> pg_backend_pid() AND (query = $1 OR query = $2)",
                &[&format!("LISTEN \"{}\"", feed.channel()), &READ_ALL, &format!("rewind:{schema}")],
            )
            .await
            .expect("terminate the listener")
            .get::<_, i64>(0);
        assert_eq!(killed, 1, "one connection listens");
        projector.process(Arc::from(vec![event(4)])).await.expect("process");
        tokio::time::timeout(Duration::from_secs(30), reaches(&mut seen, 4)).await.expect("seen after reconnecting");
        client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.expect("drop schema");
    }

    #[test]
    fn payloads_name_position_then_projector() {
        assert_eq!(parse("42 accounts"), Some((GlobalPosition(42), "accounts")));
        assert_eq!(parse("7 a name with spaces"), Some((GlobalPosition(7), "a name with spaces")));
        assert_eq!(parse("accounts"), None);
        assert_eq!(parse("x accounts"), None);
    }
}
