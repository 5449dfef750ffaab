//! The durable record of what a command did, so that a command id is processed once
//! whatever the caches, snapshots, restarts or copies (`docs/design.md`, promise 9).
//!
//! Nothing here is kept beside the log: the log *is* the record, so an export, an
//! import or a replay of any prefix carries exactly the outcomes of that prefix.
//!
//! * A success is its events. A command with an id of the caller's choosing (an
//!   Idempotency-Key, a process manager's derived id) appends events whose ids derive
//!   from the command id ([`event_id`]), so its first event is found by id.
//! * A domain failure of such a command is one event of type [`FAILURE_TYPE`], with
//!   the same first event id, in the aggregate's failure stream ([`failure_stream`]).
//!   It is appended in one atomic batch with an empty append that checks the
//!   aggregate's stream is still at the version the command was decided on: a
//!   failure is recorded only for the state it was decided on, so a concurrent
//!   success of the same command (decided on another state) and its failure cannot
//!   both be stored.
//! * Streams whose id starts with `$` are the framework's own ([`is_system_stream`]);
//!   subscriptions and inline projections never hand their events to consumers.
//!
//! A repeat is answered from `find`: the original success (the version it reached)
//! or the original typed failure — unless the repeat carries another request's
//! fingerprint (`same_request`): then it is refused, since one id cannot name two
//! commands.

use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::event_store::{EventStore, StoreError};
use crate::stream::{Direction, StreamVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The type name of a recorded command failure.
pub const FAILURE_TYPE: &str = "$CommandFailed";

/// Whether a stream is the framework's own bookkeeping rather than application events.
pub fn is_system_stream(stream_id: &str) -> bool {
    stream_id.starts_with('$')
}

/// The stream holding the recorded failures of commands to `stream_id`.
pub fn failure_stream(stream_id: &str) -> String {
    format!("$failed-{stream_id}")
}

/// The id of the `index`th event a command with a caller-chosen id appends (its
/// failure record takes index 0 too: one command, one first outcome).
pub fn event_id(command_id: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&command_id, &(index as u64).to_be_bytes())
}

/// What a recorded failure holds.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Failure<E> {
    /// The command's type name.
    command: String,
    /// The aggregate's error, as its serde form.
    error: E,
    /// Its message, for people reading the log.
    message: String,
}

/// Whether a repeat of a command id comes from the request its outcome was recorded
/// for. Only two fingerprints that are both known can differ: commands recorded
/// without one (or repeated without one) are taken to be the same.
pub(crate) fn same_request(asked: Option<Uuid>, recorded: Option<Uuid>) -> bool {
    match (asked, recorded) {
        (Some(asked), Some(recorded)) => asked == recorded,
        _ => true,
    }
}

/// A command's first outcome as the log records it, with the fingerprint of the
/// request it was recorded for.
#[derive(Debug)]
pub(crate) struct Found<E> {
    pub(crate) recorded: Recorded<E>,
    pub(crate) fingerprint: Option<Uuid>,
}

/// A command's first outcome, as the log records it.
#[derive(Debug)]
pub(crate) enum Recorded<E> {
    /// It appended events; the stream reached this version with them.
    Succeeded(StreamVersion),
    /// The aggregate refused it with this error.
    Failed(E),
}

/// The failure record of `command` refused with `error`.
pub(crate) fn failure_event<E: Serialize + std::fmt::Display>(
    command_id: Uuid,
    command: &str,
    error: &E,
    metadata: &Metadata,
) -> Result<NewEvent, serde_json::Error> {
    let failure = Failure { command: command.to_owned(), error, message: error.to_string() };
    Ok(NewEvent {
        event_id: event_id(command_id, 0),
        event_type: FAILURE_TYPE.to_owned(),
        data: serde_json::to_string(&failure)?,
        metadata: metadata.clone(),
    })
}

/// Why a recorded outcome could not be read back.
fn unreadable(event: &RecordedEvent, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("outcome of command recorded as event {} is unreadable: {why}", event.event_id))
}

/// The first outcome of `command_id`, if the log has one.
pub(crate) async fn find<S: EventStore, E: DeserializeOwned>(
    store: &S,
    command_id: Uuid,
) -> Result<Option<Found<E>>, StoreError> {
    let Some(first) = store.read_event(event_id(command_id, 0)).await? else { return Ok(None) };
    let fingerprint = first.metadata.fingerprint;
    if first.event_type == FAILURE_TYPE {
        let failure: Failure<E> = serde_json::from_str(&first.data).map_err(|e| unreadable(&first, e))?;
        return Ok(Some(Found { recorded: Recorded::Failed(failure.error), fingerprint }));
    }
    // A command appends its events together, so they follow the first one.
    let mut version = first.stream_version;
    let following = store.read_stream(&first.stream_id, version.next(), Direction::Forward, 64).await?;
    for event in following.iter().take_while(|e| e.metadata.command() == Some(command_id)) {
        version = event.stream_version;
    }
    Ok(Some(Found { recorded: Recorded::Succeeded(version), fingerprint }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_store::StreamAppend;
    use crate::memory_store::MemoryStore;
    use crate::stream::ExpectedVersion;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize, thiserror::Error)]
    #[error("refused: {0}")]
    struct Refused(u32);

    #[tokio::test]
    async fn a_recorded_failure_reads_back_as_the_typed_error() {
        let store = MemoryStore::new();
        let command = Uuid::from_u128(7);
        let record = failure_event(command, "Withdraw", &Refused(3), &Metadata::default()).expect("encode");
        let stream = failure_stream("account-1");
        store.append(&stream, ExpectedVersion::Any, vec![record]).await.expect("append");
        assert!(is_system_stream(&stream));
        match find::<_, Refused>(&store, command).await.expect("find").map(|found| found.recorded) {
            Some(Recorded::Failed(error)) => assert_eq!(error, Refused(3)),
            other => panic!("expected the failure, got {other:?}"),
        }
        assert!(same_request(None, Some(command)) && same_request(Some(command), None));
        assert!(same_request(Some(command), Some(command)) && !same_request(Some(command), Some(Uuid::nil())));
        assert!(find::<_, Refused>(&store, Uuid::from_u128(8)).await.expect("find").is_none());
    }

    #[tokio::test]
    async fn a_success_reads_back_as_the_version_its_last_event_reached() {
        let store = MemoryStore::new();
        let command = Uuid::from_u128(9);
        let metadata = Metadata { causation_id: Some(command), ..Metadata::default() };
        let event = |i| NewEvent {
            event_id: event_id(command, i),
            event_type: "Happened".into(),
            data: "{}".into(),
            metadata: metadata.clone(),
        };
        let other = NewEvent { event_id: Uuid::now_v7(), ..event(5) };
        store
            .append_batch(vec![StreamAppend {
                stream_id: "s".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![event(0), event(1)],
            }])
            .await
            .expect("append");
        store
            .append("s", ExpectedVersion::Any, vec![NewEvent { metadata: Metadata::default(), ..other }])
            .await
            .expect("append");
        match find::<_, Refused>(&store, command).await.expect("find").map(|found| found.recorded) {
            Some(Recorded::Succeeded(version)) => assert_eq!(version, StreamVersion(2)),
            other => panic!("expected the success, got {other:?}"),
        }
    }
}
