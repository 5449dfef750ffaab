//! Operations at scale: export, import and replay of a bank's history (1,000,000
//! events by default; `-- --quick` for 100,000), on SQLite and, when
//! `TEST_DATABASE_URL` is set, PostgreSQL. Beside each, the raw baseline: the same
//! rows written straight into a plain table with the same driver (SQLite: batched
//! INSERTs of 10,000 rows per transaction; PostgreSQL: one binary COPY).
//!
//! `cargo bench -p bank --bench ops [-- --quick]`
//!
//! The history is 1,000 accounts opened, then deposits spread over them, in the
//! bank's real event format, written by import (so its timestamps are spread over a
//! year, as a real history's would be, for the monthly statements).

use bank::service::BankApp;
use rewind::{EventStore, GlobalPosition, RecordedEvent};
use rewind_cli::replay::{Until, finish_copy, replay, start_copy};
use rewind_cli::{Backend, Database, OpenMode, export};
use std::time::Instant;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use uuid::Uuid;

#[path = "support/history.rs"]
mod history;
use history::{ACCOUNTS, history};

fn rate(events: usize, seconds: f64) -> f64 {
    events as f64 / seconds
}

/// Raw SQLite: the same rows in a plain table, 10,000 per transaction, fsync on.
fn raw_sqlite(dir: &std::path::Path, events: &[RecordedEvent]) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("raw.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE events (position INTEGER PRIMARY KEY, event_id BLOB NOT NULL UNIQUE, stream_id TEXT NOT NULL,
           stream_version INTEGER NOT NULL, event_type TEXT NOT NULL, data TEXT NOT NULL, causation_id BLOB,
           correlation_id BLOB, metadata TEXT NOT NULL, created_at INTEGER NOT NULL, UNIQUE (stream_id, stream_version))",
    )
    .expect("schema");
    let started = Instant::now();
    for chunk in events.chunks(10_000) {
        conn.execute_batch("BEGIN").expect("begin");
        let mut insert = conn
            .prepare_cached("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            .expect("prepare");
        for e in chunk {
            insert
                .execute(rusqlite::params![
                    e.position.0 as i64,
                    e.event_id.as_bytes(),
                    e.stream_id,
                    e.stream_version.0 as i64,
                    e.event_type,
                    e.data,
                    e.metadata.causation_id.as_ref().map(Uuid::as_bytes),
                    e.metadata.correlation_id.as_ref().map(Uuid::as_bytes),
                    "{}",
                    e.created_at.timestamp_micros()
                ])
                .expect("insert");
        }
        drop(insert);
        conn.execute_batch("COMMIT").expect("commit");
    }
    rate(events.len(), started.elapsed().as_secs_f64())
}

/// Raw PostgreSQL: the same rows by one binary COPY into a plain table with the
/// same keys.
async fn raw_postgres(url: &str, schema: &str, events: &[RecordedEvent]) -> f64 {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.raw (position bigint PRIMARY KEY, event_id uuid NOT NULL UNIQUE,
               stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL,
               causation_id uuid, correlation_id uuid, created_at timestamptz NOT NULL, UNIQUE (stream_id, stream_version))"
        ))
        .await
        .expect("schema");
    let started = Instant::now();
    let tx = client.transaction().await.expect("tx");
    let sink = tx
        .copy_in(&format!(
            "COPY {schema}.raw (position, event_id, stream_id, stream_version, event_type, data, causation_id, correlation_id, created_at) FROM STDIN BINARY"
        ))
        .await
        .expect("copy");
    let types = [
        Type::INT8,
        Type::UUID,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::JSONB,
        Type::UUID,
        Type::UUID,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures_util::pin_mut!(writer);
    for e in events {
        let data: serde_json::Value = serde_json::from_str(&e.data).expect("json");
        let (position, version) = (e.position.0 as i64, e.stream_version.0 as i64);
        writer
            .as_mut()
            .write(&[
                &position,
                &e.event_id,
                &e.stream_id,
                &version,
                &e.event_type,
                &data,
                &e.metadata.causation_id,
                &e.metadata.correlation_id,
                &e.created_at,
            ])
            .await
            .expect("row");
    }
    writer.finish().await.expect("finish");
    tx.commit().await.expect("commit");
    let seconds = started.elapsed().as_secs_f64();
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop");
    rate(events.len(), seconds)
}

/// Runs the three operations against `make(name)` databases; prints one row each.
async fn run(backend: &str, events: &[RecordedEvent], make: impl Fn(&str) -> Database, raw: f64) {
    let dir = tempfile::tempdir().expect("dir");
    let app = BankApp::default();
    let n = events.len();
    let source = Backend::open(&make("source"), OpenMode::Empty).await.expect("source");
    for chunk in events.chunks(10_000) {
        source.store.import(chunk.to_vec()).await.expect("seed");
    }

    let file = dir.path().join("bank.jsonl");
    let started = Instant::now();
    {
        let out = std::fs::File::create(&file).expect("file");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
        export::export(&source.store, &mut out).await.expect("export");
    }
    let export_rate = rate(n, started.elapsed().as_secs_f64());

    let imported = Backend::open(&make("imported"), OpenMode::Empty).await.expect("dest");
    let started = Instant::now();
    let total = export::check_file(&file).expect("check");
    export::import_file(&imported.store, &file, total).await.expect("import");
    let import_rate = rate(n, started.elapsed().as_secs_f64());
    let started = Instant::now();
    let projectors = start_copy(&app, &imported).await.expect("start projectors");
    finish_copy(&imported, projectors).await.expect("project");
    let project_rate = rate(n, started.elapsed().as_secs_f64());

    let copy = Backend::open(&make("replayed"), OpenMode::Empty).await.expect("copy");
    let started = Instant::now();
    let copied = replay(&app, &source, &copy, Until::Position(GlobalPosition(n as u64))).await.expect("replay");
    let replay_rate = rate(n, started.elapsed().as_secs_f64());
    assert_eq!(copied.events, n as u64);

    println!("| {backend} | export | {export_rate:.0} | {raw:.0} | {:.2} |", export_rate / raw);
    println!("| {backend} | import (events: check + write) | {import_rate:.0} | {raw:.0} | {:.2} |", import_rate / raw);
    println!("| {backend} | projections after import (all BankAPI projectors) | {project_rate:.0} | | |");
    println!(
        "| {backend} | replay (copy + all BankAPI projectors) | {replay_rate:.0} | {raw:.0} | {:.2} |",
        replay_rate / raw
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    let events = history(n);
    println!("{n} events over {ACCOUNTS} accounts; events/s (raw = the same rows written directly)\n");
    println!("| backend | operation | events/s | raw rows/s | ÷ raw |");
    println!("| --- | --- | ---: | ---: | ---: |");

    let dir = tempfile::tempdir().expect("dir");
    let raw = raw_sqlite(dir.path(), &events);
    run("SQLite", &events, |name| Database::Sqlite(dir.path().join(format!("{name}.db"))), raw).await;

    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let tag = format!("rwb_ops_{}", std::process::id());
            let raw = raw_postgres(&url, &format!("{tag}_raw"), &events).await;
            let make = |name: &str| Database::Postgres { url: url.clone(), schema: format!("{tag}_{name}") };
            run("PostgreSQL", &events, make, raw).await;
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            for name in ["source", "imported", "replayed"] {
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {tag}_{name} CASCADE")).await.expect("drop");
            }
        }
        _ => eprintln!("PostgreSQL skipped: TEST_DATABASE_URL is not set"),
    }
}
