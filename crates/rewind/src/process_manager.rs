//! Process managers: the opposite of an aggregate. They receive events and emit
//! commands, keeping a small persisted state per instance (a money transfer: withdraw
//! from one account, then deposit into the other).
//!
//! Promises:
//! * Each instance sees its events in global order; different instances of one
//!   manager are processed concurrently within a batch.
//! * Instance states and the manager's checkpoint are committed together, after the
//!   commands of those events were acknowledged.
//! * Idempotent under redelivery: every command gets an id derived from the manager,
//!   the instance and the causing event, so a redelivered event re-sends the same
//!   command ids and the aggregate runtime appends nothing new.
//! * A command that failed for a reason other than the command itself (the store
//!   away, a timeout, an unknown outcome: [`CommandFailure::transient`]) fails its
//!   event as transient, so the subscription retries it for ever instead of
//!   stopping or skipping it; the redelivery makes that safe.

use crate::application::Application;
use crate::command::{Command, short_type_name};
use crate::dispatch::{DispatchError, DispatchOptions};
use crate::envelope::RecordedEvent;
use crate::event::Event;
use crate::shared_store::BoxFuture;
use crate::stream::GlobalPosition;
use crate::subscription::{BatchFailure, Consumer, ConsumerError, ConsumerKind};
use crate::subscription_store::{InstanceChange, SubscriptionStore};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;
use uuid::Uuid;

/// Namespace of the deterministic command ids process managers send.
const COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x6f2d_1c1e_9b4a_4c53_8a51_7265_7769_6e64);

/// How an event relates to the manager's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// Start this instance (or continue it, if it exists).
    Start(String),
    /// Continue this instance; ignored if it does not exist.
    Continue(String),
    /// Continue this instance; an error if it does not exist.
    ContinueExisting(String),
    /// Handle the event, then delete the instance's state; ignored if it does not exist.
    Stop(String),
    /// Not for this manager.
    Ignore,
}

/// What to do when a command the manager sent fails.
pub enum OnError {
    /// Fail the event. A [transient](CommandFailure::transient) failure is then
    /// retried for ever (same command ids, so nothing is sent twice); any other goes
    /// to the subscription's error policy, which retries, skips or stops.
    Fail,
    /// Ignore this command's failure and go on.
    Continue,
    /// Send these commands instead (a refund, say) and go on.
    Compensate(Vec<ProcessCommand>),
}

/// Sends one captured command through an application.
type SendCommand =
    Box<dyn FnOnce(Application, DispatchOptions) -> BoxFuture<'static, Result<(), CommandFailure>> + Send + Sync>;

/// A command a process manager wants sent, whatever its type.
pub struct ProcessCommand {
    name: &'static str,
    send: SendCommand,
}

impl ProcessCommand {
    /// Wraps a command.
    pub fn new<C: Command>(command: C) -> ProcessCommand {
        ProcessCommand {
            name: short_type_name::<C>(),
            send: Box::new(move |app, options| {
                Box::pin(async move {
                    app.dispatch_with(command, options).await.map(drop).map_err(CommandFailure::from_dispatch)
                })
            }),
        }
    }

    /// The command's type name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for ProcessCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessCommand({})", self.name)
    }
}

/// A command a process manager sent that failed.
#[derive(Debug, thiserror::Error)]
#[error("{command} failed: {message}")]
pub struct CommandFailure {
    /// The command's type name.
    pub command: &'static str,
    /// What happened.
    pub message: String,
    /// The aggregate's domain error, if that was the cause.
    pub domain: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Whether sending the command again may succeed ([`DispatchError::is_transient`]:
    /// the store was away, the dispatch timed out or its outcome is unknown). An event
    /// failed on such a command is retried for ever, whatever the subscription's
    /// error policy; see [`crate::fault`].
    pub transient: bool,
}

impl CommandFailure {
    fn from_dispatch<E: std::error::Error + Send + Sync + 'static>(error: DispatchError<E>) -> CommandFailure {
        let message = crate::subscription::describe(&error);
        let transient = error.is_transient();
        let domain = match error {
            DispatchError::Domain(domain) => Some(Box::new(domain) as Box<dyn std::error::Error + Send + Sync>),
            _ => None,
        };
        CommandFailure { command: "", message, domain, transient }
    }

    /// The domain error, if it is an `E`.
    pub fn domain_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.domain.as_deref()?.downcast_ref()
    }
}

/// A process manager. Pure like an aggregate: no I/O in any method.
///
/// Events of other types than [`ProcessManager::Event`]'s are not for this manager and
/// are passed over (narrow the subscription with a filter to skip reading them); an
/// event of one of its types that does not decode is a failure, handled by the
/// subscription's error policy, never passed over.
///
/// A manager that credits every newly opened account with a welcome bonus, run by
/// [`Subscriptions`](crate::Subscriptions) and sending its command through the
/// application:
///
/// ```
/// use rewind::{Application, Interest, MemoryStore, MemorySubscriptionStore, ProcessCommand, ProcessManager};
/// use rewind::{RecordedEvent, Router, SubscriptionOptions, Subscriptions};
/// use std::sync::Arc;
/// # use rewind::{Aggregate, Execute, Never};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)]
/// # enum AccountEvent { Opened { account: String }, Credited { amount: u64 } }
/// # #[derive(Debug, Default, Clone)] struct Account { balance: u64 }
/// # impl Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = AccountEvent; type Error = Never;
/// #     fn apply(&mut self, event: &AccountEvent) {
/// #         if let AccountEvent::Credited { amount } = event { self.balance += amount }
/// #     }
/// # }
/// # #[derive(Debug, rewind::Command)] #[command(aggregate = Account, id = account)]
/// # struct OpenAccount { account: String }
/// # #[derive(Debug, rewind::Command)] #[command(aggregate = Account, id = account)]
/// # struct Credit { account: String, amount: u64 }
/// # impl Execute<OpenAccount> for Account {
/// #     fn execute(&self, c: &OpenAccount) -> Result<Vec<AccountEvent>, Never> {
/// #         Ok(vec![AccountEvent::Opened { account: c.account.clone() }])
/// #     }
/// # }
/// # impl Execute<Credit> for Account {
/// #     fn execute(&self, c: &Credit) -> Result<Vec<AccountEvent>, Never> {
/// #         Ok(vec![AccountEvent::Credited { amount: c.amount }])
/// #     }
/// # }
///
/// struct WelcomeBonus;
///
/// impl ProcessManager for WelcomeBonus {
///     type Event = AccountEvent;
///     /// Whether the bonus was paid.
///     type State = bool;
///
///     fn interested(&self, event: &AccountEvent, _: &RecordedEvent) -> Interest {
///         match event {
///             AccountEvent::Opened { account } => Interest::Start(account.clone()),
///             AccountEvent::Credited { .. } => Interest::Ignore,
///         }
///     }
///     fn handle(&self, paid: &bool, event: &AccountEvent, _: &RecordedEvent) -> Vec<ProcessCommand> {
///         match event {
///             AccountEvent::Opened { account } if !paid => {
///                 vec![ProcessCommand::new(Credit { account: account.clone(), amount: 10 })]
///             }
///             _ => vec![],
///         }
///     }
///     fn apply(&self, paid: &mut bool, _: &AccountEvent) {
///         *paid = true;
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let router = Router::new().commands::<(OpenAccount, Credit)>();
/// let app = Application::builder(MemoryStore::new()).router(router).build();
/// let subscriptions = Subscriptions::builder(&app, Arc::new(MemorySubscriptionStore::new()))
///     .process_manager("welcome_bonus", WelcomeBonus, SubscriptionOptions::new())
///     .start()
///     .unwrap();
///
/// let opened = app.dispatch(OpenAccount { account: "ada".into() }).await.unwrap();
/// subscriptions.wait_for("welcome_bonus", opened.position.unwrap()).await.unwrap();
/// // The manager's command was acknowledged before its checkpoint moved.
/// assert_eq!(app.aggregate_state::<Account>("ada").await.unwrap().0.balance, 10);
/// subscriptions.shutdown().await;
/// # });
/// ```
pub trait ProcessManager: Send + Sync + 'static {
    /// The events it understands.
    type Event: Event;
    /// Its per-instance state, persisted as JSON.
    type State: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Routes an event to an instance. `recorded` carries the stream id, event id and
    /// metadata.
    fn interested(&self, event: &Self::Event, recorded: &RecordedEvent) -> Interest;

    /// The commands to send for this event.
    fn handle(&self, state: &Self::State, event: &Self::Event, recorded: &RecordedEvent) -> Vec<ProcessCommand>;

    /// Evolves the instance's state with the event (after its commands succeeded).
    fn apply(&self, state: &mut Self::State, event: &Self::Event);

    /// Decides what a failed command means. Default: fail the event, which retries a
    /// transient failure for ever. Compensating or continuing after a transient
    /// failure is rarely right: its command may have taken effect (an unknown
    /// outcome), so check [`CommandFailure::transient`] first.
    fn on_error(&self, failure: &CommandFailure, state: &Self::State, event: &Self::Event) -> OnError {
        let _ = (failure, state, event);
        OnError::Fail
    }
}

/// Runs a [`ProcessManager`] as a subscription consumer.
pub(crate) struct ProcessManagerConsumer<P> {
    name: String,
    manager: P,
    app: Application,
    bookkeeping: Arc<dyn SubscriptionStore>,
    /// The checkpoint last written. Batches that touch no instance (most events, for
    /// most managers) skip the write until [`CHECKPOINT_EVERY`] events have passed:
    /// redelivering them after a crash does nothing.
    saved: AtomicU64,
}

/// The most events a manager's stored checkpoint may lag behind, when they touched
/// no instance.
const CHECKPOINT_EVERY: u64 = 1_000;

/// One event routed to an instance.
struct Routed<E> {
    index: usize,
    event: E,
    interest: Interest,
}

/// A batch's events grouped by instance, in order, up to the first event of the
/// manager's own types that does not decode (its index and error).
struct RoutedBatch<E> {
    groups: Vec<(String, Vec<Routed<E>>)>,
    unreadable: Option<(usize, ConsumerError)>,
}

/// What running one instance over its events produced.
struct InstanceRun<S> {
    id: String,
    /// (index, state after the event: `None` = stopped / not existing).
    outcomes: Vec<(usize, Option<S>)>,
    failure: Option<(usize, ConsumerError)>,
}

impl<P: ProcessManager> ProcessManagerConsumer<P> {
    pub(crate) fn new(name: String, manager: P, app: Application, bookkeeping: Arc<dyn SubscriptionStore>) -> Self {
        ProcessManagerConsumer { name, manager, app, bookkeeping, saved: AtomicU64::new(0) }
    }

    /// Groups the batch's events by instance, keeping their order, up to the first
    /// event of the manager's own types that does not decode: that one is a failure
    /// for the error policy (returned with its index), never passed over.
    fn route(&self, events: &[RecordedEvent]) -> RoutedBatch<P::Event> {
        let mut groups: Vec<(String, Vec<Routed<P::Event>>)> = Vec::new();
        for (index, recorded) in events.iter().enumerate() {
            let event = match recorded.decode::<P::Event>() {
                Ok(event) => event,
                Err(error) if crate::event::is_type_of::<P::Event>(&recorded.event_type, &recorded.data) => {
                    return RoutedBatch { groups, unreadable: Some((index, Box::new(error))) };
                }
                // Another aggregate's event: not for this manager.
                Err(_) => continue,
            };
            let interest = self.manager.interested(&event, recorded);
            let id = match &interest {
                Interest::Start(id) | Interest::Continue(id) | Interest::ContinueExisting(id) | Interest::Stop(id) => {
                    id.clone()
                }
                Interest::Ignore => continue,
            };
            let routed = Routed { index, event, interest };
            match groups.iter_mut().find(|(group, _)| *group == id) {
                Some((_, list)) => list.push(routed),
                None => groups.push((id, vec![routed])),
            }
        }
        RoutedBatch { groups, unreadable: None }
    }

    async fn run_instance(
        &self,
        id: String,
        routed: Vec<Routed<P::Event>>,
        events: &[RecordedEvent],
    ) -> InstanceRun<P::State> {
        let mut run = InstanceRun { id, outcomes: Vec::new(), failure: None };
        let mut state: Option<P::State> = match self.load(&run.id).await {
            Ok(state) => state,
            Err(error) => {
                run.failure = Some((routed[0].index, error));
                return run;
            }
        };
        for Routed { index, event, interest } in routed {
            match (&interest, &state) {
                (Interest::Start(_), None) => state = Some(P::State::default()),
                (Interest::Continue(_) | Interest::Stop(_), None) => continue,
                (Interest::ContinueExisting(id), None) => {
                    run.failure = Some((index, format!("process `{}` has no instance `{id}`", self.name).into()));
                    return run;
                }
                _ => {}
            }
            let current = state.get_or_insert_with(P::State::default);
            let span = crate::telemetry::handle(&self.name, &events[index]);
            if let Err(error) = self.send(&run.id, current, &event, &events[index]).instrument(span).await {
                run.failure = Some((index, error));
                return run;
            }
            self.manager.apply(current, &event);
            if matches!(interest, Interest::Stop(_)) {
                state = None;
            }
            run.outcomes.push((index, state.clone()));
        }
        run
    }

    /// Sends the event's commands; compensations replace failed ones when asked.
    async fn send(
        &self,
        instance: &str,
        state: &P::State,
        event: &P::Event,
        recorded: &RecordedEvent,
    ) -> Result<(), ConsumerError> {
        let commands = self.manager.handle(state, event, recorded);
        for (i, command) in commands.into_iter().enumerate() {
            let name = command.name;
            let Err(mut failure) = self.dispatch(command, instance, recorded, &i.to_string()).await else { continue };
            failure.command = name;
            match self.manager.on_error(&failure, state, event) {
                OnError::Fail => return Err(Box::new(failure)),
                OnError::Continue => {}
                OnError::Compensate(compensations) => {
                    for (j, compensation) in compensations.into_iter().enumerate() {
                        let name = compensation.name;
                        let step = format!("{i}/compensate/{j}");
                        if let Err(mut failure) = self.dispatch(compensation, instance, recorded, &step).await {
                            failure.command = name;
                            return Err(Box::new(failure));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn dispatch(
        &self,
        command: ProcessCommand,
        instance: &str,
        cause: &RecordedEvent,
        step: &str,
    ) -> Result<(), CommandFailure> {
        let key = format!("{}/{instance}/{}/{step}", self.name, cause.event_id);
        let options = DispatchOptions::new()
            .command_id(Uuid::new_v5(&COMMAND_NAMESPACE, key.as_bytes()))
            .causation_id(cause.event_id)
            .correlation_id(cause.metadata.correlation_id.unwrap_or(cause.event_id));
        (command.send)(self.app.clone(), options).await
    }

    async fn load(&self, instance: &str) -> Result<Option<P::State>, ConsumerError> {
        match self.bookkeeping.load_instance(&self.name, instance).await? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    async fn commit(
        &self,
        runs: &[InstanceRun<P::State>],
        done: usize,
        events: &[RecordedEvent],
    ) -> Result<(), ConsumerError> {
        let Some(last) = done.checked_sub(1).map(|i| events[i].position) else { return Ok(()) };
        let changes = changes(runs, done)?;
        if changes.is_empty() && last.0.saturating_sub(self.saved.load(Ordering::Relaxed)) < CHECKPOINT_EVERY {
            return Ok(());
        }
        self.bookkeeping.commit_instances(&self.name, changes, last).await?;
        self.saved.fetch_max(last.0, Ordering::Relaxed);
        Ok(())
    }
}

/// Each instance's last state after the first `done` events of a batch.
fn changes<S: Serialize>(runs: &[InstanceRun<S>], done: usize) -> Result<Vec<InstanceChange>, ConsumerError> {
    let mut changes = Vec::new();
    for run in runs {
        let Some((_, state)) = run.outcomes.iter().rev().find(|(index, _)| *index < done) else { continue };
        changes.push(match state {
            Some(state) => InstanceChange::Save(run.id.clone(), serde_json::to_string(state)?),
            None => InstanceChange::Delete(run.id.clone()),
        });
    }
    Ok(changes)
}

#[async_trait]
impl<P: ProcessManager> Consumer for ProcessManagerConsumer<P> {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::ProcessManager
    }

    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        let stored = self.bookkeeping.load_checkpoint(&self.name).await?;
        if let Some(position) = stored {
            self.saved.fetch_max(position.0, Ordering::Relaxed);
        }
        Ok(stored)
    }

    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        let events = &events[..];
        let RoutedBatch { groups, unreadable } = self.route(events);
        let runs = futures_util::future::join_all(
            groups.into_iter().map(|(id, routed)| self.run_instance(id, routed, events)),
        )
        .await;
        // Events before the first failure are done everywhere; later ones that other
        // instances already handled are redelivered and deduplicated by command id.
        // Routing stopped at an unreadable event, so every instance's failure comes
        // before it.
        let first = runs.iter().enumerate().filter_map(|(run, outcome)| Some((outcome.failure.as_ref()?.0, run))).min();
        let done =
            first.map(|(index, _)| index).or(unreadable.as_ref().map(|(index, _)| *index)).unwrap_or(events.len());
        self.commit(&runs, done, events).await.map_err(|error| BatchFailure { failed_at: 0, error })?;
        // The error itself, not its message: whether it is transient is in its type.
        match first.and_then(|(_, run)| runs.into_iter().nth(run)?.failure).or(unreadable) {
            Some((failed_at, error)) => Err(BatchFailure { failed_at, error }),
            None => Ok(()),
        }
    }

    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        Ok(self.bookkeeping.commit_instances(&self.name, Vec::new(), event.position).await?)
    }

    /// Handles a dead letter's event against its instance's current state, then
    /// commits that state with the letter's removal (see [`crate::dead_letters`]):
    /// [`SubscriptionError::NoDeadLetter`](crate::SubscriptionError::NoDeadLetter)
    /// and nothing written if the letter went meanwhile.
    async fn replay(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let events = std::slice::from_ref(event);
        let RoutedBatch { groups, unreadable } = self.route(events);
        if let Some((_, error)) = unreadable {
            return Err(error);
        }
        let mut runs = futures_util::future::join_all(
            groups.into_iter().map(|(id, routed)| self.run_instance(id, routed, events)),
        )
        .await;
        // One event: any failure is that event's, and nothing is committed.
        if let Some((_, error)) = runs.iter_mut().find_map(|run| run.failure.take()) {
            return Err(error);
        }
        let changes = changes(&runs, 1)?;
        if self.bookkeeping.commit_replayed(&self.name, changes, event.event_id).await? {
            Ok(())
        } else {
            Err(Box::new(crate::SubscriptionError::NoDeadLetter(self.name.clone(), event.event_id)))
        }
    }
}
