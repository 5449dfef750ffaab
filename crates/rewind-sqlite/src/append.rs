//! One append request applied inside the writer's open transaction: the
//! idempotency check, the expected-version check and the inserts.
//!
//! It also writes imports (events copied verbatim, see [`rewind::import`]).
//! This is the only code that writes `events` and `streams`, and it keeps their
//! invariants (see `schema/0001_initial.sql`): positions are assigned here, one
//! after the other from the transaction's head, and stream versions from the
//! stream's row. It decides as [`rewind::MemoryStore`] does (for a batch with
//! several faults at once, an unusable request is reported before store checks).
//!
//! It does not open, commit or roll back anything: the writer undoes a request that
//! returns an error. The writer relies on this order: an append takes its own
//! decisions (already appended, conflict, a duplicate found by lookup) before it
//! writes anything; only an id refused by the unique index can fail it after a
//! write, and then the failed `INSERT` has undone itself, so only the append's
//! *earlier* events (or a batch's earlier streams) are left to roll back.

use crate::error::{is_duplicate_event_id, store_error};
use crate::row::{get_u64, micros, sql_int};
use rewind::store::StreamAppend;
use rewind::{AppendOutcome, AppendResult, GlobalPosition, RecordedEvent, StoreError, StreamVersion};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;
use uuid::Uuid;

/// Rejects what no store state could accept: an empty stream id, or a batch naming
/// a stream twice. Checked before a request reaches the writer.
pub(crate) fn validate(appends: &[StreamAppend]) -> Result<(), StoreError> {
    let mut streams = HashSet::with_capacity(appends.len());
    for append in appends {
        if append.stream_id.is_empty() {
            return Err(StoreError::Invalid("stream id is empty".into()));
        }
        if !streams.insert(append.stream_id.as_str()) {
            return Err(StoreError::Invalid(format!("stream `{}` appears twice in one batch", append.stream_id)));
        }
        // Checked here, on the caller's task, so the writer thread never parses JSON.
        for event in &append.events {
            if serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_err() {
                return Err(StoreError::Invalid(format!("event {} has data that is not JSON", event.event_id)));
            }
        }
    }
    Ok(())
}

/// Where a stored event is.
struct Found {
    position: u64,
    stream_id: String,
    stream_version: u64,
}

/// Writes appends into the open write transaction.
pub(crate) struct Appender<'c> {
    conn: &'c Connection,
    /// The position of the last event in the transaction so far: the committed head
    /// when the transaction began, plus what this transaction wrote. The writer
    /// restores it when it rolls a request back.
    pub(crate) head: u64,
    /// The commit time stamped on every event of the transaction.
    created_at: i64,
}

impl<'c> Appender<'c> {
    pub(crate) fn new(conn: &'c Connection, head: u64, created_at: i64) -> Appender<'c> {
        Appender { conn, head, created_at }
    }

    /// Applies one `append` / `append_batch` request. On error the caller must roll
    /// back what it wrote and reset [`Appender::head`].
    pub(crate) fn apply(&mut self, appends: &[StreamAppend]) -> Result<Vec<AppendResult>, StoreError> {
        appends.iter().map(|append| self.append_one(append)).collect()
    }

    fn append_one(&mut self, append: &StreamAppend) -> Result<AppendResult, StoreError> {
        if let Some(first) = append.events.first()
            && let Some(found) = self.find(first.event_id)?
        {
            return self.already_appended(append, found);
        }
        let actual = self.stream_version(&append.stream_id)?;
        if !append.expected.accepts(actual) {
            if let Some(event_id) = self.first_duplicate(append)? {
                return Err(StoreError::DuplicateEvent { stream: append.stream_id.clone(), event_id });
            }
            return Err(StoreError::Conflict { stream: append.stream_id.clone(), expected: append.expected, actual });
        }
        if append.events.is_empty() {
            return Ok(AppendResult {
                outcome: AppendOutcome::Appended,
                stream_version: actual,
                first_position: GlobalPosition::START,
                last_position: GlobalPosition::START,
            });
        }
        self.write(append, actual)
    }

    fn write(&mut self, append: &StreamAppend, actual: StreamVersion) -> Result<AppendResult, StoreError> {
        let mut insert = self.conn.prepare_cached(include_str!("append/insert_event.sql")).map_err(store_error)?;
        let first_position = self.head + 1;
        let mut version = actual.0;
        for event in &append.events {
            version += 1;
            let position = self.head + 1;
            let inserted = insert.execute(params![
                sql_int(position),
                event.event_id.as_bytes(),
                append.stream_id,
                sql_int(version),
                event.event_type,
                event.data,
                event.metadata.causation_id.as_ref().map(Uuid::as_bytes),
                event.metadata.correlation_id.as_ref().map(Uuid::as_bytes),
                event.metadata.custom_json(),
                self.created_at,
            ]);
            match inserted {
                Ok(_) => self.head = position,
                Err(error) if is_duplicate_event_id(&error) => {
                    return Err(StoreError::DuplicateEvent {
                        stream: append.stream_id.clone(),
                        event_id: event.event_id,
                    });
                }
                Err(error) => return Err(store_error(error)),
            }
        }
        Ok(AppendResult {
            outcome: AppendOutcome::Appended,
            stream_version: StreamVersion(version),
            first_position: GlobalPosition(first_position),
            last_position: GlobalPosition(self.head),
        })
    }

    /// Writes events exactly as recorded elsewhere, if they continue the store
    /// ([`rewind::check_import`]). On error the caller rolls back.
    pub(crate) fn import(&mut self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        rewind::check_import(events, GlobalPosition(self.head), |stream| self.stream_version(stream))?;
        let mut insert = self.conn.prepare_cached(include_str!("append/insert_event.sql")).map_err(store_error)?;
        for event in events {
            let inserted = insert.execute(params![
                sql_int(event.position.0),
                event.event_id.as_bytes(),
                event.stream_id,
                sql_int(event.stream_version.0),
                event.event_type,
                event.data,
                event.metadata.causation_id.as_ref().map(Uuid::as_bytes),
                event.metadata.correlation_id.as_ref().map(Uuid::as_bytes),
                event.metadata.custom_json(),
                micros(event.created_at),
            ]);
            match inserted {
                Ok(_) => self.head = event.position.0,
                Err(error) if is_duplicate_event_id(&error) => {
                    return Err(StoreError::DuplicateEvent {
                        stream: event.stream_id.clone(),
                        event_id: event.event_id,
                    });
                }
                Err(error) => return Err(store_error(error)),
            }
        }
        Ok(())
    }

    /// The events are stored already: succeed only if they are exactly this append
    /// (same stream, consecutive versions, in order).
    fn already_appended(&self, append: &StreamAppend, first: Found) -> Result<AppendResult, StoreError> {
        let duplicate = |event_id| StoreError::DuplicateEvent { stream: append.stream_id.clone(), event_id };
        if first.stream_id != append.stream_id {
            return Err(duplicate(append.events[0].event_id));
        }
        let first_position = first.position;
        let mut last = first;
        for event in &append.events[1..] {
            match self.find(event.event_id)? {
                Some(found)
                    if found.stream_id == append.stream_id
                        && found.stream_version == last.stream_version + 1
                        && found.position > last.position =>
                {
                    last = found
                }
                _ => return Err(duplicate(event.event_id)),
            }
        }
        Ok(AppendResult {
            outcome: AppendOutcome::AlreadyAppended,
            stream_version: StreamVersion(last.stream_version),
            first_position: GlobalPosition(first_position),
            last_position: GlobalPosition(last.position),
        })
    }

    /// On a version conflict, a duplicate id wins (as in the memory store): the
    /// first id that is stored already or repeated within the append.
    fn first_duplicate(&self, append: &StreamAppend) -> Result<Option<Uuid>, StoreError> {
        let mut seen = HashSet::with_capacity(append.events.len());
        for event in &append.events {
            if !seen.insert(event.event_id) || self.find(event.event_id)?.is_some() {
                return Ok(Some(event.event_id));
            }
        }
        Ok(None)
    }

    fn find(&self, event_id: Uuid) -> Result<Option<Found>, StoreError> {
        let mut statement = self.conn.prepare_cached(include_str!("append/find_event.sql")).map_err(store_error)?;
        statement
            .query_row([event_id.as_bytes()], |row| {
                Ok(Found { position: get_u64(row, 0)?, stream_id: row.get(1)?, stream_version: get_u64(row, 2)? })
            })
            .optional()
            .map_err(store_error)
    }

    fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        crate::reader::stream_version(self.conn, stream_id)
    }
}
