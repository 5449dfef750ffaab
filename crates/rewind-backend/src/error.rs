//! Why a database could not be opened.

use rewind::StoreError;

/// A database that could not be opened as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store is not there (a missing file or schema).
    #[error("no event store at {0}")]
    Missing(String),
    /// A destination that must be empty holds events.
    #[error("{database} already holds {events} events; the destination must be empty")]
    NotEmpty {
        /// The destination.
        database: String,
        /// How many it holds.
        events: u64,
    },
    /// The store failed (unreachable, unreadable, newer schema).
    #[error("{database}: {source}")]
    Store {
        /// Which store.
        database: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A directory or temporary file could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being made.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// This build leaves out the backend the URL names (a cargo feature).
    #[error("{database}: this build has no {feature} backend (enable the `{feature}` feature of rewind-backend)")]
    NotBuilt {
        /// The database asked for.
        database: String,
        /// The missing feature.
        feature: &'static str,
    },
}

impl OpenError {
    /// A store error on `database`.
    pub fn store(database: impl std::fmt::Display) -> impl FnOnce(StoreError) -> OpenError {
        let database = database.to_string();
        move |source| OpenError::Store { database, source }
    }

    // Only the SQLite backend makes directories and temporary files.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpenError {
        let what = what.into();
        move |source| OpenError::Io { what, source }
    }
}
