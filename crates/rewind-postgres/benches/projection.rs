//! Projection speed on PostgreSQL: rebuilding a read model from the origin, beside
//! the raw baseline (the same upserts written directly with the same driver, in
//! 1,000-row transactions, from events already in memory), and the live latency
//! from append to projected. Needs `TEST_DATABASE_URL`.
//!
//! `cargo bench -p rewind-postgres --bench projection [-- --quick]`

use rewind::store::StreamAppend;
use rewind::{
    Application, ConsumerError, EventFilter, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    RecordedEvent, SubscriptionOptions, Subscriptions,
};
use rewind_postgres::{
    PostgresProjection, PostgresProjector, PostgresReadModel, PostgresStore, PostgresSubscriptionStore,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{GenericClient, Transaction};

const UPSERT: &str = "INSERT INTO balances (stream_id, balance) SELECT * FROM unnest($1::text[], $2::bigint[])
     ON CONFLICT (stream_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance";

/// Balance per stream; a batch becomes one statement (sums per stream, then one upsert).
struct Balances;

fn amount(event: &RecordedEvent) -> i64 {
    serde_json::from_str::<serde_json::Value>(&event.data).ok().and_then(|v| v["amount"].as_i64()).unwrap_or(0)
}

async fn upsert(client: &impl GenericClient, events: &[RecordedEvent]) -> Result<u64, tokio_postgres::Error> {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events {
        *sums.entry(&event.stream_id).or_default() += amount(event);
    }
    let (streams, amounts): (Vec<&str>, Vec<i64>) = sums.into_iter().unzip();
    client.execute(UPSERT, &[&streams, &amounts]).await
}

#[async_trait::async_trait]
impl PostgresProjection for Balances {
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("CREATE TABLE IF NOT EXISTS balances (stream_id text PRIMARY KEY, balance bigint NOT NULL)")
            .await
    }
    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        upsert(tx, std::slice::from_ref(event)).await?;
        Ok(())
    }
    async fn project_batch(&self, tx: &Transaction<'_>, events: &[RecordedEvent]) -> Result<(), ConsumerError> {
        upsert(tx, events).await?;
        Ok(())
    }
    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("DELETE FROM balances").await
    }
}

fn deposit(i: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Deposited".into(),
        data: format!(r#"{{"amount":{}}}"#, i % 100 + 1),
        metadata: Metadata::default(),
    }
}

async fn seed(store: &PostgresStore, events: usize, accounts: usize) {
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

async fn read_all(store: &PostgresStore) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = all.last().map_or(GlobalPosition(1), |e| e.position.next());
        let batch = store.read_all(from, 10_000, &EventFilter::all()).await.expect("read");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

async fn raw(model: &PostgresReadModel, events: &[RecordedEvent]) -> f64 {
    let mut client = model.client().await.expect("client");
    client.batch_execute("CREATE TABLE raw_balances (LIKE balances INCLUDING ALL)").await.expect("create");
    let start = Instant::now();
    for chunk in events.chunks(1_000) {
        let tx = client.transaction().await.expect("tx");
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for event in chunk {
            *sums.entry(&event.stream_id).or_default() += amount(event);
        }
        let (streams, amounts): (Vec<&str>, Vec<i64>) = sums.into_iter().unzip();
        tx.execute(&UPSERT.replace("balances", "raw_balances"), &[&streams, &amounts]).await.expect("upsert");
        tx.commit().await.expect("commit");
    }
    events.len() as f64 / start.elapsed().as_secs_f64()
}

async fn projector_system(url: &str, schema: &str, store: PostgresStore) -> (Application, Subscriptions) {
    let model = PostgresReadModel::connect(url, schema).await.expect("model");
    let bookkeeping = Arc::new(PostgresSubscriptionStore::new(&model));
    let app = Application::builder(store).build();
    let projector = PostgresProjector::new("balances", Balances, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping)
        .consumer("balances", Arc::new(projector), SubscriptionOptions::new().batch_size(1_000))
        .start()
        .expect("start");
    (app, subs)
}

async fn latency(url: &str, samples: usize) -> (Duration, Duration) {
    let schema = format!("rwb_latency_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::connect(url, &schema).await.expect("store");
    let (app, subs) = projector_system(url, &schema, store).await;
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
    drop_schema(url, &schema).await;
    times.sort();
    (times[samples / 2], times[samples * 99 / 100])
}

async fn drop_schema(url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.expect("drop");
}

fn main() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        println!("skipped: set TEST_DATABASE_URL to benchmark PostgreSQL projections");
        return;
    };
    let quick = std::env::args().any(|a| a == "--quick");
    let events = if quick { 100_000 } else { 1_000_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (rewind_rate, raw_rate) = runtime.block_on(async {
        let schema = format!("rwb_projection_{}", uuid::Uuid::new_v4().simple());
        let store = PostgresStore::connect(&url, &schema).await.expect("store");
        seed(&store, events, 1_000).await;
        let all = read_all(&store).await;
        let model = PostgresReadModel::connect(&url, &schema).await.expect("model");
        PostgresProjector::new("unused", Balances, &model).await.expect("create table");
        let raw_rate = raw(&model, &all).await;
        drop(all);
        let start = Instant::now();
        let (_app, subs) = projector_system(&url, &schema, store).await;
        subs.wait_for("balances", GlobalPosition(events as u64)).await.expect("rebuilt");
        let rate = events as f64 / start.elapsed().as_secs_f64();
        subs.shutdown().await;
        drop_schema(&url, &schema).await;
        (rate, raw_rate)
    });
    let (p50, p99) = runtime.block_on(latency(&url, if quick { 500 } else { 2_000 }));
    println!("PostgreSQL projection, {events} events over 1,000 accounts, fsync on");
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
