//! Time travel: copy a store's events up to a moment into an empty store, then run
//! every projector over the copy, so serving the copy shows the application exactly
//! as it was then.
//!
//! "Up to a moment" is a prefix of the global order: every event up to a position,
//! or every event up to the first one committed after a time. Only projectors run
//! over the copy. Event handlers are marked done up to the copy's head, so serving
//! the copy never repeats a side effect (no email is sent twice). Process managers
//! keep no checkpoint in the copy: when it is served they resume from the origin,
//! and because every command's first outcome is in the copied log
//! ([`rewind::command_outcome`]: its events or its recorded refusal), their repeated
//! commands are answered as they were then, and only the work left unfinished at that
//! moment is done.

use crate::app::RewindApp;
use crate::error::OpsError;
use crate::export::read_pages;
use crate::progress::Progress;
use crate::projections::{Running, start_projectors};
use chrono::{DateTime, Utc};
use rewind::{EventStore, GlobalPosition, RecordedEvent};
use rewind_backend::Backend;

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every event up to this position (inclusive).
    Position(GlobalPosition),
    /// Every event before the first one committed after this time.
    Time(DateTime<Utc>),
}

impl Until {
    fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            Until::Position(last) => event.position <= *last,
            Until::Time(time) => event.created_at <= *time,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Events copied.
    pub events: u64,
    /// The projectors run over them.
    pub projectors: Vec<String>,
}

/// Copies `source`'s events up to `until` into `destination` (empty), then runs the
/// projectors and marks the event handlers done. See the module docs.
pub async fn replay(
    app: &dyn RewindApp,
    source: &Backend,
    destination: &Backend,
    until: Until,
) -> Result<Copied, OpsError> {
    let head = source.store.settled_head().await.map_err(OpsError::store(&source.database))?;
    let total = match until {
        Until::Position(last) => last.min(head).0,
        Until::Time(_) => head.0,
    };
    // The projectors follow the copy as it lands, instead of starting after it.
    let projectors = start_copy(app, destination).await?;
    let progress = Progress::new(total, "copying");
    let (mut received, reader) = read_pages(&source.store, move |event| until.includes(event));
    let mut events = 0;
    while let Some(page) = received.recv().await {
        events += page.len() as u64;
        destination.store.import(page).await.map_err(OpsError::store(&destination.database))?;
        progress.set(events);
    }
    progress.finish();
    reader
        .await
        .map_err(|e| OpsError::Task(format!("replay reader failed: {e}")))?
        .map_err(OpsError::store(&source.database))?;
    let projectors = finish_copy(destination, projectors).await?;
    Ok(Copied { events, projectors })
}

/// Starts every projector of `app` on `backend` from the origin, to follow a copy
/// into it (see [`finish_copy`]).
pub async fn start_copy(app: &dyn RewindApp, backend: &Backend) -> Result<Running, OpsError> {
    start_projectors(app, backend, |_| true, true).await
}

/// After events were copied into `backend`: waits for the projectors started by
/// [`start_copy`] to reach the head and marks every event handler done up to it.
/// Returns the projectors run.
pub async fn finish_copy(backend: &Backend, mut projectors: Running) -> Result<Vec<String>, OpsError> {
    let handlers = std::mem::take(&mut projectors.handlers);
    let projectors = projectors.finish(backend).await?;
    let head = backend.store.settled_head().await.map_err(OpsError::store(&backend.database))?;
    for name in handlers {
        backend.bookkeeping.save_checkpoint(&name, head).await.map_err(OpsError::store(&backend.database))?;
    }
    Ok(projectors)
}
