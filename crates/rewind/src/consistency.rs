//! Strong consistency: a dispatch that waits until named subscriptions have processed
//! the events it appended.
//!
//! Each running subscription registers its progress here. A waiting dispatch watches
//! the in-process progress; while the subscription stands by here (another process
//! holds its lease), it polls the persisted checkpoint instead, so it also completes
//! when the subscription runs in another process on the same database.
//! Subscriptions whose filter matches none of the appended events are not waited for.

use crate::dispatch::Consistency;
use crate::event_store::EventFilter;
use crate::stream::GlobalPosition;
use crate::subscription::{Consumer, Tracker};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How often a waiting dispatch re-reads persisted checkpoints.
const CHECKPOINT_POLL: Duration = Duration::from_millis(20);

#[derive(Clone)]
struct Entry {
    strong: bool,
    filter: EventFilter,
    tracker: Arc<Tracker>,
    consumer: Arc<dyn Consumer>,
}

/// The subscriptions a dispatch may wait for.
#[derive(Default)]
pub(crate) struct ConsistencyRegistry {
    /// Read on every strongly consistent dispatch, written when subscriptions start.
    entries: RwLock<HashMap<String, Entry>>,
}

/// What a dispatch appended, as far as waiting is concerned.
pub(crate) struct Appended<'a> {
    pub(crate) stream_id: &'a str,
    pub(crate) first_position: GlobalPosition,
    pub(crate) event_types: &'a [String],
}

/// One subscription to wait for, up to `target`.
pub(crate) struct Wait {
    target: GlobalPosition,
    position: watch::Receiver<GlobalPosition>,
    tracker: Arc<Tracker>,
    consumer: Arc<dyn Consumer>,
}

impl ConsistencyRegistry {
    pub(crate) fn register(
        &self,
        name: &str,
        strong: bool,
        filter: EventFilter,
        tracker: Arc<Tracker>,
        consumer: Arc<dyn Consumer>,
    ) {
        let entry = Entry { strong, filter, tracker, consumer };
        self.entries.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), entry);
    }

    pub(crate) fn unregister(&self, name: &str) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The first name in `consistency` that no subscription has.
    pub(crate) fn unknown(&self, consistency: &Consistency) -> Option<String> {
        let Consistency::Handlers(names) = consistency else { return None };
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        names.iter().find(|name| !entries.contains_key(name.as_str())).cloned()
    }

    /// What to wait for after `appended`.
    pub(crate) fn waits(&self, consistency: &Consistency, appended: &Appended<'_>) -> Vec<Wait> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let chosen: Vec<&Entry> = match consistency {
            Consistency::Eventual => return Vec::new(),
            Consistency::Strong => entries.values().filter(|e| e.strong).collect(),
            Consistency::Handlers(names) => names.iter().filter_map(|n| entries.get(n.as_str())).collect(),
        };
        chosen
            .into_iter()
            .filter_map(|entry| {
                let last_match = appended
                    .event_types
                    .iter()
                    .rposition(|event_type| entry.filter.matches(appended.stream_id, event_type))?;
                Some(Wait {
                    target: GlobalPosition(appended.first_position.0 + last_match as u64),
                    position: entry.tracker.position.subscribe(),
                    tracker: entry.tracker.clone(),
                    consumer: entry.consumer.clone(),
                })
            })
            .collect()
    }
}

impl Wait {
    /// Resolves once the subscription has done `target`.
    pub(crate) async fn done(mut self) {
        loop {
            let done = *self.position.borrow_and_update();
            if done >= self.target || self.consumer.covered().is_some_and(|covered| covered >= self.target) {
                return;
            }
            tokio::select! {
                changed = self.position.changed() => {
                    if changed.is_ok() {
                        continue;
                    }
                    // The subscription stopped here: only its checkpoint can tell now.
                    tokio::time::sleep(CHECKPOINT_POLL).await;
                }
                _ = tokio::time::sleep(CHECKPOINT_POLL) => {
                    if self.tracker.is_active() {
                        continue;
                    }
                }
            }
            if let Ok(Some(position)) = self.consumer.checkpoint().await
                && position >= self.target
            {
                return;
            }
        }
    }
}
