//! How SQLite failures become [`StoreError`]s.
//!
//! Every `rusqlite` error leaving this crate goes through [`store_error`], so callers
//! only ever see the typed errors of the [`rewind::EventStore`] contract: damaged
//! files and undecodable rows are [`StoreError::Corrupt`], everything else
//! [`StoreError::Backend`]. Nothing here panics.

use rewind::StoreError;
use rusqlite::ErrorCode;
use std::fmt;
use std::sync::Arc;

/// Maps a SQLite error to the store error a caller can act on.
pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(failure.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(error.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(format!("unreadable row: {error}")),
        _ => StoreError::backend(error),
    }
}

/// Whether `error` is the unique index on `events.event_id` refusing an id.
pub(crate) fn is_duplicate_event_id(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            failure.code == ErrorCode::ConstraintViolation && message.contains("events.event_id")
        }
        _ => false,
    }
}

/// One failure reported to every caller of a group commit that it broke.
///
/// [`StoreError`] is not `Clone`, so each caller gets its own `StoreError::Backend`
/// holding a shared handle to the one underlying error.
#[derive(Debug, Clone)]
pub(crate) struct GroupError(pub(crate) Arc<StoreError>);

impl GroupError {
    /// The error for one caller of the failed group.
    pub(crate) fn to_store_error(&self) -> StoreError {
        StoreError::backend(self.clone())
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group commit failed, outcome unknown: {}", self.0)
    }
}

impl std::error::Error for GroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_is_corrupt_not_backend() {
        let error = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB), None);
        assert!(matches!(store_error(error), StoreError::Corrupt(_)));
    }

    #[test]
    fn a_busy_database_is_a_backend_error() {
        let error = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(matches!(store_error(error), StoreError::Backend(_)));
    }
}
