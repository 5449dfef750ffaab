//! Projection catch-up in partitions: the bank's monthly statements projector
//! built from the origin over a stored history (1,000,000 events by default;
//! `-- --quick` for 100,000) with 1, 2 and 4 partitions, on PostgreSQL (needs
//! `TEST_DATABASE_URL`) and SQLite. Beside them, in the same run, the time one
//! reader takes to read the whole history in the same batches: every partition
//! reads all of it, so that is the floor under any partition count.
//!
//! `cargo bench -p bank --bench catch_up [-- --quick] [-- --batch N]`

use bank::read_model::Statements;
use rewind::{Application, EventFilter, EventStore, GlobalPosition, SubscriptionOptions, Subscriptions};
use rewind_cli::{Backend, Database, OpenMode};
use std::time::Instant;

#[path = "support/history.rs"]
mod history;
use history::history;

/// Seconds to read the whole store in batches of `batch`.
async fn read_everything(backend: &Backend, batch: usize) -> f64 {
    let started = Instant::now();
    let mut from = GlobalPosition(1);
    loop {
        let events = backend.store.read_all(from, batch, &EventFilter::all()).await.expect("read");
        let Some(last) = events.last() else { break };
        from = last.position.next();
    }
    started.elapsed().as_secs_f64()
}

/// Events per second for the statements projector, from the origin, in `partitions`.
async fn catch_up(backend: &Backend, partitions: u32, batch: usize, head: GlobalPosition) -> f64 {
    let app = Application::builder_shared(backend.store.clone()).build();
    let options = SubscriptionOptions::new().concurrency(partitions).batch_size(batch);
    let started = Instant::now();
    let subscriptions = Subscriptions::builder(&app, backend.bookkeeping.clone())
        .read_model(backend.read_model.portable())
        .projector_with(Statements, options)
        .await
        .expect("projector")
        .start()
        .expect("start");
    subscriptions.wait_for(bank::read_model::statements::STATEMENTS, head).await.expect("caught up");
    let seconds = started.elapsed().as_secs_f64();
    subscriptions.shutdown().await;
    head.0 as f64 / seconds
}

async fn run(name: &str, make: impl Fn(&str) -> Database, events: &[rewind::RecordedEvent], batch: usize) {
    let mut one = None;
    for partitions in [1u32, 2, 4] {
        let backend = Backend::open(&make(&format!("p{partitions}")), OpenMode::Empty).await.expect("open");
        for chunk in events.chunks(10_000) {
            backend.store.import(chunk.to_vec()).await.expect("seed");
        }
        let head = backend.store.settled_head().await.expect("head");
        let read = events.len() as f64 / read_everything(&backend, batch).await;
        let rate = catch_up(&backend, partitions, batch, head).await;
        let ratio = rate / *one.get_or_insert(rate);
        println!("| {name} | {partitions} | {rate:.0} | {ratio:.2} | {read:.0} |");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let batch = args
        .iter()
        .position(|a| a == "--batch")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let n = if quick { 100_000 } else { 1_000_000 };
    let events = history(n);
    println!("monthly statements from the origin, {n} events over 1,000 accounts, batches of {batch}\n");
    println!("| backend | partitions | events/s | ÷ 1 partition | one reader, events/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let tag = format!("rwb_catch_up_{}", std::process::id());
            let make = |name: &str| Database::Postgres { url: url.clone(), schema: format!("{tag}_{name}") };
            run("PostgreSQL", make, &events, batch).await;
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            for partitions in [1, 2, 4] {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {tag}_p{partitions} CASCADE"))
                    .await
                    .expect("drop");
            }
        }
        _ => eprintln!("PostgreSQL skipped: TEST_DATABASE_URL is not set"),
    }
    let dir = tempfile::tempdir().expect("dir");
    run("SQLite", |name| Database::Sqlite(dir.path().join(format!("{name}.db"))), &events, batch).await;
}
