//! Rewind: event sourcing and CQRS for Rust.
//!
//! Commands go through [middleware](middleware) to the [router](Router), which hands
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
//! * What is stored: [`event`] (type names, upcasting), [`envelope`] (ids, metadata),
//!   [`stream`] (versions and positions).
//! * Testing: [`testing`] (given / when / then) and [`conformance`] (the store suite).

pub mod aggregate;
mod aggregate_runtime;
pub mod application;
pub mod command;
pub mod conformance;
pub mod dispatch;
pub mod envelope;
pub mod event;
pub mod event_store;
pub mod memory_store;
pub mod middleware;
pub mod router;
pub mod shared_store;
pub mod stream;
pub mod testing;

pub use aggregate::{Aggregate, Execute};
pub use application::{Application, ApplicationBuilder};
pub use command::{AnyCommand, Command};
pub use dispatch::{Consistency, DispatchError, DispatchOptions, Dispatched, Returning};
pub use envelope::{Metadata, NewEvent, RecordedEvent};
pub use event::{EncodedEvent, Event, EventError, decode_event, encode_event};
pub use event_store::{AppendOutcome, AppendResult, EventFilter, EventStore, Snapshot, StoreError, StreamAppend};
pub use memory_store::MemoryStore;
pub use middleware::logging::LoggingMiddleware;
pub use middleware::validation::{ValidationErrors, ValidationMiddleware};
pub use middleware::{Middleware, Pipeline, Rejection};
pub use router::{AggregateConfig, Router};
pub use shared_store::{BoxFuture, DynEventStore, SharedStore};
pub use stream::{Direction, ExpectedVersion, GlobalPosition, StreamVersion};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
