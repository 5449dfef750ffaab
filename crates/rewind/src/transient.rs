//! Transient subscriptions: unnamed, with no checkpoint, for tests and tools (`tail`).
//!
//! A [`TransientSubscription`] pulls from the global order in batches and, at the
//! head, waits for the store's head watch; it delivers every event once, in order,
//! for as long as the caller keeps asking.

use crate::envelope::RecordedEvent;
use crate::event_store::{EventFilter, EventStore, StoreError};
use crate::stream::GlobalPosition;
use crate::subscription::StartFrom;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;

/// How often to re-read the head when no notification arrives (a safety net).
const POLL: Duration = Duration::from_secs(1);

/// An unnamed follower of the global order.
///
/// ```
/// use rewind::{EventFilter, EventStore, ExpectedVersion, MemoryStore, StartFrom, TransientSubscription};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let mut events = TransientSubscription::start(&store, StartFrom::Origin, EventFilter::all()).await.unwrap();
/// let event = rewind::testing::new_event("Happened", serde_json::json!({}));
/// store.append("s", ExpectedVersion::Any, vec![event]).await.unwrap();
/// assert_eq!(events.next(&store).await.unwrap().stream_id, "s");
/// # });
/// ```
pub struct TransientSubscription {
    position: GlobalPosition,
    filter: EventFilter,
    buffered: VecDeque<RecordedEvent>,
    head: watch::Receiver<GlobalPosition>,
}

impl TransientSubscription {
    /// Starts following `store` from `start`.
    pub async fn start<S: EventStore>(store: &S, start: StartFrom, filter: EventFilter) -> Result<Self, StoreError> {
        let head = store.watch_head();
        let position = match start {
            StartFrom::Origin => GlobalPosition::START,
            StartFrom::After(position) => position,
            StartFrom::Now => store.head_position().await?,
        };
        Ok(TransientSubscription { position, filter, buffered: VecDeque::new(), head })
    }

    /// The next event, waiting for one to be committed if need be.
    pub async fn next<S: EventStore>(&mut self, store: &S) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                self.position = event.position;
                return Ok(event);
            }
            let batch = store.read_all(self.position.next(), 500, &self.filter).await?;
            if batch.is_empty() {
                tokio::select! {
                    _ = self.head.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            self.buffered.extend(batch);
        }
    }

    /// The position of the last event delivered.
    pub fn position(&self) -> GlobalPosition {
        self.position
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::new_event as event;
    use crate::{ExpectedVersion, MemoryStore};
    use std::sync::Arc;

    #[tokio::test]
    async fn follows_past_and_live_events_in_order() {
        let store = Arc::new(MemoryStore::new());
        store.append("a", ExpectedVersion::Any, vec![event("X", serde_json::json!(1))]).await.unwrap();
        let only_b = EventFilter { stream_prefix: Some("b".into()), event_types: vec![] };
        let mut all = TransientSubscription::start(&store, StartFrom::Origin, EventFilter::all()).await.unwrap();
        let mut bs = TransientSubscription::start(&store, StartFrom::Now, only_b).await.unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for stream in ["b", "a", "b"] {
                    store.append(stream, ExpectedVersion::Any, vec![event("X", serde_json::json!(1))]).await.unwrap();
                }
            })
        };
        let mut positions = Vec::new();
        for _ in 0..4 {
            positions.push(all.next(&store).await.unwrap().position.0);
        }
        assert_eq!(positions, [1, 2, 3, 4]);
        assert_eq!(bs.next(&store).await.unwrap().position.0, 2);
        assert_eq!(bs.next(&store).await.unwrap().position.0, 4);
        writer.await.unwrap();
    }
}
