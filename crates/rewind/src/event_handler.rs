//! Event handlers: side effects (send an email, call another system) on events.
//!
//! Delivery is at least once, in global order: the checkpoint is saved after each
//! batch, so after a crash the unsaved tail of a batch is delivered again. A handler
//! that must not repeat an effect deduplicates by `event.event_id`. Rebuilds and
//! replays never run event handlers.

use crate::envelope::RecordedEvent;
use crate::stream::GlobalPosition;
use crate::subscription::{BatchFailure, Consumer, ConsumerError, ConsumerKind};
use crate::subscription_store::SubscriptionStore;
use async_trait::async_trait;
use std::sync::Arc;
use tracing::Instrument;

/// A side effect per event.
///
/// ```
/// use rewind::{EventHandler, RecordedEvent, ConsumerError};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// struct Mailer { sent: AtomicUsize }
///
/// #[async_trait::async_trait]
/// impl EventHandler for Mailer {
///     async fn handle(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
///         if event.event_type == "AccountOpened" {
///             self.sent.fetch_add(1, Ordering::SeqCst); // send the welcome email here
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event; an error is dealt with by the subscription's error policy.
    async fn handle(&self, event: &RecordedEvent) -> Result<(), ConsumerError>;
}

/// Runs an [`EventHandler`] as a subscription consumer, checkpointing in the
/// subscription store.
pub(crate) struct HandlerConsumer<H> {
    name: String,
    handler: H,
    bookkeeping: Arc<dyn SubscriptionStore>,
}

impl<H: EventHandler> HandlerConsumer<H> {
    pub(crate) fn new(name: String, handler: H, bookkeeping: Arc<dyn SubscriptionStore>) -> Self {
        HandlerConsumer { name, handler, bookkeeping }
    }

    async fn save(&self, position: GlobalPosition) -> Result<(), ConsumerError> {
        Ok(self.bookkeeping.save_checkpoint(&self.name, position).await?)
    }
}

#[async_trait]
impl<H: EventHandler> Consumer for HandlerConsumer<H> {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::EventHandler
    }

    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        Ok(self.bookkeeping.load_checkpoint(&self.name).await?)
    }

    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        for (index, event) in events.iter().enumerate() {
            let span = crate::telemetry::handle(&self.name, event);
            if let Err(error) = self.handler.handle(event).instrument(span).await {
                if let Some(done) = index.checked_sub(1) {
                    self.save(events[done].position).await.map_err(|error| BatchFailure { failed_at: 0, error })?;
                }
                return Err(BatchFailure { failed_at: index, error });
            }
        }
        match events.last() {
            Some(last) => self.save(last.position).await.map_err(|error| BatchFailure { failed_at: 0, error }),
            None => Ok(()),
        }
    }

    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        self.save(event.position).await
    }
}
