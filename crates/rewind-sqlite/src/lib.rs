//! Rewind's embedded event store: the whole store in one SQLite file.
//!
//! [`SqliteStore`] implements [`rewind::EventStore`] and passes its conformance
//! suite. The file runs in WAL mode, and by default an append is acknowledged only
//! once the log is fsynced; appends arriving together share one transaction and one
//! fsync (group commit), each keeping its own expected-version check.
//!
//! The append path: [`SqliteStore`]'s `append_batch` → `writer` (the group's transaction,
//! with inline projectors) → `syncer` (fsync unless SQLite's `COMMIT` did, then the
//! answer and the head).
//!
//! # Layout
//!
//! * [`sqlite_store`]: the public store; routes calls to the writer or the readers.
//! * `writer`: the one thread owning the write connection; group commit.
//! * `syncer`: makes committed groups durable, then answers them and raises the head watch.
//! * `inline`: projectors written in the appends' own transaction.
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
//! * `portable`: [`rewind::Projector`]s and portable queries on SQLite ([`SqliteReadModel`]
//!   is a [`rewind::ReadModel`]).
//! * [`subscription_store`]: checkpoints, dead letters and process manager state.

#![warn(missing_docs)]

pub mod config;
pub mod projector;
pub mod read_model;
pub mod sqlite_store;
pub mod stats;
pub mod subscription_store;

mod append;
mod connection;
mod error;
mod inline;
mod portable;
mod reader;
mod row;
mod schema;
mod syncer;
mod writer;

pub use config::{SqliteConfig, Synchronous};
pub use error::is_transient;
pub use projector::{SqliteProjection, SqliteProjector};
pub use read_model::SqliteReadModel;
pub use sqlite_store::SqliteStore;
pub use stats::SqliteStats;
pub use subscription_store::SqliteSubscriptionStore;
