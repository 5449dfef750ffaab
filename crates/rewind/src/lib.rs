//! Rewind: event sourcing and CQRS for Rust.
//!
//! Commands go through [middleware] to the [router](Router), which hands
//! each one to an [aggregate](Aggregate) instance kept live by the aggregate runtime.
//! The aggregate decides ([`Execute`]), its events are appended to the
//! [event store](EventStore) under an optimistic concurrency check, and only then
//! folded into its state ([`Aggregate::apply`]) and acknowledged.
//!
//! # Layout
//!
//! * The dispatch path: [`application`] → [`middleware`] → [`router`] →
//!   `aggregate_runtime` → [`aggregate`].
//! * The append path: `aggregate_runtime` → [`event_store`] (the contract) →
//!   [`memory_store`] here; SQLite and PostgreSQL in their own crates.
//! * What is stored: [`event`](mod@event) (type names, upcasting), [`envelope`] (ids, metadata),
//!   [`stream`] (versions and positions); [`import`] copies events verbatim between stores.
//! * The read side: [`subscriptions`] runs each [`subscription`] (catch-up, live,
//!   healing, error policy, lease) for an [`event_handler`], a [`process_manager`]
//!   or a backend's projector, in [`partition`]s when asked; [`fault`] tells transient failures from the
//!   consumer's own; [`subscription_store`] keeps their bookkeeping, and
//!   [`dead_letters`] says what replaying a skipped event means for each kind.
//! * Commands are processed once: [`command_outcome`] keeps each one's first outcome
//!   in the log.
//! * Seeing it run: [`telemetry`] names the spans of the dispatch path and the
//!   subscribers; with the `opentelemetry` feature they join one trace per request
//!   through the ids stored with the events.
//! * Testing: [`testing`] (given / when / then) and, with the `conformance` feature,
//!   `conformance` (the store suite).
//! * With the default `derive` feature, `#[derive(Command)]`, `#[derive(Event)]` and
//!   `#[rewind::event]` (from `rewind-macros`) write the [`Command`] and [`Event`]
//!   impls; they share the traits' names, as serde's derives do.

#![warn(missing_docs)]

// The derives name `::rewind::...`; this lets them be used inside this crate's tests.
extern crate self as rewind;

pub mod aggregate;
mod aggregate_runtime;
pub mod application;
pub mod command;
pub mod command_outcome;
#[cfg(feature = "conformance")]
pub mod conformance;
mod consistency;
pub mod dead_letters;
pub mod dispatch;
pub mod envelope;
pub mod event;
pub mod event_handler;
pub mod event_store;
pub mod fault;
pub mod import;
pub mod memory_store;
pub mod middleware;
pub mod partition;
#[cfg(feature = "conformance")]
pub mod partition_conformance;
pub mod prelude;
pub mod process_manager;
pub mod projector;
mod refresh;
pub mod router;
pub mod shared_store;
pub mod sql;
pub mod store;
pub mod stream;
pub mod subscription;
pub mod subscription_store;
#[cfg(feature = "conformance")]
pub mod subscription_store_conformance;
pub mod subscriptions;
pub mod telemetry;
pub mod testing;
pub mod transient;

pub use aggregate::{Aggregate, Execute, Never};
pub use application::{Application, ApplicationBuilder};
pub use command::{AnyCommand, Command};
pub use dispatch::{Consistency, DispatchError, DispatchOptions, Dispatched, Returning};
pub use envelope::{Metadata, NewEvent, RecordedEvent};
pub use event::{EncodedEvent, Event, EventError, decode_event, encode_event};
pub use event_handler::EventHandler;
pub use event_store::{AppendOutcome, AppendResult, EventFilter, EventStore, Snapshot, StoreError, StreamInfo};
pub use fault::{Fault, Transient, classify};
pub use import::{ImportCheck, check_import};
pub use memory_store::MemoryStore;
pub use middleware::logging::LoggingMiddleware;
pub use middleware::validation::{ValidationErrors, ValidationMiddleware};
pub use middleware::{Middleware, Pipeline, Rejection};
pub use process_manager::{CommandFailure, Interest, OnError, ProcessCommand, ProcessManager};
pub use projector::{Projector, ReadModel};
pub use router::{AggregateConfig, CommandSet, Router};
pub use shared_store::SharedStore;
pub use stream::{Direction, ExpectedVersion, GlobalPosition, StreamVersion};
pub use subscription::{
    Backoff, Consumer, ConsumerError, ConsumerKind, ErrorPolicy, StartFrom, SubscriptionOptions, SubscriptionState,
    SubscriptionStatus,
};
pub use subscription_store::{DeadLetter, FailureReport, FailureState, MemorySubscriptionStore, SubscriptionStore};
pub use subscriptions::{SubscriptionError, Subscriptions, SubscriptionsBuilder};
pub use transient::TransientSubscription;

#[cfg(feature = "derive")]
pub use rewind_macros::{Command, Event, event};

/// What the derives' generated code names; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}
