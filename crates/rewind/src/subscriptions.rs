//! The set of subscriptions an application runs: start, status, rebuild, shutdown.
//!
//! Names are unique (a duplicate is an error at start-up). A subscription added to a
//! running set starts from its own checkpoint — from the origin when it is new —
//! while the others stay live. A rebuild resets one projector (its read model and
//! checkpoint) and replays it from the origin; event handlers and process managers
//! are never rebuilt, so side effects never fire twice. A rebuild supersedes the
//! projector's dead letters, and replaying a projector's dead letter rebuilds it:
//! [`dead_letters`] has the rules for each kind.
//!
//! A projector registered with a [`concurrency`](SubscriptionOptions::concurrency)
//! above 1 runs as that many subscriptions, its partitions ([`crate::partition`]).
//! The projector's name stands for all of them: rebuilding, pausing, resuming or
//! waiting for it acts on every partition, because they share its tables.

use crate::application::Application;
use crate::dead_letters;
use crate::event_handler::{EventHandler, HandlerConsumer};
use crate::event_store::{EventStore, StoreError};
use crate::partition::{Partition, PartitionOf, Spread};
use crate::process_manager::{ProcessManager, ProcessManagerConsumer};
use crate::projector::{Projector, ReadModel};
use crate::stream::GlobalPosition;
use crate::subscription::{Consumer, ConsumerKind, Runner, SubscriptionOptions, SubscriptionStatus, Tracker};
use crate::subscription_store::{DeadLetter, SubscriptionStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Subscription management errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// Two subscriptions share a name.
    #[error("a subscription named `{0}` is already registered")]
    DuplicateName(String),
    /// No subscription has this name.
    #[error("no subscription named `{0}`")]
    Unknown(String),
    /// Only projectors can be rebuilt.
    #[error("`{0}` is not a projector; only projectors can be rebuilt")]
    NotRebuildable(String),
    /// No dead letter for this subscription and event (it may have been replayed,
    /// discarded or superseded by a rebuild).
    #[error("no dead letter for `{0}` and event {1}")]
    NoDeadLetter(String, Uuid),
    /// A projector's dead letter is not handed over alone; rebuilding the projector
    /// replays it in order ([`dead_letters`]).
    #[error("`{0}` is a projector: its dead letters are replayed by rebuilding it, in order")]
    ReplayByRebuild(String),
    /// Another process runs this subscription (it holds its lease).
    #[error("`{0}` is running in another process (it holds the subscription's lease)")]
    Busy(String),
    /// Only a projector runs in partitions: a handler's or process manager's
    /// effects are not split by stream.
    #[error("`{0}` asks for a concurrency above 1, but only projectors run in partitions")]
    NotPartitionable(String),
    /// The consumer or the bookkeeping store failed.
    #[error("{0}")]
    Failed(#[source] crate::subscription::ConsumerError),
}

struct Registered {
    name: String,
    /// The projector a partition belongs to; the subscription's own name otherwise.
    group: String,
    consumer: Arc<dyn Consumer>,
    options: SubscriptionOptions,
}

/// Collects subscriptions before they start.
pub struct SubscriptionsBuilder {
    app: Application,
    bookkeeping: Arc<dyn SubscriptionStore>,
    read_model: Option<Arc<dyn ReadModel>>,
    registered: Vec<Registered>,
}

impl SubscriptionsBuilder {
    /// Sets the read model [`projector`](Self::projector)s write to.
    pub fn read_model(mut self, read_model: Arc<dyn ReadModel>) -> Self {
        self.read_model = Some(read_model);
        self
    }

    /// Adds a projector: creates its tables in the [`read_model`](Self::read_model)
    /// and its subscription, under the projector's own name and filter. On error
    /// (no read model set, the tables could not be made) nothing is registered.
    pub async fn projector(self, projector: impl Projector) -> Result<Self, StoreError> {
        self.projector_with(projector, SubscriptionOptions::new()).await
    }

    /// [`projector`](Self::projector) with subscription options (e.g.
    /// [`strong`](SubscriptionOptions::strong)); their filter is replaced by the
    /// projector's.
    pub async fn projector_with(
        self,
        projector: impl Projector,
        options: SubscriptionOptions,
    ) -> Result<Self, StoreError> {
        let Some(read_model) = &self.read_model else {
            return Err(StoreError::Invalid(format!(
                "projector `{}` needs a read model: set one with SubscriptionsBuilder::read_model",
                projector.name()
            )));
        };
        let (name, filter) = (projector.name().to_owned(), projector.filter());
        let options = options.filter(filter);
        if options.concurrency > 1 {
            return self.partitioned(Arc::new(projector), options).await;
        }
        let consumer = read_model.projector(Arc::new(projector)).await?;
        Ok(self.consumer(name, consumer, options))
    }

    /// Registers a projector's partitions ([`crate::partition`]). A set of partitions
    /// none of which has a checkpoint is new (a first start, or a new count), so it
    /// starts from empty tables: what the projector or another count of partitions
    /// wrote must not be applied again. That is decided while holding every
    /// partition's lease, so a process already running them is never reset under.
    async fn partitioned(
        mut self,
        projector: Arc<dyn Projector>,
        options: SubscriptionOptions,
    ) -> Result<Self, StoreError> {
        let read_model = self.read_model.clone().ok_or_else(|| StoreError::Invalid("no read model".into()))?;
        let group = projector.name().to_owned();
        let outdated = match projector.outdated(read_model.dialect()) {
            Some(query) => read_model.query_opt(query, ()).await?.is_some(),
            None => false,
        };
        let recount = options.lease_retry.saturating_mul(2);
        let spread = Arc::new(Spread::new(&group, options.concurrency, self.bookkeeping.clone(), recount));
        let mut partitions = Vec::new();
        for partition in Partition::all(options.concurrency) {
            let name = partition.name(&group);
            let of = PartitionOf { inner: projector.clone(), partition, name: name.clone(), outdated };
            let consumer = read_model.projector(Arc::new(of)).await?;
            let options =
                SubscriptionOptions { partition: Some(partition), spread: Some(spread.clone()), ..options.clone() };
            partitions.push(Registered { name, group: group.clone(), consumer, options });
        }
        let mut leases = Vec::new();
        for registered in &partitions {
            match self.bookkeeping.try_lease(&registered.name).await? {
                Some(lease) => leases.push(lease),
                // Another process runs this set: it made this decision already.
                None => break,
            }
        }
        if leases.len() == partitions.len() {
            let mut fresh = true;
            for registered in &partitions {
                fresh &= registered.consumer.checkpoint().await.map_err(StoreError::Backend)?.is_none();
            }
            if fresh {
                // Every partition empties the tables and forgets its own dead letters.
                for registered in &partitions {
                    dead_letters::reset_projector(&registered.name, &*registered.consumer, &*self.bookkeeping)
                        .await
                        .map_err(StoreError::backend)?;
                }
            }
        }
        drop(leases);
        self.registered.extend(partitions);
        Ok(self)
    }

    /// Adds any consumer (backends provide projector consumers).
    pub fn consumer(
        mut self,
        name: impl Into<String>,
        consumer: Arc<dyn Consumer>,
        options: SubscriptionOptions,
    ) -> Self {
        let name = name.into();
        self.registered.push(Registered { group: name.clone(), name, consumer, options });
        self
    }

    /// Adds an event handler.
    pub fn handler(self, name: impl Into<String>, handler: impl EventHandler, options: SubscriptionOptions) -> Self {
        let name = name.into();
        let consumer = Arc::new(HandlerConsumer::new(name.clone(), handler, self.bookkeeping.clone()));
        self.consumer(name, consumer, options)
    }

    /// Adds a process manager; its commands go through this application.
    pub fn process_manager(
        self,
        name: impl Into<String>,
        manager: impl ProcessManager,
        options: SubscriptionOptions,
    ) -> Self {
        let name = name.into();
        let consumer =
            Arc::new(ProcessManagerConsumer::new(name.clone(), manager, self.app.clone(), self.bookkeeping.clone()));
        self.consumer(name, consumer, options)
    }

    /// The registered subscriptions, in registration order: for tools that inspect
    /// them (checkpoints, kinds) without starting them.
    pub fn registered(&self) -> impl Iterator<Item = (&str, &Arc<dyn Consumer>)> {
        self.registered.iter().map(|r| (r.name.as_str(), &r.consumer))
    }

    /// The kind of the subscription or partitioned projector called `name`, if one
    /// is registered (a tool checking the names it was given).
    pub fn kind_of(&self, name: &str) -> Option<ConsumerKind> {
        self.registered.iter().find(|r| r.name == name || r.group == name).map(|r| r.consumer.kind())
    }

    /// The name a subscription is kept, retained and rebuilt by: a partition's
    /// projector, or the subscription itself.
    pub fn group_of(&self, name: &str) -> Option<&str> {
        self.registered.iter().find(|r| r.name == name || r.group == name).map(|r| r.group.as_str())
    }

    /// Keeps only the subscriptions `keep` accepts (a tool that replays history runs
    /// the projectors alone, so no side effect fires). A partitioned projector is
    /// asked about by its own name, and its partitions are kept or dropped together:
    /// they share its tables.
    pub fn retain(mut self, mut keep: impl FnMut(&str, ConsumerKind) -> bool) -> Self {
        self.registered.retain(|r| keep(&r.group, r.consumer.kind()));
        self
    }

    /// Sets every registered subscription's batch size (a tool catching up a whole
    /// history commits fewer, larger batches than a live service).
    pub fn batch_size(mut self, size: usize) -> Self {
        for registered in &mut self.registered {
            registered.options = registered.options.clone().batch_size(size);
        }
        self
    }

    /// Starts every subscription on the current tokio runtime.
    pub fn start(self) -> Result<Subscriptions, SubscriptionError> {
        let subscriptions = Subscriptions {
            app: self.app,
            bookkeeping: self.bookkeeping,
            running: Mutex::default(),
            paused: Mutex::default(),
        };
        for Registered { name, group, consumer, options } in self.registered {
            subscriptions.add_to(name, group, consumer, options)?;
        }
        Ok(subscriptions)
    }
}

/// A subscription taken out of the running set: what it takes to start it again.
struct Halted {
    group: String,
    consumer: Arc<dyn Consumer>,
    options: SubscriptionOptions,
    tracker: Arc<Tracker>,
}

struct Running {
    group: String,
    tracker: Arc<Tracker>,
    consumer: Arc<dyn Consumer>,
    options: SubscriptionOptions,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Running subscriptions. Dropping this without [`Subscriptions::shutdown`] aborts nothing:
/// the tasks run until the runtime ends.
pub struct Subscriptions {
    app: Application,
    bookkeeping: Arc<dyn SubscriptionStore>,
    /// Plain mutex: held only to look up or swap entries, never across an await.
    running: Mutex<BTreeMap<String, Running>>,
    /// Paused subscriptions, to resume. Same locking rule.
    paused: Mutex<BTreeMap<String, Halted>>,
}

impl Subscriptions {
    /// Starts collecting subscriptions for `app`, keeping their bookkeeping in `bookkeeping`.
    pub fn builder(app: &Application, bookkeeping: Arc<dyn SubscriptionStore>) -> SubscriptionsBuilder {
        SubscriptionsBuilder { app: app.clone(), bookkeeping, read_model: None, registered: Vec::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one more subscription while the others run. (A partitioned projector
    /// is added through [`SubscriptionsBuilder::projector_with`].)
    pub fn add(
        &self,
        name: impl Into<String>,
        consumer: Arc<dyn Consumer>,
        options: SubscriptionOptions,
    ) -> Result<(), SubscriptionError> {
        let name = name.into();
        self.add_to(name.clone(), name, consumer, options)
    }

    fn add_to(
        &self,
        name: String,
        group: String,
        consumer: Arc<dyn Consumer>,
        options: SubscriptionOptions,
    ) -> Result<(), SubscriptionError> {
        if options.concurrency > 1 && options.partition.is_none() {
            return Err(SubscriptionError::NotPartitionable(name));
        }
        let mut running = self.lock();
        if running.contains_key(&name) {
            return Err(SubscriptionError::DuplicateName(name));
        }
        let entry = self.spawn(name.clone(), group, consumer, options);
        running.insert(name, entry);
        Ok(())
    }

    fn spawn(&self, name: String, group: String, consumer: Arc<dyn Consumer>, options: SubscriptionOptions) -> Running {
        let tracker = Arc::new(Tracker::new(name.clone(), consumer.kind()));
        let (stop, shutdown) = watch::channel(false);
        self.app.consistency().register(&name, &group, &options, tracker.clone(), consumer.clone());
        let runner = Runner {
            tracker: tracker.clone(),
            consumer: consumer.clone(),
            options: options.clone(),
            store: self.app.store().clone(),
            bookkeeping: self.bookkeeping.clone(),
            shutdown,
        };
        let task = tokio::spawn(runner.run());
        Running { group, tracker, consumer, options, stop, task }
    }

    /// The subscriptions `name` stands for: itself, or every partition of the
    /// projector it names or is a partition of. Running and paused ones both count.
    fn members(&self, name: &str) -> Vec<String> {
        let paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.lock();
        let group = running
            .get(name)
            .map(|r| r.group.clone())
            .or_else(|| paused.get(name).map(|h| h.group.clone()))
            .unwrap_or_else(|| name.to_owned());
        let mut members: Vec<String> =
            running.iter().filter(|(_, r)| r.group == group).map(|(n, _)| n.clone()).collect();
        members.extend(paused.iter().filter(|(_, h)| h.group == group).map(|(n, _)| n.clone()));
        members.sort();
        members
    }

    /// The status of every subscription, running or paused, by name.
    pub fn status(&self) -> Vec<SubscriptionStatus> {
        let head = *self.app.store().watch_head().borrow();
        let mut all: Vec<SubscriptionStatus> = self.lock().values().map(|r| r.tracker.status(head)).collect();
        let paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(paused.values().map(|h| h.tracker.status(head)));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The status of one subscription.
    pub fn status_of(&self, name: &str) -> Option<SubscriptionStatus> {
        self.status().into_iter().find(|s| s.name == name)
    }

    /// Waits until subscription `name` (every partition, for a partitioned
    /// projector) has done `position` (for tests and tools).
    pub async fn wait_for(&self, name: &str, position: GlobalPosition) -> Result<(), SubscriptionError> {
        let progress: Vec<watch::Receiver<GlobalPosition>> = {
            let running = self.lock();
            running
                .values()
                .filter(|r| r.tracker.name == name || r.group == name)
                .map(|r| r.tracker.position.subscribe())
                .collect()
        };
        if progress.is_empty() {
            return Err(SubscriptionError::Unknown(name.into()));
        }
        for mut each in progress {
            let _ = each.wait_for(|done| *done >= position).await;
        }
        Ok(())
    }

    /// Resets a projector's read model and checkpoint and replays it from the origin;
    /// returns once it is running again (not once it has caught up). A partitioned
    /// projector, named by itself or by one of its partitions, is rebuilt whole: its
    /// partitions share its tables. Refused with [`SubscriptionError::Busy`] while
    /// another process holds a partition's lease, as resetting tables under it
    /// would lose what it writes.
    pub async fn rebuild(&self, name: &str) -> Result<(), SubscriptionError> {
        // Two statements: the running set's guard must be gone before the group lookup takes it again.
        let kind = self.lock().get(name).map(|r| r.tracker.kind);
        let kind = kind.or_else(|| self.kind_of_group(name));
        match kind {
            None => return Err(SubscriptionError::Unknown(name.into())),
            Some(ConsumerKind::Projector) => {}
            Some(_) => return Err(SubscriptionError::NotRebuildable(name.into())),
        }
        let members = self.members(name);
        if members.len() == 1 {
            let Halted { group, consumer, options, .. } = self.halt(&members[0]).await?;
            let reset = dead_letters::reset_projector(&members[0], &*consumer, &*self.bookkeeping).await;
            let restarted = self.spawn(members[0].clone(), group, consumer, options);
            self.lock().insert(members[0].clone(), restarted);
            return reset;
        }
        let mut halted = Vec::new();
        for member in &members {
            halted.push((member.clone(), self.halt(member).await?));
        }
        let mut reset = Ok(());
        let mut leases = Vec::new();
        for (member, _) in &halted {
            match dead_letters::retake_lease(&*self.bookkeeping, member).await {
                Ok(lease) => leases.push(lease),
                Err(error) => {
                    reset = Err(error);
                    break;
                }
            }
        }
        if reset.is_ok() {
            for (member, Halted { consumer, .. }) in &halted {
                reset = dead_letters::reset_projector(member, &**consumer, &*self.bookkeeping).await;
                if reset.is_err() {
                    break;
                }
            }
        }
        drop(leases);
        for (member, Halted { group, consumer, options, .. }) in halted {
            let restarted = self.spawn(member.clone(), group, consumer, options);
            self.lock().insert(member, restarted);
        }
        reset
    }

    /// The kind of the partitioned projector called `name`, if it runs here.
    fn kind_of_group(&self, name: &str) -> Option<ConsumerKind> {
        self.lock().values().find(|r| r.group == name).map(|r| r.tracker.kind)
    }

    /// Stops a subscription (every partition, for a partitioned projector) at a
    /// checkpoint; [`Subscriptions::resume`] starts it again.
    pub async fn pause(&self, name: &str) -> Result<(), SubscriptionError> {
        let members: Vec<String> = self.members(name).into_iter().filter(|m| self.lock().contains_key(m)).collect();
        if members.is_empty() {
            return Err(SubscriptionError::Unknown(name.into()));
        }
        for member in members {
            let halted = self.halt(&member).await?;
            halted.tracker.set(crate::subscription::SubscriptionState::Paused);
            self.paused.lock().unwrap_or_else(|p| p.into_inner()).insert(member, halted);
        }
        Ok(())
    }

    /// Starts a paused subscription (every partition, for a partitioned projector)
    /// again, or restarts one that stopped on an error (after its cause was fixed),
    /// from its checkpoint.
    pub async fn resume(&self, name: &str) -> Result<(), SubscriptionError> {
        let members = self.members(name);
        if members.is_empty() {
            return Err(SubscriptionError::Unknown(name.into()));
        }
        for member in members {
            let paused = self.paused.lock().unwrap_or_else(|p| p.into_inner()).remove(&member);
            let Halted { group, consumer, options, .. } = match paused {
                Some(paused) => paused,
                None => self.halt(&member).await?,
            };
            let restarted = self.spawn(member.clone(), group, consumer, options);
            self.lock().insert(member, restarted);
        }
        Ok(())
    }

    /// Stops a running subscription's task and takes it out of the running set.
    async fn halt(&self, name: &str) -> Result<Halted, SubscriptionError> {
        let entry = self.lock().remove(name).ok_or_else(|| SubscriptionError::Unknown(name.into()))?;
        self.app.consistency().unregister(name);
        let _ = entry.stop.send(true);
        let _ = entry.task.await;
        Ok(Halted { group: entry.group, consumer: entry.consumer, options: entry.options, tracker: entry.tracker })
    }

    /// Names of the projectors (what `rebuild --all` rebuilds); a partitioned one
    /// by its own name, once.
    pub fn projectors(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .values()
            .filter(|r| r.tracker.kind == ConsumerKind::Projector)
            .map(|r| r.group.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Dead letters of one subscription, or all.
    pub async fn dead_letters(&self, name: Option<&str>) -> Result<Vec<DeadLetter>, SubscriptionError> {
        self.bookkeeping.dead_letters(name).await.map_err(|e| SubscriptionError::Failed(Box::new(e)))
    }

    /// Replays a dead letter of a running subscription by the rules of its kind
    /// ([`dead_letters`]): a projector is rebuilt (this returns
    /// once it runs again, not once it has caught up); a process manager's event is
    /// handled while its subscription is stopped, and takes effect once; an event
    /// handler's is handed to it again. The letter is gone once this succeeds; on
    /// error it stays, unless a rebuild superseded it.
    pub async fn replay_dead_letter(&self, name: &str, event_id: Uuid) -> Result<(), SubscriptionError> {
        let letter = self
            .dead_letters(Some(name))
            .await?
            .into_iter()
            .find(|l| l.event.event_id == event_id)
            .ok_or_else(|| SubscriptionError::NoDeadLetter(name.into(), event_id))?;
        let (kind, consumer) = self
            .lock()
            .get(name)
            .map(|r| (r.tracker.kind, r.consumer.clone()))
            .ok_or_else(|| SubscriptionError::Unknown(name.into()))?;
        match kind {
            ConsumerKind::Projector => self.rebuild(name).await,
            ConsumerKind::ProcessManager => self.replay_alone(name, &letter).await,
            ConsumerKind::EventHandler => dead_letters::replay(&letter, &*consumer, &*self.bookkeeping).await,
        }
    }

    /// Replays `letter` while its subscription is stopped and this process holds
    /// its lease, so no live event of the same instance interleaves; then restarts it.
    async fn replay_alone(&self, name: &str, letter: &DeadLetter) -> Result<(), SubscriptionError> {
        let Halted { group, consumer, options, .. } = self.halt(name).await?;
        let replayed = match dead_letters::retake_lease(&*self.bookkeeping, name).await {
            // Held until the replay is done, released before the restart takes it.
            Ok(_lease) => dead_letters::replay(letter, &*consumer, &*self.bookkeeping).await,
            Err(error) => Err(error),
        };
        let restarted = self.spawn(name.to_owned(), group, consumer, options);
        self.lock().insert(name.to_owned(), restarted);
        replayed
    }

    /// Removes a dead letter without replaying it.
    pub async fn discard_dead_letter(&self, name: &str, event_id: Uuid) -> Result<(), SubscriptionError> {
        match self.bookkeeping.remove_dead_letter(name, event_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SubscriptionError::NoDeadLetter(name.into(), event_id)),
            Err(e) => Err(SubscriptionError::Failed(Box::new(e))),
        }
    }

    /// Stops every subscription at a checkpoint (between batches) and waits for them.
    pub async fn shutdown(&self) {
        let entries: Vec<Running> = std::mem::take(&mut *self.lock()).into_values().collect();
        for entry in &entries {
            self.app.consistency().unregister(&entry.tracker.name);
            let _ = entry.stop.send(true);
        }
        for entry in entries {
            let _ = entry.task.await;
        }
    }

    /// The store head once everything acknowledged so far is readable
    /// ([`EventStore::settled_head`]), for callers
    /// that want to wait for everything.
    pub async fn head(&self) -> Result<GlobalPosition, crate::event_store::StoreError> {
        self.app.store().settled_head().await
    }
}
