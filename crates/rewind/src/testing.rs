//! Given / when / then tests for aggregates, with no store and no runtime.
//!
//! To run a whole application in tests, build it on a
//! [`MemoryStore`](crate::MemoryStore): it keeps the same semantics as the durable stores.

use crate::aggregate::{Aggregate, Execute};
use crate::event::{decode_event, encode_event};
use std::fmt::Debug;

/// Starts a test from the events already recorded.
///
/// ```
/// # use rewind::{Aggregate, Execute};
/// # #[derive(Debug, Default, Clone)] struct Counter { value: u64 }
/// # #[derive(Debug)] struct Add(u64);
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] enum Ev { Added { by: u64 } }
/// # impl rewind::Event for Ev {}
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)] enum CounterError { #[error("overflow")] Overflow }
/// # impl Aggregate for Counter {
/// #     const NAME: &'static str = "counter"; type Event = Ev; type Error = CounterError;
/// #     fn apply(&mut self, Ev::Added { by }: &Ev) { self.value += by }
/// # }
/// # impl Execute<Add> for Counter {
/// #     fn execute(&self, Add(by): &Add) -> Result<Vec<Ev>, CounterError> {
/// #         self.value.checked_add(*by).ok_or(CounterError::Overflow)?;
/// #         Ok(vec![Ev::Added { by: *by }])
/// #     }
/// # }
/// use rewind::testing::given;
///
/// given::<Counter>([Ev::Added { by: 1 }]).when(Add(2)).then_events([Ev::Added { by: 2 }]);
/// given::<Counter>([Ev::Added { by: u64::MAX }]).when(Add(1)).then_error(CounterError::Overflow);
/// ```
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        state.apply(&event);
    }
    Given { state }
}

/// The state built from the given events.
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the given state.
    pub fn when<C>(self, command: C) -> When<A>
    where
        A: Execute<C>,
    {
        let result = self.state.execute(&command);
        When { state: self.state, result }
    }

    /// The state itself, for assertions on `apply`.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// The outcome of one command.
pub struct When<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A>
where
    A::Event: PartialEq + Debug,
    A::Error: Debug,
{
    /// Asserts the command produced exactly these events, and that each survives a
    /// round trip through its stored form. Returns the state after applying them.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let events = match self.result {
            Ok(events) => events,
            Err(error) => panic!("expected events {expected:?}, got error {error:?}"),
        };
        assert_eq!(events, expected, "unexpected events");
        let mut state = self.state;
        for event in &events {
            let encoded = encode_event(event).expect("event encodes");
            let decoded: A::Event = decode_event(&encoded.event_type, &encoded.data).expect("event decodes");
            assert_eq!(&decoded, event, "event does not survive its stored form");
            state.apply(event);
        }
        state
    }

    /// Asserts the command failed with exactly this error.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(error) => assert_eq!(error, expected, "unexpected error"),
        }
    }
}

/// An event as a store would record it, for testing projectors and handlers
/// without a store: version and position `position`, a fresh id, committed now.
///
/// ```
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// enum Ev { Opened { id: u32 } }
/// impl rewind::Event for Ev {}
///
/// let recorded = rewind::testing::recorded("account-1", 3, &Ev::Opened { id: 7 }).unwrap();
/// assert_eq!((recorded.event_type.as_str(), recorded.position.0), ("Opened", 3));
/// ```
pub fn recorded<E: crate::Event>(
    stream_id: &str,
    position: u64,
    event: &E,
) -> Result<crate::RecordedEvent, crate::EventError> {
    let encoded = encode_event(event)?;
    Ok(crate::RecordedEvent {
        event_id: uuid::Uuid::now_v7(),
        stream_id: stream_id.to_owned(),
        stream_version: crate::StreamVersion(position),
        position: crate::GlobalPosition(position),
        event_type: encoded.event_type,
        data: encoded.data,
        metadata: crate::Metadata::default(),
        created_at: chrono::Utc::now(),
    })
}

/// A new event of type `event_type` with `data`, a fresh id and no metadata, for
/// appending in tests.
///
/// ```
/// let event = rewind::testing::new_event("Happened", serde_json::json!({ "n": 1 }));
/// assert_eq!((event.event_type.as_str(), event.data.as_str()), ("Happened", r#"{"n":1}"#));
/// ```
pub fn new_event(event_type: &str, data: serde_json::Value) -> crate::NewEvent {
    crate::NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event_type.to_owned(),
        data: data.to_string(),
        metadata: crate::Metadata::default(),
    }
}
