//! The console on a large store: how long each view's read takes on a bank history
//! of 1,000,000 events (`-- --quick`: 100,000), on SQLite and, when
//! `TEST_DATABASE_URL` is set, PostgreSQL. Each view is one request through the
//! console's router (`oneshot`, no socket), timed over 20 requests; the goal is
//! under 200 ms per view. The time-travel view folds a whole account stream twice
//! (then and now): 1,000 events each on the full history.
//!
//! `cargo bench -p bank --bench console [-- --quick] [--sqlite-at PATH]`: with
//! `--sqlite-at`, the SQLite store is written there and kept, for a browser to time
//! the page on it (`apps/bank/console-tests/render.mjs`).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rewind::{Application, EventStore, MemorySubscriptionStore, Subscriptions};
use rewind_cli::{Backend, Database, OpenMode};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/history.rs"]
mod history;
use history::history;

async fn time(router: &axum::Router, path: &str) -> (Duration, Duration) {
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = tower::ServiceExt::oneshot(router.clone(), request).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.into_body().collect().await.expect("body");
        times.push(started.elapsed());
    }
    times.sort();
    (times[10], times[19])
}

async fn run(name: &str, database: Database, events: &[rewind::RecordedEvent]) {
    let backend = Backend::open(&database, OpenMode::Empty).await.expect("open");
    for chunk in events.chunks(10_000) {
        backend.store.import(chunk.to_vec()).await.expect("seed");
    }
    let app = Application::builder_shared(backend.store.clone()).build();
    let subscriptions =
        Arc::new(Subscriptions::builder(&app, Arc::new(MemorySubscriptionStore::new())).start().expect("start"));
    let console = rewind_console::Console::new(backend.store.clone(), subscriptions)
        .with_past(bank::read_model::past::AccountsPast);
    let console = Arc::new(console);
    let router = rewind_console::api(console);
    let middle = events.len() / 2;
    let stream = &events[middle].stream_id;
    let views = [
        ("streams by prefix, 50".to_owned(), "/api/streams?prefix=account-&limit=50".to_owned()),
        ("streams after a cursor, 50".into(), format!("/api/streams?prefix=account-&after={stream}&limit=50")),
        ("a stream's events, 500".into(), format!("/api/streams/{stream}?limit=500")),
        ("the global order mid-log, 100".into(), format!("/api/events?from={middle}&limit=100")),
        ("one event".into(), format!("/api/events/{}", events[middle].event_id)),
        ("subscriptions".into(), "/api/subscriptions".into()),
        ("an event's trail".into(), format!("/api/events/{}/trail", events[middle].event_id)),
        (
            "an account mid-history beside now (1,000 events)".into(),
            format!("/api/as-of/{stream}?at={}", events[middle].created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
        ),
    ];
    for (view, path) in views {
        let (p50, worst) = time(&router, &path).await;
        println!("| {name} | {view} | {:.1} ms | {:.1} ms |", p50.as_secs_f64() * 1e3, worst.as_secs_f64() * 1e3);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    let events = history(n);
    println!("console views over {n} events (1,000 accounts)\n");
    println!("| backend | view | median | slowest of 20 |");
    println!("| --- | --- | ---: | ---: |");
    let dir = tempfile::tempdir().expect("dir");
    let args: Vec<String> = std::env::args().collect();
    let kept = args.iter().position(|a| a == "--sqlite-at").and_then(|i| args.get(i + 1));
    let path = kept.map_or_else(|| dir.path().join("console.db"), std::path::PathBuf::from);
    run("SQLite", Database::Sqlite(path.clone()), &events).await;
    if kept.is_some() {
        eprintln!("the SQLite store is kept at {}", path.display());
    }
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("rwb_console_{}", std::process::id());
            run("PostgreSQL", Database::Postgres { url: url.clone(), schema: schema.clone() }, &events).await;
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.expect("drop");
        }
        _ => eprintln!("PostgreSQL skipped: TEST_DATABASE_URL is not set"),
    }
}
