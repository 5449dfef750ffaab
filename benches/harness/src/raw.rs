//! The raw baselines: the same rows written straight through the same driver,
//! with no Rewind in between, in the same run.
//!
//! Rows have the shape of the stores' `events` table (stream id, version, type,
//! JSON data, causation and correlation ids, metadata, timestamp): on SQLite a copy
//! of that table in a file of its own with the store's settings (WAL,
//! `synchronous=FULL`); on PostgreSQL `raw_events`, created `LIKE events INCLUDING
//! ALL` in the run's schema. On memory, "raw" is appending to `rewind::MemoryStore`
//! directly. The W5 baseline writes the projection's upserts from events already in
//! memory, 1,000 per transaction.

use crate::backend::{Backend, PostgresPlace, Target, connect};
use crate::measure::{Measurement, run_callers};
use crate::projection::{BATCH, POSTGRES_UPSERT, SQLITE_TABLE, SQLITE_UPSERT, balance_after, upsert_postgres};
use anyhow::Context;
use bank::domain::AccountEvent;
use futures_util::pin_mut;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, MemoryStore, NewEvent, RecordedEvent};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use uuid::Uuid;

/// One raw baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// One row per commit, one client (compare W1, W4).
    Single1,
    /// One row per commit, 32 clients (compare W2, W3).
    Single32,
    /// 100 rows per transaction (a multi-row INSERT on PostgreSQL).
    Batch100,
    /// Binary COPY (PostgreSQL only).
    Copy,
    /// The W5 upserts, 1,000 events per transaction.
    Upserts,
}

impl Baseline {
    /// How the table names it.
    pub fn label(self, backend: Backend) -> &'static str {
        match (self, backend) {
            (Baseline::Single1, Backend::Memory) => "1 caller, 1 event/append",
            (Baseline::Single32, Backend::Memory) => "32 callers, 1 event/append",
            (Baseline::Batch100, Backend::Memory) => "100 events/append",
            (Baseline::Single1, _) => "1 client, 1 row/commit",
            (Baseline::Single32, _) => "32 clients, 1 row/commit",
            (Baseline::Batch100, Backend::Postgres) => "100-row INSERT/commit",
            (Baseline::Batch100, _) => "100 rows/commit",
            (Baseline::Copy, _) => "binary COPY",
            (Baseline::Upserts, Backend::Memory) => "HashMap fold",
            (Baseline::Upserts, _) => "upserts, 1,000/commit",
        }
    }
}

/// Runs the raw baselines against one target.
pub struct Raw {
    backend: Backend,
    sqlite_path: PathBuf,
    postgres: Option<PostgresPlace>,
    /// The next `position` for PostgreSQL rows (the raw side has no lock).
    next_position: Arc<AtomicI64>,
    prepared: bool,
}

impl Raw {
    /// Baselines beside `target` (its directory, its schema).
    pub fn new(target: &Target) -> Raw {
        Raw {
            backend: target.backend,
            sqlite_path: target.path().join("raw.db"),
            postgres: target.postgres.clone(),
            next_position: Arc::new(AtomicI64::new(1)),
            prepared: false,
        }
    }

    /// Runs `baseline` with `rows` rows (`events` for [`Baseline::Upserts`]);
    /// `None` when the backend has no such baseline.
    pub async fn run(
        &mut self,
        baseline: Baseline,
        rows: usize,
        events: &Arc<[RecordedEvent]>,
    ) -> anyhow::Result<Option<Measurement>> {
        self.prepare().await?;
        let path = self.sqlite_path.clone();
        Ok(Some(match (self.backend, baseline) {
            (_, Baseline::Upserts) => return self.upserts(events).await.map(Some),
            (Backend::Memory, Baseline::Single1) => memory_appends(1, rows).await?,
            (Backend::Memory, Baseline::Single32) => memory_appends(32, rows).await?,
            (Backend::Memory, Baseline::Batch100) => memory_batches(rows, 100).await?,
            (Backend::Sqlite, Baseline::Single1) => blocking(move || sqlite_single(&path, 1, rows)).await?,
            (Backend::Sqlite, Baseline::Single32) => blocking(move || sqlite_single(&path, 32, rows)).await?,
            (Backend::Sqlite, Baseline::Batch100) => blocking(move || sqlite_batched(&path, rows, 100)).await?,
            (Backend::Postgres, Baseline::Single1) => self.postgres_single(1, rows).await?,
            (Backend::Postgres, Baseline::Single32) => self.postgres_single(32, rows).await?,
            (Backend::Postgres, Baseline::Batch100) => self.postgres_batched(rows, 100).await?,
            (Backend::Postgres, Baseline::Copy) => self.postgres_copy(rows).await?,
            (_, Baseline::Copy) => return Ok(None),
        }))
    }

    async fn prepare(&mut self) -> anyhow::Result<()> {
        if self.prepared {
            return Ok(());
        }
        match (&self.postgres, self.backend) {
            (Some(place), _) => {
                let client = self.client(place).await?;
                client
                    .batch_execute(
                        "CREATE TABLE raw_events (LIKE events INCLUDING ALL);
                         CREATE TABLE raw_balances (stream_id text PRIMARY KEY, balance bigint NOT NULL);",
                    )
                    .await
                    .context("creating the raw tables")?;
            }
            (None, Backend::Sqlite) => {
                let conn = sqlite_connection(&self.sqlite_path)?;
                conn.execute_batch(SQLITE_EVENTS)?;
                conn.execute_batch(SQLITE_TABLE)?;
            }
            (None, _) => {}
        }
        self.prepared = true;
        Ok(())
    }

    /// A connection working in the run's schema.
    async fn client(&self, place: &PostgresPlace) -> anyhow::Result<tokio_postgres::Client> {
        let client = connect(&place.url).await?;
        client.batch_execute(&format!("SET search_path TO \"{}\"", place.schema)).await?;
        Ok(client)
    }

    fn place(&self) -> anyhow::Result<&PostgresPlace> {
        self.postgres.as_ref().context("no PostgreSQL schema")
    }

    /// `clients` connections, each committing single-row inserts.
    async fn postgres_single(&self, clients: usize, rows: usize) -> anyhow::Result<Measurement> {
        let mut connections = Vec::with_capacity(clients);
        for _ in 0..clients {
            let client = self.client(self.place()?).await?;
            let insert = client.prepare(&postgres_insert(1)).await?;
            connections.push(Arc::new((client, insert)));
        }
        let (connections, next) = (Arc::new(connections), self.next_position.clone());
        run_callers(clients, rows, move |i| {
            let (connection, next) = (connections[i % clients].clone(), next.clone());
            async move {
                let row = RawRow::deposit(1);
                let position = next.fetch_add(1, Ordering::Relaxed);
                connection.0.execute(&connection.1, &row.params(&position)).await?;
                Ok(())
            }
        })
        .await
    }

    /// One client, `per_commit` rows per multi-row INSERT (one statement, one commit).
    async fn postgres_batched(&self, rows: usize, per_commit: usize) -> anyhow::Result<Measurement> {
        let client = self.client(self.place()?).await?;
        let insert = client.prepare(&postgres_insert(per_commit)).await?;
        let start = Instant::now();
        for _ in 0..rows / per_commit {
            let batch: Vec<RawRow> = (0..per_commit).map(|r| RawRow::deposit(r as i64 + 1)).collect();
            let first = self.next_position.fetch_add(per_commit as i64, Ordering::Relaxed);
            let positions: Vec<i64> = (first..first + per_commit as i64).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                batch.iter().zip(&positions).flat_map(|(row, position)| row.params(position)).collect();
            client.execute(&insert, &params).await?;
        }
        Ok(Measurement::throughput((rows / per_commit * per_commit) as u64, start.elapsed()))
    }

    /// One binary COPY of `rows` rows.
    async fn postgres_copy(&self, rows: usize) -> anyhow::Result<Measurement> {
        let client = self.client(self.place()?).await?;
        let start = Instant::now();
        let sink = client
            .copy_in(
                "COPY raw_events (position, event_id, stream_id, stream_version, event_type, data, metadata, \
                 causation_id, correlation_id, created_at) FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::INT8,
            Type::UUID,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::JSONB,
            Type::JSONB,
            Type::UUID,
            Type::UUID,
            Type::TIMESTAMPTZ,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let (empty, now) = (serde_json::json!({}), chrono::Utc::now());
        let first = self.next_position.fetch_add(rows as i64, Ordering::Relaxed);
        for r in 0..rows {
            let row = RawRow::deposit((r % 100) as i64 + 1);
            let data: serde_json::Value = serde_json::from_str(&row.data)?;
            let position = first + r as i64;
            let values: [&(dyn ToSql + Sync); 10] = [
                &position,
                &row.event_id,
                &row.stream_id,
                &row.version,
                &row.event_type,
                &Json(&data),
                &Json(&empty),
                &row.causation_id,
                &row.correlation_id,
                &now,
            ];
            writer.as_mut().write(&values).await?;
        }
        writer.finish().await?;
        Ok(Measurement::throughput(rows as u64, start.elapsed()))
    }

    /// The W5 baseline.
    async fn upserts(&self, events: &Arc<[RecordedEvent]>) -> anyhow::Result<Measurement> {
        let start = Instant::now();
        match self.backend {
            Backend::Memory => {
                let mut balances: HashMap<String, i64> = HashMap::new();
                for event in events.iter() {
                    if let Some(balance) = balance_after(event).map_err(anyhow::Error::from_boxed)? {
                        balances.insert(event.stream_id.clone(), balance);
                    }
                }
                std::hint::black_box(&balances);
            }
            Backend::Sqlite => {
                let (path, events) = (self.sqlite_path.clone(), events.clone());
                blocking(move || sqlite_upserts(&path, &events)).await?;
            }
            Backend::Postgres => {
                let mut client = self.client(self.place()?).await?;
                let sql = POSTGRES_UPSERT.replace("INTO balances", "INTO raw_balances");
                for chunk in events.chunks(BATCH) {
                    let tx = client.transaction().await?;
                    upsert_postgres(&tx, &sql, chunk).await.map_err(anyhow::Error::from_boxed)?;
                    tx.commit().await?;
                }
            }
        }
        Ok(Measurement::throughput(events.len() as u64, start.elapsed()))
    }
}

/// Every event in the store, in global order (for the W5 baseline).
pub async fn all_events(target: &Target) -> anyhow::Result<Arc<[RecordedEvent]>> {
    let store = target.shared();
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = all.last().map_or(GlobalPosition(1), |e| e.position.next());
        let batch = store.read_all(from, 10_000, &EventFilter::all()).await?;
        if batch.is_empty() {
            return Ok(all.into());
        }
        all.extend(batch);
    }
}

/// A deposit row as the store would hold it.
struct RawRow {
    event_id: Uuid,
    stream_id: String,
    version: i64,
    event_type: &'static str,
    data: String,
    causation_id: Uuid,
    correlation_id: Uuid,
}

impl RawRow {
    /// Row `version` of a new stream `account-<random>`.
    fn deposit(version: i64) -> RawRow {
        let account_uuid = Uuid::new_v4();
        let event = AccountEvent::DepositedIntoAccount {
            account_uuid,
            deposit_amount: 1,
            new_current_balance: 1_000 + version,
            transfer_uuid: None,
        };
        let encoded = rewind::encode_event(&event).expect("a bank event encodes");
        RawRow {
            event_id: Uuid::now_v7(),
            stream_id: format!("account-{account_uuid}"),
            version,
            event_type: "DepositedIntoAccount",
            data: encoded.data,
            causation_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
        }
    }

    /// PostgreSQL parameters in the order of [`postgres_insert`].
    fn params<'a>(&'a self, position: &'a i64) -> [&'a (dyn ToSql + Sync); 7] {
        [position, &self.event_id, &self.stream_id, &self.version, &self.data, &self.causation_id, &self.correlation_id]
    }
}

/// A prepared multi-row INSERT of `rows` rows into `raw_events`.
fn postgres_insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p = r * 7;
            format!(
                "(${}, ${}, ${}, ${}, 'DepositedIntoAccount', ${}::text::jsonb, '{{}}', ${}, ${}, now())",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    format!(
        "INSERT INTO raw_events (position, event_id, stream_id, stream_version, event_type, data, metadata, \
         causation_id, correlation_id, created_at) VALUES {}",
        values.join(", ")
    )
}

// ---------------------------------------------------------------------------- memory

fn memory_event(i: usize) -> NewEvent {
    let event = AccountEvent::DepositedIntoAccount {
        account_uuid: Uuid::nil(),
        deposit_amount: 1,
        new_current_balance: 1_000 + i as i64,
        transfer_uuid: None,
    };
    NewEvent::from_event(&event).expect("a bank event encodes")
}

/// `callers` tasks appending one event per call to streams of their own.
async fn memory_appends(callers: usize, rows: usize) -> anyhow::Result<Measurement> {
    let store = Arc::new(MemoryStore::new());
    run_callers(callers, rows, move |i| {
        let store = store.clone();
        async move {
            store.append(&format!("account-{i}"), ExpectedVersion::NoStream, vec![memory_event(i)]).await?;
            Ok(())
        }
    })
    .await
}

/// One caller appending `per_append` events at a time.
async fn memory_batches(rows: usize, per_append: usize) -> anyhow::Result<Measurement> {
    let store = MemoryStore::new();
    let start = Instant::now();
    for chunk in 0..rows / per_append {
        let events = (0..per_append).map(memory_event).collect();
        store.append(&format!("account-{chunk}"), ExpectedVersion::NoStream, events).await?;
    }
    Ok(Measurement::throughput((rows / per_append * per_append) as u64, start.elapsed()))
}

// ---------------------------------------------------------------------------- SQLite

/// The store's `events` table (crates/rewind-sqlite/src/schema/0001_initial.sql).
const SQLITE_EVENTS: &str = "CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY, event_id BLOB NOT NULL UNIQUE, stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version >= 1), event_type TEXT NOT NULL, data TEXT NOT NULL,
    causation_id BLOB, correlation_id BLOB, metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL, UNIQUE (stream_id, stream_version)
) STRICT";

const SQLITE_INSERT: &str = "INSERT INTO events (event_id, stream_id, stream_version, event_type, data, \
    causation_id, correlation_id, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '{}', ?8)";

/// What a busy writer does: try again soon (as the store's own connections do).
fn retry_soon(_attempts: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    true
}

fn sqlite_connection(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_handler(Some(retry_soon))?;
    Ok(conn)
}

fn sqlite_insert(conn: &Connection, row: &RawRow) -> rusqlite::Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    conn.prepare_cached(SQLITE_INSERT)?
        .execute(params![
            row.event_id.as_bytes(),
            row.stream_id,
            row.version,
            row.event_type,
            row.data,
            row.causation_id.as_bytes(),
            row.correlation_id.as_bytes(),
            now
        ])
        .map(drop)
}

/// `clients` threads, each with its own connection, one row per (implicit) transaction.
fn sqlite_single(path: &Path, clients: usize, rows: usize) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let conn = sqlite_connection(path)?;
                    let mut latencies = Vec::new();
                    for _ in (c..rows).step_by(clients) {
                        let began = Instant::now();
                        sqlite_insert(&conn, &RawRow::deposit(1))?;
                        latencies.push(began.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(rows);
        for thread in threads {
            all.extend(thread.join().map_err(|_| anyhow::anyhow!("a raw SQLite client panicked"))??);
        }
        anyhow::Ok(all)
    })?;
    Ok(Measurement::with_latencies(start.elapsed(), latencies))
}

/// One connection, `per_commit` rows per transaction.
fn sqlite_batched(path: &Path, rows: usize, per_commit: usize) -> anyhow::Result<Measurement> {
    let mut conn = sqlite_connection(path)?;
    let start = Instant::now();
    for _ in 0..rows / per_commit {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for r in 0..per_commit {
            sqlite_insert(&tx, &RawRow::deposit(r as i64 + 1))?;
        }
        tx.commit()?;
    }
    Ok(Measurement::throughput((rows / per_commit * per_commit) as u64, start.elapsed()))
}

/// The W5 upserts, [`BATCH`] per transaction.
fn sqlite_upserts(path: &Path, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let mut conn = sqlite_connection(path)?;
    for chunk in events.chunks(BATCH) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for event in chunk {
            if let Some(balance) = balance_after(event).map_err(anyhow::Error::from_boxed)? {
                tx.prepare_cached(SQLITE_UPSERT)?.execute(params![event.stream_id, balance])?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}
