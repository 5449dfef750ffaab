//! What an operation can fail with; the binary prints it and exits non-zero.

use rewind::{StoreError, SubscriptionError};

/// An operation's failure, with what the operator needs to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
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
    /// An import file line is unusable; nothing was imported.
    #[error("{file}, line {line}: {reason}; nothing was imported")]
    BadLine {
        /// The file.
        file: String,
        /// Its 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A subscription could not be run or changed.
    #[error("{0}")]
    Subscription(#[from] SubscriptionError),
    /// A projector stopped on an event while catching up.
    #[error("projector `{name}` stopped at position {position}: {error}")]
    Stopped {
        /// The projector.
        name: String,
        /// The event it stopped on.
        position: u64,
        /// Its error.
        error: String,
    },
    /// A subscription's consumer failed (reading its checkpoint, resetting it,
    /// handling a dead letter again).
    #[error("`{name}`: {error}")]
    Consumer {
        /// The subscription.
        name: String,
        /// What it said.
        error: String,
    },
    /// Another process runs this subscription (it holds its lease), so it must not
    /// be reset under it.
    #[error("`{0}` is running in another process (it holds the subscription's lease); stop that process first")]
    Busy(String),
    /// A background task of the operation died (a panic); nothing it was doing
    /// should be trusted.
    #[error("{0}")]
    Task(String),
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// Reading input or writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<rewind_backend::OpenError> for OpsError {
    fn from(error: rewind_backend::OpenError) -> OpsError {
        use rewind_backend::OpenError;
        match error {
            OpenError::Missing(database) => OpsError::Missing(database),
            OpenError::NotEmpty { database, events } => OpsError::NotEmpty { database, events },
            OpenError::Store { database, source } => OpsError::Store { database, source },
            OpenError::Io { what, source } => OpsError::Io { what, source },
            other => OpsError::Usage(other.to_string()),
        }
    }
}

impl OpsError {
    /// A store error on `database`.
    pub fn store(database: impl std::fmt::Display) -> impl FnOnce(StoreError) -> OpsError {
        let database = database.to_string();
        move |source| OpsError::Store { database, source }
    }

    /// A consumer error of subscription `name`, saying what was being done.
    pub fn consumer(name: &str, doing: &str) -> impl FnOnce(rewind::ConsumerError) -> OpsError {
        let name = name.to_owned();
        let doing = doing.to_owned();
        move |error| OpsError::Consumer { name, error: format!("{doing}: {error}") }
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpsError {
        let what = what.into();
        move |source| OpsError::Io { what, source }
    }
}
