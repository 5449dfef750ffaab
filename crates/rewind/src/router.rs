//! The router: which aggregate type handles each command type, and how an aggregate
//! instance's stream is named.
//!
//! The command → aggregate mapping is static ([`Command::Aggregate`]); the router
//! decides which command types this application accepts and configures each
//! aggregate type (identity prefix, cache size, retries, snapshots). Dispatching a
//! command type that was never registered is [`DispatchError::NoRoute`](crate::DispatchError::NoRoute).
//!
//! An aggregate's stream prefix may be stated by its configuration
//! ([`AggregateConfig::identity_prefix`]) or by its commands
//! ([`Command::STREAM_PREFIX`]); the router checks that they agree as it is built
//! and panics if they do not ([`Router::command`] says how), since a router is made
//! from code at start-up and a disagreement is a bug that would split one instance's
//! commands over two streams.

use crate::aggregate::Aggregate;
use crate::aggregate_runtime::AggregateRuntime;
use crate::command::{Command, short_type_name};
use crate::refresh::Refresh;
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
    /// `None` until stated; the router then takes the commands' `STREAM_PREFIX`, or
    /// none at all (see [`Router::command`]).
    pub(crate) identity_prefix: Option<String>,
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
        AggregateConfig { identity_prefix: None, cache_capacity: 100_000, max_attempts: 10, snapshots: None }
    }
}

impl<A: Aggregate> AggregateConfig<A> {
    /// No prefix, 100,000 cached instances, 10 attempts on conflict, no snapshots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepended to the command's identity to name the stream (`account-` + `ZC7`).
    /// Without it, the prefix is the commands' [`Command::STREAM_PREFIX`], or none.
    pub fn identity_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.identity_prefix = Some(prefix.into());
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
    /// Each aggregate type by `TypeId::of::<A>()`, started only in `into_routes`: until
    /// every command is in, its stream prefix is not settled.
    aggregates: HashMap<TypeId, Pending>,
    /// The aggregate `TypeId` by command `TypeId`.
    commands: HashMap<TypeId, TypeId>,
}

/// An `AggregateConfig<A>`, its `A` named by the `TypeId` it is kept under.
type Erased = Box<dyn Any + Send + Sync>;
/// An `AggregateRuntime<A>`, likewise.
type Shared = Arc<dyn Any + Send + Sync>;
/// A started `AggregateRuntime<A>`: for routing, and for [`crate::refresh`].
type Started = (Shared, Arc<dyn Refresh>);

/// One aggregate type's configuration while the router is being built.
struct Pending {
    /// An `AggregateConfig<A>`.
    config: Erased,
    /// The first [`Command::STREAM_PREFIX`] given for this aggregate; every other
    /// prefix stated for it has been checked equal (see `agree`).
    declared: Option<Declared>,
    /// Starts the `AggregateRuntime<A>` from `config` and `declared`.
    start: fn(Erased, Option<&'static str>) -> Started,
}

/// A stream prefix stated by a command.
struct Declared {
    prefix: &'static str,
    command: &'static str,
}

impl Pending {
    fn new<A: Aggregate>(config: AggregateConfig<A>) -> Pending {
        Pending { config: Box::new(config), declared: None, start: start::<A> }
    }

    fn configured_prefix<A: Aggregate>(&self) -> Option<&str> {
        self.config.downcast_ref::<AggregateConfig<A>>()?.identity_prefix.as_deref()
    }
}

/// The aggregate's runtime, with the commands' prefix when its configuration has none.
fn start<A: Aggregate>(config: Erased, declared: Option<&'static str>) -> Started {
    let mut config = *config.downcast::<AggregateConfig<A>>().expect("`Pending::new` boxes an `AggregateConfig<A>`");
    if config.identity_prefix.is_none() {
        config.identity_prefix = declared.map(str::to_owned);
    }
    let runtime = Arc::new(AggregateRuntime::new(config));
    (runtime.clone(), runtime)
}

/// The prefix rule, decided here only: the prefixes stated for one aggregate — by its
/// configuration, by the first command that declared one, by a command being added —
/// are all equal. Panics, naming both sources, when two differ.
#[track_caller]
fn agree(aggregate: &str, configured: Option<&str>, declared: Option<&Declared>, added: Option<&Declared>) {
    let by_config = configured.map(|prefix| (prefix, "its AggregateConfig::identity_prefix".to_owned()));
    let by_commands = [declared, added]
        .into_iter()
        .flatten()
        .map(|declared| (declared.prefix, format!("{}::STREAM_PREFIX", declared.command)));
    let mut stated = by_config.into_iter().chain(by_commands);
    let Some((first, first_source)) = stated.next() else { return };
    if let Some((other, source)) = stated.find(|(prefix, _)| *prefix != first) {
        panic!(
            "Router: aggregate `{aggregate}` is given the stream prefix {first:?} by {first_source} \
             and {other:?} by {source}; state it once, or make them equal"
        );
    }
}

impl Router {
    /// An empty router: every dispatch fails with `NoRoute`.
    pub fn new() -> Router {
        Router::default()
    }

    /// Configures an aggregate type (replacing an earlier configuration of it).
    ///
    /// # Panics
    ///
    /// When the configuration's [`identity_prefix`](AggregateConfig::identity_prefix)
    /// differs from the [`Command::STREAM_PREFIX`] of a command already added.
    #[track_caller]
    pub fn aggregate<A: Aggregate>(mut self, config: AggregateConfig<A>) -> Router {
        let pending =
            self.aggregates.entry(TypeId::of::<A>()).or_insert_with(|| Pending::new(AggregateConfig::<A>::new()));
        agree(A::NAME, config.identity_prefix.as_deref(), pending.declared.as_ref(), None);
        pending.config = Box::new(config);
        self
    }

    /// Accepts a command type; its aggregate is configured with defaults unless
    /// [`Router::aggregate`] configured it (before or after this call).
    ///
    /// The aggregate's stream prefix is its configuration's
    /// [`identity_prefix`](AggregateConfig::identity_prefix) when it sets one, else the
    /// [`Command::STREAM_PREFIX`] of its commands, else none.
    ///
    /// # Panics
    ///
    /// When `C::STREAM_PREFIX` is `Some` and differs from the prefix the aggregate's
    /// configuration or another of its commands states. The router is left unbuilt:
    /// it is made from code at start-up, so this is a bug to fix, not an input to
    /// recover from.
    #[track_caller]
    pub fn command<C: Command>(mut self) -> Router {
        let aggregate = TypeId::of::<C::Aggregate>();
        let pending =
            self.aggregates.entry(aggregate).or_insert_with(|| Pending::new(AggregateConfig::<C::Aggregate>::new()));
        if let Some(prefix) = C::STREAM_PREFIX {
            let added = Declared { prefix, command: short_type_name::<C>() };
            let configured = pending.configured_prefix::<C::Aggregate>();
            agree(<C::Aggregate as Aggregate>::NAME, configured, pending.declared.as_ref(), Some(&added));
            pending.declared.get_or_insert(added);
        }
        self.commands.insert(TypeId::of::<C>(), aggregate);
        self
    }

    /// Accepts every command type of a [`CommandSet`]: a tuple of up to 16 command
    /// types, each added as by [`Router::command`] (which says when it panics).
    ///
    /// ```
    /// use rewind::{Aggregate, AggregateConfig, Application, Command, Execute, MemoryStore, Router};
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, rewind::Event)]
    /// # enum LampEvent { SwitchedOn, SwitchedOff }
    /// # use rewind::Never;
    ///
    /// #[derive(Debug, Default, Clone)]
    /// struct Lamp { on: bool }
    /// impl Aggregate for Lamp {
    ///     const NAME: &'static str = "lamp";
    ///     type Event = LampEvent;
    ///     type Error = Never;
    ///     fn apply(&mut self, event: &LampEvent) { self.on = *event == LampEvent::SwitchedOn }
    /// }
    ///
    /// #[derive(Debug, Command)]
    /// #[command(aggregate = Lamp, id = lamp, prefix = "lamp-")]
    /// struct SwitchOn { lamp: u32 }
    ///
    /// #[derive(Debug, Command)]
    /// #[command(aggregate = Lamp, id = lamp, prefix = "lamp-")]
    /// struct SwitchOff { lamp: u32 }
    ///
    /// impl Execute<SwitchOn> for Lamp {
    ///     fn execute(&self, _: &SwitchOn) -> Result<Vec<LampEvent>, Never> { Ok(vec![LampEvent::SwitchedOn]) }
    /// }
    /// impl Execute<SwitchOff> for Lamp {
    ///     fn execute(&self, _: &SwitchOff) -> Result<Vec<LampEvent>, Never> { Ok(vec![LampEvent::SwitchedOff]) }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let router = Router::new().aggregate(AggregateConfig::<Lamp>::new()).commands::<(SwitchOn, SwitchOff)>();
    /// let app = Application::builder(MemoryStore::new()).router(router).build();
    /// app.dispatch(SwitchOn { lamp: 7 }).await.unwrap();
    /// assert!(app.aggregate_state::<Lamp>("7").await.unwrap().0.on);
    /// assert_eq!(app.stream_id::<Lamp>("7").as_deref(), Some("lamp-7"), "the commands' prefix");
    /// # });
    /// ```
    #[track_caller]
    pub fn commands<S: CommandSet>(self) -> Router {
        S::register(self)
    }

    /// Resolves each command type straight to its aggregate runtime, so a dispatch
    /// costs one lookup.
    pub(crate) fn into_routes(self) -> Routes {
        let mut refreshers = Vec::with_capacity(self.aggregates.len());
        let by_aggregate: HashMap<TypeId, Shared> = self
            .aggregates
            .into_iter()
            .map(|(aggregate, pending)| {
                let (runtime, refresher) =
                    (pending.start)(pending.config, pending.declared.map(|declared| declared.prefix));
                refreshers.push(refresher);
                (aggregate, runtime)
            })
            .collect();
        let by_command = self
            .commands
            .into_iter()
            .filter_map(|(command, aggregate)| Some((command, by_aggregate.get(&aggregate)?.clone())))
            .collect();
        Routes { by_command, by_aggregate, refreshers }
    }
}

/// Command types registered together by [`Router::commands`]: tuples of up to 16
/// [`Command`] types. Each element's aggregate must [`Execute`](crate::Execute) it, as
/// for [`Router::command`] — that is [`Command::Aggregate`]'s bound, so a set holding
/// a command its aggregate cannot run does not compile.
///
/// An application may implement it for a type of its own to name a group of
/// commands once (`router.commands::<AccountCommands>()`).
///
/// A tuple is a set, and a named group is a set that registers a tuple. A command
/// left out of the set has no route:
///
/// ```
/// use rewind::{Aggregate, Application, CommandSet, DispatchError, Execute, MemoryStore, Never, Router};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)]
/// # enum TabEvent { Opened, Closed }
///
/// #[derive(Debug, Default, Clone)]
/// struct Tab { open: bool }
/// impl Aggregate for Tab {
///     const NAME: &'static str = "tab";
///     type Event = TabEvent;
///     type Error = Never;
///     fn apply(&mut self, event: &TabEvent) { self.open = matches!(event, TabEvent::Opened) }
/// }
///
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Tab, id = tab)]
/// struct OpenTab { tab: u32 }
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Tab, id = tab)]
/// struct CloseTab { tab: u32 }
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Tab, id = tab)]
/// struct PinTab { tab: u32 }
///
/// impl<C> Execute<C> for Tab {
///     fn execute(&self, _: &C) -> Result<Vec<TabEvent>, Never> {
///         Ok(vec![if self.open { TabEvent::Closed } else { TabEvent::Opened }])
///     }
/// }
///
/// struct TabCommands;
/// impl CommandSet for TabCommands {
///     fn register(router: Router) -> Router {
///         router.commands::<(OpenTab, CloseTab)>()
///     }
/// }
///
/// let app = Application::builder(MemoryStore::new()).router(Router::new().commands::<TabCommands>()).build();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// app.dispatch(OpenTab { tab: 1 }).await.unwrap();
/// assert!(app.aggregate_state::<Tab>("1").await.unwrap().0.open);
/// app.dispatch(CloseTab { tab: 1 }).await.unwrap();
/// assert!(!app.aggregate_state::<Tab>("1").await.unwrap().0.open);
/// assert!(matches!(app.dispatch(PinTab { tab: 1 }).await, Err(DispatchError::NoRoute { command: "PinTab" })));
/// # });
/// ```
pub trait CommandSet {
    /// Adds every command type of the set to `router`.
    fn register(router: Router) -> Router;
}

macro_rules! command_set {
    ($($command:ident),+) => {
        impl<$($command: Command),+> CommandSet for ($($command,)+) {
            #[track_caller]
            fn register(router: Router) -> Router {
                router$(.command::<$command>())+
            }
        }
    };
}

command_set!(C1);
command_set!(C1, C2);
command_set!(C1, C2, C3);
command_set!(C1, C2, C3, C4);
command_set!(C1, C2, C3, C4, C5);
command_set!(C1, C2, C3, C4, C5, C6);
command_set!(C1, C2, C3, C4, C5, C6, C7);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15);
command_set!(C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16);

/// The router, resolved for dispatch.
pub(crate) struct Routes {
    by_command: HashMap<TypeId, Shared>,
    by_aggregate: HashMap<TypeId, Shared>,
    /// Every aggregate's runtime, for [`crate::refresh`].
    refreshers: Vec<Arc<dyn Refresh>>,
}

impl Routes {
    pub(crate) fn for_command<C: Command>(&self) -> Option<&AggregateRuntime<C::Aggregate>> {
        self.by_command.get(&TypeId::of::<C>())?.downcast_ref()
    }

    pub(crate) fn for_aggregate<A: Aggregate>(&self) -> Option<&AggregateRuntime<A>> {
        self.by_aggregate.get(&TypeId::of::<A>())?.downcast_ref()
    }

    pub(crate) fn refreshers(&self) -> Vec<Arc<dyn Refresh>> {
        self.refreshers.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Execute, Never};

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, crate::Event)]
    enum Ev {
        Happened,
    }

    #[derive(Debug, Default, Clone)]
    struct Thing;

    impl Aggregate for Thing {
        const NAME: &'static str = "thing";
        type Event = Ev;
        type Error = Never;
        fn apply(&mut self, _: &Ev) {}
    }

    impl<C> Execute<C> for Thing {
        fn execute(&self, _: &C) -> Result<Vec<Ev>, Never> {
            Ok(vec![])
        }
    }

    #[derive(Debug, crate::Command)]
    #[command(aggregate = Thing, id = 0, prefix = "thing-")]
    struct Make(u32);

    #[derive(Debug, crate::Command)]
    #[command(aggregate = Thing, id = 0, prefix = "item-")]
    struct Break(u32);

    /// Written by hand: no opinion on the prefix.
    #[derive(Debug)]
    struct Look(u32);

    impl Command for Look {
        type Aggregate = Thing;
        fn aggregate_id(&self) -> String {
            self.0.to_string()
        }
    }

    fn stream_of(router: Router) -> String {
        router.into_routes().for_aggregate::<Thing>().expect("configured").stream_id("1")
    }

    #[test]
    fn takes_the_commands_prefix_when_the_config_states_none_in_either_order() {
        assert_eq!(stream_of(Router::new().aggregate(AggregateConfig::<Thing>::new()).command::<Make>()), "thing-1");
        assert_eq!(stream_of(Router::new().command::<Make>().aggregate(AggregateConfig::<Thing>::new())), "thing-1");
        assert_eq!(stream_of(Router::new().commands::<(Look, Make)>()), "thing-1");
    }

    #[test]
    fn a_config_prefix_equal_to_the_commands_is_accepted_and_none_means_none() {
        let agreeing = AggregateConfig::<Thing>::new().identity_prefix("thing-");
        assert_eq!(stream_of(Router::new().command::<Make>().aggregate(agreeing)), "thing-1");
        assert_eq!(stream_of(Router::new().command::<Look>()), "1");
    }

    #[test]
    #[should_panic(expected = "given the stream prefix \"thing-\" by Make::STREAM_PREFIX and \"item-\" by Break")]
    fn refuses_two_commands_that_disagree() {
        let _ = Router::new().commands::<(Make, Break)>();
    }

    #[test]
    #[should_panic(expected = "\"\" by its AggregateConfig::identity_prefix and \"thing-\" by Make::STREAM_PREFIX")]
    fn refuses_a_config_given_after_a_command_that_disagrees() {
        let _ = Router::new().command::<Make>().aggregate(AggregateConfig::<Thing>::new().identity_prefix(""));
    }
}
