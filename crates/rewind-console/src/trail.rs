//! The causation trail: from one event, everything its original request set in
//! motion, as the commands that ran and the events each appended.
//!
//! Only events are stored, and each names its command (`Metadata::command`), what
//! caused it (`causation_id`) and its conversation (`correlation_id`); so a trail is
//! one index read of the correlation id ([`EventStore::read_correlated`]) grouped by
//! command, in the order the commands first appended. A command a process manager
//! sent names the event it reacted to as its cause: a transfer reads request →
//! withdraw → deposit (or refund). An event without a correlation id is a trail of
//! its own command alone.

use crate::Console;
use crate::api::{Answer, ConsoleError, EventView, event_id, limit, number, params};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use rewind::{EventStore, GlobalPosition, RecordedEvent};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// One conversation, command by command.
#[derive(Debug, Serialize)]
pub struct Trail {
    /// The event the trail was asked from.
    pub event_id: Uuid,
    /// The conversation's id (`null` when the event has none).
    pub correlation_id: Option<Uuid>,
    /// The commands, in the order they first appended.
    pub commands: Vec<Step>,
    /// The position to pass as `from` for the rest of a long conversation.
    pub next: Option<u64>,
}

/// A command and what it appended.
#[derive(Debug, Serialize)]
pub struct Step {
    /// The command's id (`null` for events stored without one).
    pub command_id: Option<Uuid>,
    /// The event it reacted to, when a process manager sent it (`null` for a request).
    pub caused_by: Option<Uuid>,
    /// What it appended, in the global order.
    pub events: Vec<EventView>,
}

/// Groups a conversation's events by their command, in first-append order.
pub(crate) fn steps(events: Vec<RecordedEvent>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for event in events {
        let command_id = event.metadata.command();
        let caused_by = event.metadata.causation_id.filter(|cause| Some(*cause) != command_id);
        let view = EventView::from(event);
        match steps.iter_mut().find(|step| step.command_id.is_some() && step.command_id == command_id) {
            Some(step) => step.events.push(view),
            None => steps.push(Step { command_id, caused_by, events: vec![view] }),
        }
    }
    steps
}

/// `GET /api/events/{event_id}/trail?from=&limit=`
pub(crate) async fn trail(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = params(query)?;
    let limit = limit(&params)?;
    let from = GlobalPosition(number(&params, "from", 1)?.max(1));
    let event_id = event_id(&id)?;
    let event = console.store.read_event(event_id).await?.ok_or(ConsoleError::NotFound)?;
    let correlation_id = event.metadata.correlation_id;
    let (events, next) = match correlation_id {
        Some(correlation) => {
            let events = console.store.read_correlated(correlation, from, limit).await?;
            let next = (events.len() == limit).then(|| events.last().map(|e| e.position.0 + 1)).flatten();
            (events, next)
        }
        None => (vec![event], None),
    };
    let trail = Trail { event_id, correlation_id, commands: steps(events), next };
    Ok(Json(json!({ "data": trail })).into_response())
}
