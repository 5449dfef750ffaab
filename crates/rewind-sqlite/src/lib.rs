//! Rewind's embedded event store: the whole store in one SQLite file.
//!
//! [`SqliteStore`] implements [`rewind::EventStore`] and passes its conformance
//! suite. The file runs in WAL mode with `synchronous=FULL` by default, so an append
//! is acknowledged only once it is on disk; appends arriving together share one
//! transaction and one fsync (group commit), each keeping its own
//! expected-version check.
//!
//! # Layout
//!
//! * [`sqlite_store`]: the public store; routes calls to the writer or the readers.
//! * `writer`: the one thread owning the write connection; group commit, the head watch.
//! * `append`: one append inside the group's transaction (idempotency, versions, inserts).
//! * `reader`: the reader threads and their queries.
//! * `schema` (with `schema/*.sql`): tables and migrations, versioned by `PRAGMA user_version`.
//! * `connection`: opening and configuring connections; [`config`]: the options.
//! * `row`: column encodings; `error`: SQLite errors to [`rewind::StoreError`]; [`stats`]: commit counters.
//!
//! The read side, usually in the same file:
//!
//! * [`read_model`]: a read model database (one shared write connection, pooled readers).
//! * [`projector`]: [`SqliteProjection`]s run as exactly-once subscription consumers.
//! * [`subscription_store`]: checkpoints, dead letters and process manager state.

pub mod config;
pub mod projector;
pub mod read_model;
pub mod sqlite_store;
pub mod stats;
pub mod subscription_store;

mod append;
mod checkpointer;
mod connection;
mod error;
mod inline;
mod reader;
mod row;
mod schema;
mod syncer;
mod writer;

pub use config::{SqliteConfig, Synchronous};
pub use projector::{SqliteProjection, SqliteProjector};
pub use read_model::SqliteReadModel;
pub use sqlite_store::SqliteStore;
pub use stats::SqliteStats;
pub use subscription_store::SqliteSubscriptionStore;
