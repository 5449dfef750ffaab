//! The console's JSON: pages of the log, subscriptions, dead letters, and the
//! operator's actions on them. Errors are typed and mapped to HTTP here, once.

use crate::{Console, MAX_LIMIT};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rewind::{
    Direction, EventFilter, EventStore, GlobalPosition, Metadata, RecordedEvent, StoreError, StreamVersion,
    SubscriptionError,
};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Why a console request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Store(StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ConsoleError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Subscription(SubscriptionError::Unknown(_) | SubscriptionError::NoDeadLetter(..)) => {
                StatusCode::NOT_FOUND
            }
            ConsoleError::Subscription(SubscriptionError::Busy(_)) => StatusCode::CONFLICT,
            ConsoleError::Subscription(
                SubscriptionError::NotRebuildable(_) | SubscriptionError::ReplayByRebuild(_),
            ) => StatusCode::BAD_REQUEST,
            ConsoleError::Subscription(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "errors": { "detail": self.to_string() } }))).into_response()
    }
}

pub(crate) type Answer = Result<Response, ConsoleError>;

/// One page and where the next begins (`null` at the end).
#[derive(Debug, Serialize)]
pub struct Page<T, C> {
    /// The items.
    pub data: Vec<T>,
    /// What to pass to get the next page, if there may be one.
    pub next: Option<C>,
}

/// A recorded event for a reader: every envelope field, the data as JSON.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its place in the global order.
    pub position: u64,
    /// Its type name.
    pub event_type: String,
    /// Its data, parsed (the stored text if it does not parse).
    pub data: serde_json::Value,
    /// Causation, correlation, command id and the rest.
    pub metadata: Metadata,
    /// When it was committed (RFC 3339).
    pub created_at: String,
}

impl From<RecordedEvent> for EventView {
    fn from(event: RecordedEvent) -> EventView {
        let data = serde_json::from_str(&event.data).unwrap_or(serde_json::Value::String(event.data));
        EventView {
            event_id: event.event_id,
            stream_id: event.stream_id,
            stream_version: event.stream_version.0,
            position: event.position.0,
            event_type: event.event_type,
            data,
            metadata: event.metadata,
            created_at: event.created_at.to_rfc3339(),
        }
    }
}

/// The query string's parameters; a malformed one is a 400.
pub(crate) fn params(query: Option<String>) -> Result<HashMap<String, String>, ConsoleError> {
    serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|_| ConsoleError::BadRequest("the query string does not parse".into()))
}

/// A number parameter, `default` when absent.
pub(crate) fn number(params: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, ConsoleError> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| ConsoleError::BadRequest(format!("{name} must be a whole number"))),
    }
}

/// `limit`, 1 to [`MAX_LIMIT`], 100 by default.
pub(crate) fn limit(params: &HashMap<String, String>) -> Result<usize, ConsoleError> {
    match number(params, "limit", 100)? {
        n @ 1..=500 => Ok(n as usize),
        _ => Err(ConsoleError::BadRequest(format!("limit must be from 1 to {MAX_LIMIT}"))),
    }
}

fn events_page(events: Vec<RecordedEvent>, limit: usize, next: impl Fn(&RecordedEvent) -> u64) -> Response {
    let next = (events.len() == limit).then(|| events.last().map(&next)).flatten();
    Json(Page { data: events.into_iter().map(EventView::from).collect(), next }).into_response()
}

pub(crate) async fn streams(State(console): State<Arc<Console>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(query)?;
    let limit = limit(&params)?;
    let prefix = params.get("prefix").map_or("", String::as_str);
    let after = params.get("after").map_or("", String::as_str);
    let streams = console.store.list_streams(prefix, after, limit).await?;
    let next = (streams.len() == limit).then(|| streams.last().map(|s| s.stream_id.clone())).flatten();
    Ok(Json(Page { data: streams, next }).into_response())
}

pub(crate) async fn stream(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = params(query)?;
    let limit = limit(&params)?;
    let from = StreamVersion(number(&params, "from", 1)?.max(1));
    let events = console.store.read_stream(&id, from, Direction::Forward, limit).await?;
    if events.is_empty() && console.store.stream_version(&id).await? == StreamVersion::NONE {
        return Err(ConsoleError::NotFound);
    }
    Ok(events_page(events, limit, |e| e.stream_version.0 + 1))
}

pub(crate) async fn events(State(console): State<Arc<Console>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(query)?;
    let limit = limit(&params)?;
    let from = GlobalPosition(number(&params, "from", 1)?.max(1));
    let events = console.store.read_all(from, limit, &EventFilter::all()).await?;
    Ok(events_page(events, limit, |e| e.position.0 + 1))
}

pub(crate) fn event_id(text: &str) -> Result<Uuid, ConsoleError> {
    text.parse().map_err(|_| ConsoleError::BadRequest("an event id is a UUID".into()))
}

pub(crate) async fn event(State(console): State<Arc<Console>>, Path(id): Path<String>) -> Answer {
    let event = console.store.read_event(event_id(&id)?).await?.ok_or(ConsoleError::NotFound)?;
    Ok(Json(json!({ "data": EventView::from(event) })).into_response())
}

pub(crate) async fn subscriptions(State(console): State<Arc<Console>>) -> Answer {
    Ok(Json(json!({ "data": console.subscriptions.status() })).into_response())
}

pub(crate) async fn rebuild(State(console): State<Arc<Console>>, Path(name): Path<String>) -> Answer {
    console.subscriptions.rebuild(&name).await?;
    Ok(Json(json!({ "data": { "rebuilding": name } })).into_response())
}

pub(crate) async fn dead_letters(State(console): State<Arc<Console>>) -> Answer {
    Ok(Json(json!({ "data": console.subscriptions.dead_letters(None).await? })).into_response())
}

pub(crate) async fn replay(State(console): State<Arc<Console>>, Path((name, id)): Path<(String, String)>) -> Answer {
    console.subscriptions.replay_dead_letter(&name, event_id(&id)?).await?;
    Ok(Json(json!({ "data": { "replayed": id } })).into_response())
}

pub(crate) async fn skip(State(console): State<Arc<Console>>, Path((name, id)): Path<(String, String)>) -> Answer {
    console.subscriptions.discard_dead_letter(&name, event_id(&id)?).await?;
    Ok(Json(json!({ "data": { "skipped": id } })).into_response())
}
