//! Traces (`bank::telemetry`, `rewind::telemetry`), exported to the OpenTelemetry
//! SDK's in-memory exporter through the bank's own provider and layer: a transfer
//! over the API is one connected trace — the request, Rewind's dispatch, middleware,
//! execute, append (with its group-commit size) and consistency spans, and the
//! transfer process's handling of the events, whose commands continue the trace; a
//! subscriber's batch links to it.
//!
//! On SQLite, and on PostgreSQL when `TEST_DATABASE_URL` is set. One test in this
//! binary: it installs the global subscriber.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bank::http::{AppState, metrics::CommandMetrics, metrics::Metrics, router};
use bank::service::{Bank, TRANSFER_PROCESS};
use opentelemetry::Value as OtelValue;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rewind_cli::Database;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

async fn send(state: &AppState, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, "application/json");
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = router(state.clone()).oneshot(request.body(body).expect("request")).await.expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a OtelValue> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key).map(|value| value.as_str().into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_one_trace_from_the_request_through_the_process_manager() {
    let exporter = InMemorySpanExporter::default();
    let provider = bank::telemetry::provider(exporter.clone(), true);
    let subscriber = tracing_subscriber::registry().with(bank::telemetry::layer(&provider));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");

    let dir = tempfile::tempdir().expect("dir");
    let mut databases = vec![Database::Sqlite(dir.path().join("bank.db"))];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            // The `rwt_<seconds>_` prefix lets the store tests' sweeper drop it later.
            let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let schema = format!("rwt_{seconds}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            databases.push(Database::Postgres { url, schema });
        }
        _ => eprintln!("PostgreSQL part skipped: TEST_DATABASE_URL is not set"),
    }
    for database in databases {
        exporter.reset();
        a_transfer_is_one_trace(&database, &provider, &exporter).await;
    }
    provider.shutdown().expect("shutdown");
}

async fn a_transfer_is_one_trace(database: &Database, provider: &SdkTracerProvider, exporter: &InMemorySpanExporter) {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let command_metrics: Arc<dyn rewind::Middleware> = Arc::new(CommandMetrics(metrics.clone()));
    let bank = Arc::new(Bank::start(database, vec![command_metrics]).await.expect("bank"));
    let state = AppState { bank: bank.clone(), metrics, replies: Arc::default(), token: None };

    let mut accounts = Vec::new();
    for balance in [100, 5] {
        let (status, opened) =
            send(&state, "POST", "/api/accounts", Some(json!({"account": {"initial_balance": balance}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{opened}");
        accounts.push(opened["data"]["uuid"].as_str().expect("uuid").to_owned());
    }
    let body = json!({"transfer_amount": 30, "destination_account": accounts[1]});
    let (status, transfer) = send(&state, "POST", &format!("/api/accounts/{}/transfer", accounts[0]), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{transfer}");
    // Every step of the transfer handled, by the subscriptions' own signal.
    bank.settle().await.expect("settle");
    let (_, destination) = send(&state, "GET", &format!("/api/accounts/{}", accounts[1]), None).await;
    assert_eq!(destination["data"]["current_balance"], 35, "the transfer completed");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");

    let roots: Vec<&SpanData> = spans.iter().filter(|s| s.name == "POST /api/accounts/{id}/transfer").collect();
    assert_eq!(roots.len(), 1, "one request span for the transfer");
    let root = roots[0];
    assert_eq!(root.parent_span_id, SpanId::INVALID, "the request is the trace's root");
    assert_eq!(attribute(root, "http.response.status_code"), Some(&OtelValue::I64(201)));
    let trace = root.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans.iter().filter(|s| s.span_context.trace_id() == trace).collect();
    let ids: HashSet<SpanId> = in_trace.iter().map(|s| s.span_context.span_id()).collect();
    let names = |name: &str| in_trace.iter().filter(|s| s.name == name).copied().collect::<Vec<&SpanData>>();

    // Connected: every span of the trace but the root has its parent in it, those
    // of the process manager (joined through the ids stored with the events) too.
    for span in &in_trace {
        if span.span_context.span_id() != root.span_context.span_id() {
            assert!(ids.contains(&span.parent_span_id), "{} has no parent in the trace: {span:?}", span.name);
        }
    }
    for name in ["middleware", "execute", "consistency"] {
        assert!(!names(name).is_empty(), "a {name} span in the trace");
    }
    let appends = names("append");
    assert!(
        appends.iter().all(|s| matches!(attribute(s, "group_commit"), Some(OtelValue::I64(n)) if *n >= 1)),
        "each append records its group commit's size: {appends:?}"
    );
    assert!(appends.len() >= 2, "the withdrawal and the deposit appended: {appends:?}");

    // The request's command, then the process manager's, all of one conversation.
    let dispatches = names("dispatch");
    assert!(dispatches.len() >= 2, "{dispatches:?}");
    let correlation = uuid::Uuid::from_bytes(trace.to_bytes()).to_string();
    assert!(dispatches.iter().all(|d| text(d, "correlation_id") == correlation), "correlation id = trace id");
    let handled: Vec<&SpanData> =
        names("handle").into_iter().filter(|s| text(s, "subscription") == TRANSFER_PROCESS).collect();
    assert!(!handled.is_empty(), "the transfer process's handling is in the request's trace");
    let first = dispatches.iter().find(|d| d.parent_span_id == root.span_context.span_id()).expect("the request's");
    assert!(
        handled.iter().any(|h| h.parent_span_id == first.span_context.span_id()),
        "the process manager continues the dispatch that appended its event"
    );
    assert!(
        dispatches.iter().any(|d| handled.iter().any(|h| d.parent_span_id == h.span_context.span_id())),
        "and its own command is a child of its handling"
    );
    // A subscriber's batch mixes conversations: its span links to each one's trace.
    // (On SQLite the read model projects inside the append, in the append's span.)
    let batches = spans.iter().filter(|s| s.name == "process");
    assert!(
        batches.into_iter().any(|s| s.links.iter().any(|link| link.span_context.trace_id() == trace)),
        "a subscriber's batch links to the transfer's trace"
    );
}
