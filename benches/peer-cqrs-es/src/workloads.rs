//! Command drivers (W1–W4) and the catch-up projection (W5).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cqrs_es::mem_store::MemStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use futures::TryStreamExt;
use sqlx::{PgPool, SqlitePool};
use tokio::task::JoinSet;

use crate::domain::{BankAccount, BankAccountCommand, BankAccountEvent, fold};
use crate::report::Measured;

pub type Cqrs<ES> = CqrsFramework<BankAccount, ES>;

/// Builds command number `i`: the aggregate id to send it to, and the command.
pub type MakeCommand = Arc<dyn Fn(usize) -> (String, BankAccountCommand) + Send + Sync>;

/// How often a command that lost an optimistic-concurrency race is sent again. Callers work
/// on distinct accounts at any moment, so this is a safety net, not part of the design.
const MAX_RETRIES: usize = 50;

/// Sends commands `0..total` through `callers` concurrent tokio tasks sharing one framework,
/// timing each `cqrs.execute(...)` (retries of a conflicting command count in its time).
pub async fn drive<ES>(
    cqrs: &Arc<Cqrs<ES>>,
    callers: usize,
    total: usize,
    make: MakeCommand,
) -> Result<Measured, String>
where
    ES: EventStore<BankAccount> + 'static,
    ES::AC: Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..callers {
        let (cqrs, next, retries, make) =
            (Arc::clone(cqrs), Arc::clone(&next), Arc::clone(&retries), Arc::clone(&make));
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(total / callers + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok(latencies);
                }
                let started = Instant::now();
                let mut attempt = 0;
                loop {
                    let (id, command) = make(i);
                    match cqrs.execute(&id, command).await {
                        Ok(()) => break,
                        Err(AggregateError::AggregateConflict) if attempt < MAX_RETRIES => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => return Err(format!("command {i} on {id}: {error}")),
                    }
                }
                latencies.push(started.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(mine)) => latencies.extend(mine),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(format!("caller task failed: {error}"));
            }
        }
    }
    let elapsed = start.elapsed();
    let retries = retries.load(Ordering::Relaxed);
    if retries > 0 {
        eprintln!("peer-cqrs-es: {retries} commands retried after an aggregate conflict");
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(Measured { ops: latencies.len(), elapsed, latencies, warning: None }),
    }
}

/// Balance per account, plus the accounts changed since the last batch was written.
#[derive(Default)]
pub struct Projection {
    pub balances: HashMap<String, i64>,
    dirty: HashSet<String>,
    pub events: usize,
    pending: usize,
}

/// Events per projection transaction.
pub const BATCH: usize = 1_000;

impl Projection {
    pub fn apply(&mut self, account: &str, event: &BankAccountEvent) {
        match self.balances.get_mut(account) {
            Some(balance) => fold(balance, event),
            None => {
                let mut balance = 0;
                fold(&mut balance, event);
                self.balances.insert(account.to_string(), balance);
            }
        }
        if !self.dirty.contains(account) {
            self.dirty.insert(account.to_string());
        }
        self.events += 1;
        self.pending += 1;
    }

    fn batch_full(&self) -> bool {
        self.pending >= BATCH
    }

    /// The changed accounts and their balances, each account once (an upsert statement may not
    /// touch a row twice).
    fn take_batch(&mut self) -> (Vec<String>, Vec<i64>) {
        self.pending = 0;
        let accounts: Vec<String> = self.dirty.drain().collect();
        let balances = accounts.iter().map(|a| self.balances[a]).collect();
        (accounts, balances)
    }

    pub fn total(&self) -> i64 {
        self.balances.values().sum()
    }
}

fn sql_error(error: impl std::fmt::Display) -> String {
    format!("database: {error}")
}

fn decode(payload: &str) -> Result<BankAccountEvent, String> {
    serde_json::from_str(payload).map_err(|error| format!("bad event payload {payload}: {error}"))
}

/// cqrs-es's tables have no global position, so "in order" is per account: the primary key's
/// order (aggregate_type, aggregate_id, sequence), which is what a fold per account needs.
const READ_PG: &str =
    "SELECT aggregate_id, payload::text FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence";
const UPSERT_PG: &str = "INSERT INTO balances (account_id, balance) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (account_id) DO UPDATE SET balance = EXCLUDED.balance";

pub async fn catch_up_postgres(pool: &PgPool) -> Result<(Measured, Projection), String> {
    let start = Instant::now();
    let mut projection = Projection::default();
    let mut rows =
        sqlx::query_as::<_, (String, String)>(READ_PG).bind(<BankAccount as cqrs_es::Aggregate>::TYPE).fetch(pool);
    while let Some((account, payload)) = rows.try_next().await.map_err(sql_error)? {
        projection.apply(&account, &decode(&payload)?);
        if projection.batch_full() {
            write_postgres(pool, &mut projection).await?;
        }
    }
    drop(rows);
    write_postgres(pool, &mut projection).await?;
    Ok((Measured { ops: projection.events, elapsed: start.elapsed(), latencies: vec![], warning: None }, projection))
}

async fn write_postgres(pool: &PgPool, projection: &mut Projection) -> Result<(), String> {
    let (accounts, balances) = projection.take_batch();
    if accounts.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(sql_error)?;
    sqlx::query(UPSERT_PG).bind(accounts).bind(balances).execute(&mut *tx).await.map_err(sql_error)?;
    tx.commit().await.map_err(sql_error)
}

const READ_SQLITE: &str =
    "SELECT aggregate_id, payload FROM events WHERE aggregate_type = ? ORDER BY aggregate_id, sequence";
const UPSERT_SQLITE: &str = "INSERT INTO balances (account_id, balance) VALUES (?, ?) \
     ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance";

pub async fn catch_up_sqlite(pool: &SqlitePool) -> Result<(Measured, Projection), String> {
    let start = Instant::now();
    let mut projection = Projection::default();
    let mut rows =
        sqlx::query_as::<_, (String, String)>(READ_SQLITE).bind(<BankAccount as cqrs_es::Aggregate>::TYPE).fetch(pool);
    while let Some((account, payload)) = rows.try_next().await.map_err(sql_error)? {
        projection.apply(&account, &decode(&payload)?);
        if projection.batch_full() {
            write_sqlite(pool, &mut projection).await?;
        }
    }
    drop(rows);
    write_sqlite(pool, &mut projection).await?;
    Ok((Measured { ops: projection.events, elapsed: start.elapsed(), latencies: vec![], warning: None }, projection))
}

/// SQLite has no array parameters: one prepared (and cached) upsert per changed account, all
/// in one transaction.
async fn write_sqlite(pool: &SqlitePool, projection: &mut Projection) -> Result<(), String> {
    let (accounts, balances) = projection.take_batch();
    if accounts.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(sql_error)?;
    for (account, balance) in accounts.iter().zip(balances) {
        sqlx::query(UPSERT_SQLITE).bind(account).bind(balance).execute(&mut *tx).await.map_err(sql_error)?;
    }
    tx.commit().await.map_err(sql_error)
}

/// The in-memory store keeps typed events per aggregate; there is nothing to decode or write,
/// so this is the fold alone.
pub fn catch_up_memory(store: &MemStore<BankAccount>) -> Result<(Measured, Projection), String> {
    let start = Instant::now();
    let mut projection = Projection::default();
    // `get_events` is deprecated ("clone the MemStore instead"), but it is the only way to see
    // every aggregate's events: the map behind the store is private.
    #[allow(deprecated)]
    let events = store.get_events();
    let events = events.read().map_err(|_| "MemStore lock poisoned".to_string())?;
    for envelopes in events.values() {
        for envelope in envelopes {
            projection.apply(&envelope.aggregate_id, &envelope.payload);
            if projection.batch_full() {
                projection.take_batch();
            }
        }
    }
    projection.take_batch();
    Ok((Measured { ops: projection.events, elapsed: start.elapsed(), latencies: vec![], warning: None }, projection))
}
