//! Aggregates: the consistency boundary of the write side.
//!
//! An aggregate decides (`execute`) and evolves (`apply`), both pure and synchronous:
//! no I/O, no clock, no randomness, so the same events always rebuild the same state.
//! Everything around it — loading, locking, appending, retrying — is the
//! [runtime's](crate::Application) job.

use crate::event::Event;

/// State plus the rules that guard it. Each command type it accepts gets an
/// [`Execute`] impl, so sending an aggregate a command it cannot handle is a
/// compile error.
///
/// ```
/// use rewind::{Aggregate, Execute};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Clone)]
/// struct Counter { value: u64 }
///
/// #[derive(Debug)]
/// struct Add(u64);
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Added { by: u64 } }
/// impl rewind::Event for CounterEvent {}
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
/// enum CounterError { #[error("overflow")] Overflow }
///
/// impl Aggregate for Counter {
///     const NAME: &'static str = "counter";
///     type Event = CounterEvent;
///     type Error = CounterError;
///
///     fn apply(&mut self, event: &CounterEvent) {
///         let CounterEvent::Added { by } = event;
///         self.value += by;
///     }
/// }
///
/// impl Execute<Add> for Counter {
///     fn execute(&self, Add(by): &Add) -> Result<Vec<CounterEvent>, CounterError> {
///         self.value.checked_add(*by).ok_or(CounterError::Overflow)?;
///         Ok(vec![CounterEvent::Added { by: *by }])
///     }
/// }
///
/// let mut counter = Counter::default();
/// for event in counter.execute(&Add(2)).unwrap() {
///     counter.apply(&event);
/// }
/// assert_eq!(counter.value, 2);
/// assert_eq!(counter.execute(&Add(u64::MAX)), Err(CounterError::Overflow));
/// ```
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// A stable name for the aggregate type (used in logs and snapshot tags).
    const NAME: &'static str;
    /// The events it emits.
    type Event: Event;
    /// Its domain errors; they reach the caller unchanged. They are serializable
    /// because a refusal of a command with a caller-chosen id is recorded in the log,
    /// so that a repeat of that command gets the same typed error back
    /// ([`crate::command_outcome`]).
    type Error: std::error::Error + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;

    /// Folds one event into the state. Must accept every event the aggregate emits.
    fn apply(&mut self, event: &Self::Event);
}

/// How an aggregate decides one command type: the events to record, none, or a
/// domain error. Pure: no I/O, clock or randomness.
///
/// One impl per command type the aggregate accepts; each decides against the
/// current state:
///
/// ```
/// use rewind::{Aggregate, Execute};
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, rewind::Event)]
/// # enum DoorEvent { Opened, Closed }
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// enum DoorError { #[error("the door is already open")] AlreadyOpen }
///
/// #[derive(Debug, Default, Clone)]
/// struct Door { open: bool }
/// impl Aggregate for Door {
///     const NAME: &'static str = "door";
///     type Event = DoorEvent;
///     type Error = DoorError;
///     fn apply(&mut self, event: &DoorEvent) { self.open = *event == DoorEvent::Opened }
/// }
///
/// struct Open;
/// struct Close;
///
/// impl Execute<Open> for Door {
///     fn execute(&self, _: &Open) -> Result<Vec<DoorEvent>, DoorError> {
///         if self.open { Err(DoorError::AlreadyOpen) } else { Ok(vec![DoorEvent::Opened]) }
///     }
/// }
/// impl Execute<Close> for Door {
///     fn execute(&self, _: &Close) -> Result<Vec<DoorEvent>, DoorError> {
///         // Closing a closed door records nothing: not every command is a change.
///         Ok(if self.open { vec![DoorEvent::Closed] } else { vec![] })
///     }
/// }
///
/// let mut door = Door::default();
/// assert_eq!(door.execute(&Close), Ok(vec![]));
/// door.apply(&door.execute(&Open).unwrap()[0]);
/// assert_eq!(door.execute(&Open), Err(DoorError::AlreadyOpen));
/// assert_eq!(door.execute(&Close), Ok(vec![DoorEvent::Closed]));
/// ```
pub trait Execute<C>: Aggregate {
    /// Decides the command against the current state.
    fn execute(&self, command: &C) -> Result<Vec<Self::Event>, Self::Error>;
}

/// The error of an aggregate that refuses nothing (`type Error = rewind::Never;`).
/// [`std::convert::Infallible`] will not do: an aggregate's error must be
/// serializable, so a refusal can be recorded for a repeat of its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}
