//! The aggregate runtime: live instances in memory, one command at a time per
//! instance, optimistic concurrency against the store.
//!
//! Promises:
//! * An instance's state changes only after the store acknowledged the events, so a
//!   failed append never leaves the in-memory state ahead of the log.
//! * Commands to one instance are serialized by that instance's async mutex;
//!   different instances run in parallel (the cache is sharded to keep lookups apart).
//! * When the append finds the stream moved on (another process, or an evicted copy
//!   of this instance), the runtime reads the missing events and decides the command
//!   again, up to `max_attempts` times.
//! * A command is processed once (`docs/design.md`, promise 9): a command id of the
//!   caller's choosing that the log already records ([`crate::command_outcome`]) is
//!   answered with its first outcome — the version its events reached, or its typed
//!   domain failure — and appends nothing. The instance's memory of recent command
//!   ids only spares the store that question; it never decides it, since an instance
//!   loaded from a snapshot, or past many later commands, remembers nothing.
//! * A store that cannot tell whether an append committed makes the dispatch fail
//!   with [`DispatchError::OutcomeUnknown`], never with a plain error.

use crate::aggregate::{Aggregate, Execute};
use crate::command::short_type_name;
use crate::command_outcome::{self, Recorded};
use crate::dispatch::{DispatchError, Returning};
use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::event::encode_event;
use crate::event_store::{AppendOutcome, EventStore, Snapshot, StoreError, StreamAppend};
use crate::router::AggregateConfig;
use crate::stream::{Direction, ExpectedVersion, GlobalPosition, StreamVersion};
use lru::LruCache;
use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use tracing::Instrument;
use uuid::Uuid;

const SHARDS: usize = 16;
/// Events read per round trip when loading an instance.
const LOAD_BATCH: usize = 1_000;
/// Command ids remembered per instance, to answer a quick repeat without asking the
/// store; older repeats are found in the log (`command_outcome::find`).
const RECENT_COMMANDS: usize = 32;

/// An instance slot. `None` until loaded, and again after a failure that may have
/// left the state out of step with the log. The tokio mutex is held across the
/// store's awaits on purpose: it is what serializes commands to one instance.
type Slot<A> = Arc<tokio::sync::Mutex<Option<Instance<A>>>>;

/// Live instances by stream id, least recently used first out.
type Shard<A> = LruCache<Arc<str>, Slot<A>>;

pub(crate) struct AggregateRuntime<A: Aggregate> {
    config: AggregateConfig<A>,
    /// Short critical sections only (lookup/insert); never held across an await.
    shards: Box<[Mutex<Shard<A>>]>,
}

struct Instance<A> {
    state: A,
    /// The version `state` includes.
    version: StreamVersion,
    /// The version of the last snapshot saved or loaded.
    snapshot_version: StreamVersion,
    /// Commands this instance's events came from, newest last.
    recent: VecDeque<Handled>,
}

impl<A: Aggregate> Instance<A> {
    fn empty() -> Self {
        Instance {
            state: A::default(),
            version: StreamVersion::NONE,
            snapshot_version: StreamVersion::NONE,
            recent: VecDeque::new(),
        }
    }

    fn remember(&mut self, command_id: Uuid, fingerprint: Option<Uuid>, version: StreamVersion) {
        match self.recent.back_mut() {
            Some(last) if last.command_id == command_id => last.version = version,
            _ => {
                if self.recent.len() == RECENT_COMMANDS {
                    self.recent.pop_front();
                }
                self.recent.push_back(Handled { command_id, fingerprint, version });
            }
        }
    }

    fn handled(&self, command_id: Uuid) -> Option<&Handled> {
        self.recent.iter().rev().find(|handled| handled.command_id == command_id)
    }
}

/// A command whose events the instance holds.
struct Handled {
    command_id: Uuid,
    /// Its request's fingerprint, as its events record it.
    fingerprint: Option<Uuid>,
    /// The stream version after its events.
    version: StreamVersion,
}

/// What deciding a refused command came to.
enum Decided<A: Aggregate> {
    /// The answer.
    Done(Result<Executed<A>, DispatchError<A::Error>>),
    /// The stream moved since the decision: catch up and decide again.
    StreamMoved,
}

/// An append that failed. A backend error or a store that stopped while the append
/// was under way leaves its outcome unknown (`EventStore::append`); an unavailable
/// store was never asked, so the append is known not to have happened.
fn append_failed<E: std::error::Error + 'static>(error: StoreError, context: &CommandContext) -> DispatchError<E> {
    match error {
        StoreError::Backend(_) | StoreError::Closed => {
            DispatchError::OutcomeUnknown { command_id: context.command_id, source: error }
        }
        other => DispatchError::Store(other),
    }
}

/// Everything about one dispatch that the runtime needs besides the command.
pub(crate) struct CommandContext {
    pub(crate) command_id: Uuid,
    /// The caller chose the command id (an Idempotency-Key, a process manager): event
    /// ids derive from it and its outcome is found in the log on a repeat. A random
    /// id cannot be repeated, so it needs neither.
    pub(crate) deterministic_ids: bool,
    pub(crate) metadata: Metadata,
    pub(crate) returning: Returning,
    /// Report the appended event types (strongly consistent dispatches need them).
    pub(crate) event_types: bool,
    /// Decide only if the aggregate is at this version.
    pub(crate) expected_version: Option<StreamVersion>,
}

pub(crate) struct Executed<A> {
    pub(crate) version: StreamVersion,
    pub(crate) position: Option<GlobalPosition>,
    /// Position of the first appended event.
    pub(crate) first_position: Option<GlobalPosition>,
    /// The appended events' type names, when `CommandContext::event_types` asked.
    pub(crate) event_types: Vec<String>,
    pub(crate) duplicate: bool,
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) state: Option<A>,
}

impl<A: Aggregate> AggregateRuntime<A> {
    pub(crate) fn new(config: AggregateConfig<A>) -> Self {
        let per_shard = NonZeroUsize::new(config.cache_capacity.div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
        let shards = (0..SHARDS).map(|_| Mutex::new(LruCache::new(per_shard))).collect();
        AggregateRuntime { config, shards }
    }

    pub(crate) fn stream_id(&self, identity: &str) -> String {
        let prefix = self.config.identity_prefix.as_deref().unwrap_or_default();
        let mut stream = String::with_capacity(prefix.len() + identity.len());
        stream.push_str(prefix);
        stream.push_str(identity);
        stream
    }

    fn shard(&self, stream_id: &str) -> std::sync::MutexGuard<'_, Shard<A>> {
        let mut hasher = DefaultHasher::new();
        stream_id.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % SHARDS];
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot(&self, stream_id: &str) -> Slot<A> {
        let mut cache = self.shard(stream_id);
        if let Some(slot) = cache.get(stream_id) {
            return slot.clone();
        }
        let slot: Slot<A> = Arc::default();
        // An evicted slot still in use finishes its command; the next command loads a
        // fresh copy, and optimistic concurrency keeps the two honest.
        cache.push(Arc::from(stream_id), slot.clone());
        slot
    }

    /// Whether `stream_id` may be one of this aggregate's streams: it starts with the
    /// aggregate's prefix (any stream may, for an aggregate without one).
    pub(crate) fn owns(&self, stream_id: &str) -> bool {
        self.config.identity_prefix.as_deref().is_none_or(|prefix| stream_id.starts_with(prefix))
    }

    /// Folds `recorded`, read from the store, into the cached instance of its stream
    /// if that instance is exactly one version behind it (see [`crate::refresh`]). An
    /// instance busy with a command is left alone (the command catches up itself if
    /// its append finds the stream moved); one that missed events is dropped, to be
    /// loaded afresh by its next command; nothing is loaded or cached here.
    pub(crate) fn refresh(&self, recorded: &RecordedEvent) {
        let Some(slot) = self.shard(&recorded.stream_id).peek(recorded.stream_id.as_str()).cloned() else { return };
        let Ok(mut guard) = slot.try_lock() else { return };
        let Some(instance) = guard.as_mut() else { return };
        if recorded.stream_version <= instance.version {
            return;
        }
        if recorded.stream_version != instance.version.next() {
            *guard = None;
            return;
        }
        match recorded.decode::<A::Event>() {
            Ok(event) => {
                instance.state.apply(&event);
                instance.version = recorded.stream_version;
                if let Some(command_id) = recorded.metadata.command() {
                    instance.remember(command_id, recorded.metadata.fingerprint, recorded.stream_version);
                }
            }
            Err(_) => *guard = None,
        }
    }

    /// Runs one command against the instance behind `stream_id`.
    pub(crate) async fn execute<S: EventStore, C>(
        &self,
        store: &S,
        stream_id: &str,
        command: &C,
        context: &CommandContext,
    ) -> Result<Executed<A>, DispatchError<A::Error>>
    where
        A: Execute<C>,
    {
        let slot = self.slot(stream_id);
        let mut guard = slot.lock().await;
        let result = self.execute_locked(store, stream_id, command, context, &mut guard).await;
        if matches!(
            result,
            Err(DispatchError::Store(_) | DispatchError::Event(_) | DispatchError::OutcomeUnknown { .. })
        ) {
            // The append may or may not have happened: reload from the log next time.
            *guard = None;
        }
        result
    }

    async fn execute_locked<S: EventStore, C>(
        &self,
        store: &S,
        stream_id: &str,
        command: &C,
        context: &CommandContext,
        loaded: &mut Option<Instance<A>>,
    ) -> Result<Executed<A>, DispatchError<A::Error>>
    where
        A: Execute<C>,
    {
        let instance = match loaded {
            Some(instance) => instance,
            None => loaded.insert(self.load(store, stream_id).await?),
        };
        for attempt in 0..self.config.max_attempts {
            if let Some(handled) = instance.handled(context.command_id) {
                if !command_outcome::same_request(context.metadata.fingerprint, handled.fingerprint) {
                    return Err(DispatchError::CommandIdReused { command_id: context.command_id });
                }
                return Ok(self.duplicate(instance, handled.version, context));
            }
            if let Some(expected) = context.expected_version
                && expected != instance.version
            {
                return Err(DispatchError::WrongVersion { expected, actual: instance.version });
            }
            // The decision alone: pure and synchronous, so its span is entered, not
            // carried by a future (`telemetry`).
            let span = tracing::debug_span!(target: "rewind", "execute", stream_id, attempt);
            let decision = span.in_scope(|| instance.state.execute(command));
            let decided = match decision {
                Ok(events) => self.accepted(store, stream_id, events, context, instance).await?,
                Err(refusal) => {
                    self.refused(store, stream_id, short_type_name::<C>(), refusal, context, instance).await?
                }
            };
            match decided {
                Decided::Done(result) => return result,
                Decided::StreamMoved => {
                    backoff(attempt).await;
                    self.catch_up(store, stream_id, instance).await?;
                }
            }
        }
        Err(DispatchError::Conflict { stream: stream_id.to_owned(), attempts: self.config.max_attempts })
    }

    /// The aggregate accepted the command: append its events if the stream is still
    /// where the decision saw it, and only then fold them into the state.
    async fn accepted<S: EventStore>(
        &self,
        store: &S,
        stream_id: &str,
        events: Vec<A::Event>,
        context: &CommandContext,
        instance: &mut Instance<A>,
    ) -> Result<Decided<A>, DispatchError<A::Error>> {
        if events.is_empty() {
            return match self.first_outcome(store, context, instance).await? {
                Some(found) => Ok(Decided::Done(found)),
                None => Ok(Decided::Done(Ok(self.executed(instance, None, Vec::new(), context)))),
            };
        }
        let new_events = encode(&events, context)?;
        let event_types = match context.event_types {
            true => new_events.iter().map(|e| e.event_type.clone()).collect(),
            false => Vec::new(),
        };
        let span = append_span(stream_id, new_events.len());
        let appending = store.append(stream_id, ExpectedVersion::Exact(instance.version), new_events).instrument(span);
        let appended = match appending.await {
            Ok(appended) if appended.outcome == AppendOutcome::Appended => appended,
            // Its first event id is stored already: this command was processed
            // before, longer ago than the instance remembers.
            Ok(_) | Err(StoreError::DuplicateEvent { .. }) => return self.recorded(store, context, instance).await,
            Err(StoreError::Conflict { .. }) => return Ok(Decided::StreamMoved),
            Err(error) => return Err(append_failed(error, context)),
        };
        let from = instance.version.next();
        for event in &events {
            instance.state.apply(event);
        }
        debug_assert_eq!(appended.stream_version.0, instance.version.0 + events.len() as u64);
        instance.version = appended.stream_version;
        instance.remember(context.command_id, context.metadata.fingerprint, appended.stream_version);
        self.maybe_snapshot(store, stream_id, instance).await;
        let recorded = match context.returning {
            Returning::Events => store.read_stream(stream_id, from, Direction::Forward, events.len()).await?,
            _ => Vec::new(),
        };
        let mut executed = self.executed(instance, Some(appended.last_position), recorded, context);
        executed.first_position = Some(appended.first_position);
        executed.event_types = event_types;
        Ok(Decided::Done(Ok(executed)))
    }

    /// The aggregate refused the command. A command with a caller-chosen id may have
    /// been processed before (then its first outcome stands); otherwise its failure is
    /// recorded, for the state it was decided on, so a repeat gets the same answer.
    async fn refused<S: EventStore>(
        &self,
        store: &S,
        stream_id: &str,
        command: &str,
        refusal: A::Error,
        context: &CommandContext,
        instance: &mut Instance<A>,
    ) -> Result<Decided<A>, DispatchError<A::Error>> {
        if !context.deterministic_ids {
            return Ok(Decided::Done(Err(DispatchError::Domain(refusal))));
        }
        if let Some(found) = self.first_outcome(store, context, instance).await? {
            return Ok(Decided::Done(found));
        }
        let record = command_outcome::failure_event(context.command_id, command, &refusal, &context.metadata)
            .map_err(|e| StoreError::Invalid(format!("the refusal of {command} cannot be recorded: {e}")))?;
        let appends = vec![
            StreamAppend {
                stream_id: stream_id.to_owned(),
                expected: ExpectedVersion::Exact(instance.version),
                events: Vec::new(),
            },
            StreamAppend {
                stream_id: command_outcome::failure_stream(stream_id),
                expected: ExpectedVersion::Any,
                events: vec![record],
            },
        ];
        match store.append_batch(appends).instrument(append_span(stream_id, 1)).await {
            // Not remembered in the window (which holds successes): a repeat reads the
            // typed refusal back from the log.
            Ok(_) => Ok(Decided::Done(Err(DispatchError::Domain(refusal)))),
            Err(StoreError::Conflict { .. }) => Ok(Decided::StreamMoved),
            // Recorded meanwhile by another process: its outcome stands.
            Err(StoreError::DuplicateEvent { .. }) => self.recorded(store, context, instance).await,
            Err(error) => Err(append_failed(error, context)),
        }
    }

    /// The store says this command's first event id is stored: its outcome, which
    /// must then be found.
    async fn recorded<S: EventStore>(
        &self,
        store: &S,
        context: &CommandContext,
        instance: &mut Instance<A>,
    ) -> Result<Decided<A>, DispatchError<A::Error>> {
        match self.first_outcome(store, context, instance).await? {
            Some(found) => Ok(Decided::Done(found)),
            None => Err(StoreError::Corrupt(format!(
                "command {} is reported stored, but no outcome of it is found",
                context.command_id
            ))
            .into()),
        }
    }

    /// The outcome the log records for this command, as the answer to a repeat.
    async fn first_outcome<S: EventStore>(
        &self,
        store: &S,
        context: &CommandContext,
        instance: &mut Instance<A>,
    ) -> Result<Option<Result<Executed<A>, DispatchError<A::Error>>>, DispatchError<A::Error>> {
        if !context.deterministic_ids {
            return Ok(None);
        }
        let Some(found) = command_outcome::find::<S, A::Error>(store, context.command_id).await? else {
            return Ok(None);
        };
        if !command_outcome::same_request(context.metadata.fingerprint, found.fingerprint) {
            return Ok(Some(Err(DispatchError::CommandIdReused { command_id: context.command_id })));
        }
        Ok(Some(match found.recorded {
            Recorded::Succeeded(version) => {
                instance.remember(context.command_id, found.fingerprint, version);
                Ok(self.duplicate(instance, version, context))
            }
            Recorded::Failed(error) => Err(DispatchError::Domain(error)),
        }))
    }

    fn executed(
        &self,
        instance: &Instance<A>,
        position: Option<GlobalPosition>,
        events: Vec<RecordedEvent>,
        context: &CommandContext,
    ) -> Executed<A> {
        let state = (context.returning == Returning::State).then(|| instance.state.clone());
        Executed {
            version: instance.version,
            position,
            first_position: None,
            event_types: Vec::new(),
            duplicate: false,
            events,
            state,
        }
    }

    fn duplicate(&self, instance: &Instance<A>, version: StreamVersion, context: &CommandContext) -> Executed<A> {
        Executed { version, duplicate: true, ..self.executed(instance, None, Vec::new(), context) }
    }

    /// Rebuilds an instance: the latest usable snapshot, then the events after it.
    async fn load<S: EventStore>(&self, store: &S, stream_id: &str) -> Result<Instance<A>, DispatchError<A::Error>> {
        let mut instance = Instance::empty();
        if let Some(snapshots) = &self.config.snapshots
            && let Some(snapshot) = store.load_snapshot(stream_id).await?
            && snapshot.tag == snapshots.tag
        {
            match (snapshots.decode)(&snapshot.data) {
                Ok(state) => {
                    instance.state = state;
                    instance.version = snapshot.version;
                    instance.snapshot_version = snapshot.version;
                }
                Err(error) => tracing::warn!(stream_id, %error, "ignoring undecodable snapshot"),
            }
        }
        self.catch_up(store, stream_id, &mut instance).await?;
        Ok(instance)
    }

    /// Applies the events the instance has not seen yet.
    async fn catch_up<S: EventStore>(
        &self,
        store: &S,
        stream_id: &str,
        instance: &mut Instance<A>,
    ) -> Result<(), DispatchError<A::Error>> {
        loop {
            let batch = store.read_stream(stream_id, instance.version.next(), Direction::Forward, LOAD_BATCH).await?;
            for recorded in &batch {
                debug_assert_eq!(recorded.stream_version, instance.version.next(), "stream versions are dense");
                let event: A::Event = recorded.decode()?;
                instance.state.apply(&event);
                instance.version = recorded.stream_version;
                if let Some(command_id) = recorded.metadata.command() {
                    instance.remember(command_id, recorded.metadata.fingerprint, recorded.stream_version);
                }
            }
            if batch.len() < LOAD_BATCH {
                return Ok(());
            }
        }
    }

    /// Saves a snapshot when enough events passed since the last one. The command
    /// has already committed, so a failure here is logged, not returned.
    async fn maybe_snapshot<S: EventStore>(&self, store: &S, stream_id: &str, instance: &mut Instance<A>) {
        let Some(snapshots) = &self.config.snapshots else { return };
        if instance.version.0 - instance.snapshot_version.0 < snapshots.every {
            return;
        }
        let data = match (snapshots.encode)(&instance.state) {
            Ok(data) => data,
            Err(error) => return tracing::warn!(stream_id, %error, "snapshot not encodable"),
        };
        let snapshot = Snapshot {
            stream_id: stream_id.to_owned(),
            version: instance.version,
            tag: snapshots.tag.clone(),
            data,
            created_at: chrono::Utc::now(),
        };
        match store.save_snapshot(snapshot).await {
            Ok(()) => instance.snapshot_version = instance.version,
            Err(error) => tracing::warn!(stream_id, %error, "snapshot not saved"),
        }
    }

    /// The current state of one instance, loading it if needed.
    pub(crate) async fn state<S: EventStore>(
        &self,
        store: &S,
        stream_id: &str,
    ) -> Result<(A, StreamVersion), DispatchError<A::Error>> {
        let slot = self.slot(stream_id);
        let mut guard = slot.lock().await;
        let instance = match &mut *guard {
            Some(instance) => instance,
            None => guard.insert(self.load(store, stream_id).await?),
        };
        Ok((instance.state.clone(), instance.version))
    }
}

fn encode<E: crate::event::Event>(
    events: &[E],
    context: &CommandContext,
) -> Result<Vec<NewEvent>, crate::event::EventError> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let encoded = encode_event(event)?;
            Ok(NewEvent {
                event_id: event_id(context, index),
                event_type: encoded.event_type,
                data: encoded.data,
                metadata: context.metadata.clone(),
            })
        })
        .collect()
}

fn event_id(context: &CommandContext, index: usize) -> Uuid {
    if context.deterministic_ids { command_outcome::event_id(context.command_id, index) } else { Uuid::now_v7() }
}

/// Retries of a contested aggregate back off with jitter, so writers in other
/// processes that keep winning the race cannot starve this one.
async fn backoff(attempt: u32) {
    if attempt == 0 {
        return tokio::task::yield_now().await;
    }
    let ceiling_us = 100u64 << attempt.min(10);
    tokio::time::sleep(std::time::Duration::from_micros(rand::random_range(0..ceiling_us))).await;
}

/// The `append` span of a decision (`telemetry`); the store's writer records the
/// size of the group it committed in.
fn append_span(stream_id: &str, events: usize) -> tracing::Span {
    tracing::debug_span!(
        target: "rewind",
        "append",
        stream_id,
        events,
        group_commit = tracing::field::Empty,
        group_events = tracing::field::Empty,
    )
}
