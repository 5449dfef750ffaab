//! The decisions of one group commit: which appends are written, at which versions
//! and positions, and what each caller is told.
//!
//! Pure logic, no I/O: the writer takes the group's positions and reads the state it
//! needs (current versions of the streams involved, which event ids are already
//! stored), then runs each pending request through [`Group::apply`] in
//! arrival order. Each request is checked against the database state plus everything
//! the requests before it in the same group will write, exactly as if they had
//! committed one by one, so the semantics are those of `rewind::MemoryStore`:
//! conflicts and duplicates fail their request alone, and a request (an
//! `append_batch`) is written whole or not at all.

use crate::codec::EncodedEvent;
use rewind::{AppendOutcome, AppendResult, ExpectedVersion, GlobalPosition, StoreError, StreamVersion};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One stream's part of a request, encoded and checked for shape by the caller.
#[derive(Debug)]
pub(crate) struct PreparedAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<EncodedEvent>,
}

/// Where a stored event sits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub stream_id: &'a str,
    pub version: u64,
    pub position: u64,
}

/// An append the group will write: `events` of `request`'s append `append`, from
/// `first_version` and `first_position` on (both dense).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write {
    pub request: usize,
    pub append: usize,
    pub first_version: u64,
    pub first_position: u64,
}

/// The state one group commit decides against.
pub(crate) struct Group<'a> {
    /// The position the next written event gets.
    next_position: u64,
    /// Current version of every stream any request names (absent = 0).
    versions: HashMap<&'a str, u64>,
    /// Every stored or to-be-written event id among the group's ids.
    ids: HashMap<Uuid, Stored<'a>>,
    /// What to insert, in position order.
    pub writes: Vec<Write>,
}

impl<'a> Group<'a> {
    /// A group over a database whose last position is `head`.
    pub(crate) fn new(
        head: u64,
        versions: impl IntoIterator<Item = (&'a str, u64)>,
        stored: impl IntoIterator<Item = (Uuid, Stored<'a>)>,
    ) -> Group<'a> {
        Group {
            next_position: head + 1,
            versions: versions.into_iter().collect(),
            ids: stored.into_iter().collect(),
            writes: Vec::new(),
        }
    }

    /// The position after the last written event.
    pub(crate) fn head(&self) -> u64 {
        self.next_position - 1
    }

    /// Decides one request (`request` is its index in the group). On `Err` the request
    /// writes nothing and the group's state is unchanged.
    pub(crate) fn apply(
        &mut self,
        request: usize,
        appends: &'a [PreparedAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        let mut plan = Vec::with_capacity(appends.len());
        for append in appends {
            plan.push(self.check(append)?);
        }
        if appends.len() > 1 {
            let mut ids = HashSet::new();
            for (append, done) in appends.iter().zip(&plan) {
                for event in append.events.iter().filter(|_| done.is_none()) {
                    if !ids.insert(event.event_id) {
                        return Err(duplicate(append, event.event_id));
                    }
                }
            }
        }
        let results = appends
            .iter()
            .enumerate()
            .zip(plan)
            .map(|((index, append), done)| done.unwrap_or_else(|| self.write(request, index, append)))
            .collect();
        Ok(results)
    }

    fn version(&self, stream_id: &str) -> u64 {
        self.versions.get(stream_id).copied().unwrap_or(0)
    }

    /// `Some` if the append is already stored, `None` if it is to be written.
    fn check(&self, append: &'a PreparedAppend) -> Result<Option<AppendResult>, StoreError> {
        if let Some(first) = append.events.first() {
            if let Some(stored) = self.ids.get(&first.event_id) {
                return self.already_appended(append, *stored).map(Some);
            }
            let mut seen = HashSet::with_capacity(append.events.len());
            for event in &append.events {
                if self.ids.contains_key(&event.event_id) || !seen.insert(event.event_id) {
                    return Err(duplicate(append, event.event_id));
                }
            }
        }
        let actual = StreamVersion(self.version(&append.stream_id));
        if !append.expected.accepts(actual) {
            return Err(StoreError::Conflict { stream: append.stream_id.clone(), expected: append.expected, actual });
        }
        Ok(None)
    }

    /// The first id is stored: succeed only if all are, as exactly this append.
    fn already_appended(&self, append: &PreparedAppend, first: Stored<'a>) -> Result<AppendResult, StoreError> {
        if first.stream_id != append.stream_id {
            return Err(duplicate(append, append.events[0].event_id));
        }
        let mut last = first;
        for event in &append.events[1..] {
            match self.ids.get(&event.event_id) {
                Some(s)
                    if s.position > last.position
                        && s.stream_id == append.stream_id
                        && s.version == last.version + 1 =>
                {
                    last = *s
                }
                _ => return Err(duplicate(append, event.event_id)),
            }
        }
        Ok(AppendResult {
            outcome: AppendOutcome::AlreadyAppended,
            stream_version: StreamVersion(last.version),
            first_position: GlobalPosition(first.position),
            last_position: GlobalPosition(last.position),
        })
    }

    fn write(&mut self, request: usize, index: usize, append: &'a PreparedAppend) -> AppendResult {
        let current = self.version(&append.stream_id);
        let count = append.events.len() as u64;
        if count == 0 {
            return AppendResult {
                outcome: AppendOutcome::Appended,
                stream_version: StreamVersion(current),
                first_position: GlobalPosition::START,
                last_position: GlobalPosition::START,
            };
        }
        let first_position = self.next_position;
        for (offset, event) in (0..).zip(&append.events) {
            let stored = Stored {
                stream_id: &append.stream_id,
                version: current + 1 + offset,
                position: first_position + offset,
            };
            self.ids.insert(event.event_id, stored);
        }
        self.writes.push(Write { request, append: index, first_version: current + 1, first_position });
        self.versions.insert(&append.stream_id, current + count);
        self.next_position += count;
        AppendResult {
            outcome: AppendOutcome::Appended,
            stream_version: StreamVersion(current + count),
            first_position: GlobalPosition(first_position),
            last_position: GlobalPosition(first_position + count - 1),
        }
    }
}

fn duplicate(append: &PreparedAppend, event_id: Uuid) -> StoreError {
    StoreError::DuplicateEvent { stream: append.stream_id.clone(), event_id }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::EncodedEvent;
    use rewind::{Metadata, NewEvent};

    fn events(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|_| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "T".into(),
                data: "{}".into(),
                metadata: Metadata::default(),
            })
            .collect()
    }

    fn append(stream: &str, expected: ExpectedVersion, events: &[NewEvent]) -> Vec<PreparedAppend> {
        let events = events.iter().cloned().map(|e| EncodedEvent::encode(e).expect("valid")).collect();
        vec![PreparedAppend { stream_id: stream.into(), expected, events }]
    }

    #[test]
    fn later_requests_see_earlier_writes_of_the_same_group() {
        let batch = events(2);
        let first = append("s", ExpectedVersion::NoStream, &batch);
        let again = append("s", ExpectedVersion::NoStream, &batch);
        let conflicting = append("s", ExpectedVersion::NoStream, &events(1));
        let next = append("s", ExpectedVersion::Exact(StreamVersion(2)), &events(1));
        let mut group = Group::new(10, [("s", 0)], []);
        let written = group.apply(0, &first).expect("first");
        assert_eq!((written[0].first_position.0, written[0].last_position.0, written[0].stream_version.0), (11, 12, 2));
        let repeated = group.apply(1, &again).expect("idempotent");
        assert_eq!(repeated[0].outcome, AppendOutcome::AlreadyAppended);
        assert_eq!(repeated[0].last_position.0, 12);
        assert!(matches!(group.apply(2, &conflicting), Err(StoreError::Conflict { actual: StreamVersion(2), .. })));
        assert_eq!(group.apply(3, &next).expect("next")[0].first_position.0, 13);
        assert_eq!(group.writes.len(), 2);
        assert_eq!((group.writes[1].request, group.writes[1].first_version), (3, 3));
        assert_eq!(group.head(), 13);
    }

    #[test]
    fn stored_ids_elsewhere_are_duplicates() {
        let batch = events(1);
        let moved = append("b", ExpectedVersion::Any, &batch);
        let stored = Stored { stream_id: "a", version: 1, position: 1 };
        let mut group = Group::new(1, [("b", 0)], [(batch[0].event_id, stored)]);
        assert!(matches!(group.apply(0, &moved), Err(StoreError::DuplicateEvent { .. })));
        assert!(group.writes.is_empty());
    }

    #[test]
    fn a_failing_part_fails_the_whole_request() {
        let mut request = append("a", ExpectedVersion::NoStream, &events(2));
        request.extend(append("b", ExpectedVersion::StreamExists, &events(1)));
        let mut group = Group::new(0, [], []);
        assert!(matches!(group.apply(0, &request), Err(StoreError::Conflict { .. })));
        assert!(group.writes.is_empty());
        assert_eq!(group.head(), 0);
    }
}
