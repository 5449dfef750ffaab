//! Partitions: one projector run as `n` subscriptions, each owning the streams whose
//! id hashes to it, so a read model catches up and keeps up in parallel.
//!
//! [`SubscriptionOptions::concurrency`](crate::SubscriptionOptions::concurrency)
//! asks for it (as Commanded's `partition_by`, keyed by stream). Each partition is
//! a subscription of its own, named `{projector}.p{index}of{count}`, with its own
//! checkpoint and its own lease: the partitions of a projector may run in
//! different processes, and one whose process dies is taken over like any other
//! subscription. Every partition reads the whole order and keeps its own streams'
//! events ([`Partition::owns`]), so the events of one stream stay in order and are
//! applied once, by one partition.
//!
//! The rule that assigns a stream to a partition is decided here alone: a 64-bit
//! FNV-1a hash of the stream id, modulo the count. It never changes, so every
//! process and every restart agrees on it. A new count is a new set of
//! partitions, built from the origin: the first start of a set whose partitions
//! have no checkpoint empties the projector's tables first
//! ([`SubscriptionsBuilder::projector_with`](crate::SubscriptionsBuilder::projector_with)).
//!
//! What this asks of the projector: every row it writes is written from the events
//! of one stream (or its writes commute). Events of different streams are applied
//! by different partitions in no agreed order, so a row that one stream's event
//! inserts and another's updates may see the update first.

use crate::envelope::RecordedEvent;
use crate::event_store::EventFilter;
use crate::projector::Projector;
use crate::sql::{Dialect, Sql};
use crate::subscription::ConsumerError;
use std::sync::Arc;

/// One of `count` partitions of a subscription.
///
/// ```
/// use rewind::partition::Partition;
///
/// let partitions: Vec<Partition> = Partition::all(4).collect();
/// // Every stream belongs to exactly one partition, the same one every time.
/// let owners = partitions.iter().filter(|p| p.owns("account-7")).count();
/// assert_eq!(owners, 1);
/// assert_eq!(partitions[2].name("balances"), "balances.p2of4");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Partition {
    /// The partitions of a subscription run `count` ways (at least one).
    pub fn all(count: u32) -> impl Iterator<Item = Partition> {
        let count = count.max(1);
        (0..count).map(move |index| Partition { index, count })
    }

    /// Which partition this is, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many partitions there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this partition applies the events of `stream_id`.
    pub fn owns(&self, stream_id: &str) -> bool {
        stream_hash(stream_id) % u64::from(self.count) == u64::from(self.index)
    }

    /// The partition's subscription (and checkpoint) name within `group`.
    pub fn name(&self, group: &str) -> String {
        format!("{group}.p{}of{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bits: tiny, fast on short ids, and fixed for ever (std's hasher is
/// allowed to change between releases, which would move streams between partitions).
fn stream_hash(stream_id: &str) -> u64 {
    stream_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A projector as one partition of itself: its own name (so its own checkpoint),
/// the projector's tables and filter, and only the events of the streams it owns.
///
/// Skipping the others inside `project` (not only in the subscription) matters on
/// SQLite, whose inline projection hands every projector each group's events.
pub(crate) struct PartitionOf {
    pub(crate) inner: Arc<dyn Projector>,
    pub(crate) partition: Partition,
    pub(crate) name: String,
    /// The group's tables were found outdated before any partition was created:
    /// every partition must forget its checkpoint, not only the first one, which
    /// drops and recreates the tables (and so hides the outdated state from the rest).
    pub(crate) outdated: bool,
}

impl Projector for PartitionOf {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }

    fn schema(&self, dialect: Dialect) -> &'static str {
        self.inner.schema(dialect)
    }

    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }

    fn outdated(&self, dialect: Dialect) -> Option<&'static str> {
        if self.outdated { Some("SELECT 1") } else { self.inner.outdated(dialect) }
    }

    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        if !self.partition.owns(&event.stream_id) {
            return Ok(());
        }
        self.inner.project(event, sql)
    }

    fn project_batch(&self, events: &[RecordedEvent], sql: &mut Sql) -> Result<(), ConsumerError> {
        if events.iter().all(|event| self.partition.owns(&event.stream_id)) {
            return self.inner.project_batch(events, sql);
        }
        let owned: Vec<RecordedEvent> =
            events.iter().filter(|event| self.partition.owns(&event.stream_id)).cloned().collect();
        self.inner.project_batch(&owned, sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_has_one_owner_and_the_hash_never_moves() {
        for count in [1, 2, 3, 4, 7] {
            let partitions: Vec<Partition> = Partition::all(count).collect();
            assert_eq!(partitions.len(), count as usize);
            for i in 0..500 {
                let stream = format!("account-{i}");
                assert_eq!(partitions.iter().filter(|p| p.owns(&stream)).count(), 1, "{stream} of {count}");
            }
        }
        // Fixed values: a change here would move streams between partitions of a
        // running deployment, which would then apply some events twice.
        assert_eq!(stream_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stream_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stream_hash("account-1"), stream_hash("account-1"));
        assert_eq!(Partition::all(0).count(), 1, "no partitions means one");
    }

    #[test]
    fn streams_spread_over_partitions() {
        let partitions: Vec<Partition> = Partition::all(4).collect();
        for partition in &partitions {
            let owned = (0..4_000).filter(|i| partition.owns(&format!("account-{i}"))).count();
            assert!((800..1_200).contains(&owned), "partition {} owns {owned} of 4,000", partition.index());
        }
    }
}
