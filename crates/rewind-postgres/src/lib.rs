//! Rewind's event store on PostgreSQL: the scale-out backend.
//!
//! [`PostgresStore`] implements [`rewind::EventStore`] in one PostgreSQL schema, so
//! one database can hold several stores. Many processes may open the same schema:
//! optimistic concurrency keeps their streams consistent and they all see one
//! global order that is safe to follow.
//!
//! # Promises
//!
//! * An append is acknowledged only after its transaction committed.
//! * Appends arriving together share one transaction (group commit), each keeping its
//!   own expected-version check; `append_batch` is one unit, all or nothing.
//! * Appends of different processes (and groups) commit concurrently; global
//!   positions increase with the transactions' ids, and a reader sees an event only
//!   once every position below it is settled (committed, or a hole left by a
//!   transaction that rolled back), so a reader following `position > last_seen`
//!   never skips an event that commits late (the argument is in [`writer`]).
//! * `watch_head` (the settled head) wakes on commits of any process (LISTEN/NOTIFY,
//!   with polling as the fallback), within a millisecond or so for commits of this
//!   store.
//! * An appended event is in `read_all` once the head passes it: at once, unless a
//!   transaction older than its append is still running anywhere on the server;
//!   then when that one ends (`idle_in_transaction_session_timeout` bounds a stalled
//!   client's). [`rewind::EventStore::settled_head`] waits for it.
//!
//! # Layout
//!
//! * [`postgres_store`]: the store: reads, and handing appends to the writer.
//! * [`writer`]: the group-commit task, positions and why followers never skip.
//! * `layer`: the writer's fast path, a group decided and written by one statement.
//! * `careful`: the writer's careful path; `group`: its decisions in Rust (versions,
//!   duplicates, positions).
//! * `codec`: envelope ⇄ columns. `sql` and `src/sql/*.sql`: every statement.
//! * [`schema`]: creating and migrating the schema. [`listener`]: the head watch, and
//!   announcing this store's commits to other processes.
//! * [`options`]: store settings. [`connection`]: how every connection is made (the
//!   URL's keys, timeouts, keepalive); `tls`: rustls for `sslmode`.
//!
//! The read side, in the same schema by default:
//!
//! * [`read_model`]: a read model database (a pool working in one schema).
//! * [`projector`]: [`PostgresProjection`]s run as exactly-once subscription consumers.
//! * `checkpoint_feed`: projector checkpoints announced to every process (NOTIFY), so
//!   strong consistency waits on no timer where the projector runs elsewhere.
//! * `portable`: [`rewind::Projector`]s and portable queries on PostgreSQL
//!   ([`PostgresReadModel`] is a [`rewind::ReadModel`]).
//! * [`subscription_store`]: checkpoints, dead letters, process manager state, and the
//!   advisory-lock leases that keep a subscription active in one process.
//!
//! # Schema
//!
//! `events` (one row per event; `data` and `metadata` as `jsonb`, causation and
//! correlation ids as `uuid`, `created_at` the commit's `timestamptz`), `snapshots` and
//! `schema_version` (see `src/sql/schema_v1.sql`), and the writer's functions
//! `append_layer` and `append_one` (`src/sql/schema_v2.sql`); the read side adds
//! `rewind_projections`, `rewind_subscriptions`, `rewind_dead_letters` and
//! `rewind_process_instances` (`src/read_model/tables.sql`).

#![warn(missing_docs)]

mod careful;
mod checkpoint_feed;
mod codec;
pub mod connection;
mod error;
mod group;
mod import;
mod layer;
pub mod listener;
pub mod options;
mod portable;
pub mod postgres_store;
pub mod projector;
pub mod read_model;
pub mod schema;
mod sql;
pub mod subscription_store;
mod tls;
pub mod writer;

pub use connection::{DEFAULT_CONNECT_TIMEOUT, Stalled};
pub use error::is_transient;
pub use options::PostgresOptions;
pub use postgres_store::PostgresStore;
pub use projector::{PostgresProjection, PostgresProjector};
pub use read_model::PostgresReadModel;
pub use schema::SCHEMA_VERSION_CURRENT;
pub use subscription_store::PostgresSubscriptionStore;
pub use writer::WriterStats;
