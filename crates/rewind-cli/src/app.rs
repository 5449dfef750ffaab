//! What an application tells the operations: how to build it on a backend and
//! which subscriptions it runs. The server uses the same description, so a rebuild
//! or a replay runs exactly the projectors the service runs.

use async_trait::async_trait;
use rewind::{Application, StoreError, SubscriptionsBuilder};
use rewind_backend::Backend;

/// A Rewind application, as the operations see it.
///
/// A minimal one: no commands, one event handler. An operation opens the backend
/// from `--database` and asks the description for the rest:
///
/// ```
/// use rewind::{Application, ConsumerError, EventHandler, RecordedEvent, StoreError};
/// use rewind::{SubscriptionOptions, SubscriptionsBuilder};
/// use rewind_cli::{Backend, OpenMode, RewindApp};
///
/// struct Audit;
/// #[async_trait::async_trait]
/// impl EventHandler for Audit {
///     async fn handle(&self, _: &RecordedEvent) -> Result<(), ConsumerError> {
///         Ok(())
///     }
/// }
///
/// struct MyApp;
///
/// #[async_trait::async_trait]
/// impl RewindApp for MyApp {
///     fn application(&self, backend: &Backend) -> Application {
///         Application::builder_shared(backend.store.clone()).build()
///     }
///     async fn subscriptions(
///         &self,
///         builder: SubscriptionsBuilder,
///         _backend: &Backend,
///     ) -> Result<SubscriptionsBuilder, StoreError> {
///         Ok(builder.handler("audit", Audit, SubscriptionOptions::new()))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let backend = Backend::open(&"memory://".parse().unwrap(), OpenMode::Create).await.unwrap();
/// let app = MyApp.application(&backend);
/// let builder = MyApp.subscriptions(backend.subscriptions(&app), &backend).await.unwrap();
/// let names: Vec<&str> = builder.registered().map(|(name, _)| name).collect();
/// assert_eq!(names, ["audit"]);
/// # });
/// ```
#[async_trait]
pub trait RewindApp: Send + Sync {
    /// The application (router and middleware) on `backend`.
    fn application(&self, backend: &Backend) -> Application;

    /// Registers every subscription the application runs: projectors, event
    /// handlers and process managers. Operations pick from them by kind: a replay
    /// runs projectors only, so no side effect fires.
    async fn subscriptions(
        &self,
        builder: SubscriptionsBuilder,
        backend: &Backend,
    ) -> Result<SubscriptionsBuilder, StoreError>;
}
