//! Strong consistency: a dispatch that waits until named subscriptions have processed
//! the events it appended.
//!
//! Each running subscription registers its progress here. A waiting dispatch watches
//! the in-process progress; while the subscription stands by here (another process
//! holds its lease), it follows the persisted checkpoint instead, so it also completes
//! when the subscription runs in another process on the same database: woken by the
//! consumer's announcements where the storage makes them
//! ([`Consumer::announced_checkpoint`]), otherwise by polling.
//! Subscriptions whose filter matches none of the appended events are not waited for,
//! nor are the partitions of a projector that do not own the appended stream: the
//! one that does is the one that writes its rows ([`crate::partition`]).

use crate::dispatch::Consistency;
use crate::event_store::EventFilter;
use crate::partition::Partition;
use crate::stream::GlobalPosition;
use crate::subscription::{Consumer, SubscriptionOptions, Tracker};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How often a waiting dispatch re-reads persisted checkpoints that are not announced.
const CHECKPOINT_POLL: Duration = Duration::from_millis(20);
/// How often it re-reads announced ones: only in case an announcement was lost.
const ANNOUNCED_POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct Entry {
    /// The projector a partition belongs to (its own name otherwise): what
    /// [`Consistency::Handlers`] names.
    group: String,
    strong: bool,
    filter: EventFilter,
    partition: Option<Partition>,
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
        group: &str,
        options: &SubscriptionOptions,
        tracker: Arc<Tracker>,
        consumer: Arc<dyn Consumer>,
    ) {
        let (strong, filter, partition) = (options.strong, options.filter.clone(), options.partition);
        let entry = Entry { group: group.to_owned(), strong, filter, partition, tracker, consumer };
        self.entries.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), entry);
    }

    pub(crate) fn unregister(&self, name: &str) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The first name in `consistency` that no subscription has.
    pub(crate) fn unknown(&self, consistency: &Consistency) -> Option<String> {
        let Consistency::Handlers(names) = consistency else { return None };
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        names.iter().find(|name| !entries.iter().any(|(key, e)| key == *name || e.group == **name)).cloned()
    }

    /// What to wait for after `appended`.
    pub(crate) fn waits(&self, consistency: &Consistency, appended: &Appended<'_>) -> Vec<Wait> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let chosen: Vec<&Entry> = match consistency {
            Consistency::Eventual => return Vec::new(),
            Consistency::Strong => entries.values().filter(|e| e.strong).collect(),
            Consistency::Handlers(names) => entries
                .iter()
                .filter(|(key, e)| names.iter().any(|n| n == *key || *n == e.group))
                .map(|(_, e)| e)
                .collect(),
        };
        chosen
            .into_iter()
            .filter(|entry| entry.partition.is_none_or(|p| p.owns(appended.stream_id)))
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
        let mut announced = self.consumer.announced_checkpoint();
        let poll = if announced.is_some() { ANNOUNCED_POLL } else { CHECKPOINT_POLL };
        let mut here = true; // whether this process's subscription still reports progress
        loop {
            let done = *self.position.borrow_and_update();
            let told = announced.as_mut().map(|a| *a.borrow_and_update());
            if done >= self.target
                || told.is_some_and(|told| told >= self.target)
                || self.consumer.covered().is_some_and(|covered| covered >= self.target)
            {
                return;
            }
            tokio::select! {
                changed = self.position.changed(), if here => {
                    // Once it stopped here, only its checkpoint can tell.
                    here = changed.is_ok();
                    continue;
                }
                changed = changed(&mut announced) => {
                    if !changed {
                        announced = None;
                    }
                    continue;
                }
                _ = tokio::time::sleep(poll) => {
                    if here && self.tracker.is_active() {
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

/// Whether the announcements changed (false once they ended); never, without any.
async fn changed(announced: &mut Option<watch::Receiver<GlobalPosition>>) -> bool {
    match announced {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::RecordedEvent;
    use crate::subscription::{BatchFailure, ConsumerError, ConsumerKind};

    /// A projector elsewhere: its stored checkpoint never reaches the target when read,
    /// so only its announcements can end a wait.
    struct Elsewhere(watch::Sender<GlobalPosition>);

    #[async_trait::async_trait]
    impl Consumer for Elsewhere {
        fn kind(&self) -> ConsumerKind {
            ConsumerKind::Projector
        }
        async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
            Ok(None)
        }
        fn announced_checkpoint(&self) -> Option<watch::Receiver<GlobalPosition>> {
            Some(self.0.subscribe())
        }
        async fn process(&self, _: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
            unreachable!("it runs elsewhere")
        }
        async fn skip(&self, _: &RecordedEvent) -> Result<(), ConsumerError> {
            unreachable!("it runs elsewhere")
        }
    }

    fn wait_for(target: u64, consumer: Arc<Elsewhere>) -> Wait {
        let tracker = Arc::new(Tracker::new("counts".into(), ConsumerKind::Projector));
        Wait { target: GlobalPosition(target), position: tracker.position.subscribe(), tracker, consumer }
    }

    #[test]
    fn a_strong_dispatch_waits_for_the_partition_that_owns_its_stream_only() {
        let registry = ConsistencyRegistry::default();
        let partitions: Vec<Partition> = Partition::all(2).collect();
        for partition in &partitions {
            let name = partition.name("counts");
            let tracker = Arc::new(Tracker::new(name.clone(), ConsumerKind::Projector));
            let options = SubscriptionOptions { partition: Some(*partition), ..SubscriptionOptions::new().strong() };
            let consumer = Arc::new(Elsewhere(watch::channel(GlobalPosition(0)).0));
            registry.register(&name, "counts", &options, tracker, consumer);
        }
        let types = ["Counted".to_owned()];
        for stream in ["s-1", "s-2", "s-3", "s-4"] {
            let appended = Appended { stream_id: stream, first_position: GlobalPosition(9), event_types: &types };
            let waits = registry.waits(&Consistency::Strong, &appended);
            assert_eq!(waits.len(), 1, "{stream}: one partition owns it");
            let owner = partitions.iter().find(|p| p.owns(stream)).expect("an owner").name("counts");
            assert_eq!(waits[0].tracker.name, owner);
            let named = registry.waits(&Consistency::Handlers(vec!["counts".into()]), &appended);
            assert_eq!(named.len(), 1, "the projector's name stands for its partitions");
        }
        assert_eq!(registry.unknown(&Consistency::Handlers(vec!["counts".into()])), None);
        assert_eq!(registry.unknown(&Consistency::Handlers(vec!["other".into()])), Some("other".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_on_a_standby_subscription_ends_on_an_announcement_that_reaches_its_target() {
        let consumer = Arc::new(Elsewhere(watch::channel(GlobalPosition(3)).0));
        let mut waiting = tokio::spawn(wait_for(5, consumer.clone()).done());
        // Minutes of polling a checkpoint that reads short, and an announcement short of
        // the target: still waiting.
        consumer.0.send_replace(GlobalPosition(4));
        assert!(tokio::time::timeout(Duration::from_secs(600), &mut waiting).await.is_err());
        consumer.0.send_replace(GlobalPosition(6));
        tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("ended by the announcement").unwrap();
    }
}
