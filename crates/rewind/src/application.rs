//! The application: the dispatch pipeline from command to acknowledged events.
//!
//! `dispatch` = middleware `before_dispatch` → route → aggregate runtime (execute,
//! append, apply) → middleware `after_dispatch` / `after_failure`. It answers `Ok`
//! only after the store acknowledged the append.

use crate::aggregate::Aggregate;
use crate::aggregate_runtime::{CommandContext, Executed};
use crate::command::{AnyCommand, Command, short_type_name};
use crate::consistency::{Appended, ConsistencyRegistry};
use crate::dispatch::Consistency;
use crate::dispatch::{DispatchError, DispatchOptions, Dispatched};
use crate::envelope::Metadata;
use crate::event_store::EventStore;
use crate::middleware::{Middleware, Pipeline};
use crate::refresh::Refresher;
use crate::router::{Router, Routes};
use crate::shared_store::SharedStore;
use crate::stream::{GlobalPosition, StreamVersion};
use crate::telemetry;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// How long a strongly consistent dispatch waits for the read side when neither the
/// dispatch nor the application sets a timeout.
const DEFAULT_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running Rewind application: a store, a router and middleware. Cheap to clone.
///
/// ```
/// use rewind::{Aggregate, Application, Command, Execute, MemoryStore, Router};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Clone)]
/// struct Counter { value: u64 }
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Added { by: u64 } }
/// impl rewind::Event for CounterEvent {}
/// #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
/// #[error("overflow")]
/// struct Overflow;
///
/// impl Aggregate for Counter {
///     const NAME: &'static str = "counter";
///     type Event = CounterEvent;
///     type Error = Overflow;
///     fn apply(&mut self, CounterEvent::Added { by }: &CounterEvent) { self.value += by }
/// }
///
/// #[derive(Debug)]
/// struct Add { counter: String, by: u64 }
/// impl Command for Add {
///     type Aggregate = Counter;
///     fn aggregate_id(&self) -> String { self.counter.clone() }
/// }
/// impl Execute<Add> for Counter {
///     fn execute(&self, add: &Add) -> Result<Vec<CounterEvent>, Overflow> {
///         self.value.checked_add(add.by).ok_or(Overflow)?;
///         Ok(vec![CounterEvent::Added { by: add.by }])
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let app = Application::builder(MemoryStore::new())
///     .router(Router::new().command::<Add>())
///     .build();
/// app.dispatch(Add { counter: "c1".into(), by: 2 }).await.unwrap();
/// let done = app.dispatch(Add { counter: "c1".into(), by: 3 }).await.unwrap();
/// assert_eq!(done.version.0, 2);
/// let (state, _) = app.aggregate_state::<Counter>("c1").await.unwrap();
/// assert_eq!(state.value, 5);
/// # });
/// ```
#[derive(Clone)]
pub struct Application {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    consistency: ConsistencyRegistry,
    routes: Routes,
    middleware: Vec<Arc<dyn Middleware>>,
    default_timeout: Option<Duration>,
    refresher: Option<Refresher>,
}

/// Assembles an [`Application`].
pub struct ApplicationBuilder {
    store: SharedStore,
    router: Router,
    middleware: Vec<Arc<dyn Middleware>>,
    default_timeout: Option<Duration>,
    keep_instances_fresh: bool,
}

impl ApplicationBuilder {
    /// Sets the router (an empty one by default).
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Appends a middleware; `before_dispatch` hooks run in the order added.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Appends a middleware already shared.
    pub fn middleware_shared(mut self, middleware: Arc<dyn Middleware>) -> Self {
        self.middleware.push(middleware);
        self
    }

    /// A timeout for every dispatch that does not set its own (none by default).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Follows the store's global order and folds the events other processes append
    /// into the instances this process has cached, so a command to an instance
    /// another process changed does not first fail its append and read the missing
    /// events (see `crate::refresh`). For several processes serving one store; it
    /// costs one read of every event appended. Off by default. With it on, build the
    /// application inside a Tokio runtime; the task stops when the last clone of the
    /// application is dropped.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let app = rewind::Application::builder(rewind::MemoryStore::new()).keep_instances_fresh().build();
    /// // How far other processes' events have been folded in (here: nothing appended yet).
    /// assert_eq!(*app.instances_fresh_to().expect("on").borrow(), rewind::GlobalPosition::START);
    /// # });
    /// ```
    pub fn keep_instances_fresh(mut self) -> Self {
        self.keep_instances_fresh = true;
        self
    }

    /// Builds the application.
    pub fn build(self) -> Application {
        let routes = self.router.into_routes();
        let refresher = self.keep_instances_fresh.then(|| Refresher::spawn(self.store.clone(), routes.refreshers()));
        Application {
            inner: Arc::new(Inner {
                store: self.store,
                consistency: ConsistencyRegistry::default(),
                routes,
                middleware: self.middleware,
                default_timeout: self.default_timeout,
                refresher,
            }),
        }
    }
}

impl Application {
    /// Starts building an application on `store` (pass an `Arc` of it, or a
    /// [`SharedStore`], to keep using the store elsewhere).
    pub fn builder(store: impl EventStore) -> ApplicationBuilder {
        Self::builder_shared(SharedStore::new(store))
    }

    /// Like [`Application::builder`] for a store already shared.
    pub fn builder_shared(store: SharedStore) -> ApplicationBuilder {
        ApplicationBuilder {
            store,
            router: Router::new(),
            middleware: Vec::new(),
            default_timeout: None,
            keep_instances_fresh: false,
        }
    }

    /// The event store.
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// With [`ApplicationBuilder::keep_instances_fresh`]: the last position whose
    /// event has been folded into the cached instances (`None` when it is off).
    pub fn instances_fresh_to(&self) -> Option<tokio::sync::watch::Receiver<GlobalPosition>> {
        self.inner.refresher.as_ref().map(|refresher| refresher.done.clone())
    }

    /// Dispatches a command with default options.
    pub async fn dispatch<C: Command>(
        &self,
        command: C,
    ) -> Result<Dispatched<C::Aggregate>, DispatchError<<C::Aggregate as Aggregate>::Error>> {
        self.dispatch_with(command, DispatchOptions::default()).await
    }

    /// Dispatches a command. On `Ok` its events are stored; on `Err` nothing was
    /// appended, except after [`DispatchError::Timeout`] (unknown: re-send with the
    /// same command id) and [`DispatchError::ConsistencyTimeout`] (appended).
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Aggregate>, DispatchError<<C::Aggregate as Aggregate>::Error>> {
        let command_id = options.command_id.unwrap_or_else(Uuid::new_v4);
        if !telemetry::traced() {
            let correlation_id = options.correlation_id.unwrap_or(command_id);
            return self.dispatch_with_ids(command, options, command_id, correlation_id, false).await;
        }
        // Without one of its own, a command joins the trace it is dispatched in
        // (`telemetry`): its events then lead a handler back to that trace.
        let correlation_id = options.correlation_id.or_else(telemetry::current_trace).unwrap_or(command_id);
        let span = telemetry::dispatch(command.command_name(), command_id, correlation_id, options.causation_id);
        self.dispatch_with_ids(command, options, command_id, correlation_id, true).instrument(span).await
    }

    async fn dispatch_with_ids<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
        command_id: Uuid,
        correlation_id: Uuid,
        traced: bool,
    ) -> Result<Dispatched<C::Aggregate>, DispatchError<<C::Aggregate as Aggregate>::Error>> {
        let mut pipeline = Pipeline::new(&command, command_id, correlation_id, options.causation_id, options.metadata);
        let before = async {
            for middleware in &self.inner.middleware {
                if let Err(rejection) = middleware.before_dispatch(&mut pipeline).await {
                    return Some(rejection);
                }
            }
            None
        };
        let rejected = match traced {
            true => before.instrument(tracing::debug_span!(target: "rewind", "middleware")).await,
            false => before.await,
        };
        if let Some(rejection) = rejected {
            return Err(self.failed(&mut pipeline, DispatchError::Rejected(rejection)).await);
        }
        if let Some(name) = self.inner.consistency.unknown(&options.consistency) {
            return Err(self.failed(&mut pipeline, DispatchError::UnknownHandler(name)).await);
        }
        let context = CommandContext {
            command_id,
            deterministic_ids: options.command_id.is_some(),
            metadata: Metadata {
                causation_id: Some(options.causation_id.unwrap_or(command_id)),
                command_id: options.causation_id.is_some().then_some(command_id),
                fingerprint: options.fingerprint,
                correlation_id: Some(correlation_id),
                custom: pipeline.metadata.clone(),
            },
            returning: options.returning,
            event_types: options.consistency != Consistency::Eventual,
            expected_version: options.expected_version,
        };
        let run = self.run(&command, &context);
        let timeout = options.timeout.or(self.inner.default_timeout);
        let result = match timeout {
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or(Err(DispatchError::Timeout(limit))),
            None => run.await,
        };
        let result = match result {
            Ok(executed) => self.wait_for_consistency(&command, &options.consistency, executed, timeout).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(executed) => {
                for middleware in self.inner.middleware.iter().rev() {
                    middleware.after_dispatch(&mut pipeline).await;
                }
                Ok(Dispatched {
                    command_id,
                    correlation_id,
                    version: executed.version,
                    position: executed.position,
                    duplicate: executed.duplicate,
                    events: executed.events,
                    state: executed.state,
                })
            }
            Err(error) => Err(self.failed(&mut pipeline, error).await),
        }
    }

    async fn run<C: Command>(
        &self,
        command: &C,
        context: &CommandContext,
    ) -> Result<Executed<C::Aggregate>, DispatchError<<C::Aggregate as Aggregate>::Error>> {
        let Some(runtime) = self.inner.routes.for_command::<C>() else {
            return Err(DispatchError::NoRoute { command: short_type_name::<C>() });
        };
        let identity = command.aggregate_id();
        if identity.is_empty() {
            return Err(DispatchError::InvalidIdentity { command: command.command_name() });
        }
        let stream_id = runtime.stream_id(&identity);
        runtime.execute(&self.inner.store, &stream_id, command, context).await
    }

    /// Waits until the subscriptions `consistency` names have processed what was appended.
    async fn wait_for_consistency<C: Command>(
        &self,
        command: &C,
        consistency: &Consistency,
        executed: Executed<C::Aggregate>,
        timeout: Option<Duration>,
    ) -> Result<Executed<C::Aggregate>, DispatchError<<C::Aggregate as Aggregate>::Error>> {
        let (Some(first_position), Some(position)) = (executed.first_position, executed.position) else {
            return Ok(executed);
        };
        let Some(runtime) = self.inner.routes.for_command::<C>() else { return Ok(executed) };
        let stream_id = runtime.stream_id(&command.aggregate_id());
        let appended = Appended { stream_id: &stream_id, first_position, event_types: &executed.event_types };
        let waits = self.inner.consistency.waits(consistency, &appended);
        if waits.is_empty() {
            return Ok(executed);
        }
        let limit = timeout.unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
        let span = tracing::debug_span!(target: "rewind", "consistency", waits = waits.len());
        let all = futures_util::future::join_all(waits.into_iter().map(|wait| wait.done())).instrument(span);
        match tokio::time::timeout(limit, all).await {
            Ok(_) => Ok(executed),
            Err(_) => Err(DispatchError::ConsistencyTimeout { position, timeout: limit }),
        }
    }

    pub(crate) fn consistency(&self) -> &ConsistencyRegistry {
        &self.inner.consistency
    }

    async fn failed<E: std::error::Error + Send + Sync + 'static>(
        &self,
        pipeline: &mut Pipeline<'_>,
        error: DispatchError<E>,
    ) -> DispatchError<E> {
        for middleware in self.inner.middleware.iter().rev() {
            middleware.after_failure(pipeline, &error).await;
        }
        error
    }

    /// The current state and version of one aggregate instance (loaded if not live).
    pub async fn aggregate_state<A: Aggregate>(
        &self,
        identity: &str,
    ) -> Result<(A, StreamVersion), DispatchError<A::Error>> {
        let Some(runtime) = self.inner.routes.for_aggregate::<A>() else {
            return Err(DispatchError::NoRoute { command: short_type_name::<A>() });
        };
        runtime.state(&self.inner.store, &runtime.stream_id(identity)).await
    }

    /// The stream id of an aggregate instance (its identity with the router's prefix).
    pub fn stream_id<A: Aggregate>(&self, identity: &str) -> Option<String> {
        Some(self.inner.routes.for_aggregate::<A>()?.stream_id(identity))
    }
}
