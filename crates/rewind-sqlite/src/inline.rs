//! Inline projections: read models in the store's own file, written in the same
//! transaction as the events they follow.
//!
//! A projector registered inline ([`SqliteProjector::inline`](crate::SqliteProjector::inline))
//! is called by the writer thread after a group's appends, before `COMMIT`, with the
//! group's new events. The read model then becomes durable in the same fsync as
//! the events, and a strongly consistent dispatch is done waiting when its append
//! is acknowledged — no read of the new events, no second transaction, no second
//! fsync.
//!
//! The projector's subscription still runs as the fallback and does everything
//! else: catching up after a start or a rebuild, retries, dead letters. The two
//! never apply an event twice, because both decide inside a write transaction from
//! the stored checkpoint: the writer projects a group only if the checkpoint sits
//! exactly before the group's first event (otherwise the subscription is behind and
//! will get there), and the subscription's own batches pass over events the
//! checkpoint covers. A group whose projection fails is rolled back to a savepoint
//! (its events still commit) and left to the subscription, whose error policy
//! then applies.
//!
//! A rebuild is a fresh projection: the reset deletes the tables and the
//! checkpoint, so the writer projects nothing more until the subscription has
//! caught up to the group before (the checkpoint sits right before a group only
//! then), and the reset forgets the shared `covered` position, which would
//! otherwise let the subscription jump over the history
//! (`SqliteProjector::reset` says why the order of the two is safe).

use crate::projector::{save_checkpoint, stored_checkpoint};
use crate::writer::Work;
use crate::{SqliteProjection, writer::Outcome};
use chrono::{DateTime, Utc};
use rewind::{AppendOutcome, EventFilter, GlobalPosition, RecordedEvent, StreamVersion};
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One projector written inline.
pub(crate) struct InlineProjection {
    pub(crate) name: Arc<str>,
    /// The projector's subscription filter: events it lets through are projected,
    /// the checkpoint moves past all of them.
    pub(crate) filter: EventFilter,
    pub(crate) projection: Arc<dyn SqliteProjection>,
    /// The last position projected inline and durable (0: none yet), shared with
    /// the projector so its subscription can move past it without reading.
    pub(crate) covered: Arc<AtomicU64>,
}

/// A projector's progress, to publish once its group is durable.
pub(crate) struct Progress {
    covered: Arc<AtomicU64>,
    position: u64,
}

impl Progress {
    /// Called by the syncer after the fsync that made the group durable.
    pub(crate) fn publish(self) {
        self.covered.fetch_max(self.position, Ordering::AcqRel);
    }
}

/// The store's inline projectors.
#[derive(Default)]
pub(crate) struct InlineProjections {
    list: RwLock<Vec<InlineProjection>>,
}

impl InlineProjections {
    pub(crate) fn add(&self, projection: InlineProjection) {
        self.list.write().unwrap_or_else(|p| p.into_inner()).push(projection);
    }

    /// Projects the group's events into every inline projector that is exactly at
    /// the group's start. Runs inside the group's transaction, after its requests.
    pub(crate) fn project(&self, conn: &Connection, events: &[RecordedEvent]) -> Vec<Progress> {
        // Registration is rare; holding the read lock while projecting costs nothing.
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Vec::new() };
        list.iter()
            .filter(|inline| {
                let at = stored_checkpoint(conn, &inline.name).ok().map(|c| c.map_or(0, |p| p.0));
                at == Some(first.position.0 - 1)
            })
            .filter_map(|inline| match project_in_savepoint(conn, inline, events) {
                Ok(()) => Some(Progress { covered: inline.covered.clone(), position: last.position.0 }),
                Err(error) => {
                    tracing::debug!(projector = %inline.name, %error, "inline projection failed; its subscription takes over");
                    None
                }
            })
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

fn project_in_savepoint(conn: &Connection, inline: &InlineProjection, events: &[RecordedEvent]) -> Result<(), String> {
    let execute = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop);
    execute("SAVEPOINT inline_projection").map_err(|e| e.to_string())?;
    // The writer thread must survive whatever the projection does.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| project(conn, inline, events)))
        .unwrap_or_else(|_| Err("the projection panicked".into()));
    if outcome.is_err() {
        execute("ROLLBACK TO inline_projection").map_err(|e| e.to_string())?;
    }
    execute("RELEASE inline_projection").map_err(|e| e.to_string())?;
    outcome
}

fn project(conn: &Connection, inline: &InlineProjection, events: &[RecordedEvent]) -> Result<(), String> {
    let delivered = |e: &&RecordedEvent| {
        !rewind::command_outcome::is_system_stream(&e.stream_id) && inline.filter.matches(&e.stream_id, &e.event_type)
    };
    for event in events.iter().filter(delivered) {
        inline.projection.project(conn, event).map_err(|e| e.to_string())?;
    }
    let last = events.last().map_or(GlobalPosition::START, |e| e.position);
    save_checkpoint(conn, &inline.name, last).map_err(|e| e.to_string())
}

/// The events a group appended, in position order, as readers will see them; `None`
/// if the group also imported events (an import's events are not at hand here, and
/// leaving them out would leave a hole).
pub(crate) fn appended_events(
    works: &[Work],
    outcomes: &[Outcome],
    created_at: DateTime<Utc>,
) -> Option<Vec<RecordedEvent>> {
    let mut events = Vec::new();
    for (work, outcome) in works.iter().zip(outcomes) {
        match (work, outcome) {
            (Work::Import(_), Ok(_)) => return None,
            (Work::Append(appends), Ok(results)) => {
                for (append, result) in appends.iter().zip(results) {
                    if result.outcome != AppendOutcome::Appended || append.events.is_empty() {
                        continue;
                    }
                    let first_version = result.stream_version.0 + 1 - append.events.len() as u64;
                    for (offset, event) in append.events.iter().enumerate() {
                        events.push(RecordedEvent {
                            event_id: event.event_id,
                            stream_id: append.stream_id.clone(),
                            stream_version: StreamVersion(first_version + offset as u64),
                            position: GlobalPosition(result.first_position.0 + offset as u64),
                            event_type: event.event_type.clone(),
                            data: event.data.clone(),
                            metadata: event.metadata.clone(),
                            created_at,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Some(events)
}
