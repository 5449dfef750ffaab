//! Append and read throughput of `PostgresStore`, next to the raw limit of the same
//! PostgreSQL through the same driver, in one run.
//!
//! Raw rows go into `raw_events`, a copy of the store's `events` table (same columns,
//! constraints and indexes), so both sides write the same rows. Run with
//! `TEST_DATABASE_URL=postgres://... cargo bench -p rewind-postgres --bench append`;
//! `BENCH_SCALE=4` runs four times as many operations. Without a URL it only says so.

use futures_util::pin_mut;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent, StreamVersion};
use rewind_postgres::{PostgresOptions, PostgresStore};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const DATA: &str = r#"{"account":"acc-1234","amount":100,"currency":"EUR"}"#;
const CLIENTS: usize = 32;
/// Rounds per workload; each side's best round is reported.
const ROUNDS: usize = 5;

/// One measured workload: rows (or events) handled and the time it took.
struct Rate {
    rows: u64,
    elapsed: Duration,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

async fn measure<F: Future<Output = u64>>(work: F) -> Rate {
    let start = Instant::now();
    let rows = work.await;
    Rate { rows, elapsed: start.elapsed() }
}

fn faster(a: Rate, b: Rate) -> Rate {
    if a.per_second() >= b.per_second() { a } else { b }
}

/// Runs the raw and the Rewind side of a workload in alternating rounds and keeps
/// each side's best round, so load from elsewhere on the machine hits both alike.
async fn pair<R, W, RF, WF>(raw: R, rewind: W) -> (Rate, Rate)
where
    R: Fn() -> RF,
    W: Fn() -> WF,
    RF: Future<Output = u64>,
    WF: Future<Output = u64>,
{
    let (mut best_raw, mut best_rewind) = (measure(raw()).await, measure(rewind()).await);
    for _ in 1..ROUNDS {
        best_raw = faster(best_raw, measure(raw()).await);
        best_rewind = faster(best_rewind, measure(rewind()).await);
    }
    (best_raw, best_rewind)
}

fn new_event() -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Deposited".into(),
        data: DATA.into(),
        metadata: Metadata::default(),
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// The raw side: the same rows, inserted directly.
struct Raw {
    url: String,
    table: String,
    /// Positions for raw rows (the raw side has no lock; each client takes its own).
    next: Arc<AtomicI64>,
}

impl Raw {
    fn insert_sql(&self, rows: usize) -> String {
        let values: Vec<String> = (0..rows)
            .map(|r| {
                let p = r * 5;
                format!(
                    "(${}, ${}, ${}, ${}, 'Deposited', ${}::text::jsonb, '{{}}', now())",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                )
            })
            .collect();
        format!(
            "INSERT INTO {} (position, event_id, stream_id, stream_version, event_type, data, metadata, created_at) VALUES {}",
            self.table,
            values.join(", ")
        )
    }

    /// `clients` connections, each committing `per_client` inserts of `rows` rows.
    async fn inserts(&self, clients: usize, per_client: usize, rows: usize) -> u64 {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (url, sql, next) = (self.url.clone(), self.insert_sql(rows), self.next.clone());
                tokio::spawn(async move {
                    let client = connect(&url).await;
                    let statement = client.prepare(&sql).await.expect("prepare");
                    let stream = format!("raw-{c}-{}", Uuid::new_v4());
                    let mut version = 0i64;
                    for _ in 0..per_client {
                        let first = next.fetch_add(rows as i64, Ordering::Relaxed);
                        let ids: Vec<Uuid> = (0..rows).map(|_| Uuid::now_v7()).collect();
                        let values: Vec<(i64, i64)> = (0..rows as i64).map(|r| (first + r, version + 1 + r)).collect();
                        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * 5);
                        for ((position, v), id) in values.iter().zip(&ids) {
                            let row: [&(dyn ToSql + Sync); 5] = [position, id, &stream, v, &DATA];
                            params.extend(row);
                        }
                        client.execute(&statement, &params).await.expect("insert");
                        version += rows as i64;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("raw client");
        }
        (clients * per_client * rows) as u64
    }

    /// One binary COPY of `rows` rows.
    async fn copy(&self, rows: usize) -> u64 {
        let client = connect(&self.url).await;
        let data: serde_json::Value = serde_json::from_str(DATA).expect("json");
        let empty = serde_json::json!({});
        let stream = format!("copy-{}", Uuid::new_v4());
        let now = chrono::Utc::now();
        let sql = format!(
            "COPY {} (position, event_id, stream_id, stream_version, event_type, data, metadata, created_at) FROM STDIN BINARY",
            self.table
        );
        let sink = client.copy_in(&sql).await.expect("copy");
        let types =
            [Type::INT8, Type::UUID, Type::TEXT, Type::INT8, Type::TEXT, Type::JSONB, Type::JSONB, Type::TIMESTAMPTZ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let first = self.next.fetch_add(rows as i64, Ordering::Relaxed);
        for r in 0..rows as i64 {
            let (position, version, id) = (first + r, r + 1, Uuid::now_v7());
            let row: [&(dyn ToSql + Sync); 8] =
                [&position, &id, &stream, &version, &"Deposited", &Json(&data), &Json(&empty), &now];
            writer.as_mut().write(&row).await.expect("copy row");
        }
        writer.finish().await.expect("finish copy");
        rows as u64
    }
}

/// `clients` tasks, each appending `per_client` single events to its own stream.
async fn rewind_appends(store: &Arc<PostgresStore>, clients: usize, per_client: usize) -> u64 {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = format!("one-{c}-{}", Uuid::new_v4());
                for v in 0..per_client as u64 {
                    let expected = ExpectedVersion::Exact(StreamVersion(v));
                    store.append(&stream, expected, vec![new_event()]).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    (clients * per_client) as u64
}

/// One caller appending `batches` batches of `size` events to one stream.
async fn rewind_batches(store: &PostgresStore, batches: usize, size: usize) -> u64 {
    let stream = format!("batch-{}", Uuid::new_v4());
    for b in 0..batches {
        let events = (0..size).map(|_| new_event()).collect();
        let expected = ExpectedVersion::Exact(StreamVersion((b * size) as u64));
        store.append(&stream, expected, events).await.expect("append batch");
    }
    (batches * size) as u64
}

/// Reads the whole global order in pages of `page`.
async fn rewind_read_all(store: &PostgresStore, page: usize) -> u64 {
    let mut from = GlobalPosition::START.next();
    let mut read = 0;
    loop {
        let batch = store.read_all(from, page, &EventFilter::all()).await.expect("read_all");
        let Some(last) = batch.last() else { return read };
        from = last.position.next();
        read += batch.len() as u64;
    }
}

fn row(name: &str, raw: Option<&Rate>, rewind: Option<&Rate>, goal: &str) {
    let cell = |r: Option<&Rate>| r.map_or("-".to_owned(), |r| format!("{:.0}", r.per_second()));
    let ratio = match (raw, rewind) {
        (Some(raw), Some(rewind)) => format!("{:.2}x", rewind.per_second() / raw.per_second()),
        _ => "-".to_owned(),
    };
    println!("| {name:<44} | {:>12} | {:>12} | {ratio:>7} | {goal:<12} |", cell(raw), cell(rewind));
}

fn main() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        println!("append benchmark skipped: set TEST_DATABASE_URL to a PostgreSQL database");
        return;
    };
    let scale: usize = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run(url, scale));
}

async fn run(url: String, scale: usize) {
    let schema = format!("rwb_{}", Uuid::new_v4().simple());
    let store = Arc::new(PostgresStore::connect_with(PostgresOptions::new(&url, &schema)).await.expect("open store"));
    let admin = connect(&url).await;
    let table = format!("\"{schema}\".raw_events");
    admin
        .batch_execute(&format!("CREATE TABLE {table} (LIKE \"{schema}\".events INCLUDING ALL)"))
        .await
        .expect("raw table");
    let raw = Raw { url: url.clone(), table, next: Arc::new(AtomicI64::new(1)) };

    let (raw_one, rewind_one) =
        pair(|| raw.inserts(1, 300 * scale, 1), || rewind_appends(&store, 1, 300 * scale)).await;
    let (raw_32, rewind_32) =
        pair(|| raw.inserts(CLIENTS, 100 * scale, 1), || rewind_appends(&store, CLIENTS, 100 * scale)).await;
    let (raw_batch, rewind_batch) =
        pair(|| raw.inserts(1, 60 * scale, 100), || rewind_batches(&store, 60 * scale, 100)).await;
    let raw_copy = measure(raw.copy(100_000 * scale)).await;
    let events = store.head_position().await.expect("head").0;
    let mut read = measure(rewind_read_all(&store, 5_000)).await;
    for _ in 1..ROUNDS {
        read = faster(read, measure(rewind_read_all(&store, 5_000)).await);
    }
    assert_eq!(read.rows, events, "read the whole order");

    println!();
    println!(
        "PostgreSQL append benchmark (rows or events per second, best of {ROUNDS} alternating rounds; ratio = Rewind / raw)"
    );
    println!("| {:<44} | {:>12} | {:>12} | {:>7} | {:<12} |", "workload", "raw", "Rewind", "ratio", "goal");
    println!("|{:-<46}|{:->14}|{:->14}|{:->9}|{:-<14}|", "", "", "", "", "");
    row("1 client, 1 row per commit", Some(&raw_one), Some(&rewind_one), "");
    row("32 clients, 1 row per commit, own streams", Some(&raw_32), Some(&rewind_32), ">= 1.50x");
    row("100-row multi-row INSERT / 100-event append", Some(&raw_batch), Some(&rewind_batch), ">= 0.80x");
    row("COPY (binary, one statement)", Some(&raw_copy), None, "");
    row(&format!("read global order ({events} events, 5000/page)"), None, Some(&read), ">= 500000/s");
    let stats = store.stats();
    println!(
        "\nstore: {} appends, {} events in {} transactions ({:.1} appends per transaction)",
        stats.appends,
        stats.events,
        stats.transactions,
        stats.appends as f64 / stats.transactions.max(1) as f64
    );
    drop(store);
    admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.expect("drop bench schema");
}
