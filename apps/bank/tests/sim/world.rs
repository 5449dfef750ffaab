//! One simulated bank: its durable parts (the event store, the read model file, the
//! subscription bookkeeping) and its live parts (the application with its aggregate
//! cache, the consumers and their delivery state), which a crash drops.
//!
//! Delivery is driven here, one batch at a time, instead of by background tasks, so
//! a seed replays exactly: the driver follows a consumer's checkpoint (and what it
//! covers inline) like the framework's runner, applies the subscription's error
//! policy, and can hand a consumer events again at any point (redelivery).

use crate::sim::faults::{Faults, FaultyStore, INJECTED};
use bank::app::router_with;
use bank::destination_check::DestinationCheck;
use bank::domain::{Account, TransferProcess};
use bank::read_model::statements::STATEMENTS;
use bank::read_model::{Accounts, PROJECTOR, Queries, Statements};
use bank::service::TRANSFER_PROCESS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind::command_outcome::is_system_stream;
use rewind::sql::{Dialect, Sql};
use rewind::store::BatchFailure;
use rewind::{
    AggregateConfig, Application, Consumer, ConsumerError, ConsumerKind, DeadLetter, ErrorPolicy, EventFilter,
    EventStore, GlobalPosition, LoggingMiddleware, MemoryStore, MemorySubscriptionStore, RecordedEvent, SharedStore,
    SubscriptionOptions, SubscriptionStore, Subscriptions, ValidationMiddleware,
};
use rewind::{Projector, ReadModel};
use rewind_sqlite::{SqliteReadModel, SqliteStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Which store the world runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `MemoryStore`, kept across crashes; read model in its own SQLite file.
    Memory,
    /// A SQLite store file with the projections written inline, as the bank runs.
    Sqlite,
}

/// A projection that sometimes refuses an event as a buggy projector would (a
/// deterministic-looking error that a later deploy fixes), so dead letters appear.
pub struct Flaky<P> {
    pub inner: P,
    pub rng: Arc<Mutex<StdRng>>,
    pub rate: f64,
    pub enabled: Arc<AtomicBool>,
}

impl<P: Projector + ?Sized> Projector for Flaky<Box<P>> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn schema(&self, dialect: Dialect) -> &'static str {
        self.inner.schema(dialect)
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        if self.enabled.load(Ordering::Relaxed) && self.rng.lock().unwrap().random_bool(self.rate) {
            return Err(format!("projector bug on event {}", event.position).into());
        }
        self.inner.project(event, sql)
    }
}

/// A subscription as the driver runs it.
pub struct Sub {
    pub name: String,
    pub consumer: Arc<dyn Consumer>,
    pub policy: ErrorPolicy,
    /// Deterministic failures in a row on the current event (what the policy counts).
    pub attempts: u32,
    /// Retrying a transient failure (for ever, never counted by the policy).
    pub retrying: bool,
    /// Why it stopped, if it did (until the next start of the application).
    pub stopped: Option<String>,
}

impl Sub {
    pub fn kind(&self) -> ConsumerKind {
        self.consumer.kind()
    }
}

/// What the seed decided about the world's shape.
#[derive(Debug, Clone)]
pub struct Shape {
    pub backend: Backend,
    pub cache_capacity: usize,
    pub snapshot_every: u64,
    /// The projectors' error policy (Skip makes dead letters).
    pub projector_policy: ErrorPolicy,
    /// The process manager's error policy.
    pub manager_policy: ErrorPolicy,
    /// Chance that the flaky projection refuses an event.
    pub projector_bug_rate: f64,
}

/// The live part of a world: what a crash loses.
pub struct Live {
    pub app: Application,
    pub model: SqliteReadModel,
    pub bookkeeping: Arc<dyn SubscriptionStore>,
    pub subs: Vec<Sub>,
    /// The SQLite store (dropped on a crash, its file kept).
    _sqlite: Option<Arc<SqliteStore>>,
}

/// The durable part of a world.
pub struct Durable {
    pub dir: PathBuf,
    pub memory: Option<Arc<MemoryStore>>,
    /// Checkpoints of the process manager, its instances, dead letters. In memory
    /// (kept across crashes) so that no thread's timing orders the manager's work.
    pub bookkeeping: Arc<MemorySubscriptionStore>,
}

pub struct World {
    pub shape: Shape,
    pub rng: StdRng,
    pub faults: Arc<Faults>,
    pub durable: Durable,
    pub live: Option<Live>,
    bug_rng: Arc<Mutex<StdRng>>,
    pub bugs: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

/// Where scratch files go: memory-backed when the machine has it.
pub fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("scratch directory")
}

impl World {
    pub async fn new(seed: u64, shape: Shape) -> World {
        let dir = scratch();
        let durable = Durable {
            dir: dir.path().to_owned(),
            memory: (shape.backend == Backend::Memory).then(|| Arc::new(MemoryStore::new())),
            bookkeeping: Arc::new(MemorySubscriptionStore::new()),
        };
        let mut world = World {
            shape,
            rng: StdRng::seed_from_u64(seed),
            faults: Faults::new(seed),
            durable,
            live: None,
            bug_rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed ^ 0xb06))),
            bugs: Arc::new(AtomicBool::new(true)),
            _dir: dir,
        };
        world.start().await;
        world
    }

    pub fn live(&mut self) -> &mut Live {
        self.live.as_mut().expect("the world is running")
    }

    /// The store without faults, for checks.
    pub async fn raw_store(&self) -> SharedStore {
        match &self.durable.memory {
            Some(memory) => SharedStore::from(memory.clone()),
            None => match &self.live.as_ref().expect("running")._sqlite {
                Some(store) => SharedStore::from(store.clone()),
                None => unreachable!("a SQLite world always has its store"),
            },
        }
    }

    /// Starts the application on the durable parts (at creation and after a crash).
    pub async fn start(&mut self) {
        let faulty = |inner: SharedStore| FaultyStore { inner, faults: self.faults.clone() };
        let (store, model, sqlite) = match &self.durable.memory {
            Some(memory) => {
                let model = SqliteReadModel::open(self.durable.dir.join("read_model.db")).await.expect("read model");
                (SharedStore::new(faulty(SharedStore::from(memory.clone()))), model, None)
            }
            None => {
                let store = Arc::new(SqliteStore::open(self.durable.dir.join("bank.db")).await.expect("store"));
                let model = SqliteReadModel::sharing(store.clone()).await.expect("read model");
                (SharedStore::new(faulty(SharedStore::from(store.clone()))), model, Some(store))
            }
        };
        let bookkeeping: Arc<dyn SubscriptionStore> = self.durable.bookkeeping.clone();
        let accounts = AggregateConfig::<Account>::new()
            .identity_prefix("account-")
            .cache_capacity(self.shape.cache_capacity)
            .snapshot_every(self.shape.snapshot_every, 1);
        let app = Application::builder_shared(store)
            .router(router_with(accounts))
            .middleware(LoggingMiddleware)
            .middleware(ValidationMiddleware)
            .middleware(DestinationCheck(Queries(Arc::new(model.clone()))))
            .build();
        let subs = self.consumers(&app, &model, bookkeeping.clone()).await;
        self.live = Some(Live { app, model, bookkeeping, subs, _sqlite: sqlite });
    }

    async fn consumers(
        &self,
        app: &Application,
        model: &SqliteReadModel,
        bookkeeping: Arc<dyn SubscriptionStore>,
    ) -> Vec<Sub> {
        let flaky = |inner: Box<dyn Projector>| {
            Arc::new(Flaky {
                inner,
                rng: self.bug_rng.clone(),
                rate: self.shape.projector_bug_rate,
                enabled: self.bugs.clone(),
            }) as Arc<dyn Projector>
        };
        // Inline on a model in the store's file, as the bank runs.
        let accounts = model.projector(flaky(Box::new(Accounts))).await.expect("projector");
        let statements = model.projector(flaky(Box::new(Statements))).await.expect("projector");
        let builder = Subscriptions::builder(app, bookkeeping).process_manager(
            TRANSFER_PROCESS,
            TransferProcess,
            SubscriptionOptions::new(),
        );
        let manager = builder.registered().next().map(|(_, consumer)| consumer.clone()).expect("manager");
        let sub = |name: &str, consumer, policy: &ErrorPolicy| Sub {
            name: name.to_owned(),
            consumer,
            policy: policy.clone(),
            attempts: 0,
            retrying: false,
            stopped: None,
        };
        vec![
            sub(PROJECTOR, accounts, &self.shape.projector_policy),
            sub(TRANSFER_PROCESS, manager, &self.shape.manager_policy),
            sub(STATEMENTS, statements, &self.shape.projector_policy),
        ]
    }

    /// Everything in memory is gone; the store, read model and bookkeeping stay.
    pub async fn crash(&mut self) {
        self.live = None;
        self.start().await;
    }
}

/// What one delivery did.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Events the consumer finished.
    pub done: usize,
    /// An event was passed over into the dead letters.
    pub skipped: bool,
    /// The subscription stopped, and whether an injected fault caused the failure.
    pub stopped_by_fault: Option<bool>,
    /// An event went to the dead letters because of an injected fault.
    pub dead_lettered_by_fault: Option<String>,
}

impl Delivered {
    /// Whether the subscription moved at all.
    pub fn moved(&self) -> bool {
        self.done > 0 || self.skipped
    }
}

impl Live {
    /// One turn of subscription `index`: read a batch after its checkpoint and hand it
    /// over, applying its error policy on failure (as the framework's runner does).
    pub async fn deliver(&mut self, index: usize, batch: usize, faults: &Faults) -> Delivered {
        let store = self.app.store().clone();
        let bookkeeping = self.bookkeeping.clone();
        let sub = &mut self.subs[index];
        if sub.stopped.is_some() {
            return Delivered::default();
        }
        let before = faults.injected();
        let Ok(checkpoint) = sub.consumer.checkpoint().await else { return Delivered::default() };
        let mut position = checkpoint.unwrap_or(GlobalPosition::START);
        if let Some(covered) = sub.consumer.covered().filter(|&c| c > position) {
            position = covered;
        }
        // A failed read is retried by the runner at its poll interval: not a failure.
        let Ok(read) = store.read_all(position.next(), batch, &EventFilter::all()).await else {
            return Delivered::default();
        };
        // As the runner does: the framework's own records are not the consumer's.
        let events: Arc<[RecordedEvent]> = read.into_iter().filter(|e| !is_system_stream(&e.stream_id)).collect();
        if events.is_empty() {
            return Delivered::default();
        }
        let Err(BatchFailure { failed_at, error }) = sub.consumer.process(events.clone()).await else {
            sub.attempts = 0;
            sub.retrying = false;
            return Delivered { done: events.len(), ..Default::default() };
        };
        if failed_at > 0 {
            sub.attempts = 0;
            sub.retrying = false;
        }
        // Judged by the error itself, not by the classification under test: a
        // failure whose causes include an injected fault must never take the policy.
        let caused_by_fault = faults.injected() != before && rewind::subscription::describe(&*error).contains(INJECTED);
        let Some(event) = events.get(failed_at) else { return Delivered { done: failed_at, ..Default::default() } };
        if rewind::classify(&*error) == rewind::Fault::Transient {
            // The runner retries it for ever; the policy never sees it.
            sub.retrying = true;
            return Delivered { done: failed_at, ..Default::default() };
        }
        sub.retrying = false;
        match policy_decision(&sub.policy, sub.attempts) {
            Decision::Retry => sub.attempts += 1,
            Decision::Skip => {
                let letter = DeadLetter {
                    subscription: sub.name.clone(),
                    event: event.clone(),
                    error: error.to_string(),
                    failed_at: chrono::Utc::now(),
                };
                let skipped =
                    bookkeeping.add_dead_letter(letter).await.is_ok() && sub.consumer.skip(event).await.is_ok();
                if skipped {
                    sub.attempts = 0;
                }
                let why =
                    caused_by_fault.then(|| format!("{} dead-lettered event {}: {error}", sub.name, event.position));
                return Delivered { done: failed_at, skipped, dead_lettered_by_fault: why, ..Default::default() };
            }
            Decision::Stop => {
                sub.stopped = Some(format!("stopped at {}: {error}", event.position));
                return Delivered { done: failed_at, stopped_by_fault: Some(caused_by_fault), ..Default::default() };
            }
        }
        Delivered { done: failed_at, ..Default::default() }
    }

    /// Hands subscription `index` the events from `from` again (a redelivery: a
    /// runner that restarted from an older position, or a second runner).
    pub async fn redeliver(&mut self, index: usize, from: GlobalPosition, batch: usize) {
        let Ok(read) = self.app.store().read_all(from, batch, &EventFilter::all()).await else { return };
        let events: Arc<[RecordedEvent]> = read.into_iter().filter(|e| !is_system_stream(&e.stream_id)).collect();
        if events.is_empty() {
            return;
        }
        let _ = self.subs[index].consumer.process(events).await;
    }
}

pub enum Decision {
    Retry,
    Skip,
    Stop,
}

/// The runner's decision for a deterministic failure (mirrors
/// `rewind::subscription`'s `decide`).
pub fn policy_decision(policy: &ErrorPolicy, attempts: u32) -> Decision {
    match policy {
        ErrorPolicy::Stop => Decision::Stop,
        ErrorPolicy::Skip => Decision::Skip,
        ErrorPolicy::Retry { max_attempts, then, .. } if attempts + 1 >= *max_attempts => policy_decision(then, 0),
        ErrorPolicy::Retry { .. } => Decision::Retry,
    }
}
