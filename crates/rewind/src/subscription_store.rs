//! Where the read side keeps its bookkeeping: subscription checkpoints, dead letters,
//! process manager state, the leases that keep each named subscription active in
//! one process at a time, and the failures running subscriptions report so that an
//! operator's tool in another process can see them ([`FailureReport`]).
//!
//! Each event store backend implements [`SubscriptionStore`] in its own database, so
//! an operator finds everything in one place. Projectors keep their checkpoints in
//! their read model instead (`SqliteProjector`, `PostgresProjector` in the backend
//! crates), but record dead letters here.

use crate::envelope::RecordedEvent;
use crate::event_store::StoreError;
use crate::stream::GlobalPosition;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

/// An event a subscription skipped after it failed, kept for an operator to replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The subscription that failed.
    pub subscription: String,
    /// The event it failed on.
    pub event: RecordedEvent,
    /// What went wrong, as a message.
    pub error: String,
    /// When it was skipped.
    pub failed_at: DateTime<Utc>,
}

/// Where a failing subscription is, as its runner last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureState {
    /// Trying again (for ever if the failure is transient).
    Retrying,
    /// Halted by its error policy until an operator resumes it.
    Stopped,
}

impl FailureState {
    /// The stored name: `retrying` or `stopped` (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureState::Retrying => "retrying",
            FailureState::Stopped => "stopped",
        }
    }

    /// The state with the stored name `name`, if any.
    pub fn from_name(name: &str) -> Option<FailureState> {
        [FailureState::Retrying, FailureState::Stopped].into_iter().find(|state| state.as_str() == name)
    }
}

/// A failure a running subscription has not got past, recorded by its runner so that
/// `projections status` in another process shows it. Best effort: a runner whose
/// bookkeeping is itself unreachable cannot record one, and one left by a process
/// that died says so by its age (`updated_at`). Removed once the subscription
/// makes progress again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// The subscription.
    pub subscription: String,
    /// Retrying or stopped.
    pub state: FailureState,
    /// Failures in a row so far.
    pub attempt: u32,
    /// Whether the latest failure is transient (see [`crate::fault`]).
    pub transient: bool,
    /// The latest failure's message.
    pub error: String,
    /// The event it failed on, if the failure was on an event (not reading the
    /// store, loading the checkpoint or taking the lease).
    pub position: Option<GlobalPosition>,
    /// When the first failure in a row happened.
    pub since: DateTime<Utc>,
    /// When the runner last wrote this report.
    pub updated_at: DateTime<Utc>,
}

/// A process manager instance's change, committed with the manager's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceChange {
    /// Save this state (JSON) for the instance.
    Save(String, String),
    /// The instance stopped: delete its state.
    Delete(String),
}

/// Proof that this process runs a named subscription. Dropping it releases it.
pub struct Lease {
    lost: watch::Receiver<bool>,
    _release: Box<dyn Send + Sync>,
}

impl Lease {
    /// A lease released by dropping `release`; `lost` turns true if the backend loses
    /// it first (a dropped database connection).
    pub fn new(lost: watch::Receiver<bool>, release: impl Send + Sync + 'static) -> Lease {
        Lease { lost, _release: Box::new(release) }
    }

    /// Resolves when the lease is lost; never, while it is held.
    pub async fn lost(&mut self) {
        if self.lost.wait_for(|lost| *lost).await.is_err() {
            // The backend dropped its sender without losing the lease: it stays held.
            std::future::pending::<()>().await;
        }
    }
}

/// The read side's bookkeeping. See the module docs.
///
/// A consumer's progress and a process manager's instance state, on the in-memory
/// implementation:
///
/// ```
/// use rewind::subscription_store::InstanceChange;
/// use rewind::{GlobalPosition, MemorySubscriptionStore, SubscriptionStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemorySubscriptionStore::new();
/// assert_eq!(store.load_checkpoint("mailer").await.unwrap(), None);
///
/// store.save_checkpoint("mailer", GlobalPosition(7)).await.unwrap();
/// // A checkpoint never moves backwards.
/// store.save_checkpoint("mailer", GlobalPosition(3)).await.unwrap();
/// assert_eq!(store.load_checkpoint("mailer").await.unwrap(), Some(GlobalPosition(7)));
///
/// // An instance's state and the manager's checkpoint, committed together.
/// let changes = vec![InstanceChange::Save("order-1".into(), r#"{"paid":true}"#.into())];
/// store.commit_instances("shipping", changes, GlobalPosition(9)).await.unwrap();
/// assert_eq!(
///     store.load_instance("shipping", "order-1").await.unwrap().as_deref(),
///     Some(r#"{"paid":true}"#)
/// );
/// assert_eq!(store.load_checkpoint("shipping").await.unwrap(), Some(GlobalPosition(9)));
/// # });
/// ```
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// The last position a subscription finished, if it ever ran.
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<GlobalPosition>, StoreError>;
    /// Records progress. A checkpoint never moves backwards: saving an older
    /// position than the stored one (a replayed dead letter) keeps the stored one.
    async fn save_checkpoint(&self, subscription: &str, position: GlobalPosition) -> Result<(), StoreError>;
    /// Forgets a subscription's progress (it starts over).
    async fn delete_checkpoint(&self, subscription: &str) -> Result<(), StoreError>;

    /// Records a skipped event (again: replaces the earlier record of the same event).
    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError>;
    /// Dead letters of one subscription, or of all, in event order.
    async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;
    /// Removes a dead letter; false if there was none.
    async fn remove_dead_letter(&self, subscription: &str, event_id: Uuid) -> Result<bool, StoreError>;
    /// Removes every dead letter of one subscription (a rebuild re-runs their events,
    /// see [`dead_letters`](crate::dead_letters)); returns how many there were.
    async fn clear_dead_letters(&self, subscription: &str) -> Result<u64, StoreError>;

    /// A process manager instance's state (JSON), if the instance exists.
    async fn load_instance(&self, manager: &str, instance: &str) -> Result<Option<String>, StoreError>;
    /// Writes instance changes and the manager's checkpoint (never moving it
    /// backwards) atomically.
    async fn commit_instances(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        checkpoint: GlobalPosition,
    ) -> Result<(), StoreError>;
    /// Deletes every instance and the checkpoint of a process manager.
    async fn reset_instances(&self, manager: &str) -> Result<(), StoreError>;
    /// Commits a replayed dead letter of a process manager: removes the letter of
    /// `event_id` and writes `changes`, atomically. If there is no such letter (it was
    /// replayed or discarded meanwhile) nothing is written and the answer is false, so
    /// a replay takes effect once. The checkpoint does not move. On error nothing
    /// was written.
    async fn commit_replayed(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        event_id: Uuid,
    ) -> Result<bool, StoreError>;

    /// Takes the lease on a subscription name if no process holds it.
    async fn try_lease(&self, subscription: &str) -> Result<Option<Lease>, StoreError>;

    /// Records a subscription's failure, replacing its earlier report.
    async fn report_failure(&self, report: FailureReport) -> Result<(), StoreError>;
    /// Removes a subscription's failure report, if any.
    async fn clear_failure(&self, subscription: &str) -> Result<(), StoreError>;
    /// The failure reports of one subscription, or of all, by subscription name.
    async fn failures(&self, subscription: Option<&str>) -> Result<Vec<FailureReport>, StoreError>;
}

/// Subscription bookkeeping in memory, for the in-memory store and tests. Leases are
/// exclusive within the process.
#[derive(Default)]
pub struct MemorySubscriptionStore {
    /// Plain mutex: no method holds it across an await.
    state: Mutex<MemoryState>,
    leases: Arc<Mutex<HashSet<String>>>,
}

#[derive(Default)]
struct MemoryState {
    checkpoints: HashMap<String, GlobalPosition>,
    dead_letters: BTreeMap<(String, GlobalPosition), DeadLetter>,
    instances: HashMap<(String, String), String>,
    failures: BTreeMap<String, FailureReport>,
}

impl MemorySubscriptionStore {
    /// Empty bookkeeping.
    pub fn new() -> MemorySubscriptionStore {
        MemorySubscriptionStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemoryState {
    fn dead_letter_key(&self, subscription: &str, event_id: Uuid) -> Option<(String, GlobalPosition)> {
        self.dead_letters
            .iter()
            .find(|(_, l)| l.subscription == subscription && l.event.event_id == event_id)
            .map(|(key, _)| key.clone())
    }

    fn apply_changes(&mut self, manager: &str, changes: Vec<InstanceChange>) {
        for change in changes {
            match change {
                InstanceChange::Save(instance, data) => self.instances.insert((manager.to_owned(), instance), data),
                InstanceChange::Delete(instance) => self.instances.remove(&(manager.to_owned(), instance)),
            };
        }
    }
}

struct MemoryLease {
    name: String,
    leases: Arc<Mutex<HashSet<String>>>,
    _lost: watch::Sender<bool>,
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.name);
    }
}

#[async_trait]
impl SubscriptionStore for MemorySubscriptionStore {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<GlobalPosition>, StoreError> {
        Ok(self.lock().checkpoints.get(subscription).copied())
    }
    async fn save_checkpoint(&self, subscription: &str, position: GlobalPosition) -> Result<(), StoreError> {
        let mut state = self.lock();
        let checkpoint = state.checkpoints.entry(subscription.to_owned()).or_insert(position);
        *checkpoint = (*checkpoint).max(position);
        Ok(())
    }
    async fn delete_checkpoint(&self, subscription: &str) -> Result<(), StoreError> {
        self.lock().checkpoints.remove(subscription);
        Ok(())
    }
    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.lock().dead_letters.insert((letter.subscription.clone(), letter.event.position), letter);
        Ok(())
    }
    async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let state = self.lock();
        let mut letters: Vec<DeadLetter> =
            state.dead_letters.values().filter(|l| subscription.is_none_or(|s| l.subscription == s)).cloned().collect();
        letters.sort_by_key(|l| l.event.position);
        Ok(letters)
    }
    async fn remove_dead_letter(&self, subscription: &str, event_id: Uuid) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let key = state.dead_letter_key(subscription, event_id);
        Ok(key.and_then(|key| state.dead_letters.remove(&key)).is_some())
    }
    async fn clear_dead_letters(&self, subscription: &str) -> Result<u64, StoreError> {
        let mut state = self.lock();
        let before = state.dead_letters.len();
        state.dead_letters.retain(|(name, _), _| name != subscription);
        Ok((before - state.dead_letters.len()) as u64)
    }
    async fn load_instance(&self, manager: &str, instance: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().instances.get(&(manager.to_owned(), instance.to_owned())).cloned())
    }
    async fn commit_instances(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        checkpoint: GlobalPosition,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.apply_changes(manager, changes);
        let stored = state.checkpoints.entry(manager.to_owned()).or_insert(checkpoint);
        *stored = (*stored).max(checkpoint);
        Ok(())
    }
    async fn reset_instances(&self, manager: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.instances.retain(|(m, _), _| m != manager);
        state.checkpoints.remove(manager);
        Ok(())
    }
    async fn commit_replayed(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        event_id: Uuid,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some(key) = state.dead_letter_key(manager, event_id) else { return Ok(false) };
        state.dead_letters.remove(&key);
        state.apply_changes(manager, changes);
        Ok(true)
    }
    async fn try_lease(&self, subscription: &str) -> Result<Option<Lease>, StoreError> {
        let mut leases = self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !leases.insert(subscription.to_owned()) {
            return Ok(None);
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        let release = MemoryLease { name: subscription.to_owned(), leases: self.leases.clone(), _lost: lost_tx };
        Ok(Some(Lease::new(lost_rx, release)))
    }
    async fn report_failure(&self, report: FailureReport) -> Result<(), StoreError> {
        self.lock().failures.insert(report.subscription.clone(), report);
        Ok(())
    }
    async fn clear_failure(&self, subscription: &str) -> Result<(), StoreError> {
        self.lock().failures.remove(subscription);
        Ok(())
    }
    async fn failures(&self, subscription: Option<&str>) -> Result<Vec<FailureReport>, StoreError> {
        let state = self.lock();
        Ok(state.failures.values().filter(|r| subscription.is_none_or(|s| r.subscription == s)).cloned().collect())
    }
}
