//! Subscriptions: a named consumer following the global order, from its checkpoint
//! through catch-up to live, one batch at a time.
//!
//! Promises:
//! * Delivery is at least once and in global order; a consumer that persists its
//!   checkpoint with its effects (projectors, process managers) gets exactly-once
//!   effects.
//! * A failing event is handled by the subscription's [`ErrorPolicy`] without holding
//!   up other subscriptions: retried with exponential backoff, skipped into the dead
//!   letters, or the subscription stops and its status shows the event and error.
//! * A panicking consumer is restarted from its checkpoint with backoff; it never
//!   takes the application down.
//! * Only the holder of the subscription's [`Lease`](crate::Lease) runs it, so a
//!   named subscription is active in one process at a time.

use crate::envelope::RecordedEvent;
use crate::event_store::{EventFilter, EventStore};
use crate::shared_store::SharedStore;
use crate::stream::GlobalPosition;
use crate::subscription_store::{DeadLetter, SubscriptionStore};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// An error from a consumer's code, kept as a message for status and dead letters.
pub type ConsumerError = Box<dyn std::error::Error + Send + Sync>;

/// Where a subscription starts the first time it runs (afterwards: its checkpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// The first event ever stored.
    #[default]
    Origin,
    /// Only events stored after the subscription starts.
    Now,
    /// Events after this position.
    After(GlobalPosition),
}

/// What to do when a consumer fails on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Stop the subscription; its status shows the event and the error.
    Stop,
    /// Record the event and error as a dead letter and go on.
    Skip,
    /// Try again with exponential backoff, then fall back.
    Retry {
        /// Tries before falling back (the first failure counts).
        max_attempts: u32,
        /// Wait before the second try; doubles each time.
        initial_delay: Duration,
        /// The longest wait.
        max_delay: Duration,
        /// What to do once the tries are spent: `Skip` or `Stop`.
        then: Box<ErrorPolicy>,
    },
}

impl Default for ErrorPolicy {
    /// Five tries over about three seconds, then stop.
    fn default() -> Self {
        ErrorPolicy::Retry {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            then: Box::new(ErrorPolicy::Stop),
        }
    }
}

/// How one subscription runs.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Where to start the first time.
    pub start_from: StartFrom,
    /// Which events it receives.
    pub filter: EventFilter,
    /// The most events handed over at once.
    pub batch_size: usize,
    /// What to do on failure.
    pub on_error: ErrorPolicy,
    /// Whether [`Consistency::Strong`](crate::Consistency::Strong) dispatches wait for it.
    pub strong: bool,
    /// How often to re-check the head when no notification arrives (a safety net).
    pub poll_interval: Duration,
    /// How often to try for the lease while another process holds it.
    pub lease_retry: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            start_from: StartFrom::Origin,
            filter: EventFilter::all(),
            batch_size: 1_000,
            on_error: ErrorPolicy::default(),
            strong: false,
            poll_interval: Duration::from_secs(1),
            lease_retry: Duration::from_secs(1),
        }
    }
}

impl SubscriptionOptions {
    /// Defaults: from the origin, everything, batches of 1,000, retry then stop.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the start.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }
    /// Sets the filter.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }
    /// Sets the batch size (at least 1).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }
    /// Sets the error policy.
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }
    /// Makes strongly consistent dispatches wait for this subscription.
    pub fn strong(mut self) -> Self {
        self.strong = true;
        self
    }
    /// Sets the lease retry interval.
    pub fn lease_retry(mut self, every: Duration) -> Self {
        self.lease_retry = every;
        self
    }
}

/// What kind of consumer a subscription feeds; rebuilds touch projectors only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerKind {
    /// Side effects; never re-run by a rebuild.
    EventHandler,
    /// Writes a read model; can be reset and rebuilt.
    Projector,
    /// Dispatches commands.
    ProcessManager,
}

/// A batch that failed part-way.
#[derive(Debug)]
pub struct BatchFailure {
    /// Index of the failing event; the events before it are done and checkpointed.
    pub failed_at: usize,
    /// Why.
    pub error: ConsumerError,
}

/// The contract between a subscription and what it feeds. Event handlers, projectors
/// and process managers implement it through adapters; backends add their own.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// The kind, for status and rebuilds.
    fn kind(&self) -> ConsumerKind;

    /// The persisted checkpoint: the position of the last event done, if any.
    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError>;

    /// How far the consumer is known to be done without asking its storage: events
    /// processed by other means, such as a projection written in the appends' own
    /// transaction (`rewind_sqlite`'s inline projectors). Its subscription moves past
    /// this position without reading, and a strongly consistent dispatch stops
    /// waiting at it. Only durable effects may be reported. Default: `None`.
    fn covered(&self) -> Option<GlobalPosition> {
        None
    }

    /// Processes events in order and persists the checkpoint. On `Err`, the events
    /// before `failed_at` are done and checkpointed; the rest are not. (Shared, so a
    /// consumer can hand the batch to a blocking thread without copying it.)
    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure>;

    /// Handles one event again out of order (a dead letter being replayed), without
    /// moving the checkpoint. The default processes it as a batch of one. Who calls
    /// it and what it must keep is in [`crate::dead_letters`]: never for a projector
    /// (rebuilt instead); a process manager removes the letter with its effects.
    async fn replay(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        self.process(Arc::from(vec![event.clone()])).await.map_err(|failure| failure.error)
    }

    /// Moves the checkpoint past an event without processing it (after a skip).
    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError>;

    /// Forgets everything (read model and checkpoint) so the next run starts over.
    async fn reset(&self) -> Result<(), ConsumerError> {
        Err("this consumer cannot be reset".into())
    }
}

/// Where a subscription is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SubscriptionState {
    /// Not started yet, or waiting while another process holds the lease.
    Standby,
    /// Reading full batches behind the head.
    CatchingUp,
    /// At the head, waiting for new events.
    Live,
    /// Waiting before trying a failed event again.
    Retrying {
        /// Failures so far on this event.
        attempt: u32,
    },
    /// Halted on an event (see `failed_position` and `last_error`) or shut down.
    Stopped,
    /// Paused by an operator; resumes from its checkpoint.
    Paused,
}

/// A snapshot of one subscription's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionStatus {
    /// Its name.
    pub name: String,
    /// What it feeds.
    pub kind: ConsumerKind,
    /// What it is doing.
    #[serde(flatten)]
    pub state: SubscriptionState,
    /// The last position done.
    pub position: GlobalPosition,
    /// The store's head when the status was taken.
    pub head: GlobalPosition,
    /// `head - position`: events not yet done (including ones its filter skips).
    pub lag: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// The position of the event it stopped on or is retrying.
    pub failed_position: Option<GlobalPosition>,
}

/// The live view of a running subscription, shared with status readers.
pub(crate) struct Tracker {
    pub(crate) name: String,
    pub(crate) kind: ConsumerKind,
    /// Plain mutex: short, never held across an await.
    status: Mutex<(SubscriptionState, Option<String>, Option<GlobalPosition>)>,
    /// The position done, for status and for strongly consistent dispatches.
    pub(crate) position: watch::Sender<GlobalPosition>,
}

impl Tracker {
    pub(crate) fn new(name: String, kind: ConsumerKind) -> Tracker {
        Tracker {
            name,
            kind,
            status: Mutex::new((SubscriptionState::Standby, None, None)),
            position: watch::channel(GlobalPosition::START).0,
        }
    }

    /// Whether this process runs the subscription right now (holds its lease).
    pub(crate) fn is_active(&self) -> bool {
        !matches!(
            self.status.lock().unwrap_or_else(|p| p.into_inner()).0,
            SubscriptionState::Standby | SubscriptionState::Stopped
        )
    }

    pub(crate) fn set(&self, state: SubscriptionState) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).0 = state;
    }

    fn fail(&self, state: SubscriptionState, error: String, at: GlobalPosition) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = (state, Some(error), Some(at));
    }

    fn recovered(&self) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.2 = None;
    }

    fn advance(&self, position: GlobalPosition) {
        self.position.send_if_modified(|current| {
            let newer = position > *current;
            if newer {
                *current = position;
            }
            newer
        });
    }

    pub(crate) fn status(&self, head: GlobalPosition) -> SubscriptionStatus {
        let (state, last_error, failed_position) = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let position = *self.position.borrow();
        SubscriptionStatus {
            name: self.name.clone(),
            kind: self.kind,
            state,
            position,
            head,
            lag: head.0.saturating_sub(position.0),
            last_error,
            failed_position,
        }
    }
}

/// Why a run of the subscription ended.
enum Ended {
    Shutdown,
    Stopped,
    LeaseLost,
}

/// Runs one subscription until shutdown: lease, follow, restart after panics.
pub(crate) struct Runner {
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) options: SubscriptionOptions,
    pub(crate) store: SharedStore,
    pub(crate) bookkeeping: Arc<dyn SubscriptionStore>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Runner {
    pub(crate) async fn run(mut self) {
        let mut restarts = 0u32;
        loop {
            let Some(mut lease) = self.acquire_lease().await else { return };
            let follow = std::panic::AssertUnwindSafe(self.follow(&mut lease));
            match futures_util::FutureExt::catch_unwind(follow).await {
                Ok(Ended::Shutdown) => return self.tracker.set(SubscriptionState::Stopped),
                Ok(Ended::Stopped) => return,
                Ok(Ended::LeaseLost) => tracing::warn!(subscription = %self.tracker.name, "lease lost; standing by"),
                Err(panic) => {
                    let message = panic_message(&panic);
                    tracing::error!(subscription = %self.tracker.name, %message, "consumer panicked; restarting");
                    let at = self.tracker.position.borrow().next();
                    self.tracker.fail(SubscriptionState::Retrying { attempt: restarts + 1 }, message, at);
                    drop(lease);
                    if !self.pause(backoff(&ErrorPolicy::default(), restarts)).await {
                        return self.tracker.set(SubscriptionState::Stopped);
                    }
                    restarts = restarts.saturating_add(1);
                }
            }
        }
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps unless shutdown comes first; false on shutdown.
    async fn pause(&self, delay: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        let stopped = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        !stopped && !self.shutting_down()
    }

    async fn acquire_lease(&mut self) -> Option<crate::subscription_store::Lease> {
        loop {
            if self.shutting_down() {
                return None;
            }
            match self.bookkeeping.try_lease(&self.tracker.name).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => self.tracker.set(SubscriptionState::Standby),
                Err(error) => tracing::warn!(subscription = %self.tracker.name, %error, "lease check failed"),
            }
            if !self.pause(self.options.lease_retry).await {
                return None;
            }
        }
    }

    async fn start_position(&mut self) -> Result<GlobalPosition, ConsumerError> {
        if let Some(position) = self.consumer.checkpoint().await? {
            return Ok(position);
        }
        Ok(match self.options.start_from {
            StartFrom::Origin => GlobalPosition::START,
            StartFrom::After(position) => position,
            StartFrom::Now => self.store.head_position().await?,
        })
    }

    async fn follow(&mut self, lease: &mut crate::subscription_store::Lease) -> Ended {
        let mut head = self.store.watch_head();
        let mut attempts = 0u32;
        let mut position = loop {
            match self.start_position().await {
                Ok(position) => break position,
                Err(error) => {
                    let at = self.tracker.position.borrow().next();
                    self.tracker.fail(SubscriptionState::Retrying { attempt: attempts + 1 }, describe(&*error), at);
                    if !self.pause(backoff(&ErrorPolicy::default(), attempts)).await {
                        return Ended::Shutdown;
                    }
                    attempts += 1;
                }
            }
        };
        self.tracker.advance(position);
        loop {
            if self.shutting_down() {
                return Ended::Shutdown;
            }
            // Events the consumer already did by other means need no reading; if that
            // is everything this process knows of, wait (the poll still finds other
            // processes' commits).
            if let Some(covered) = self.consumer.covered().filter(|&covered| covered > position) {
                position = covered;
                self.tracker.advance(position);
                if position >= *head.borrow() {
                    if let Some(ended) = self.idle(&mut head, lease).await {
                        return ended;
                    }
                    continue;
                }
            }
            let read = self.store.read_all(position.next(), self.options.batch_size, &self.options.filter).await;
            let read: Vec<RecordedEvent> = match read {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(subscription = %self.tracker.name, %error, "reading events failed");
                    if !self.pause(self.options.poll_interval).await {
                        return Ended::Shutdown;
                    }
                    continue;
                }
            };
            let Some(last_read) = read.last().map(|e| e.position) else {
                if let Some(ended) = self.idle(&mut head, lease).await {
                    return ended;
                }
                continue;
            };
            let full = read.len() == self.options.batch_size;
            // The framework's own records (command failures) are not the consumer's.
            let batch: Arc<[RecordedEvent]> =
                read.into_iter().filter(|e| !crate::command_outcome::is_system_stream(&e.stream_id)).collect();
            if batch.is_empty() {
                position = last_read;
                self.tracker.advance(position);
                continue;
            }
            self.tracker.set(if full { SubscriptionState::CatchingUp } else { SubscriptionState::Live });
            let failure = self.consumer.process(batch.clone()).await.err();
            let done = failure.as_ref().map_or(batch.len(), |f| f.failed_at.min(batch.len()));
            if let Some(last) = done.checked_sub(1).map(|i| batch[i].position) {
                position = last;
                self.tracker.advance(position);
                if attempts > 0 || done > 0 {
                    self.tracker.recovered();
                }
                attempts = 0;
            }
            let Some(BatchFailure { error, .. }) = failure else {
                position = position.max(last_read);
                self.tracker.advance(position);
                continue;
            };
            let Some(event) = batch.get(done) else { continue };
            match self.decide(attempts) {
                Decision::Retry(delay) => {
                    attempts += 1;
                    tracing::warn!(subscription = %self.tracker.name, position = %event.position, %error, attempts, "retrying");
                    self.tracker.fail(
                        SubscriptionState::Retrying { attempt: attempts },
                        describe(&*error),
                        event.position,
                    );
                    if !self.pause(delay).await {
                        return Ended::Shutdown;
                    }
                }
                Decision::Skip => match self.skip(event, &error).await {
                    Ok(()) => {
                        position = event.position;
                        self.tracker.advance(position);
                        attempts = 0;
                    }
                    Err(skip_error) => {
                        self.tracker.fail(
                            SubscriptionState::Retrying { attempt: attempts + 1 },
                            describe(&*skip_error),
                            event.position,
                        );
                        if !self.pause(self.options.poll_interval).await {
                            return Ended::Shutdown;
                        }
                    }
                },
                Decision::Stop => {
                    tracing::error!(subscription = %self.tracker.name, position = %event.position, %error, "stopped");
                    self.tracker.fail(SubscriptionState::Stopped, describe(&*error), event.position);
                    return Ended::Stopped;
                }
            }
        }
    }

    /// Live at the head: waits for a new commit here, the poll interval, shutdown or
    /// the loss of the lease (the last two end following).
    async fn idle(
        &mut self,
        head: &mut watch::Receiver<GlobalPosition>,
        lease: &mut crate::subscription_store::Lease,
    ) -> Option<Ended> {
        self.tracker.set(SubscriptionState::Live);
        tokio::select! {
            _ = head.changed() => None,
            _ = tokio::time::sleep(self.options.poll_interval) => None,
            _ = self.shutdown.wait_for(|stop| *stop) => Some(Ended::Shutdown),
            _ = lease.lost() => Some(Ended::LeaseLost),
        }
    }

    async fn skip(&self, event: &RecordedEvent, error: &ConsumerError) -> Result<(), ConsumerError> {
        let letter = DeadLetter {
            subscription: self.tracker.name.clone(),
            event: event.clone(),
            error: describe(&**error),
            failed_at: chrono::Utc::now(),
        };
        self.bookkeeping.add_dead_letter(letter).await?;
        self.consumer.skip(event).await
    }

    fn decide(&self, attempts: u32) -> Decision {
        decide(&self.options.on_error, attempts)
    }
}

enum Decision {
    Retry(Duration),
    Skip,
    Stop,
}

fn decide(policy: &ErrorPolicy, attempts: u32) -> Decision {
    match policy {
        ErrorPolicy::Stop => Decision::Stop,
        ErrorPolicy::Skip => Decision::Skip,
        ErrorPolicy::Retry { max_attempts, then, .. } if attempts + 1 >= *max_attempts => decide(then, 0),
        retry @ ErrorPolicy::Retry { .. } => Decision::Retry(backoff(retry, attempts)),
    }
}

/// The wait before retry number `attempts + 1`: doubling from the initial delay.
fn backoff(policy: &ErrorPolicy, attempts: u32) -> Duration {
    match policy {
        ErrorPolicy::Retry { initial_delay, max_delay, .. } => {
            initial_delay.saturating_mul(1u32 << attempts.min(16)).min(*max_delay)
        }
        _ => Duration::ZERO,
    }
}

/// An error and its causes on one line (`db error: division by zero`), so status
/// and dead letters show what a driver's terse top-level message hides.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    format!("panicked: {}", text.unwrap_or_else(|| "unknown payload".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_backs_off_then_falls_back() {
        let policy = ErrorPolicy::Retry {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
            then: Box::new(ErrorPolicy::Skip),
        };
        assert!(matches!(decide(&policy, 0), Decision::Retry(d) if d == Duration::from_millis(100)));
        assert!(matches!(decide(&policy, 1), Decision::Retry(d) if d == Duration::from_millis(200)));
        assert!(matches!(decide(&policy, 2), Decision::Skip));
        assert!(matches!(decide(&ErrorPolicy::Stop, 0), Decision::Stop));
        assert_eq!(backoff(&policy, 30), Duration::from_millis(250));
    }
}
