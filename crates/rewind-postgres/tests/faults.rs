//! Which PostgreSQL failures are transient (retried for ever by a subscription) and
//! which are a projection's own (its error policy): real errors from a real server,
//! and a projector meeting both.

mod common;

use common::{database_url, fresh_schema, open, raw_client};
use rewind::{
    Application, ConsumerError, ErrorPolicy, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    RecordedEvent, SubscriptionOptions, SubscriptionStore, Subscriptions,
};
use rewind_postgres::{
    PostgresProjection, PostgresProjector, PostgresReadModel, PostgresSubscriptionStore, is_transient,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::Transaction;

async fn raised(client: &tokio_postgres::Client, code: &str) -> tokio_postgres::Error {
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised {code}' USING ERRCODE = '{code}'; END $$");
    client.batch_execute(&sql).await.expect_err("raised")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_are_transient_only_when_trying_again_can_help() {
    let Some(url) = database_url("database_errors_are_transient_only_when_trying_again_can_help") else { return };
    let client = raw_client(&url).await;
    // serialization, deadlock, lock timeout, statement timeout, shutting down, cannot
    // connect now, too many connections, disk full, read-only (a standby), connection failure
    for code in ["40001", "40P01", "55P03", "57014", "57P01", "57P03", "53300", "53100", "25006", "08006"] {
        assert!(is_transient(&raised(&client, code).await), "{code} is transient");
    }
    // unique and foreign key violations, division by zero, a plain RAISE, undefined table
    for code in ["23505", "23503", "22012", "P0001", "42P01"] {
        assert!(!is_transient(&raised(&client, code).await), "{code} is deterministic");
    }
    let syntax = client.batch_execute("SELEC 1").await.expect_err("syntax error");
    assert!(!is_transient(&syntax), "a projection's own bad SQL");
    let row = client.query_one("SELECT 'text'::text", &[]).await.expect("row");
    let conversion = row.try_get::<_, i64>(0).expect_err("not an integer");
    assert!(!is_transient(&conversion), "a value the client cannot convert");

    client.batch_execute("SET statement_timeout = '10ms'").await.expect("set");
    let timeout = client.batch_execute("SELECT pg_sleep(1)").await.expect_err("statement timeout");
    assert!(is_transient(&timeout), "a statement cancelled by its timeout: {timeout}");

    let refused = tokio_postgres::connect("postgres://postgres@127.0.0.1:1/test", tokio_postgres::NoTls).await;
    assert!(is_transient(&refused.err().expect("nothing listens on port 1")), "connection refused");
    let killed = raw_client(&url).await;
    let _ = killed.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())").await;
    let closed = killed.batch_execute("SELECT 1").await.expect_err("the connection is gone");
    assert!(is_transient(&closed), "a closed connection: {closed}");
}

/// Counts events; fails with a serialization failure the first `conflicts` times it
/// is called, and with a real unique violation on the event whose `n` is `duplicate`.
struct Flaky {
    conflicts: AtomicU32,
    duplicate: i64,
}

#[async_trait::async_trait]
impl PostgresProjection for Flaky {
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("CREATE TABLE IF NOT EXISTS seen (n bigint PRIMARY KEY)").await
    }
    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        if self.conflicts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001'; END $$")
                .await?;
        }
        let n: i64 = serde_json::from_str::<serde_json::Value>(&event.data)?["n"].as_i64().unwrap_or(-1);
        tx.execute("INSERT INTO seen VALUES ($1)", &[&n]).await?;
        if n == self.duplicate {
            tx.execute("INSERT INTO seen VALUES ($1)", &[&n]).await?;
        }
        Ok(())
    }
    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("DELETE FROM seen").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_retries_transient_database_errors_and_skips_only_its_own() {
    let Some(url) = database_url("a_projector_retries_transient_database_errors_and_skips_only_its_own") else {
        return;
    };
    let schema = fresh_schema();
    let store = open(&url, &schema).await;
    let model = PostgresReadModel::connect(&url, &schema).await.expect("read model");
    let bookkeeping = Arc::new(PostgresSubscriptionStore::new(&model));
    let app = Application::builder(store).build();
    for n in 1..=10 {
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "Counted".into(),
            data: format!(r#"{{"n":{n}}}"#),
            metadata: Metadata::default(),
        };
        app.store().append("s", ExpectedVersion::Any, vec![event]).await.expect("append");
    }
    // Skip at the first deterministic failure: a transient one taking the policy
    // would dead-letter an event that did nothing wrong.
    let projection = Flaky { conflicts: AtomicU32::new(8), duplicate: 7 };
    let projector = PostgresProjector::new("flaky", projection, &model).await.expect("projector");
    let backoff = rewind::Backoff::new(std::time::Duration::from_millis(5), std::time::Duration::from_millis(50));
    let options = SubscriptionOptions::new().batch_size(4).on_error(ErrorPolicy::Skip).backoff(backoff);
    let subs = Subscriptions::builder(&app, bookkeeping.clone())
        .consumer("flaky", Arc::new(projector), options)
        .start()
        .expect("start");
    tokio::time::timeout(std::time::Duration::from_secs(30), subs.wait_for("flaky", GlobalPosition(10)))
        .await
        .expect("caught up")
        .expect("wait");
    let client = model.client().await.expect("client");
    let seen: Vec<i64> =
        client.query("SELECT n FROM seen ORDER BY n", &[]).await.expect("seen").iter().map(|r| r.get(0)).collect();
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 8, 9, 10], "every event once, except the one the projection refused");
    let letters = bookkeeping.dead_letters(Some("flaky")).await.expect("letters");
    assert_eq!(letters.iter().map(|l| l.event.position).collect::<Vec<_>>(), [GlobalPosition(7)]);
    assert!(letters[0].error.contains("duplicate key"), "{}", letters[0].error);
    let status = subs.status_of("flaky").expect("status");
    assert_eq!((status.transient_failures, status.deterministic_failures), (8, 1));
    assert!(bookkeeping.failures(None).await.expect("reports").is_empty(), "no failure report left behind");
    subs.shutdown().await;
}
