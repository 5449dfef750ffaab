//! Projection speed on SQLite: rebuilding a read model from the origin, beside the
//! raw baseline (the same upserts written directly in batched transactions, from
//! events already in memory), and the live latency from append to projected.
//!
//! `cargo bench -p rewind-sqlite --bench projection [-- --quick]`

use rewind::store::StreamAppend;
use rewind::{
    Application, ConsumerError, EventFilter, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    RecordedEvent, SubscriptionOptions, Subscriptions,
};
use rewind_sqlite::{SqliteProjection, SqliteProjector, SqliteReadModel, SqliteStore, SqliteSubscriptionStore};
use rusqlite::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

const UPSERT: &str =
    "INSERT INTO balances VALUES (?1, ?2) ON CONFLICT (stream_id) DO UPDATE SET balance = balance + ?2";

struct Balances;

impl SqliteProjection for Balances {
    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS balances (stream_id TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
    }
    fn project(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        conn.prepare_cached(UPSERT)?.execute(rusqlite::params![event.stream_id, amount(event)])?;
        Ok(())
    }
    fn reset(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM balances")
    }
}

fn amount(event: &RecordedEvent) -> i64 {
    // The data is `{"amount":N}`; parse it as a projection would.
    serde_json::from_str::<serde_json::Value>(&event.data).ok().and_then(|v| v["amount"].as_i64()).unwrap_or(0)
}

fn deposit(i: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Deposited".into(),
        data: format!(r#"{{"amount":{}}}"#, i % 100 + 1),
        metadata: Metadata::default(),
    }
}

async fn seed(store: &SqliteStore, events: usize, accounts: usize) {
    for chunk in (0..events).collect::<Vec<_>>().chunks(10_000) {
        let appends = (0..accounts)
            .map(|a| StreamAppend {
                stream_id: format!("account-{a}"),
                expected: ExpectedVersion::Any,
                events: chunk.iter().filter(|i| *i % accounts == a).map(|&i| deposit(i)).collect(),
            })
            .filter(|append| !append.events.is_empty())
            .collect();
        store.append_batch(appends).await.expect("seed");
    }
}

async fn read_all(store: &SqliteStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let from = all.last().map_or(GlobalPosition(1), |e: &RecordedEvent| e.position.next());
        let batch = store.read_all(from, 10_000, &EventFilter::all()).await.expect("read");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// The same upserts, in 1,000-row transactions, straight into a fresh file.
fn raw(path: &std::path::Path, events: &[RecordedEvent]) -> f64 {
    let mut conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("sync");
    Balances.create(&conn).expect("create");
    let start = Instant::now();
    for chunk in events.chunks(1_000) {
        let tx = conn.transaction().expect("tx");
        for event in chunk {
            tx.prepare_cached(UPSERT)
                .expect("prepare")
                .execute(rusqlite::params![event.stream_id, amount(event)])
                .expect("upsert");
        }
        tx.commit().expect("commit");
    }
    events.len() as f64 / start.elapsed().as_secs_f64()
}

async fn rebuild(store: SqliteStore, model_path: &std::path::Path, events: u64) -> f64 {
    let model = SqliteReadModel::open(model_path).await.expect("model");
    let bookkeeping = Arc::new(SqliteSubscriptionStore::open(&model).await.expect("bookkeeping"));
    let app = Application::builder(store).build();
    let projector = SqliteProjector::new("balances", Balances, &model).await.expect("projector");
    let start = Instant::now();
    let subs = Subscriptions::builder(&app, bookkeeping)
        .consumer("balances", Arc::new(projector), SubscriptionOptions::new().batch_size(1_000))
        .start()
        .expect("start");
    subs.wait_for("balances", GlobalPosition(events)).await.expect("rebuilt");
    let rate = events as f64 / start.elapsed().as_secs_f64();
    subs.shutdown().await;
    rate
}

/// Append one event at a time to a live system and time until it is projected.
async fn latency(dir: &std::path::Path, samples: usize) -> (Duration, Duration) {
    let path = dir.join("live.db");
    let store = Arc::new(SqliteStore::open(&path).await.expect("store"));
    let model = SqliteReadModel::sharing(store.clone()).await.expect("model");
    let bookkeeping = Arc::new(SqliteSubscriptionStore::open(&model).await.expect("bookkeeping"));
    let app = Application::builder(store).build();
    let projector = SqliteProjector::new("balances", Balances, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping)
        .consumer("balances", Arc::new(projector), SubscriptionOptions::new())
        .start()
        .expect("start");
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        let appended = app
            .store()
            .append(&format!("account-{}", i % 10), ExpectedVersion::Any, vec![deposit(i)])
            .await
            .expect("append");
        subs.wait_for("balances", appended.last_position).await.expect("projected");
        times.push(start.elapsed());
    }
    subs.shutdown().await;
    times.sort();
    (times[samples / 2], times[samples * 99 / 100])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let events = if quick { 100_000 } else { 1_000_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let (rewind_rate, raw_rate) = runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("events.db")).await.expect("store");
        seed(&store, events, 1_000).await;
        let all = read_all(&store).await;
        let raw_rate = raw(&dir.path().join("raw.db"), &all);
        drop(all);
        (rebuild(store, &dir.path().join("read.db"), events as u64).await, raw_rate)
    });
    let (p50, p99) = runtime.block_on(latency(dir.path(), if quick { 500 } else { 2_000 }));
    println!("SQLite projection, {events} events over 1,000 accounts, synchronous=FULL");
    println!("{:<44} {:>14} {:>14} {:>7}", "workload", "rewind ev/s", "raw rows/s", "ratio");
    println!(
        "{:<44} {:>14.0} {:>14.0} {:>7.2}",
        "rebuild from the origin (1,000-event batches)",
        rewind_rate,
        raw_rate,
        rewind_rate / raw_rate
    );
    println!("append -> projected latency, one event at a time: p50 {p50:?}, p99 {p99:?}");
}
