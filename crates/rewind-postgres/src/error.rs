//! How PostgreSQL and pool failures become [`StoreError`]s, in one place.
//!
//! Bad input the database rejects (invalid JSON, values past its limits) is
//! [`StoreError::Invalid`]; a missing table is [`StoreError::Corrupt`]; everything else
//! (connections, I/O, unexpected SQL errors) is [`StoreError::Backend`].

use rewind::StoreError;
use tokio_postgres::error::SqlState;

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
        _ => StoreError::backend(std::io::Error::other(format!("append failed, nothing written: {error}"))),
    }
}

/// Maps a failure to get a pooled connection.
pub(crate) fn from_pool(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(e) => from_pg(e),
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        other => StoreError::backend(other),
    }
}

/// A value read back that this version cannot interpret.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
