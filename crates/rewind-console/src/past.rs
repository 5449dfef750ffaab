//! Time travel: one stream's state as it was at a moment, beside its state now.
//!
//! What a stream's state *is* belongs to the application (an account's balance,
//! an order's lines), so it hands the console a [`PastView`] per stream prefix.
//! The view folds the stream's own events up to the moment — no copy of the store
//! and no read model, which only knows now — and the console shows the two states
//! side by side, with the command that copies the whole store as it was then.

use crate::Console;
use crate::api::{Answer, ConsoleError, params};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use rewind::store::BoxFuture;
use rewind::{SharedStore, StoreError};
use serde_json::json;
use std::sync::Arc;

/// How an application shows the streams under one prefix as they were.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use rewind::{Direction, EventStore, SharedStore, StoreError, StreamVersion};
/// use rewind::store::BoxFuture;
/// use rewind_console::PastView;
///
/// /// A counter stream's state: how many events it had.
/// struct Counted;
///
/// impl PastView for Counted {
///     fn prefix(&self) -> &str {
///         "counter-"
///     }
///     fn at<'a>(
///         &'a self,
///         store: &'a SharedStore,
///         stream_id: &'a str,
///         at: DateTime<Utc>,
///     ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
///         Box::pin(async move {
///             let events = store.read_stream(stream_id, StreamVersion(1), Direction::Forward, 1_000).await?;
///             let then = events.iter().take_while(|e| e.created_at <= at).count();
///             Ok((then > 0).then(|| serde_json::json!({ "count": then })))
///         })
///     }
/// }
/// ```
pub trait PastView: Send + Sync + 'static {
    /// The stream ids it knows start with this.
    fn prefix(&self) -> &str;

    /// The stream's state at `at` (its events committed at or before then), or
    /// `None` when it did not exist yet.
    fn at<'a>(
        &'a self,
        store: &'a SharedStore,
        stream_id: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>>;

    /// The shell command that copies the whole store as it was at `at`, for the
    /// console to offer (`None`: offer none).
    fn replay_command(&self, at: DateTime<Utc>) -> Option<String> {
        let _ = at;
        None
    }
}

/// `GET /api/as-of/{stream_id}?at=RFC3339`: `{ then, now, replay }`; 404 when the
/// stream did not exist at the moment, 400 for a bad time or a stream no view knows.
pub(crate) async fn as_of(
    State(console): State<Arc<Console>>,
    Path(stream_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = params(query)?;
    let text = params.get("at").ok_or_else(|| ConsoleError::BadRequest("at is required".into()))?;
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| ConsoleError::BadRequest("at must be an RFC 3339 time, such as 2026-01-31T12:00:00Z".into()))?
        .to_utc();
    let view = console
        .pasts
        .iter()
        .find(|view| stream_id.starts_with(view.prefix()))
        .ok_or_else(|| ConsoleError::BadRequest(format!("no view of the past knows stream `{stream_id}`")))?;
    let then = view.at(&console.store, &stream_id, at).await?.ok_or(ConsoleError::NotFound)?;
    let now = view.at(&console.store, &stream_id, Utc::now()).await?;
    let replay = view.replay_command(at);
    Ok(Json(json!({ "data": { "stream_id": stream_id, "at": at.to_rfc3339(), "then": then, "now": now, "replay": replay } }))
        .into_response())
}

/// The prefixes the console can show the past of, for the page.
pub(crate) async fn views(State(console): State<Arc<Console>>) -> Answer {
    let prefixes: Vec<&str> = console.pasts.iter().map(|view| view.prefix()).collect();
    Ok(Json(json!({ "data": prefixes })).into_response())
}
