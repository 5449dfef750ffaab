//! Dispatch throughput on the in-memory store, beside the raw store doing the same
//! appends, in one process. `cargo bench -p rewind --bench dispatch [-- --quick]`.

#[path = "../tests/support/mod.rs"]
mod support;

use rewind::{AggregateConfig, Application, EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamVersion};
use std::sync::Arc;
use std::time::Instant;
use support::*;

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime")
}

fn app() -> Application {
    Application::builder(MemoryStore::new()).router(router(AggregateConfig::new().identity_prefix("account-"))).build()
}

fn deposit_event(balance: i64) -> NewEvent {
    NewEvent::from_event(&AccountEvent::Deposited { amount: 1, balance }).expect("encode")
}

/// One caller, one live aggregate.
async fn hot_dispatch(n: usize) -> f64 {
    let app = app();
    app.dispatch(Open { id: "hot".into(), initial_balance: 1 }).await.expect("open");
    let start = Instant::now();
    for _ in 0..n {
        app.dispatch(Deposit { id: "hot".into(), amount: 1 }).await.expect("deposit");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The same appends straight to the store (events encoded in the loop, as dispatch does).
async fn hot_raw(n: usize) -> f64 {
    let store = MemoryStore::new();
    let start = Instant::now();
    for i in 0..n {
        let expected = ExpectedVersion::Exact(StreamVersion(i as u64));
        store.append("account-hot", expected, vec![deposit_event(i as i64)]).await.expect("append");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `callers` tasks, each dispatching to its own share of `aggregates` accounts.
async fn distinct_dispatch(n: usize, callers: usize, aggregates: usize) -> f64 {
    let app = app();
    for a in 0..aggregates {
        app.dispatch(Open { id: a.to_string(), initial_balance: 1 }).await.expect("open");
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..n / callers {
                    let id = ((c + i * callers) % aggregates).to_string();
                    app.dispatch(Deposit { id, amount: 1 }).await.expect("deposit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (n / callers * callers) as f64 / start.elapsed().as_secs_f64()
}

async fn distinct_raw(n: usize, callers: usize, aggregates: usize) -> f64 {
    let store = Arc::new(MemoryStore::new());
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..n / callers {
                    let stream = format!("account-{}", (c + i * callers) % aggregates);
                    store.append(&stream, ExpectedVersion::Any, vec![deposit_event(i as i64)]).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (n / callers * callers) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    let rt = runtime(2);
    println!("dispatch on the in-memory store, {n} commands per row, 2 worker threads");
    println!("{:<52} {:>12} {:>12} {:>8}", "workload", "rewind/s", "raw store/s", "ratio");
    let hot = (rt.block_on(hot_dispatch(n)), rt.block_on(hot_raw(n)));
    print_row("one hot aggregate, one caller", hot);
    let distinct = (rt.block_on(distinct_dispatch(n, 64, 10_000)), rt.block_on(distinct_raw(n, 64, 10_000)));
    print_row("10,000 aggregates, 64 concurrent callers", distinct);
}

fn print_row(name: &str, (rewind, raw): (f64, f64)) {
    println!("{name:<52} {rewind:>12.0} {raw:>12.0} {:>8.2}", rewind / raw);
}
