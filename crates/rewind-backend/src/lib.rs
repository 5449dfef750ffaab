//! Rewind's composition root: everything an application runs on, opened from one
//! URL. `sqlite://PATH` (the embedded default), `postgres://…[?schema=NAME]` or
//! `memory://` gives a [`Backend`]: the event store, the read model database its
//! projectors write to and its queries read, and the subscriptions' bookkeeping.
//! A server and its operations tool (`rewind-cli`) open a database the same way.
//!
//! Each backend is a cargo feature (`sqlite`, `postgres`, both on by default), so
//! an application compiles only the backends it names; a URL of a backend left out
//! is refused with [`OpenError::NotBuilt`].
//!
//! * [`database`]: the URL; [`backend`]: opening it; [`error`]: why it could not be.

#![warn(missing_docs)]

pub mod backend;
pub mod database;
pub mod error;

pub use backend::{Backend, OpenMode, ReadModel};
pub use database::{BadDatabaseUrl, DEFAULT_SCHEMA, Database};
pub use error::OpenError;

/// The README's example, compiled and run as a doctest (here, where both backends are).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
