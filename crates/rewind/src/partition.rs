//! Partitions: one projector run as `n` subscriptions, each owning the streams whose
//! id hashes to it, so a read model catches up and keeps up in parallel.
//!
//! [`SubscriptionOptions::concurrency`](crate::SubscriptionOptions::concurrency)
//! asks for it (as Commanded's `partition_by`, keyed by stream). Each partition is
//! a subscription of its own, named `{projector}.p{index}of{count}`, with its own
//! checkpoint and its own lease: the partitions of a projector are spread over the
//! processes that run it (each takes its share, see `Spread`), and one whose process
//! dies is taken over like any other subscription. Every partition reads the whole order and keeps its own streams'
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
use crate::subscription_store::{Lease, SubscriptionStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// How one process shares a projector's partitions with the others that run it.
///
/// Leases alone would hand every partition to whichever process asked first, and a
/// process started later would stand by for all of them. So each process also holds
/// one *member* lease of the group (`{projector}.members.{slot}`, the first free slot),
/// and counts the live processes by the member slots it cannot take. Its share is
/// `ceil(partitions ÷ processes)`: it takes a partition's lease only below its share,
/// and gives back its highest partition while above it, one at a time. A process that
/// dies loses its member lease with its partitions', so the others' shares grow and
/// they take the partitions over. Correctness never rests on this: the partition
/// leases do; the spread only decides who asks for them.
pub(crate) struct Spread {
    group: String,
    count: u32,
    bookkeeping: Arc<dyn SubscriptionStore>,
    /// How long a count of the processes is trusted before it is taken again.
    recount: Duration,
    state: tokio::sync::Mutex<SpreadState>,
}

struct SpreadState {
    member: Option<Lease>,
    slot: u32,
    /// The partitions this process runs now.
    held: BTreeSet<u32>,
    share: u32,
    counted: Option<Instant>,
}

impl std::fmt::Debug for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spread({}, {} partitions)", self.group, self.count)
    }
}

impl Spread {
    pub(crate) fn new(group: &str, count: u32, bookkeeping: Arc<dyn SubscriptionStore>, recount: Duration) -> Spread {
        let state = SpreadState { member: None, slot: 0, held: BTreeSet::new(), share: count, counted: None };
        Spread { group: group.to_owned(), count, bookkeeping, recount, state: tokio::sync::Mutex::new(state) }
    }

    fn slot_name(&self, slot: u32) -> String {
        format!("{}.members.{slot}", self.group)
    }

    /// Takes a member slot if this process has none, and counts the processes again
    /// if the last count is old. A bookkeeping failure keeps the last share: the
    /// partition leases still decide.
    async fn refresh(&self, state: &mut SpreadState) {
        if state.counted.is_some_and(|at| at.elapsed() < self.recount) {
            return;
        }
        state.counted = Some(Instant::now());
        if state.member.is_none() {
            for slot in 0..self.count {
                if let Ok(Some(lease)) = self.bookkeeping.try_lease(&self.slot_name(slot)).await {
                    state.member = Some(lease);
                    state.slot = slot;
                    break;
                }
            }
        }
        let mut processes = 1;
        for slot in (0..self.count).filter(|&slot| state.member.is_none() || slot != state.slot) {
            // A slot this process can take is nobody's: let it go at once.
            if let Ok(None) = self.bookkeeping.try_lease(&self.slot_name(slot)).await {
                processes += 1;
            }
        }
        state.share = self.count.div_ceil(processes.min(self.count));
    }

    /// Whether this process may ask for partition `index`'s lease now.
    pub(crate) async fn may_take(&self, index: u32) -> bool {
        let mut state = self.state.lock().await;
        self.refresh(&mut state).await;
        state.held.contains(&index) || (state.held.len() as u32) < state.share
    }

    /// This process runs partition `index` now.
    pub(crate) async fn took(&self, index: u32) {
        self.state.lock().await.held.insert(index);
    }

    /// This process no longer runs partition `index`.
    pub(crate) async fn released(&self, index: u32) {
        self.state.lock().await.held.remove(&index);
    }

    /// Whether partition `index` should be given back: this process runs more than
    /// its share, and `index` is the highest it runs (one at a time).
    pub(crate) async fn should_yield(&self, index: u32) -> bool {
        let mut state = self.state.lock().await;
        self.refresh(&mut state).await;
        state.held.len() as u32 > state.share && state.held.last() == Some(&index)
    }
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
