//! How an event envelope maps to the columns of `events`, both ways.
//!
//! Writing: the data and the metadata's custom keys are checked to be JSON here, on
//! the caller's task, so a bad event fails alone with [`StoreError::Invalid`] instead
//! of failing the group commit it would have joined. Documents holding the escape
//! `\u0000`, which `jsonb` cannot store, go to the `*_text` columns verbatim.
//!
//! Reading: rows come back as [`RecordedEvent`]s. JSON read from `jsonb` is the same
//! document, not the same text (key order and spacing are PostgreSQL's).

use crate::error::corrupt;
use rewind::{GlobalPosition, Metadata, NewEvent, RecordedEvent, StoreError, StreamVersion};
use tokio_postgres::Row;
use uuid::Uuid;

/// A [`NewEvent`] checked and split into its columns.
#[derive(Debug)]
pub(crate) struct EncodedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub data: Json,
    pub custom: Json,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
}

/// JSON text, and whether `jsonb` can hold it.
#[derive(Debug)]
pub(crate) struct Json {
    pub text: String,
    pub jsonb: bool,
}

impl Json {
    pub(crate) fn check(text: String, what: &str, event_id: Uuid) -> Result<Json, StoreError> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            return Err(StoreError::Invalid(format!("event {event_id}: {what} is not JSON: {e}")));
        }
        // A false positive (an escaped backslash followed by `u0000`) only costs inspectability.
        let jsonb = !text.contains("\\u0000");
        Ok(Json { text, jsonb })
    }

    /// The `jsonb` column's value.
    pub fn as_jsonb(&self) -> Option<&str> {
        self.jsonb.then_some(self.text.as_str())
    }

    /// The `*_text` column's value.
    pub fn as_text(&self) -> Option<&str> {
        (!self.jsonb).then_some(self.text.as_str())
    }
}

impl EncodedEvent {
    pub(crate) fn encode(event: NewEvent) -> Result<EncodedEvent, StoreError> {
        let custom = event.metadata.custom_json();
        Ok(EncodedEvent {
            data: Json::check(event.data, "data", event.event_id)?,
            custom: Json::check(custom, "metadata", event.event_id)?,
            event_id: event.event_id,
            event_type: event.event_type,
            causation_id: event.metadata.causation_id,
            correlation_id: event.metadata.correlation_id,
        })
    }
}

/// Converts a stored non-negative number.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative {what} {value}")))
}

/// Converts a requested position or version for SQL, saturating.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Decodes one row of the read statements (column order as in `read_all.sql`).
pub(crate) fn decode_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    let get_err = |e: tokio_postgres::Error| corrupt(format!("unreadable event row: {e}"));
    let custom: &str = row.try_get(6).map_err(get_err)?;
    let metadata = Metadata::from_stored(row.try_get(7).map_err(get_err)?, row.try_get(8).map_err(get_err)?, custom)
        .map_err(|e| corrupt(format!("unreadable metadata: {e}")))?;
    Ok(RecordedEvent {
        position: GlobalPosition(to_u64(row.try_get(0).map_err(get_err)?, "position")?),
        event_id: row.try_get(1).map_err(get_err)?,
        stream_id: row.try_get(2).map_err(get_err)?,
        stream_version: StreamVersion(to_u64(row.try_get(3).map_err(get_err)?, "stream version")?),
        event_type: row.try_get(4).map_err(get_err)?,
        data: row.try_get(5).map_err(get_err)?,
        metadata,
        created_at: row.try_get(9).map_err(get_err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(data: &str) -> NewEvent {
        NewEvent { event_id: Uuid::new_v4(), event_type: "T".into(), data: data.into(), metadata: Metadata::default() }
    }

    #[test]
    fn json_goes_to_jsonb_unless_it_holds_nul() {
        let plain = EncodedEvent::encode(new_event(r#"{"a":1}"#)).expect("valid");
        assert_eq!((plain.data.as_jsonb(), plain.data.as_text()), (Some(r#"{"a":1}"#), None));
        assert_eq!(plain.custom.as_jsonb(), Some("{}"));
        let nul = EncodedEvent::encode(new_event(r#"{"a":"x\u0000y"}"#)).expect("valid");
        assert_eq!((nul.data.as_jsonb(), nul.data.as_text()), (None, Some(r#"{"a":"x\u0000y"}"#)));
    }

    #[test]
    fn rejects_data_that_is_not_json() {
        for bad in ["", "{", "not json", r#"{"a":1} trailing"#] {
            assert!(matches!(EncodedEvent::encode(new_event(bad)), Err(StoreError::Invalid(_))), "{bad:?}");
        }
    }
}
