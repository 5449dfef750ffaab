//! The live tail: the global order as server-sent events, from a position on.
//!
//! Each event is one SSE `event: recorded` whose `id` is its position and whose
//! data is the [`EventView`](crate::EventView) JSON, so a client that reconnects
//! can ask `from` the next position and miss nothing. The tail wakes on the
//! store's head watch and reads settled events only (what `read_all` returns), so
//! it never shows an event out of order; it also looks every second, for commits
//! of other processes that the watch may learn of late.

use crate::Console;
use crate::api::{ConsoleError, EventView};
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use rewind::{EventFilter, EventStore, GlobalPosition, RecordedEvent};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events read at once.
const BATCH: usize = 100;

struct Following {
    console: Arc<Console>,
    next: GlobalPosition,
    head: watch::Receiver<GlobalPosition>,
    ready: VecDeque<RecordedEvent>,
}

pub(crate) async fn tail(State(console): State<Arc<Console>>, RawQuery(query): RawQuery) -> Response {
    let params: Vec<(String, String)> = match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
        Ok(params) => params,
        Err(_) => return ConsoleError::BadRequest("the query string does not parse".into()).into_response(),
    };
    let head = console.store.watch_head();
    let from = match params.iter().find(|(key, _)| key == "from") {
        Some((_, text)) => match text.parse::<u64>() {
            Ok(from) => GlobalPosition(from.max(1)),
            Err(_) => return ConsoleError::BadRequest("from must be a whole number".into()).into_response(),
        },
        None => head.borrow().next(),
    };
    let following = Following { console, next: from, head, ready: VecDeque::new() };
    Sse::new(events(following)).keep_alive(KeepAlive::default()).into_response()
}

fn events(following: Following) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(following, |mut following| async move {
        loop {
            if let Some(event) = following.ready.pop_front() {
                let id = event.position.0.to_string();
                let data = serde_json::to_string(&EventView::from(event)).unwrap_or_default();
                return Some((Ok(Event::default().event("recorded").id(id).data(data)), following));
            }
            match following.console.store.read_all(following.next, BATCH, &EventFilter::all()).await {
                Ok(events) if !events.is_empty() => {
                    following.next = events.last().map_or(following.next, |e| e.position.next());
                    following.ready.extend(events);
                    continue;
                }
                // Nothing new, or the store is away for a moment: wait and look again.
                Ok(_) | Err(_) => {}
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), following.head.changed()).await;
        }
    })
}
