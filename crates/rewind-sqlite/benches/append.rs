//! Append and read throughput of `SqliteStore`, against the raw limit of SQLite on
//! the same machine, in one run.
//!
//! The raw baseline inserts the same rows (same columns, same stream/version
//! placement) into the same `events` table on its own file with the same settings
//! (WAL, `synchronous=FULL`), straight through rusqlite: one row per transaction,
//! and 100 rows per transaction. Rewind runs 32 concurrent appenders of one event
//! each (group commit), appends of 100-event batches, and a read of the global
//! order. Raw and Rewind workloads alternate for a few rounds and each keeps its
//! best round, so a neighbour's burst of disk traffic does not decide a ratio.
//! Prints one table with rates, Rewind/raw ratios and the goals.
//!
//! ```text
//! cargo bench -p rewind-sqlite --bench append            # quick: a few seconds
//! cargo bench -p rewind-sqlite --bench append -- --full  # larger counts, more rounds
//! cargo bench -p rewind-sqlite --bench append -- --normal  # synchronous=NORMAL on both sides:
//!                                                          # CPU cost without fsync waits
//! ```

use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent, StreamVersion};
use rewind_sqlite::{SqliteConfig, SqliteStats, SqliteStore, Synchronous};
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How many operations each workload runs per round, and how durably.
struct Sizes {
    synchronous: Synchronous,
    rounds: usize,
    raw_single_rows: usize,
    raw_batched_rows: usize,
    appenders: usize,
    appends_per_appender: usize,
    batch_appends: usize,
}

impl Sizes {
    fn from_args() -> Sizes {
        let full = std::env::args().any(|arg| arg == "--full");
        let normal = std::env::args().any(|arg| arg == "--normal");
        Sizes {
            synchronous: if normal { Synchronous::Normal } else { Synchronous::Full },
            rounds: if full { 7 } else { 5 },
            raw_single_rows: if full { 2_000 } else { 500 },
            raw_batched_rows: if full { 200_000 } else { 30_000 },
            appenders: 32,
            appends_per_appender: if full { 1_000 } else { 300 },
            batch_appends: if full { 2_000 } else { 300 },
        }
    }
}

/// The best round of one workload.
#[derive(Default, Clone, Copy)]
struct Best {
    events: usize,
    elapsed: Option<Duration>,
}

impl Best {
    fn record(&mut self, events: usize, elapsed: Duration) {
        let rate = events as f64 / elapsed.as_secs_f64();
        if self.elapsed.is_none() || rate > self.rate() {
            *self = Best { events, elapsed: Some(elapsed) };
        }
    }

    fn rate(&self) -> f64 {
        self.elapsed.map_or(0.0, |elapsed| self.events as f64 / elapsed.as_secs_f64())
    }
}

/// The same event the store and the raw baseline write.
fn new_event(i: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "MoneyDeposited".into(),
        data: format!(r#"{{"account":"acc-{i}","amount":{}}}"#, i % 1_000),
        metadata: Metadata {
            causation_id: Some(Uuid::new_v4()),
            correlation_id: Some(Uuid::new_v4()),
            ..Default::default()
        },
    }
}

// ---------------------------------------------------------------------------- raw

const RAW_SCHEMA: &str = "
CREATE TABLE events (
    position INTEGER PRIMARY KEY, event_id BLOB NOT NULL UNIQUE, stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL, event_type TEXT NOT NULL, data TEXT NOT NULL,
    causation_id BLOB, correlation_id BLOB, metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL, UNIQUE (stream_id, stream_version)
) STRICT;";

const RAW_INSERT: &str = "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, data, \
    causation_id, correlation_id, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// The raw baseline's file, and the position its next row gets.
struct Raw {
    conn: Connection,
    next_position: i64,
}

/// A row as the raw baseline writes it: the event, its stream and version.
type RawRow = (NewEvent, String, i64);

impl Raw {
    fn open(path: &Path, synchronous: Synchronous) -> Raw {
        let conn = Connection::open(path).expect("raw open");
        conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
        let synchronous = if synchronous == Synchronous::Full { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", synchronous).expect("synchronous");
        conn.pragma_update(None, "cache_size", -16 * 1024).expect("cache");
        // The store's checkpoint threshold (`connection.rs`), so both copy the log alike.
        conn.pragma_update(None, "wal_autocheckpoint", 500).expect("checkpoint threshold");
        conn.execute_batch(RAW_SCHEMA).expect("raw schema");
        Raw { conn, next_position: 1 }
    }

    /// Inserts `rows`, `per_transaction` per transaction.
    fn insert(&mut self, rows: &[RawRow], per_transaction: usize) -> Duration {
        let started = Instant::now();
        for chunk in rows.chunks(per_transaction) {
            self.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
            let mut insert = self.conn.prepare_cached(RAW_INSERT).expect("prepare");
            for (event, stream, version) in chunk {
                insert
                    .execute(params![
                        self.next_position,
                        event.event_id.as_bytes(),
                        stream,
                        version,
                        event.event_type,
                        event.data,
                        event.metadata.causation_id.as_ref().map(Uuid::as_bytes),
                        event.metadata.correlation_id.as_ref().map(Uuid::as_bytes),
                        event.metadata.custom_json(),
                        1_700_000_000_000_000i64,
                    ])
                    .expect("insert");
                self.next_position += 1;
            }
            drop(insert);
            self.conn.execute_batch("COMMIT").expect("commit");
        }
        started.elapsed()
    }

    /// Reads every row back, decoding what a recorded event needs most.
    fn read(&self) -> (usize, Duration) {
        let started = Instant::now();
        let mut statement = self.conn.prepare("SELECT * FROM events ORDER BY position").expect("prepare");
        let mut rows = statement.query([]).expect("query");
        let mut count = 0;
        while let Some(row) = rows.next().expect("row") {
            let id = Uuid::from_slice(row.get_ref(1).and_then(|v| Ok(v.as_blob()?)).expect("id")).expect("uuid");
            let stream: String = row.get(2).expect("stream");
            let event_type: String = row.get(4).expect("type");
            let data: String = row.get(5).expect("data");
            std::hint::black_box((id, stream, event_type, data));
            count += 1;
        }
        (count, started.elapsed())
    }
}

/// Rows placed like the concurrent appenders place them: one event per stream in
/// turn over 32 streams.
fn round_robin_rows(round: usize, rows: usize) -> Vec<RawRow> {
    (0..rows).map(|i| (new_event(i), format!("concurrent-{round}-{}", i % 32), (i / 32 + 1) as i64)).collect()
}

/// Rows placed like the batch appends place them: 100 consecutive events per
/// stream, cycling over 1,000 streams.
fn batched_rows(round: usize, rows: usize) -> Vec<RawRow> {
    (0..rows)
        .map(|i| {
            let batch = i / 100;
            let version = (batch / 1_000) * 100 + i % 100 + 1;
            (new_event(i), format!("batch-{round}-{}", batch % 1_000), version as i64)
        })
        .collect()
}

// ------------------------------------------------------------------------- rewind

/// `appenders` tasks, each appending one event at a time to its own stream.
async fn concurrent_appends(store: &Arc<SqliteStore>, round: usize, appenders: usize, per_appender: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = format!("concurrent-{round}-{a}");
                for i in 0..per_appender {
                    let expected = ExpectedVersion::Exact(StreamVersion(i as u64));
                    store.append(&stream, expected, vec![new_event(i)]).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    started.elapsed()
}

/// One appender, 100 events per append, cycling over 1,000 streams.
async fn batch_appends(store: &SqliteStore, round: usize, appends: usize) -> Duration {
    let batches: Vec<Vec<NewEvent>> =
        (0..appends).map(|b| (0..100).map(|i| new_event(b * 100 + i)).collect()).collect();
    let started = Instant::now();
    for (b, batch) in batches.into_iter().enumerate() {
        let stream = format!("batch-{round}-{}", b % 1_000);
        store.append(&stream, ExpectedVersion::Any, batch).await.expect("batch append");
    }
    started.elapsed()
}

/// Reads the whole global order, 1,000 events per call.
async fn read_all(store: &SqliteStore) -> (usize, Duration) {
    let started = Instant::now();
    let (mut from, mut count) = (GlobalPosition::START.next(), 0);
    loop {
        let page = store.read_all(from, 1_000, &EventFilter::all()).await.expect("read_all");
        let Some(last) = page.last() else { break };
        from = last.position.next();
        count += page.len();
    }
    (count, started.elapsed())
}

// -------------------------------------------------------------------------- main

/// The best round of every workload.
#[derive(Default)]
struct Results {
    raw_single: Best,
    raw_batched: Best,
    raw_read: Best,
    concurrent: Best,
    batched: Best,
    read: Best,
    concurrent_stats: SqliteStats,
}

fn main() {
    let sizes = Sizes::from_args();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut raw = Raw::open(&dir.path().join("raw.db"), sizes.synchronous);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let config = SqliteConfig::default().synchronous(sizes.synchronous);
    let store = runtime.block_on(SqliteStore::open_with(dir.path().join("rewind.db"), config)).expect("open");
    let store = Arc::new(store);
    let mut results = Results::default();
    for round in 0..sizes.rounds {
        run_round(&sizes, round, &mut raw, &store, &runtime, &mut results);
    }
    print_table(&sizes, &results);
}

/// One round: each raw workload, then its Rewind counterpart.
fn run_round(
    sizes: &Sizes,
    round: usize,
    raw: &mut Raw,
    store: &Arc<SqliteStore>,
    runtime: &tokio::runtime::Runtime,
    results: &mut Results,
) {
    let rows = round_robin_rows(round, sizes.raw_single_rows);
    results.raw_single.record(rows.len(), raw.insert(&rows, 1));
    let before = store.stats();
    let elapsed = runtime.block_on(concurrent_appends(store, round, sizes.appenders, sizes.appends_per_appender));
    results.concurrent.record(sizes.appenders * sizes.appends_per_appender, elapsed);
    let after = store.stats();
    results.concurrent_stats.requests += after.requests - before.requests;
    results.concurrent_stats.commits += after.commits - before.commits;
    results.concurrent_stats.largest_group = after.largest_group;

    let rows = batched_rows(round, sizes.raw_batched_rows);
    results.raw_batched.record(rows.len(), raw.insert(&rows, 100));
    results
        .batched
        .record(sizes.batch_appends * 100, runtime.block_on(batch_appends(store, round, sizes.batch_appends)));

    let (count, elapsed) = raw.read();
    results.raw_read.record(count, elapsed);
    let (count, elapsed) = runtime.block_on(read_all(store));
    results.read.record(count, elapsed);
}

fn print_table(sizes: &Sizes, results: &Results) {
    let line = |workload: &str, best: &Best, raw: Option<(&str, &Best)>, goal: &str| {
        let ratio = raw.map(|(name, raw)| format!("{:.2} x {name}", best.rate() / raw.rate())).unwrap_or_default();
        println!(
            "{workload:<34} {:>9} {:>9.3} {:>12.0}  {ratio:<26} {goal}",
            best.events,
            best.elapsed.unwrap_or_default().as_secs_f64(),
            best.rate()
        );
    };
    let synchronous = match sizes.synchronous {
        Synchronous::Full => "synchronous=FULL (fsync on every commit)",
        _ => "synchronous=NORMAL (no fsync per commit; goals do not apply)",
    };
    println!("best of {} rounds; SQLite WAL, {synchronous}\n", sizes.rounds);
    println!("{:<34} {:>9} {:>9} {:>12}  {:<26} goal", "workload", "events", "seconds", "events/s", "rewind/raw");
    line("raw: 1 row per transaction", &results.raw_single, None, "");
    line("raw: 100 rows per transaction", &results.raw_batched, None, "");
    line("raw: read all rows", &results.raw_read, None, "");
    line(
        "rewind: 32 appenders x 1 event",
        &results.concurrent,
        Some(("raw 1 row/tx", &results.raw_single)),
        ">= 30,000 events/s",
    );
    line(
        "rewind: 100-event appends",
        &results.batched,
        Some(("raw 100 rows/tx", &results.raw_batched)),
        ">= 0.80 x raw 100 rows/tx",
    );
    line("rewind: read_all, 1000/page", &results.read, Some(("raw read", &results.raw_read)), ">= 500,000 events/s");
    let stats = &results.concurrent_stats;
    println!(
        "\ngroup commit in the concurrent runs: {} appends in {} commits ({:.1} appends per commit, largest group {})",
        stats.requests,
        stats.commits,
        stats.requests as f64 / stats.commits.max(1) as f64,
        stats.largest_group
    );
}
