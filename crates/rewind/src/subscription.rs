//! Subscriptions: a named consumer following the global order, from its checkpoint
//! through catch-up to live, one batch at a time.
//!
//! Promises:
//! * Delivery is at least once and in global order; a consumer that persists its
//!   checkpoint with its effects (projectors, process managers) gets exactly-once
//!   effects.
//! * Subscriptions heal. A transient failure ([`crate::fault`]: the store or the
//!   read model away, a lost connection, a conflict, a process manager's command
//!   with an unknown outcome) is retried for ever with capped, jittered backoff
//!   ([`Backoff`]), and so are failures to read the store, load the checkpoint or
//!   take the lease. Meanwhile the status says `retrying`, with the attempt count and
//!   the error, and no event is skipped for it. When the cause goes away the
//!   subscription carries on by itself from where it was: nothing needs a restart.
//! * Only a deterministic failure (the consumer refusing an event) takes the
//!   subscription's [`ErrorPolicy`], without holding up other subscriptions: retried
//!   with exponential backoff, skipped into the dead letters, or the subscription
//!   stops and its status shows the event and error.
//! * A panicking consumer is restarted from its checkpoint with backoff; it never
//!   takes the application down.
//! * Only the holder of the subscription's [`Lease`] runs it, so a
//!   named subscription is active in one process at a time. A lease lost while
//!   retrying (its database connection dropped) is noticed before the next try; the
//!   subscription then stands by and takes the lease again.
//! * A failure the runner has not got past is also reported to the subscription's
//!   bookkeeping ([`FailureReport`]), best effort, so an operator's tool in another
//!   process sees it; the report is removed once the subscription moves on.

use crate::envelope::RecordedEvent;
use crate::event_store::{EventFilter, EventStore};
use crate::fault::{Fault, classify};
use crate::partition::{Partition, Spread};
use crate::shared_store::SharedStore;
use crate::stream::GlobalPosition;
use crate::subscription_store::{DeadLetter, FailureReport, FailureState, Lease, SubscriptionStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// An error from a consumer's code, kept as a message for status and dead letters.
/// Wrap a transient one in [`Transient`](crate::Transient) (see [`crate::fault`]).
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

/// What to do when a consumer fails deterministically on an event: its own code
/// refuses it (see [`crate::fault`]). Transient failures never come here: they are
/// retried for ever with the subscription's [`Backoff`], and never skipped.
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
    /// Five tries over about three seconds, then stop (a deterministic error rarely
    /// goes away by itself, but a consumer's own flaky call sometimes does).
    fn default() -> Self {
        ErrorPolicy::Retry {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            then: Box::new(ErrorPolicy::Stop),
        }
    }
}

/// How long a subscription waits between tries after a transient failure: doubling
/// from `initial` up to `max`, each wait drawn between half and all of that (so
/// subscriptions failing together do not retry in lockstep). It never gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the second try (before jitter).
    pub initial: Duration,
    /// The longest wait (before jitter): how late, at most, a subscription notices
    /// that its database is back.
    pub max: Duration,
}

impl Default for Backoff {
    /// From 100 ms to 5 s.
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// Doubling from `initial` to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial) }
    }

    /// The wait after failure number `attempt + 1` in a row; `jitter` in `[0, 1)`
    /// picks it between half and all of the doubled delay.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let full = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A number in `[0, 1)` for [`Backoff::delay`].
fn jitter() -> f64 {
    rand::random::<f64>()
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
    /// What to do when the consumer fails deterministically on an event.
    pub on_error: ErrorPolicy,
    /// The waits between tries after a transient failure (retried for ever).
    pub backoff: Backoff,
    /// Whether [`Consistency::Strong`](crate::Consistency::Strong) dispatches wait for it.
    pub strong: bool,
    /// How often to re-check the head when no notification arrives (a safety net).
    pub poll_interval: Duration,
    /// How often to try for the lease while another process holds it.
    pub lease_retry: Duration,
    /// In how many partitions a projector runs ([`crate::partition`]); 1: one
    /// subscription for every stream.
    pub concurrency: u32,
    /// The partition this subscription is, set when a projector is registered with
    /// a concurrency above 1: it applies only the events of the streams it owns.
    pub(crate) partition: Option<Partition>,
    /// How this process shares the partitions with the others that run them.
    pub(crate) spread: Option<Arc<Spread>>,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            start_from: StartFrom::Origin,
            filter: EventFilter::all(),
            batch_size: 1_000,
            on_error: ErrorPolicy::default(),
            backoff: Backoff::default(),
            strong: false,
            poll_interval: Duration::from_secs(1),
            lease_retry: Duration::from_secs(1),
            concurrency: 1,
            partition: None,
            spread: None,
        }
    }
}

impl SubscriptionOptions {
    /// Defaults: from the origin, everything, batches of 1,000, transient failures
    /// retried for ever from 100 ms to 5 s apart, deterministic ones retried then stop.
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
    /// Sets the policy for deterministic failures.
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }
    /// Sets the waits between tries after a transient failure.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
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
    /// Runs a projector in `n` partitions by stream, each its own subscription
    /// with its own checkpoint and lease ([`crate::partition`]). Only projectors
    /// can: an event handler's or process manager's effects are not partitioned.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n.max(1);
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
///
/// A consumer that counts events and keeps its checkpoint beside the count, run by
/// [`Subscriptions`](crate::Subscriptions):
///
/// ```
/// use rewind::subscription::BatchFailure;
/// use rewind::testing::new_event;
/// use rewind::{Application, Consumer, ConsumerError, ConsumerKind, EventStore, ExpectedVersion, GlobalPosition};
/// use rewind::{MemoryStore, MemorySubscriptionStore, RecordedEvent, SubscriptionOptions, Subscriptions};
/// use std::sync::{Arc, Mutex};
///
/// /// How many events were seen, and the position of the last.
/// #[derive(Default)]
/// struct Count(Mutex<(u64, Option<GlobalPosition>)>);
///
/// #[async_trait::async_trait]
/// impl Consumer for Count {
///     fn kind(&self) -> ConsumerKind {
///         ConsumerKind::EventHandler
///     }
///     async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
///         Ok(self.0.lock().unwrap().1)
///     }
///     async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
///         let mut done = self.0.lock().unwrap();
///         done.0 += events.len() as u64;
///         done.1 = events.last().map(|event| event.position).or(done.1);
///         Ok(())
///     }
///     async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
///         self.0.lock().unwrap().1 = Some(event.position);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let app = Application::builder(MemoryStore::new()).build();
/// let count = Arc::new(Count::default());
/// let subscriptions = Subscriptions::builder(&app, Arc::new(MemorySubscriptionStore::new()))
///     .consumer("count", count.clone(), SubscriptionOptions::new())
///     .start()
///     .unwrap();
///
/// let events = vec![new_event("TabOpened", serde_json::json!({})), new_event("TabClosed", serde_json::json!({}))];
/// let appended = app.store().append("tab-1", ExpectedVersion::NoStream, events).await.unwrap();
/// subscriptions.wait_for("count", appended.last_position).await.unwrap();
/// assert_eq!(*count.0.lock().unwrap(), (2, Some(appended.last_position)));
/// subscriptions.shutdown().await;
/// # });
/// ```
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

    /// The persisted checkpoint as the storage announces it, when it can tell every
    /// process of a commit (`rewind_postgres`'s projectors NOTIFY theirs). A strongly
    /// consistent dispatch in a process where the subscription stands by (another
    /// process holds its lease) then wakes on each announcement instead of polling
    /// [`checkpoint`](Self::checkpoint); it still polls, rarely, in case announcements
    /// are lost. The value may lag the stored checkpoint, never lead it. Default: `None`.
    fn announced_checkpoint(&self) -> Option<watch::Receiver<GlobalPosition>> {
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
    /// Waiting before trying again after a failure (see `last_error`, and
    /// `failed_position` when the failure was on an event).
    Retrying {
        /// Failures in a row so far.
        attempt: u32,
        /// Whether the latest is transient, so retried for ever; otherwise the error
        /// policy's tries are being spent.
        transient: bool,
    },
    /// Halted on an event (see `failed_position` and `last_error`) or shut down.
    Stopped,
    /// Paused by an operator; resumes from its checkpoint.
    Paused,
}

impl SubscriptionState {
    /// Every state's name, as [`SubscriptionState::name`] gives it.
    pub const NAMES: [&'static str; 6] = ["standby", "catching_up", "live", "retrying", "stopped", "paused"];

    /// The state's name, as serialized (`retrying`), for metrics and tools.
    pub fn name(&self) -> &'static str {
        match self {
            SubscriptionState::Standby => "standby",
            SubscriptionState::CatchingUp => "catching_up",
            SubscriptionState::Live => "live",
            SubscriptionState::Retrying { .. } => "retrying",
            SubscriptionState::Stopped => "stopped",
            SubscriptionState::Paused => "paused",
        }
    }
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
    /// The last failure's message (kept after the subscription got past it).
    pub last_error: Option<String>,
    /// The position of the event it stopped on or is retrying.
    pub failed_position: Option<GlobalPosition>,
    /// Since when it has been failing, while it is.
    pub failing_since: Option<DateTime<Utc>>,
    /// Transient failures since it started (each retried).
    pub transient_failures: u64,
    /// Deterministic failures since it started (each handled by the error policy).
    pub deterministic_failures: u64,
}

/// What a [`Tracker`] shows besides the position.
#[derive(Debug, Clone)]
struct Live {
    state: SubscriptionState,
    last_error: Option<String>,
    failed_position: Option<GlobalPosition>,
    failing_since: Option<DateTime<Utc>>,
    transient_failures: u64,
    deterministic_failures: u64,
    /// Whether this process holds the subscription's lease right now.
    leased: bool,
    /// Whether a failure report may stand in the bookkeeping (to remove once the
    /// subscription gets past it). True at start: a report left by an earlier run.
    reported: bool,
}

/// The live view of a running subscription, shared with status readers.
pub(crate) struct Tracker {
    pub(crate) name: String,
    pub(crate) kind: ConsumerKind,
    /// Plain mutex: short, never held across an await.
    live: Mutex<Live>,
    /// The position done, for status and for strongly consistent dispatches.
    pub(crate) position: watch::Sender<GlobalPosition>,
}

impl Tracker {
    pub(crate) fn new(name: String, kind: ConsumerKind) -> Tracker {
        let live = Live {
            state: SubscriptionState::Standby,
            last_error: None,
            failed_position: None,
            failing_since: None,
            transient_failures: 0,
            deterministic_failures: 0,
            leased: false,
            reported: true,
        };
        Tracker { name, kind, live: Mutex::new(live), position: watch::channel(GlobalPosition::START).0 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this process runs the subscription right now (holds its lease).
    pub(crate) fn is_active(&self) -> bool {
        self.lock().leased
    }

    fn set_leased(&self, leased: bool) {
        self.lock().leased = leased;
    }

    pub(crate) fn set(&self, state: SubscriptionState) {
        self.lock().state = state;
    }

    /// Records a failure: the state it leaves the subscription in, the message, the
    /// event it was on (none for reading, the checkpoint or the lease), and its kind.
    /// Returns when the failures in a row began.
    fn fail(&self, state: SubscriptionState, error: String, at: Option<GlobalPosition>, fault: Fault) -> DateTime<Utc> {
        let mut live = self.lock();
        live.state = state;
        live.last_error = Some(error);
        live.failed_position = at;
        match fault {
            Fault::Transient => live.transient_failures += 1,
            Fault::Deterministic => live.deterministic_failures += 1,
        }
        *live.failing_since.get_or_insert_with(Utc::now)
    }

    /// Got past the failure (the last error stays visible). Returns whether a failure
    /// report may stand in the bookkeeping.
    fn recovered(&self) -> bool {
        let mut live = self.lock();
        live.failed_position = None;
        live.failing_since = None;
        live.reported
    }

    fn set_reported(&self, reported: bool) {
        self.lock().reported = reported;
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
        let live = self.lock().clone();
        let position = *self.position.borrow();
        SubscriptionStatus {
            name: self.name.clone(),
            kind: self.kind,
            state: live.state,
            position,
            head,
            lag: head.0.saturating_sub(position.0),
            last_error: live.last_error,
            failed_position: live.failed_position,
            failing_since: live.failing_since,
            transient_failures: live.transient_failures,
            deterministic_failures: live.deterministic_failures,
        }
    }
}

/// Why a run of the subscription ended.
enum Ended {
    Shutdown,
    Stopped,
    LeaseLost,
    /// A partition given back, for another process to run (see [`Spread`]).
    Yielded,
}

/// What following does after a failure on an event.
enum Flow {
    /// Try the event again.
    Retry,
    /// The event went to the dead letters: go on after it.
    Skipped,
    /// Stop following.
    End(Ended),
}

/// Failures in a row since the subscription last made progress.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    /// Transient ones: they set the backoff and are never used up.
    transient: u32,
    /// The consumer's own, counted against the error policy.
    deterministic: u32,
}

impl Streak {
    fn attempts(&self) -> u32 {
        self.transient.saturating_add(self.deterministic)
    }
}

/// The longest a runner waits for its bookkeeping to take a failure report: a
/// report is only information, and must not hold the retries up.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

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
            let Some(mut lease) = self.acquire_lease().await else {
                return self.tracker.set(SubscriptionState::Stopped);
            };
            self.tracker.set_leased(true);
            let follow = std::panic::AssertUnwindSafe(self.follow(&mut lease));
            let ended = futures_util::FutureExt::catch_unwind(follow).await;
            self.tracker.set_leased(false);
            if let Some((spread, partition)) = self.spread() {
                spread.released(partition.index()).await;
            }
            match ended {
                Ok(Ended::Shutdown) => return self.tracker.set(SubscriptionState::Stopped),
                Ok(Ended::Stopped) => return,
                Ok(Ended::LeaseLost) => tracing::warn!(subscription = %self.tracker.name, "lease lost; standing by"),
                Ok(Ended::Yielded) => {
                    tracing::info!(subscription = %self.tracker.name, "partition given back to another process");
                    drop(lease);
                    self.tracker.set(SubscriptionState::Standby);
                }
                Err(panic) => {
                    let message = panic_message(&panic);
                    tracing::error!(subscription = %self.tracker.name, %message, "consumer panicked; restarting");
                    let at = self.tracker.position.borrow().next();
                    let state = SubscriptionState::Retrying { attempt: restarts + 1, transient: false };
                    self.tracker.fail(state, message, Some(at), Fault::Deterministic);
                    drop(lease);
                    if !self.pause(self.options.backoff.delay(restarts, jitter())).await {
                        return self.tracker.set(SubscriptionState::Stopped);
                    }
                    restarts = restarts.saturating_add(1);
                }
            }
        }
    }

    /// The spread and partition of a partitioned projector's subscription.
    fn spread(&self) -> Option<(Arc<Spread>, Partition)> {
        Some((self.options.spread.clone()?, self.options.partition?))
    }

    /// Whether this process runs more than its share of the partitions and should
    /// give this one back.
    async fn yields(&self) -> bool {
        match self.spread() {
            Some((spread, partition)) => spread.should_yield(partition.index()).await,
            None => false,
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

    /// Waits `delay` before another try, unless shutdown comes or the lease is lost
    /// first: either ends following (a lost lease must be taken again before the
    /// subscription runs on, or two processes could run it).
    async fn wait(&mut self, delay: Duration, lease: &mut Lease) -> Option<Ended> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            _ = self.shutdown.wait_for(|stop| *stop) => Some(Ended::Shutdown),
            _ = lease.lost() => Some(Ended::LeaseLost),
        }
    }

    async fn acquire_lease(&mut self) -> Option<Lease> {
        let mut streak = Streak::default();
        loop {
            if self.shutting_down() {
                return None;
            }
            if let Some((spread, partition)) = self.spread()
                && !spread.may_take(partition.index()).await
            {
                // Another process's share: stand by, and look again.
                self.tracker.set(SubscriptionState::Standby);
                if !self.pause(self.options.lease_retry).await {
                    return None;
                }
                continue;
            }
            let delay = match self.bookkeeping.try_lease(&self.tracker.name).await {
                Ok(Some(lease)) => {
                    if let Some((spread, partition)) = self.spread() {
                        spread.took(partition.index()).await;
                    }
                    return Some(lease);
                }
                Ok(None) => {
                    self.tracker.set(SubscriptionState::Standby);
                    self.options.lease_retry
                }
                Err(error) => {
                    streak.transient += 1;
                    self.transient(streak, Some("taking the lease"), &error, None).await
                }
            };
            if !self.pause(delay).await {
                return None;
            }
        }
    }

    async fn stored_start(&self) -> Result<GlobalPosition, ConsumerError> {
        if let Some(position) = self.consumer.checkpoint().await? {
            return Ok(position);
        }
        Ok(match self.options.start_from {
            StartFrom::Origin => GlobalPosition::START,
            StartFrom::After(position) => position,
            StartFrom::Now => self.store.head_position().await?,
        })
    }

    /// Where to start following, retried for ever: without a checkpoint there is no
    /// event to blame, so nothing else to do.
    async fn start_position(&mut self, lease: &mut Lease, streak: &mut Streak) -> Result<GlobalPosition, Ended> {
        loop {
            match self.stored_start().await {
                Ok(position) => return Ok(position),
                Err(error) => {
                    streak.transient += 1;
                    let delay = self.transient(*streak, Some("loading the checkpoint"), &*error, None).await;
                    if let Some(ended) = self.wait(delay, lease).await {
                        return Err(ended);
                    }
                }
            }
        }
    }

    async fn follow(&mut self, lease: &mut Lease) -> Ended {
        let mut head = self.store.watch_head();
        let mut streak = Streak::default();
        let mut position = match self.start_position(lease, &mut streak).await {
            Ok(position) => position,
            Err(ended) => return ended,
        };
        self.tracker.advance(position);
        loop {
            if self.shutting_down() {
                return Ended::Shutdown;
            }
            if self.yields().await {
                return Ended::Yielded;
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
            // Known committed before the read: if the read finds nothing the filter
            // passes, every event up to here is done (none was for this consumer).
            let horizon = *head.borrow();
            let read = self.store.read_all(position.next(), self.options.batch_size, &self.options.filter).await;
            let read: Vec<RecordedEvent> = match read {
                Ok(read) => read,
                Err(error) => {
                    streak.transient += 1;
                    let delay = self.transient(streak, Some("reading events"), &error, None).await;
                    if let Some(ended) = self.wait(delay, lease).await {
                        return ended;
                    }
                    continue;
                }
            };
            let Some(last_read) = read.last().map(|e| e.position) else {
                if horizon > position {
                    position = horizon;
                    self.tracker.advance(position);
                }
                self.healthy(&mut streak).await;
                if let Some(ended) = self.idle(&mut head, lease).await {
                    return ended;
                }
                continue;
            };
            let full = read.len() == self.options.batch_size;
            // The framework's own records (command failures) are not the consumer's,
            // nor are other partitions' streams.
            let partition = self.options.partition;
            let batch: Arc<[RecordedEvent]> = read
                .into_iter()
                .filter(|e| !crate::command_outcome::is_system_stream(&e.stream_id))
                .filter(|e| partition.is_none_or(|p| p.owns(&e.stream_id)))
                .collect();
            if batch.is_empty() {
                position = last_read;
                self.tracker.advance(position);
                self.healthy(&mut streak).await;
                continue;
            }
            let moving = if full { SubscriptionState::CatchingUp } else { SubscriptionState::Live };
            // While retrying, the status keeps saying so until the retry gets through.
            if streak.attempts() == 0 {
                self.tracker.set(moving.clone());
            }
            let span = crate::telemetry::process(&self.tracker.name, &batch);
            let failure = self.consumer.process(batch.clone()).instrument(span).await.err();
            let done = failure.as_ref().map_or(batch.len(), |f| f.failed_at.min(batch.len()));
            if let Some(last) = done.checked_sub(1).map(|i| batch[i].position) {
                position = last;
                self.tracker.advance(position);
                self.tracker.set(moving);
                self.healthy(&mut streak).await;
            }
            let Some(BatchFailure { error, .. }) = failure else {
                position = position.max(last_read);
                self.tracker.advance(position);
                continue;
            };
            let Some(event) = batch.get(done) else { continue };
            match self.on_failure(event, &error, &mut streak, lease).await {
                Flow::Retry => {}
                Flow::Skipped => {
                    position = event.position;
                    self.tracker.advance(position);
                    self.healthy(&mut streak).await;
                }
                Flow::End(ended) => return ended,
            }
        }
    }

    /// Decides what the consumer's failure on `event` means: a transient one is
    /// retried for ever, the consumer's own goes to the error policy.
    async fn on_failure(
        &mut self,
        event: &RecordedEvent,
        error: &ConsumerError,
        streak: &mut Streak,
        lease: &mut Lease,
    ) -> Flow {
        let at = Some(event.position);
        if classify(&**error) == Fault::Transient {
            streak.transient += 1;
            let delay = self.transient(*streak, None, &**error, at).await;
            return self.wait(delay, lease).await.map_or(Flow::Retry, Flow::End);
        }
        let (name, message) = (&self.tracker.name, describe(&**error));
        let earlier = streak.deterministic;
        streak.deterministic += 1;
        let attempts = streak.attempts();
        match decide(&self.options.on_error, earlier) {
            Decision::Retry(delay) => {
                tracing::warn!(subscription = %name, position = %event.position, error = %message, attempts, "retrying");
                let state = SubscriptionState::Retrying { attempt: attempts, transient: false };
                self.report(state, attempts, message, at, Fault::Deterministic).await;
                self.wait(delay, lease).await.map_or(Flow::Retry, Flow::End)
            }
            Decision::Skip => match self.skip(event, error).await {
                Ok(()) => {
                    tracing::warn!(subscription = %name, position = %event.position, error = %message, attempts, "skipped into the dead letters");
                    // Counted and kept as the last error; the subscription goes on.
                    self.tracker.fail(SubscriptionState::CatchingUp, message, at, Fault::Deterministic);
                    Flow::Skipped
                }
                Err(skip_error) => {
                    // The bookkeeping failed, not the event: try again for ever.
                    streak.transient += 1;
                    let delay = self.transient(*streak, Some("dead-lettering the event"), &*skip_error, at).await;
                    self.wait(delay, lease).await.map_or(Flow::Retry, Flow::End)
                }
            },
            Decision::Stop => {
                tracing::error!(subscription = %name, position = %event.position, error = %message, attempts, "stopped");
                self.report(SubscriptionState::Stopped, attempts, message, at, Fault::Deterministic).await;
                Flow::End(Ended::Stopped)
            }
        }
    }

    /// Shows, logs and reports a transient failure (`context` says what failed when
    /// it was not the consumer on an event); returns the wait before the next try.
    async fn transient(
        &self,
        streak: Streak,
        context: Option<&str>,
        error: &(dyn Error + Send + Sync + 'static),
        at: Option<GlobalPosition>,
    ) -> Duration {
        let message = match context {
            Some(context) => format!("{context}: {}", describe(error)),
            None => describe(error),
        };
        let attempts = streak.attempts();
        tracing::warn!(subscription = %self.tracker.name, error = %message, attempts, "transient failure; retrying");
        let state = SubscriptionState::Retrying { attempt: attempts, transient: true };
        self.report(state, attempts, message, at, Fault::Transient).await;
        self.options.backoff.delay(streak.transient.saturating_sub(1), jitter())
    }

    /// Shows a failure in the status and, best effort, in the bookkeeping.
    async fn report(
        &self,
        state: SubscriptionState,
        attempt: u32,
        error: String,
        at: Option<GlobalPosition>,
        fault: Fault,
    ) {
        let since = self.tracker.fail(state.clone(), error.clone(), at, fault);
        let state = match state {
            SubscriptionState::Stopped => FailureState::Stopped,
            _ => FailureState::Retrying,
        };
        let report = FailureReport {
            subscription: self.tracker.name.clone(),
            state,
            attempt,
            transient: fault == Fault::Transient,
            error,
            position: at,
            since,
            updated_at: Utc::now(),
        };
        self.tracker.set_reported(true);
        match tokio::time::timeout(REPORT_TIMEOUT, self.bookkeeping.report_failure(report)).await {
            Ok(Ok(())) => {}
            // Usually the same outage the report is about.
            Ok(Err(error)) => tracing::debug!(subscription = %self.tracker.name, %error, "failure not reported"),
            Err(_) => tracing::debug!(subscription = %self.tracker.name, "failure report timed out"),
        }
    }

    /// The subscription got past its failures (or had none): reset the streak and
    /// remove a failure report that may stand.
    async fn healthy(&self, streak: &mut Streak) {
        *streak = Streak::default();
        if !self.tracker.recovered() {
            return;
        }
        match tokio::time::timeout(REPORT_TIMEOUT, self.bookkeeping.clear_failure(&self.tracker.name)).await {
            Ok(Ok(())) => self.tracker.set_reported(false),
            // Kept as possibly standing: the next healthy moment tries again.
            Ok(Err(error)) => tracing::debug!(subscription = %self.tracker.name, %error, "failure report not removed"),
            Err(_) => tracing::debug!(subscription = %self.tracker.name, "removing the failure report timed out"),
        }
    }

    /// Live at the head: waits for a new commit here, the poll interval, shutdown or
    /// the loss of the lease (the last two end following).
    async fn idle(&mut self, head: &mut watch::Receiver<GlobalPosition>, lease: &mut Lease) -> Option<Ended> {
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

    #[test]
    fn state_names_are_the_serialized_ones() {
        let states = [
            SubscriptionState::Standby,
            SubscriptionState::CatchingUp,
            SubscriptionState::Live,
            SubscriptionState::Retrying { attempt: 3, transient: true },
            SubscriptionState::Stopped,
            SubscriptionState::Paused,
        ];
        for (state, name) in states.iter().zip(SubscriptionState::NAMES) {
            assert_eq!(state.name(), name);
            assert_eq!(serde_json::to_value(state).expect("json")["state"], name);
        }
    }

    #[test]
    fn transient_backoff_doubles_to_its_cap_and_jitters_within_half() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff.delay(0, 0.999_999).as_millis(), 99);
        assert_eq!(backoff.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff.delay(6, 0.0), Duration::from_millis(2_500), "capped at 5 s before jitter");
        assert_eq!(backoff.delay(u32::MAX, 0.0), Duration::from_millis(2_500), "no overflow, ever");
        assert!((0..1_000).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
        assert_eq!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).max, Duration::from_secs(2));
    }
}
