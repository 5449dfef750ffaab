//! The HTTP API (axum): routes, the layers around them, and the state they share.
//!
//! Built by [`router`] so tests can drive it without a socket; the `bank serve`
//! binary serves the same router.

mod accounts;
pub mod auth;
pub mod error;
pub mod idempotency;
mod json;
pub mod metrics;

use crate::service::Bank;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use std::sync::Arc;
use tracing::Instrument;

/// Request bodies beyond this are refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The bank.
    pub bank: Arc<Bank>,
    /// Metrics, also fed by the command middleware.
    pub metrics: Arc<metrics::Metrics>,
    /// First answers to idempotent requests.
    pub replies: Arc<idempotency::Replies>,
    /// When set, every `/api` request and `/metrics` need `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/accounts", post(accounts::open))
        .route("/accounts/{id}", get(accounts::show).delete(accounts::close))
        .route("/accounts/{id}/deposit", post(accounts::deposit))
        .route("/accounts/{id}/withdraw", post(accounts::withdraw))
        .route("/accounts/{id}/transfer", post(accounts::transfer))
        .route("/accounts/{id}/transactions", get(accounts::transactions))
        .route("/accounts/{id}/statements", get(accounts::statements))
        .route("/transfers/{id}", get(accounts::show_transfer))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn(trace_request))
        .layer(middleware::from_fn_with_state(state.replies.clone(), idempotency::layer))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    // What the service's gauges tell (its subscriptions, its load) is for operators.
    let metrics = Router::new()
        .route("/metrics", get(render_metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    // The console's page holds no data; what it reads is behind the token.
    let console = rewind_console::Console::new(state.bank.app.store().clone(), state.bank.subscriptions.clone())
        .with_past(crate::read_model::past::AccountsPast);
    let console = Arc::new(console);
    let console = rewind_console::page()
        .merge(rewind_console::api(console).layer(middleware::from_fn_with_state(state.clone(), authorize)));
    Router::new()
        .nest("/api", api)
        .nest_service("/console", console)
        .merge(metrics)
        .route("/health", get(health))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), metrics::layer))
        .with_state(state)
}

/// Each API request is a `request` span, the root of its trace (`crate::telemetry`),
/// named after its route, not its path, so that names stay few.
async fn trace_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("", |path| path.as_str());
    let span = tracing::debug_span!(
        target: "bank",
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    response
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && !auth::presents(request.headers().get(header::AUTHORIZATION), token)
    {
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

async fn health(State(state): State<AppState>) -> Response {
    match state.bank.head().await {
        Ok(head) => axum::Json(serde_json::json!({"status": "ok", "head": head})).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "error": error.to_string()})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.bank.subscriptions.status());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The OpenAPI document. It declares the bearer token; a server without one serves it
/// declaring no security, since every request is then answered without one.
async fn openapi(State(state): State<AppState>) -> Response {
    static OPEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    const DOCUMENT: &str = include_str!("openapi.json");
    let document = match state.token {
        Some(_) => DOCUMENT,
        None => OPEN.get_or_init(|| {
            let mut document: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap_or_default();
            document["security"] = serde_json::json!([]);
            if let Some(metrics) = document.pointer_mut("/paths/~1metrics/get") {
                metrics["security"] = serde_json::json!([]);
            }
            document.to_string()
        }),
    };
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}
