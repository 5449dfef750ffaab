//! W5, Rewind's side: a balance-per-account read model catching up from the origin
//! on every event the other workloads wrote, driven by `Subscriptions`.
//!
//! SQLite: a real `SqliteProjector` writing a read model file of its own (as the
//! projection bench does). PostgreSQL: a real `PostgresProjector` in the run's
//! schema, one `unnest` upsert per batch. Memory: a `Consumer` folding into a
//! `HashMap`. Each event is decoded as the bank's `AccountEvent`.

use crate::backend::Target;
use crate::measure::Measurement;
use anyhow::Context;
use async_trait::async_trait;
use bank::domain::AccountEvent;
use rewind::store::BatchFailure;
use rewind::{
    Application, Consumer, ConsumerError, ConsumerKind, EventStore, GlobalPosition, MemorySubscriptionStore,
    RecordedEvent, SubscriptionOptions, Subscriptions,
};
use rewind_postgres::{PostgresProjection, PostgresProjector, PostgresReadModel, PostgresSubscriptionStore};
use rewind_sqlite::{SqliteProjection, SqliteProjector, SqliteReadModel, SqliteSubscriptionStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{GenericClient, Transaction};

/// Events per subscription batch (and per raw transaction).
pub const BATCH: usize = 1_000;

/// The longest a catch-up may take before it counts as failed.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);

/// The account's balance after `event`, if the event sets one.
pub fn balance_after(event: &RecordedEvent) -> Result<Option<i64>, ConsumerError> {
    Ok(match event.decode::<AccountEvent>()? {
        AccountEvent::AccountOpened { initial_balance, .. } => Some(initial_balance),
        AccountEvent::DepositedIntoAccount { new_current_balance, .. }
        | AccountEvent::WithdrawnFromAccount { new_current_balance, .. }
        | AccountEvent::MoneyTransferRefunded { new_current_balance, .. } => Some(new_current_balance),
        _ => None,
    })
}

/// The last balance per stream in `events`: what one batch upsert writes.
pub fn last_balances(events: &[RecordedEvent]) -> Result<BTreeMap<&str, i64>, ConsumerError> {
    let mut balances = BTreeMap::new();
    for event in events {
        if let Some(balance) = balance_after(event)? {
            balances.insert(event.stream_id.as_str(), balance);
        }
    }
    Ok(balances)
}

/// SQLite: one upsert per event.
pub const SQLITE_UPSERT: &str = "INSERT INTO balances (stream_id, balance) VALUES (?1, ?2)
     ON CONFLICT (stream_id) DO UPDATE SET balance = excluded.balance";

/// PostgreSQL: one upsert per batch; `balances` is replaced for the raw table.
pub const POSTGRES_UPSERT: &str = "INSERT INTO balances (stream_id, balance)
     SELECT * FROM unnest($1::text[], $2::bigint[])
     ON CONFLICT (stream_id) DO UPDATE SET balance = EXCLUDED.balance";

/// The balance table, on SQLite.
pub const SQLITE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS balances (stream_id TEXT PRIMARY KEY, balance INTEGER NOT NULL)";

struct SqliteBalances;

impl SqliteProjection for SqliteBalances {
    fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch(SQLITE_TABLE)
    }
    fn project(&self, conn: &rusqlite::Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        if let Some(balance) = balance_after(event)? {
            conn.prepare_cached(SQLITE_UPSERT)?.execute(rusqlite::params![event.stream_id, balance])?;
        }
        Ok(())
    }
    fn reset(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM balances")
    }
}

struct PostgresBalances;

/// Writes the last balance per stream of `events` with one statement.
pub async fn upsert_postgres(
    client: &impl GenericClient,
    sql: &str,
    events: &[RecordedEvent],
) -> Result<(), ConsumerError> {
    let (streams, balances): (Vec<&str>, Vec<i64>) = last_balances(events)?.into_iter().unzip();
    client.execute(sql, &[&streams, &balances]).await?;
    Ok(())
}

#[async_trait]
impl PostgresProjection for PostgresBalances {
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("CREATE TABLE IF NOT EXISTS balances (stream_id text PRIMARY KEY, balance bigint NOT NULL)")
            .await
    }
    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        upsert_postgres(tx, POSTGRES_UPSERT, std::slice::from_ref(event)).await
    }
    async fn project_batch(&self, tx: &Transaction<'_>, events: &[RecordedEvent]) -> Result<(), ConsumerError> {
        upsert_postgres(tx, POSTGRES_UPSERT, events).await
    }
    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("DELETE FROM balances").await
    }
}

/// Memory: balances and checkpoint in a `HashMap` behind a mutex (never held across an await).
#[derive(Default)]
struct MemoryBalances {
    state: Mutex<(HashMap<String, i64>, Option<GlobalPosition>)>,
}

#[async_trait]
impl Consumer for MemoryBalances {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::Projector
    }
    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        Ok(self.state.lock().map_err(|_| "poisoned")?.1)
    }
    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        let mut state = self.state.lock().map_err(|_| BatchFailure { failed_at: 0, error: "poisoned".into() })?;
        for (index, event) in events.iter().enumerate() {
            match balance_after(event) {
                Ok(Some(balance)) => {
                    state.0.insert(event.stream_id.clone(), balance);
                }
                Ok(None) => {}
                Err(error) => return Err(BatchFailure { failed_at: index, error }),
            }
            state.1 = Some(event.position);
        }
        Ok(())
    }
    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        self.state.lock().map_err(|_| "poisoned")?.1 = Some(event.position);
        Ok(())
    }
}

/// W5: starts a new projector from the origin and times it until it has caught up
/// with everything in `target`'s store.
pub async fn catch_up(target: &Target) -> anyhow::Result<Measurement> {
    let store = target.shared();
    let head = store.head_position().await?;
    anyhow::ensure!(head.0 > 0, "the store is empty: W5 catches up on what W1–W4 wrote");
    let app = Application::builder_shared(store).build();
    let options = SubscriptionOptions::new().batch_size(BATCH);
    let (consumer, bookkeeping): (Arc<dyn Consumer>, Arc<dyn rewind::SubscriptionStore>) = match &target.postgres {
        None if target.backend == crate::backend::Backend::Sqlite => {
            let model = SqliteReadModel::open(target.path().join("read.db")).await?;
            let bookkeeping = Arc::new(SqliteSubscriptionStore::open(&model).await?);
            (Arc::new(SqliteProjector::new("balances", SqliteBalances, &model).await?), bookkeeping)
        }
        None => (Arc::new(MemoryBalances::default()), Arc::new(MemorySubscriptionStore::new())),
        Some(place) => {
            let model = PostgresReadModel::connect(&place.url, &place.schema).await?;
            let bookkeeping = Arc::new(PostgresSubscriptionStore::new(&model));
            (Arc::new(PostgresProjector::new("balances", PostgresBalances, &model).await?), bookkeeping)
        }
    };
    let start = Instant::now();
    let subscriptions = Subscriptions::builder(&app, bookkeeping).consumer("balances", consumer, options).start()?;
    let caught_up = tokio::time::timeout(CATCH_UP_LIMIT, subscriptions.wait_for("balances", head)).await;
    let elapsed = start.elapsed();
    let status = subscriptions.status_of("balances");
    subscriptions.shutdown().await;
    caught_up.with_context(|| format!("catch-up did not finish in {CATCH_UP_LIMIT:?}: {status:?}"))??;
    Ok(Measurement::throughput(head.0, elapsed))
}
