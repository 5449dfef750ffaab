//! How PostgreSQL and pool failures become [`StoreError`]s, and which of them are
//! transient, in one place.
//!
//! Bad input the database rejects (invalid JSON, values past its limits) is
//! [`StoreError::Invalid`]; a missing table is [`StoreError::Corrupt`]; everything else
//! (connections, I/O, unexpected SQL errors) is [`StoreError::Backend`], except a
//! connection that could not be made at all: [`StoreError::Unavailable`]. A
//! projection's own errors keep their type; [`classified`] marks the transient ones
//! ([`is_transient`]) for the subscription (see [`rewind::fault`]), so a lost
//! connection or a serialization failure is retried for ever while a constraint
//! violation or the projection's own bad SQL takes the error policy.

use rewind::{ConsumerError, StoreError, Transient};
use tokio_postgres::error::SqlState;

/// Whether the same statement may succeed later, on a new connection if need be.
///
/// Transient: the connection (closed, refused, I/O, timed out: no answer from the
/// server at all), and the server's answers that describe the server rather than
/// the statement: connection exceptions (class 08), shutdown and restart (57P01
/// admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), cancellation
/// by a statement or lock timeout (57014, 55P03), serialization failures and
/// deadlocks (40001, 40P01) and a commit whose outcome is unknown (40003), a
/// server out of resources (class 53: disk full, out of memory, too many
/// connections), I/O and system errors (58000, 58030), a read-only server (25006:
/// a standby not promoted yet), idle-session timeouts (25P03, 57P05) and an old
/// snapshot (72000). Everything else, constraint violations and SQL errors among
/// them, and the client's own failure to convert a value, fails the same way on
/// every try.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        Some(db) => transient_state(db.code()),
        None => error.is_closed() || caused_by_io(error) || CONNECTION_FAILURES.contains(&error.to_string().as_str()),
    }
}

/// The driver's messages for failures of the connection itself (`tokio_postgres`
/// keeps its error kinds private; these are the kinds' fixed `Display` texts). Its
/// other kinds without a server answer are conversions of values: deterministic.
const CONNECTION_FAILURES: &[&str] = &[
    "error communicating with the server",
    "error connecting to server",
    "timeout waiting for server",
    "unexpected message from server",
    "error parsing response from server",
    "error encoding message to server",
    "error performing TLS handshake",
];

fn caused_by_io(error: &tokio_postgres::Error) -> bool {
    let mut link = std::error::Error::source(error);
    while let Some(cause) = link {
        if cause.is::<std::io::Error>() {
            return true;
        }
        link = cause.source();
    }
    false
}

fn transient_state(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01"
                | "57P02"
                | "57P03"
                | "57P05"
                | "57014"
                | "55P03"
                | "40001"
                | "40P01"
                | "40003"
                | "58000"
                | "58030"
                | "25006"
                | "25P03"
                | "72000"
        )
}

/// Whether a failure to get a pooled connection may pass: the database's own
/// answer decides ([`is_transient`]); a pool timeout or a closed pool (shutting
/// down) is transient.
fn pool_is_transient(error: &deadpool_postgres::PoolError) -> bool {
    match error {
        deadpool_postgres::PoolError::Backend(error) => is_transient(error),
        deadpool_postgres::PoolError::Timeout(_)
        | deadpool_postgres::PoolError::Closed
        | deadpool_postgres::PoolError::PostCreateHook(_) => true,
        deadpool_postgres::PoolError::NoRuntimeSpecified => false,
    }
}

/// A projection's error, marked [`Transient`] if the first PostgreSQL or pool error
/// in its chain of causes is ([`is_transient`]). Errors that already say what they
/// are (a [`StoreError`], a [`Transient`]) are left to [`rewind::classify`].
pub(crate) fn classified(error: ConsumerError) -> ConsumerError {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(cause) = link {
        let transient = if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            Some(is_transient(pg))
        } else {
            cause.downcast_ref::<deadpool_postgres::PoolError>().map(pool_is_transient)
        };
        match transient {
            Some(true) => return Box::new(Transient(error)),
            Some(false) => return error,
            None if cause.is::<Transient>() || cause.is::<StoreError>() => return error,
            None => link = cause.source(),
        }
    }
    error
}

/// What an SQL state means to a caller.
enum Kind {
    Invalid,
    Corrupt,
    Other,
}

fn classify(code: &SqlState) -> Kind {
    if *code == SqlState::INVALID_TEXT_REPRESENTATION
        || *code == SqlState::UNTRANSLATABLE_CHARACTER
        || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
        || *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
    {
        Kind::Invalid
    } else if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME {
        Kind::Corrupt
    } else {
        Kind::Other
    }
}

/// Maps a driver error.
pub(crate) fn from_pg(error: tokio_postgres::Error) -> StoreError {
    let Some(db) = error.as_db_error() else { return StoreError::backend(error) };
    match classify(db.code()) {
        Kind::Invalid => StoreError::Invalid(db.message().to_owned()),
        Kind::Corrupt => StoreError::Corrupt(format!("event store tables missing: {}", db.message())),
        Kind::Other => StoreError::backend(error),
    }
}

/// Maps a driver error shared by several callers (an append that was rolled back).
pub(crate) fn from_pg_ref(error: &tokio_postgres::Error) -> StoreError {
    let message = error.as_db_error().map(|db| (classify(db.code()), db.message().to_owned()));
    match message {
        Some((Kind::Invalid, message)) => StoreError::Invalid(message),
        Some((Kind::Corrupt, message)) => StoreError::Corrupt(format!("event store tables missing: {message}")),
        Some((_, message)) => {
            let code = error.code().map_or("", |c| c.code());
            StoreError::backend(std::io::Error::other(format!("append failed, nothing written: {message} ({code})")))
        }
        None => StoreError::backend(std::io::Error::other(format!("append failed, nothing written: {error}"))),
    }
}

/// Maps a failure to get a pooled connection: nothing was sent, so the database is
/// [unavailable](StoreError::Unavailable) (with fast recycling, a pool's backend
/// error can only come from making a connection), or the pool is closed.
pub(crate) fn from_pool(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        deadpool_postgres::PoolError::NoRuntimeSpecified => StoreError::backend(error),
        other => StoreError::Unavailable(Box::new(other)),
    }
}

/// A value read back that this version cannot interpret.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
