//! The router: which aggregate type handles each command type, and how an aggregate
//! instance's stream is named.
//!
//! The command → aggregate mapping is static ([`Command::Aggregate`]); the router
//! decides which command types this application accepts and configures each
//! aggregate type (identity prefix, cache size, retries, snapshots). Dispatching a
//! command type that was never registered is [`DispatchError::NoRoute`](crate::DispatchError::NoRoute).

use crate::aggregate::Aggregate;
use crate::aggregate_runtime::AggregateRuntime;
use crate::command::Command;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// Per-aggregate-type settings.
///
/// ```
/// # #[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] enum Ev { A }
/// # impl rewind::Event for Ev {}
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)] #[error("e")] struct E;
/// # impl rewind::Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = Ev; type Error = E;
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// let config = rewind::AggregateConfig::<Account>::new()
///     .identity_prefix("account-")
///     .cache_capacity(50_000)
///     .snapshot_every(100, 1);
/// ```
pub struct AggregateConfig<A> {
    pub(crate) identity_prefix: String,
    pub(crate) cache_capacity: usize,
    pub(crate) max_attempts: u32,
    pub(crate) snapshots: Option<SnapshotConfig<A>>,
}

/// How snapshots of one aggregate type are taken and read.
pub(crate) struct SnapshotConfig<A> {
    pub(crate) every: u64,
    pub(crate) tag: String,
    pub(crate) encode: fn(&A) -> serde_json::Result<String>,
    pub(crate) decode: fn(&str) -> serde_json::Result<A>,
}

impl<A: Aggregate> Default for AggregateConfig<A> {
    fn default() -> Self {
        AggregateConfig { identity_prefix: String::new(), cache_capacity: 100_000, max_attempts: 10, snapshots: None }
    }
}

impl<A: Aggregate> AggregateConfig<A> {
    /// No prefix, 100,000 cached instances, 10 attempts on conflict, no snapshots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepended to the command's identity to name the stream (`account-` + `ZC7`).
    pub fn identity_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.identity_prefix = prefix.into();
        self
    }

    /// How many live instances stay in memory (least recently used are evicted first;
    /// an evicted instance reloads transparently on its next command).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity.max(1);
        self
    }

    /// How many times a command is tried when other writers change the aggregate
    /// between load and append.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Saves a snapshot every `every` events. `version` names the state's shape: bump
    /// it when the state type changes, and older snapshots are ignored (as are ones
    /// that fail to decode) in favour of replaying the events.
    pub fn snapshot_every(mut self, every: u64, version: u32) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots = Some(SnapshotConfig {
            every: every.max(1),
            tag: format!("{}:v{version}", A::NAME),
            encode: |state| serde_json::to_string(state),
            decode: |data| serde_json::from_str(data),
        });
        self
    }
}

/// Maps command types to aggregate types.
///
/// ```
/// # use rewind::{Aggregate, Command, Execute};
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] enum Ev { A }
/// # impl rewind::Event for Ev {}
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)] #[error("e")] struct E;
/// # impl Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = Ev; type Error = E;
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// # #[derive(Debug)] struct OpenAccount;
/// # impl Execute<OpenAccount> for Account {
/// #     fn execute(&self, _: &OpenAccount) -> Result<Vec<Ev>, E> { Ok(vec![]) }
/// # }
/// # impl Command for OpenAccount { type Aggregate = Account; fn aggregate_id(&self) -> String { "1".into() } }
/// let router = rewind::Router::new()
///     .aggregate(rewind::AggregateConfig::<Account>::new().identity_prefix("account-"))
///     .command::<OpenAccount>();
/// ```
#[derive(Default)]
pub struct Router {
    /// `AggregateRuntime<A>` by `TypeId::of::<A>()`.
    aggregates: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// The aggregate `TypeId` by command `TypeId`.
    commands: HashMap<TypeId, TypeId>,
}

impl Router {
    /// An empty router: every dispatch fails with `NoRoute`.
    pub fn new() -> Router {
        Router::default()
    }

    /// Configures an aggregate type (replacing an earlier configuration of it).
    pub fn aggregate<A: Aggregate>(mut self, config: AggregateConfig<A>) -> Router {
        self.aggregates.insert(TypeId::of::<A>(), Arc::new(AggregateRuntime::new(config)));
        self
    }

    /// Accepts a command type; its aggregate is configured with defaults unless
    /// [`Router::aggregate`] configured it.
    pub fn command<C: Command>(mut self) -> Router {
        let aggregate = TypeId::of::<C::Aggregate>();
        self.aggregates
            .entry(aggregate)
            .or_insert_with(|| Arc::new(AggregateRuntime::<C::Aggregate>::new(AggregateConfig::new())));
        self.commands.insert(TypeId::of::<C>(), aggregate);
        self
    }

    /// Resolves each command type straight to its aggregate runtime, so a dispatch
    /// costs one lookup.
    pub(crate) fn into_routes(self) -> Routes {
        let by_command = self
            .commands
            .into_iter()
            .filter_map(|(command, aggregate)| Some((command, self.aggregates.get(&aggregate)?.clone())))
            .collect();
        Routes { by_command, by_aggregate: self.aggregates }
    }
}

/// The router, resolved for dispatch.
pub(crate) struct Routes {
    by_command: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    by_aggregate: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Routes {
    pub(crate) fn for_command<C: Command>(&self) -> Option<&AggregateRuntime<C::Aggregate>> {
        self.by_command.get(&TypeId::of::<C>())?.downcast_ref()
    }

    pub(crate) fn for_aggregate<A: Aggregate>(&self) -> Option<&AggregateRuntime<A>> {
        self.by_aggregate.get(&TypeId::of::<A>())?.downcast_ref()
    }
}
