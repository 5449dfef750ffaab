//! Shared test setup: the database URL, fresh schemas and stores on them.
//!
//! Tests read `TEST_DATABASE_URL`; when it is unset they print a notice and pass
//! without running. Each test opens its own schema (`rwt_<seconds>_<random>`), so
//! tests run in parallel; schemas older than an hour are dropped on the way. Tests
//! that stop their server run a cluster of their own ([`cluster`]).
#![allow(dead_code)]

pub mod cluster;

use rewind_postgres::{PostgresOptions, PostgresStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The test database, or `None` (after a notice) when it is not configured.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped {test}: TEST_DATABASE_URL is not set");
            None
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("rwt_{}_{}", now_secs(), &random[..12])
}

/// Opens a store with test-sized settings.
pub async fn open(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::connect_with(options(url, schema)).await.expect("open store")
}

/// Test-sized settings: few pooled connections, a quick poll.
pub fn options(url: &str, schema: &str) -> PostgresOptions {
    PostgresOptions::new(url, schema).pool_size(4).poll_interval(std::time::Duration::from_millis(200))
}

/// A store on a fresh schema, or `None` when no database is configured.
pub async fn fresh_store(test: &str) -> Option<PostgresStore> {
    let url = database_url(test)?;
    drop_stale_schemas(&url).await;
    Some(open(&url, &fresh_schema()).await)
}

/// A raw connection for checks the store API does not offer.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Drops test schemas left by runs more than an hour ago (once per test binary).
async fn drop_stale_schemas(url: &str) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let client = raw_client(url).await;
    let rows =
        client.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rwt\\_%'", &[]).await.expect("list schemas");
    let cutoff = now_secs().saturating_sub(3600);
    for row in rows {
        let name: String = row.get(0);
        let born = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok());
        if born.is_some_and(|b| b < cutoff) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).await;
        }
    }
}
