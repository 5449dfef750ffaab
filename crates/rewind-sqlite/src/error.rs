//! How SQLite failures become [`StoreError`]s, and which of them are transient.
//!
//! Every `rusqlite` error leaving this crate goes through [`store_error`], so callers
//! only ever see the typed errors of the [`rewind::EventStore`] contract: damaged
//! files and undecodable rows are [`StoreError::Corrupt`], a full disk is
//! [`StoreError::Unavailable`] (SQLite rolled the statement back: nothing was
//! written), everything else [`StoreError::Backend`]. A projection's own errors keep their type; [`classified`]
//! marks the transient ones ([`is_transient`]) for the subscription (see
//! [`rewind::fault`]), so a busy or full database is retried for ever while a
//! projection's constraint violation takes the error policy. Nothing here panics.

use rewind::{ConsumerError, StoreError, Transient};
use rusqlite::ErrorCode;
use std::fmt;
use std::sync::Arc;

/// Whether SQLite may accept the same statement later: the file is busy or locked
/// by another connection (past the busy handler's patience), the disk failed or
/// filled up, the file could not be opened (a mount away), or memory ran out.
/// Everything else (constraints, type mismatches, SQL errors, a damaged file) is the
/// same on every try.
pub fn is_transient(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        ),
        _ => false,
    }
}

/// A projection's error, marked [`Transient`] if the first SQLite error in its chain
/// of causes is ([`is_transient`]). Errors that already say what they are (a
/// [`StoreError`], a [`Transient`]) are left to [`rewind::classify`].
pub(crate) fn classified(error: ConsumerError) -> ConsumerError {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(cause) = link {
        if let Some(sqlite) = cause.downcast_ref::<rusqlite::Error>() {
            return if is_transient(sqlite) { Box::new(Transient(error)) } else { error };
        }
        if cause.is::<Transient>() || cause.is::<StoreError>() {
            return error;
        }
        link = cause.source();
    }
    error
}

/// Maps a SQLite error to the store error a caller can act on.
pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(failure.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(error.to_string())
        }
        rusqlite::Error::SqliteFailure(failure, _) if failure.code == ErrorCode::DiskFull => {
            StoreError::Unavailable(Box::new(error))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(format!("unreadable row: {error}")),
        _ => StoreError::backend(error),
    }
}

/// Whether SQLite failed to fsync a file or its directory (`SQLITE_IOERR_FSYNC`,
/// `SQLITE_IOERR_DIR_FSYNC`): the kernel may have dropped pages it could not write.
pub(crate) fn is_failed_fsync(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => {
            matches!(failure.extended_code, rusqlite::ffi::SQLITE_IOERR_FSYNC | rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC)
        }
        _ => false,
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
    /// A group that failed as unavailable (a full disk: SQLite rolled it back) wrote
    /// nothing; any other failure leaves each caller's outcome unknown.
    pub(crate) fn to_store_error(&self) -> StoreError {
        match *self.0 {
            StoreError::Unavailable(_) => StoreError::Unavailable(Box::new(self.clone())),
            _ => StoreError::backend(self.clone()),
        }
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            StoreError::Unavailable(_) => write!(f, "group commit failed, nothing written: {}", self.0),
            _ => write!(f, "group commit failed, outcome unknown: {}", self.0),
        }
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

    fn sqlite(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_locked_io_and_full_are_transient_constraints_are_not() {
        use rewind::{Fault, classify};
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_FULL,
        ] {
            assert_eq!(classify(&*classified(Box::new(sqlite(code)))), Fault::Transient, "{code}");
        }
        for code in [rusqlite::ffi::SQLITE_CONSTRAINT, rusqlite::ffi::SQLITE_MISMATCH, rusqlite::ffi::SQLITE_ERROR] {
            assert_eq!(classify(&*classified(Box::new(sqlite(code)))), Fault::Deterministic, "{code}");
        }
        let conversion = rusqlite::Error::InvalidColumnType(0, "n".into(), rusqlite::types::Type::Text);
        assert_eq!(classify(&*classified(Box::new(conversion))), Fault::Deterministic);
        // Extended codes keep their primary code: SQLITE_BUSY_SNAPSHOT is busy.
        assert!(is_transient(&sqlite(rusqlite::ffi::SQLITE_BUSY_SNAPSHOT)));
    }

    #[test]
    fn a_full_disk_wrote_nothing_and_says_so() {
        let error = store_error(sqlite(rusqlite::ffi::SQLITE_FULL));
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(error.to_string().contains("full") && error.is_transient(), "{error}");
    }

    #[test]
    fn a_busy_database_is_a_backend_error() {
        let error = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(matches!(store_error(error), StoreError::Backend(_)));
    }
}
