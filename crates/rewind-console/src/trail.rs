//! The causation trail: from one event, everything its original request set in
//! motion, as the commands that ran and the events each appended.
//!
//! Only events are stored, and each names its command (`Metadata::command`), what
//! caused it (`causation_id`) and its conversation (`correlation_id`). The stores keep
//! no index by correlation id: one would cost every append (a random-keyed B-tree
//! entry per event cost the SQLite store a third of its 100-event append rate, a
//! time-ordered one still a sixth; BENCHMARKS.md), for an operator's read. A
//! conversation is instead found where it happens, in the global order: the trail
//! walks the causes up from the event (each an index probe by event id) to the first
//! command, then reads the global order from that command's first event, keeping the
//! conversation's events, for at most [`SCAN`] events per request. A conversation
//! that goes on beyond that answers `next`, where to read on. Grouped by command, in
//! the order the commands first appended: a transfer reads request → withdraw →
//! deposit (or refund), each command with the event it reacted to.

use crate::Console;
use crate::api::{Answer, ConsoleError, EventView, event_id, limit, number, params};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use rewind::{Direction, EventFilter, EventStore, GlobalPosition, RecordedEvent, StoreError, StreamVersion};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
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
    /// Where the read stopped short of the head (the scan's budget or `limit` was
    /// spent): pass it as `from` for the rest of a long conversation.
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
    // A conversation may hold thousands of commands (a process manager's batch).
    let mut step_of: HashMap<Uuid, usize> = HashMap::new();
    for event in events {
        let command_id = event.metadata.command();
        let caused_by = event.metadata.causation_id.filter(|cause| Some(*cause) != command_id);
        let view = EventView::from(event);
        match command_id.and_then(|id| step_of.get(&id)) {
            Some(&step) => steps[step].events.push(view),
            None => {
                if let Some(id) = command_id {
                    step_of.insert(id, steps.len());
                }
                steps.push(Step { command_id, caused_by, events: vec![view] });
            }
        }
    }
    steps
}

/// Events of the global order one trail request reads, at most.
pub const SCAN: usize = 10_000;

/// Events per read of the global order.
const PAGE: usize = 1_000;

/// How far up the causes a trail walks, at most (a loop in bad data ends here).
const MAX_DEPTH: usize = 64;

/// Where the conversation of `event` begins: the first event of the command at the
/// top of its causes.
async fn beginning(console: &Console, event: RecordedEvent) -> Result<GlobalPosition, StoreError> {
    let correlation = event.metadata.correlation_id;
    let mut top = event;
    for _ in 0..MAX_DEPTH {
        let Some(cause) = top.metadata.causation_id.filter(|cause| Some(*cause) != top.metadata.command()) else {
            break;
        };
        match console.store.read_event(cause).await? {
            Some(found) if found.metadata.correlation_id == correlation => top = found,
            _ => break,
        }
    }
    // The command's events are one append to one stream: its first is just before.
    let from = StreamVersion(top.stream_version.0);
    let before = console.store.read_stream(&top.stream_id, from, Direction::Backward, PAGE).await?;
    let command = top.metadata.command();
    let first = before.iter().take_while(|e| e.metadata.command() == command).last();
    Ok(first.map_or(top.position, |e| e.position))
}

/// `GET /api/events/{event_id}/trail?from=&limit=`
pub(crate) async fn trail(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let params = params(query)?;
    let limit = limit(&params)?;
    let event_id = event_id(&id)?;
    let event = console.store.read_event(event_id).await?.ok_or(ConsoleError::NotFound)?;
    let Some(correlation) = event.metadata.correlation_id else {
        let trail = Trail { event_id, correlation_id: None, commands: steps(vec![event]), next: None };
        return Ok(Json(json!({ "data": trail })).into_response());
    };
    let mut position = match params.get("from") {
        Some(_) => GlobalPosition(number(&params, "from", 1)?.max(1)),
        None => beginning(&console, event).await?,
    };
    let (mut found, mut scanned, mut next) = (Vec::new(), 0, None);
    'scan: loop {
        let page = console.store.read_all(position, PAGE, &EventFilter::all()).await?;
        let ended = page.len() < PAGE;
        for event in page {
            if found.len() == limit || scanned == SCAN {
                next = Some(event.position.0);
                break 'scan;
            }
            scanned += 1;
            position = GlobalPosition(event.position.0 + 1);
            if event.metadata.correlation_id == Some(correlation) {
                found.push(event);
            }
        }
        if ended {
            break;
        }
    }
    let trail = Trail { event_id, correlation_id: Some(correlation), commands: steps(found), next };
    Ok(Json(json!({ "data": trail })).into_response())
}
