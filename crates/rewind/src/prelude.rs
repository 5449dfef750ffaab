//! What an application needs, in one import: `use rewind::prelude::*;`.
//!
//! The concepts a user writes (aggregate, command, event, projector, process
//! manager, event handler), the application that runs them, and the portable SQL
//! a projector speaks. What only a store implementer needs lives in
//! [`crate::store`].

pub use crate::aggregate::{Aggregate, Execute, Never};
pub use crate::application::Application;
// The root's names: the traits and, with the `derive` feature, their derives.
pub use crate::dispatch::{Consistency, DispatchError, DispatchOptions, Dispatched};
pub use crate::envelope::RecordedEvent;
pub use crate::event_handler::EventHandler;
pub use crate::event_store::{EventFilter, EventStore, StoreError};
pub use crate::middleware::validation::ValidationErrors;
pub use crate::process_manager::ProcessManager;
pub use crate::projector::{Projector, ReadModel};
pub use crate::router::{AggregateConfig, Router};
pub use crate::sql::{Dialect, Row, Sql};
pub use crate::stream::GlobalPosition;
pub use crate::subscription::{ConsumerError, SubscriptionOptions};
pub use crate::subscriptions::{SubscriptionError, Subscriptions};
pub use crate::{Command, Event};
