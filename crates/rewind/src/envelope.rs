//! What travels with an event: the envelope written on append ([`NewEvent`]) and the
//! one read back ([`RecordedEvent`]), and the [`Metadata`] they share.
//!
//! Every recorded event carries event id, stream id and version, global position,
//! type name, JSON data, metadata with command, causation and correlation ids, and
//! the commit timestamp (`docs/design.md`, promise 6).
//!
//! How metadata is stored is decided here, for every backend: causation and
//! correlation ids in columns of their own, the custom keys as one JSON object
//! ([`Metadata::custom_json`]). The command id joins that object under the reserved
//! key `$command_id` only when it differs from the causation id (a command sent by a
//! process manager, caused by an event): most events pay nothing for it, and events
//! stored before the field existed (whose causation id *is* their command id) read
//! back with the right command id ([`Metadata::from_stored`]). A command's
//! fingerprint, when its dispatch gave one, joins it under `$fingerprint`.

use crate::event::{Event, EventError, decode_event};
use crate::stream::{GlobalPosition, StreamVersion};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The custom-metadata key that carries a command id unlike the causation id.
const COMMAND_ID_KEY: &str = "$command_id";
/// The custom-metadata key that carries the fingerprint of the request a command came from.
const FINGERPRINT_KEY: &str = "$fingerprint";

/// Why an event happened and which conversation it belongs to, plus user keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// What directly caused this event: the event a process manager reacted to (the
    /// dispatch's [`causation_id`](crate::DispatchOptions::causation_id)), or else the
    /// command itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The command whose dispatch appended this event, when it is not the causation
    /// id (`None` means the causation id is the command's; see [`Metadata::command`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// A digest of the request the command came from, when its dispatch gave one
    /// ([`DispatchOptions::fingerprint`](crate::DispatchOptions::fingerprint)): a
    /// repeat of the command id with another fingerprint is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Uuid>,
    /// The id shared by everything that one original request set in motion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// Anything else the application wants to keep with the event (user id, ip, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

impl Metadata {
    /// The command that appended the event: its command id, or else the causation id
    /// (a command nothing else caused is its events' cause, and events stored before
    /// command ids were kept apart name their command there).
    pub fn command(&self) -> Option<Uuid> {
        self.command_id.or(self.causation_id)
    }

    /// The custom keys as JSON text (`{}` when empty), the form stores persist; it
    /// also carries the command id when the causation id is not it.
    pub fn custom_json(&self) -> String {
        let command = self.command_id.filter(|id| Some(*id) != self.causation_id);
        if command.is_none() && self.fingerprint.is_none() {
            return match self.custom.is_empty() {
                true => "{}".to_owned(),
                false => serde_json::Value::Object(self.custom.clone()).to_string(),
            };
        }
        let mut object = self.custom.clone();
        for (key, id) in [(COMMAND_ID_KEY, command), (FINGERPRINT_KEY, self.fingerprint)] {
            if let Some(id) = id {
                object.insert(key.to_owned(), serde_json::Value::String(id.to_string()));
            }
        }
        serde_json::Value::Object(object).to_string()
    }

    /// Metadata as a store kept it: the id columns and the text of
    /// [`Metadata::custom_json`].
    ///
    /// ```
    /// let metadata = rewind::Metadata {
    ///     causation_id: Some(uuid::Uuid::from_u128(1)),
    ///     command_id: Some(uuid::Uuid::from_u128(2)),
    ///     fingerprint: Some(uuid::Uuid::from_u128(3)),
    ///     ..Default::default()
    /// };
    /// let stored = metadata.custom_json();
    /// let back = rewind::Metadata::from_stored(metadata.causation_id, None, &stored).unwrap();
    /// assert_eq!(back, metadata);
    /// ```
    pub fn from_stored(
        causation_id: Option<Uuid>,
        correlation_id: Option<Uuid>,
        custom_json: &str,
    ) -> Result<Metadata, serde_json::Error> {
        let mut custom: serde_json::Map<String, serde_json::Value> =
            if custom_json == "{}" { serde_json::Map::new() } else { serde_json::from_str(custom_json)? };
        let command_id = custom.remove(COMMAND_ID_KEY).map(serde_json::from_value).transpose()?;
        let fingerprint = custom.remove(FINGERPRINT_KEY).map(serde_json::from_value).transpose()?;
        Ok(Metadata { causation_id, command_id, fingerprint, correlation_id, custom })
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
