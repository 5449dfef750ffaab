//! Writing events exactly as another store recorded them: what export/import and
//! replay copy between stores.
//!
//! An import keeps every envelope field (event id, stream and version, global
//! position, type, data, metadata, timestamp), so a copy is indistinguishable from
//! its source. It may only *continue* a store: positions increase from the store's
//! head (holes are kept: a PostgreSQL store leaves one where a transaction rolled
//! back after taking positions) and each stream's versions run on densely from the
//! stream's current version, so every promise of [`crate::EventStore`] (increasing
//! positions, dense versions, unique ids) still holds afterwards. [`ImportCheck`] is the one place that rule is
//! decided; each store applies it ([`check_import`]) inside its own write transaction.

use crate::envelope::RecordedEvent;
use crate::event_store::StoreError;
use crate::stream::{GlobalPosition, StreamVersion};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The import rule, applied one event at a time: positions increase from the head
/// (holes allowed), each stream's versions from its current version, ids do not repeat, stream
/// ids are not empty and data is JSON. Stores use it through [`check_import`]; a tool
/// checking a whole export file line by line uses it directly.
#[derive(Debug)]
pub struct ImportCheck {
    /// The position the next event must be above.
    last: GlobalPosition,
    versions: HashMap<String, StreamVersion>,
    ids: HashSet<Uuid>,
}

impl ImportCheck {
    /// A check for events continuing a store whose head is `head`.
    pub fn new(head: GlobalPosition) -> ImportCheck {
        ImportCheck { last: head, versions: HashMap::new(), ids: HashSet::new() }
    }

    /// Checks the next event, asking `version_of` for its stream's current version
    /// the first time the stream is seen. [`StoreError::Invalid`] says what is wrong.
    pub fn check(
        &mut self,
        event: &RecordedEvent,
        version_of: impl FnOnce(&str) -> Result<StreamVersion, StoreError>,
    ) -> Result<(), StoreError> {
        let invalid = |why: String| StoreError::Invalid(format!("cannot import event {}: {why}", event.event_id));
        if event.position <= self.last {
            return Err(invalid(format!("position {} is not after {}", event.position, self.last)));
        }
        if event.stream_id.is_empty() {
            return Err(invalid("its stream id is empty".into()));
        }
        if self.ids.contains(&event.event_id) {
            return Err(invalid("its id appears twice".into()));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_err() {
            return Err(invalid("its data is not JSON".into()));
        }
        let current = match self.versions.get(&event.stream_id) {
            Some(version) => *version,
            None => version_of(&event.stream_id)?,
        };
        if event.stream_version != current.next() {
            return Err(invalid(format!(
                "it has version {} of stream `{}`, which is at version {current}",
                event.stream_version, event.stream_id
            )));
        }
        self.last = event.position;
        self.ids.insert(event.event_id);
        self.versions.insert(event.stream_id.clone(), event.stream_version);
        Ok(())
    }

    /// Each stream's version after the events checked so far.
    pub fn into_versions(self) -> HashMap<String, StreamVersion> {
        self.versions
    }
}

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
    let mut check = ImportCheck::new(head);
    for event in events {
        check.check(event, &mut version_of)?;
    }
    Ok(check.into_versions())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;
    use chrono::Utc;

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
    fn keeps_holes_in_positions_but_never_goes_back() {
        let none = |_: &str| Ok(StreamVersion::NONE);
        assert!(check_import(&[event(2, "a", 1), event(5, "b", 1)], GlobalPosition::START, none).is_ok(), "holes");
        assert!(check_import(&[event(3, "a", 1)], GlobalPosition(3), none).is_err(), "at the head");
        assert!(check_import(&[event(5, "a", 1), event(4, "b", 1)], GlobalPosition::START, none).is_err(), "back");
    }

    #[test]
    fn refuses_version_jumps_and_repeated_ids() {
        let none = |_: &str| Ok(StreamVersion::NONE);
        assert!(check_import(&[event(1, "a", 2)], GlobalPosition::START, none).is_err(), "version gap");
        let mut twice = [event(1, "a", 1), event(2, "a", 2)];
        twice[1].event_id = twice[0].event_id;
        assert!(check_import(&twice, GlobalPosition::START, none).is_err(), "repeated id");
        let mut bad = event(1, "a", 1);
        bad.data = "{".into();
        assert!(check_import(&[bad], GlobalPosition::START, none).is_err(), "bad JSON");
    }
}
