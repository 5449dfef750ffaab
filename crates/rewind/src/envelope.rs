//! What travels with an event: the envelope written on append ([`NewEvent`]) and the
//! one read back ([`RecordedEvent`]), and the [`Metadata`] they share.
//!
//! Every recorded event carries event id, stream id and version, global position,
//! type name, JSON data, metadata with causation and correlation ids, and the commit
//! timestamp (`DESIGN.md`, promise 6).

use crate::event::{Event, EventError, decode_event};
use crate::stream::{GlobalPosition, StreamVersion};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an event happened and which conversation it belongs to, plus user keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id of the command (or event) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The id shared by everything that one original request set in motion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// Anything else the application wants to keep with the event (user id, ip, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

impl Metadata {
    /// The custom keys as JSON text (`{}` when empty), the form stores persist.
    pub fn custom_json(&self) -> String {
        if self.custom.is_empty() {
            "{}".to_owned()
        } else {
            serde_json::Value::Object(self.custom.clone()).to_string()
        }
    }

    /// Parses custom keys written by [`Metadata::custom_json`].
    pub fn parse_custom(json: &str) -> Result<serde_json::Map<String, serde_json::Value>, serde_json::Error> {
        if json == "{}" { Ok(serde_json::Map::new()) } else { serde_json::from_str(json) }
    }
}

/// An event ready to append: everything but what the store assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique across the store; appending an id again is reported as already appended.
    pub event_id: Uuid,
    /// The stable type name.
    pub event_type: String,
    /// JSON text (any JSON value); a store refuses anything else with
    /// [`StoreError::Invalid`](crate::StoreError::Invalid).
    pub data: String,
    /// Causation, correlation and user keys.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Encodes a domain event with a fresh id and empty metadata.
    pub fn from_event<E: Event>(event: &E) -> Result<NewEvent, EventError> {
        let encoded = crate::event::encode_event(event)?;
        Ok(NewEvent {
            event_id: Uuid::now_v7(),
            event_type: encoded.event_type,
            data: encoded.data,
            metadata: Metadata::default(),
        })
    }
}

/// An event as the store recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The id given on append.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: String,
    /// Its version within the stream (1-based).
    pub stream_version: StreamVersion,
    /// Its position in the global order (1-based).
    pub position: GlobalPosition,
    /// The stable type name, as stored (before upcasting).
    pub event_type: String,
    /// The JSON document appended. A store may normalise its text (PostgreSQL's
    /// `jsonb` reorders keys and spacing), so compare documents, not strings.
    pub data: String,
    /// Causation, correlation and user keys.
    pub metadata: Metadata,
    /// When the append that wrote it committed, to the microsecond (what every
    /// store keeps).
    pub created_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes the data as a domain event, upcasting old types.
    pub fn decode<E: Event>(&self) -> Result<E, EventError> {
        decode_event(&self.event_type, &self.data)
    }
}
