//! How envelope fields are stored in columns, both ways: ids as 16-byte blobs,
//! times as integer microseconds since the Unix epoch, custom metadata as JSON text,
//! versions and positions as (non-negative) integers.
//!
//! Decoding never trusts the file: a value of the wrong shape is
//! [`StoreError::Corrupt`], not a panic.

use crate::error::store_error;
use chrono::{DateTime, Utc};
use rewind::{GlobalPosition, Metadata, RecordedEvent, Snapshot, StoreError, StreamVersion};
use rusqlite::Row;
use uuid::Uuid;

/// A version, position or count as a SQLite integer. SQLite integers are `i64`;
/// larger values (such as [`StreamVersion::END`]) mean "as far as it goes".
pub(crate) fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a version, position or count; a negative number is an error that
/// [`store_error`] reports as corrupt.
pub(crate) fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

/// Reads a version, position or count that may be NULL (an aggregate over no rows).
pub(crate) fn optional_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(index)?;
    value.map(|v| u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, v))).transpose()
}

/// A time as stored.
pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros} out of range")))
}

fn uuid(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt(format!("an id of {} bytes, not 16", bytes.len())))
}

fn optional_uuid(row: &Row<'_>, index: usize) -> Result<Option<Uuid>, StoreError> {
    row.get_ref(index).and_then(|v| Ok(v.as_blob_or_null()?)).map_err(store_error)?.map(uuid).transpose()
}

/// Decodes a row of `SELECT position, event_id, stream_id, stream_version,
/// event_type, data, causation_id, correlation_id, metadata, created_at`.
pub(crate) fn recorded_event(row: &Row<'_>) -> Result<RecordedEvent, StoreError> {
    let get_u64 = |index| get_u64(row, index).map_err(store_error);
    let get_string = |index| row.get::<_, String>(index).map_err(store_error);
    let event_id = uuid(row.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(store_error)?)?;
    let custom = row.get_ref(8).and_then(|v| Ok(v.as_str()?)).map_err(store_error)?;
    let metadata = Metadata::from_stored(optional_uuid(row, 6)?, optional_uuid(row, 7)?, custom)
        .map_err(|error| StoreError::Corrupt(format!("metadata of event {event_id} is not a JSON object: {error}")))?;
    Ok(RecordedEvent {
        event_id,
        stream_id: get_string(2)?,
        stream_version: StreamVersion(get_u64(3)?),
        position: GlobalPosition(get_u64(0)?),
        event_type: get_string(4)?,
        data: get_string(5)?,
        metadata,
        created_at: time(row.get(9).map_err(store_error)?)?,
    })
}

/// Decodes a row of `SELECT stream_id, version, tag, data, created_at FROM snapshots`.
pub(crate) fn snapshot(row: &Row<'_>) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        stream_id: row.get(0).map_err(store_error)?,
        version: StreamVersion(get_u64(row, 1).map_err(store_error)?),
        tag: row.get(2).map_err(store_error)?,
        data: row.get(3).map_err(store_error)?,
        created_at: time(row.get(4).map_err(store_error)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_versions_clamp_to_the_largest_sql_integer() {
        assert_eq!(sql_int(StreamVersion::END.0), i64::MAX);
        assert_eq!(sql_int(7), 7);
    }

    #[test]
    fn a_short_id_is_corrupt() {
        assert!(matches!(uuid(&[1, 2, 3]), Err(StoreError::Corrupt(_))));
    }
}
