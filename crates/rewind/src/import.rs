//! Writing events exactly as another store recorded them: what export/import and
//! replay copy between stores.
//!
//! An import keeps every envelope field (event id, stream and version, global
//! position, type, data, metadata, timestamp), so a copy is indistinguishable from
//! its source. It may only *continue* a store: positions run on densely from the
//! store's head and each stream's versions from the stream's current version, so
//! every promise of [`crate::EventStore`] (dense positions, dense versions, unique
//! ids) still holds afterwards. [`check_import`] is the one place that rule is
//! decided; each store calls it inside its own write transaction.

use crate::envelope::RecordedEvent;
use crate::event_store::StoreError;
use crate::stream::{GlobalPosition, StreamVersion};
use std::collections::{HashMap, HashSet};

/// Checks that `events` continue a store whose head is `head`, asking `version_of`
/// for the current version of each stream the events touch (once per stream).
/// Returns each touched stream's version after the import.
///
/// Errors with [`StoreError::Invalid`] (nothing may be written) when a position or
/// version does not follow on, an id repeats, a stream id is empty or data is not JSON.
pub fn check_import(
    events: &[RecordedEvent],
    head: GlobalPosition,
    mut version_of: impl FnMut(&str) -> Result<StreamVersion, StoreError>,
) -> Result<HashMap<String, StreamVersion>, StoreError> {
    let mut versions: HashMap<String, StreamVersion> = HashMap::new();
    let mut ids = HashSet::with_capacity(events.len());
    let mut expected_position = head.next();
    for event in events {
        let invalid = |why: String| StoreError::Invalid(format!("cannot import event {}: {why}", event.event_id));
        if event.position != expected_position {
            return Err(invalid(format!(
                "its position is {} but the store continues at {expected_position}",
                event.position
            )));
        }
        expected_position = expected_position.next();
        if event.stream_id.is_empty() {
            return Err(invalid("its stream id is empty".into()));
        }
        if !ids.insert(event.event_id) {
            return Err(invalid("its id appears twice".into()));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_err() {
            return Err(invalid("its data is not JSON".into()));
        }
        let current = match versions.get(&event.stream_id) {
            Some(version) => *version,
            None => version_of(&event.stream_id)?,
        };
        if event.stream_version != current.next() {
            return Err(invalid(format!(
                "it has version {} of stream `{}`, which is at version {current}",
                event.stream_version, event.stream_id
            )));
        }
        versions.insert(event.stream_id.clone(), event.stream_version);
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;
    use chrono::Utc;
    use uuid::Uuid;

    fn event(position: u64, stream: &str, version: u64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: stream.into(),
            stream_version: StreamVersion(version),
            position: GlobalPosition(position),
            event_type: "T".into(),
            data: "{}".into(),
            metadata: Metadata::default(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn accepts_events_that_continue_the_store() {
        let events = [event(4, "a", 2), event(5, "b", 1), event(6, "a", 3)];
        let versions =
            check_import(&events, GlobalPosition(3), |s| Ok(StreamVersion(u64::from(s == "a")))).expect("continues");
        assert_eq!(versions["a"], StreamVersion(3));
        assert_eq!(versions["b"], StreamVersion(1));
    }

    #[test]
    fn refuses_gaps_version_jumps_and_repeated_ids() {
        let none = |_: &str| Ok(StreamVersion::NONE);
        assert!(check_import(&[event(2, "a", 1)], GlobalPosition::START, none).is_err(), "position gap");
        assert!(check_import(&[event(1, "a", 2)], GlobalPosition::START, none).is_err(), "version gap");
        let mut twice = [event(1, "a", 1), event(2, "a", 2)];
        twice[1].event_id = twice[0].event_id;
        assert!(check_import(&twice, GlobalPosition::START, none).is_err(), "repeated id");
        let mut bad = event(1, "a", 1);
        bad.data = "{".into();
        assert!(check_import(&[bad], GlobalPosition::START, none).is_err(), "bad JSON");
    }
}
