//! What an application tells the operations: how to build it on a backend and
//! which subscriptions it runs. The server uses the same description, so a rebuild
//! or a replay runs exactly the projectors the service runs.

use async_trait::async_trait;
use rewind::{Application, StoreError, SubscriptionsBuilder};
use rewind_backend::Backend;

/// A Rewind application, as the operations see it.
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
