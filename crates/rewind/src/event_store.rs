//! The write model's contract: append-only streams plus one global order.
//!
//! Every backend (memory, SQLite, PostgreSQL) implements [`EventStore`] and passes
//! the same conformance suite (`rewind::conformance`, behind the `conformance` feature). The promises:
//!
//! * An append is atomic and checked against its [`ExpectedVersion`]; a mismatch is
//!   [`StoreError::Conflict`] and writes nothing.
//! * An append returns only once its events are durable (for the durable backends).
//! * Re-appending events whose ids are already stored, in the same stream and order,
//!   is reported as [`AppendOutcome::AlreadyAppended`] and writes nothing.
//! * Global positions increase along the global order, and a reader that follows
//!   them never skips a committed event, however writers interleave.

use crate::envelope::{NewEvent, RecordedEvent};
use crate::stream::{Direction, ExpectedVersion, GlobalPosition, StreamVersion};
use chrono::{DateTime, Utc};
use std::future::Future;
use tokio::sync::watch;
use uuid::Uuid;

/// A store error. `Conflict` stays its own variant so callers can retry on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("stream `{stream}` expected {expected} but is at version {actual}")]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked.
        actual: StreamVersion,
    },
    /// Some of the appended event ids are already stored, but not as this exact
    /// append (another stream, another order, or only some of them); nothing was written.
    #[error("event {event_id} is already stored elsewhere; nothing was appended to `{stream}`")]
    DuplicateEvent {
        /// The stream appended to.
        stream: String,
        /// The first offending id.
        event_id: Uuid,
    },
    /// The request itself is unusable (empty stream id, a batch naming a stream twice, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store holds data this version cannot read (a newer schema, corrupt rows).
    #[error("store data unreadable: {0}")]
    Corrupt(String),
    /// The store was closed or its writer stopped.
    #[error("event store is closed")]
    Closed,
    /// The backend cannot take the request now and took none of it: it could not be
    /// reached (no connection could be made, or none in time), or its disk is full.
    /// An append that fails so was not written. Transient.
    #[error("event store unavailable, nothing was written: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend failed (I/O, connection, SQL). Whether the append happened is unknown
    /// unless the backend says otherwise; read the stream to find out.
    #[error("event store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(error))
    }
}

/// Whether an append wrote events or found them already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were written by this append.
    Appended,
    /// Every event id was already stored as this append; nothing was written.
    AlreadyAppended,
}

/// What a successful append reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Written now, or found already written.
    pub outcome: AppendOutcome,
    /// The stream's version after its last appended event (for `AlreadyAppended`: the
    /// version of the last of the given events).
    pub stream_version: StreamVersion,
    /// Position of the first appended event (`START` when no events were given).
    pub first_position: GlobalPosition,
    /// Position of the last appended event (`START` when no events were given).
    pub last_position: GlobalPosition,
}

/// One stream's part of an atomic multi-stream append.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// The stream.
    pub stream_id: String,
    /// Checked as in [`EventStore::append`].
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// Narrows a read of the global order. Positions keep their global values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only streams whose id starts with this.
    pub stream_prefix: Option<String>,
    /// Only these event types (empty = all).
    pub event_types: Vec<String>,
}

impl EventFilter {
    /// All events.
    pub fn all() -> EventFilter {
        EventFilter::default()
    }

    /// Only streams whose id starts with `prefix` (an aggregate's, e.g. `order-`).
    ///
    /// ```
    /// let removals = rewind::EventFilter::all().prefix("order-").types(["product_removed_from_order"]);
    /// assert!(removals.matches("order-7", "product_removed_from_order"));
    /// assert!(!removals.matches("order-7", "product_added_to_order"));
    /// assert!(!removals.matches("user-7", "product_removed_from_order"));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> EventFilter {
        self.stream_prefix = Some(prefix.into());
        self
    }

    /// Only these event types (their stored names).
    pub fn types<T: Into<String>>(mut self, types: impl IntoIterator<Item = T>) -> EventFilter {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the filter lets everything through.
    pub fn is_all(&self) -> bool {
        self.stream_prefix.is_none() && self.event_types.is_empty()
    }

    /// Whether an event passes.
    pub fn matches(&self, stream_id: &str, event_type: &str) -> bool {
        self.stream_prefix.as_deref().is_none_or(|p| stream_id.starts_with(p))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// One stream, as [`EventStore::list_streams`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamInfo {
    /// The stream's id.
    pub stream_id: String,
    /// Its current version (how many events it holds).
    pub version: StreamVersion,
}

/// An aggregate's state at some version, saved to shorten reloads of long streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: String,
    /// The stream version the state includes.
    pub version: StreamVersion,
    /// What wrote it (aggregate name and snapshot version); a reader ignores other tags.
    pub tag: String,
    /// The state as JSON text.
    pub data: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
}

/// The event store contract. See the module docs for the promises.
///
/// Methods return `impl Future + Send` so the store can be shared across tasks;
/// implementations write them as `async fn`.
///
/// Appending to a stream and reading it back, on the in-memory store:
///
/// ```
/// use rewind::testing::new_event;
/// use rewind::{Direction, EventFilter, EventStore, ExpectedVersion, MemoryStore, StoreError, StreamVersion};
/// use serde_json::json;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let opened = new_event("AccountOpened", json!({ "owner": "ada" }));
/// let deposited = new_event("MoneyDeposited", json!({ "amount": 5 }));
/// let result = store.append("account-1", ExpectedVersion::NoStream, vec![opened, deposited]).await.unwrap();
/// assert_eq!(result.stream_version, StreamVersion(2));
///
/// let events = store.read_stream("account-1", StreamVersion(1), Direction::Forward, 10).await.unwrap();
/// let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
/// assert_eq!(types, ["AccountOpened", "MoneyDeposited"]);
/// assert_eq!(events[1].position, result.last_position);
///
/// // The stream is no longer new: the same expectation now conflicts, writing nothing.
/// let again = store.append("account-1", ExpectedVersion::NoStream, vec![new_event("AccountOpened", json!({}))]).await;
/// assert!(matches!(again, Err(StoreError::Conflict { .. })));
/// assert_eq!(store.read_all(rewind::GlobalPosition::START, 10, &EventFilter::all()).await.unwrap().len(), 2);
/// # });
/// ```
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one stream if it is at `expected`.
    ///
    /// On `Err` nothing was written, except for [`StoreError::Backend`], where the
    /// outcome is unknown. Appending no events only checks the expected version.
    /// Dropping the returned future does not cancel an append the store has already
    /// taken on: it may still commit, so re-send with the same event ids to find out.
    ///
    /// Provided as a batch of one; a backend overrides it only if it has a faster path.
    fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        let batch = self.append_batch(vec![StreamAppend { stream_id: stream_id.to_owned(), expected, events }]);
        async move {
            let mut results = batch.await?;
            debug_assert_eq!(results.len(), 1, "one result per append");
            results.pop().ok_or_else(|| StoreError::Corrupt("the store answered an append without a result".into()))
        }
    }

    /// Appends to several streams atomically: all are written or none is.
    /// A stream may appear only once per batch. Results come in the order given.
    /// An unusable request ([`StoreError::Invalid`]) is refused before any append in
    /// it is checked; otherwise the first failing append, in order, decides the error.
    fn append_batch(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<Vec<AppendResult>, StoreError>> + Send;

    /// Reads up to `limit` events of one stream starting at `from` (inclusive).
    /// Backward reads from [`StreamVersion::END`] start at the last event.
    fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Reads up to `limit` events of the global order from position `from` (inclusive)
    /// upward, keeping only those that pass `filter`. The global order holds the
    /// framework's own records too, in streams whose id starts with `$` (recorded
    /// command refusals, [`crate::command_outcome`]); subscriptions never hand them
    /// to consumers, and a reader of the application's events passes them over.
    fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The stream's current version ([`StreamVersion::NONE`] if it does not exist).
    fn stream_version(&self, stream_id: &str) -> impl Future<Output = Result<StreamVersion, StoreError>> + Send;

    /// The event stored with this id, wherever it is (`None` if there is none). An
    /// index probe: the aggregate runtime asks it to find a command's first outcome.
    fn read_event(&self, event_id: Uuid) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send;

    /// The position of the last committed event that a reader may safely follow to.
    fn head_position(&self) -> impl Future<Output = Result<GlobalPosition, StoreError>> + Send;

    /// The head once every append acknowledged before this call, by any process, is
    /// readable in the global order: what a tool that copies or rebuilds "everything
    /// so far" reads up to. On the memory and SQLite stores that is the head at once;
    /// on PostgreSQL it waits for the transactions running at the call to end (see
    /// `rewind_postgres`'s writer).
    fn settled_head(&self) -> impl Future<Output = Result<GlobalPosition, StoreError>> + Send {
        self.head_position()
    }

    /// A receiver that changes whenever new events become readable; its value is the
    /// head position. Wakes subscribers without polling.
    fn watch_head(&self) -> watch::Receiver<GlobalPosition>;

    /// Saves a snapshot, replacing an older one of the same stream (a snapshot older
    /// than the stored one is ignored).
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot of a stream, if any.
    fn load_snapshot(&self, stream_id: &str) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Up to `limit` streams whose id starts with `prefix`, in id order, starting after
    /// the id `after` (`""` for the first page). For operators' tools, not hot paths.
    fn list_streams(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StreamInfo>, StoreError>> + Send;

    /// Writes events exactly as another store recorded them, keeping ids, stream
    /// versions, global positions and timestamps (see [`crate::import`]). They must
    /// continue this store ([`crate::check_import`]); otherwise the call fails with
    /// [`StoreError::Invalid`] and writes nothing. Atomic and durable like an append.
    /// Returns the new head.
    fn import(&self, events: Vec<RecordedEvent>) -> impl Future<Output = Result<GlobalPosition, StoreError>> + Send;
}

/// A shared store is a store: `Application::builder(Arc::clone(&store))` keeps the
/// caller's handle usable.
impl<S: EventStore> EventStore for std::sync::Arc<S> {
    fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        S::append(self, stream_id, expected, events)
    }
    fn append_batch(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<Vec<AppendResult>, StoreError>> + Send {
        S::append_batch(self, appends)
    }
    fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        S::read_stream(self, stream_id, from, direction, limit)
    }
    fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        S::read_all(self, from, limit, filter)
    }
    fn stream_version(&self, stream_id: &str) -> impl Future<Output = Result<StreamVersion, StoreError>> + Send {
        S::stream_version(self, stream_id)
    }
    fn read_event(&self, event_id: Uuid) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send {
        S::read_event(self, event_id)
    }
    fn head_position(&self) -> impl Future<Output = Result<GlobalPosition, StoreError>> + Send {
        S::head_position(self)
    }
    fn settled_head(&self) -> impl Future<Output = Result<GlobalPosition, StoreError>> + Send {
        S::settled_head(self)
    }
    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        S::watch_head(self)
    }
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::save_snapshot(self, snapshot)
    }
    fn load_snapshot(&self, stream_id: &str) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        S::load_snapshot(self, stream_id)
    }
    fn list_streams(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StreamInfo>, StoreError>> + Send {
        S::list_streams(self, prefix, after, limit)
    }
    fn import(&self, events: Vec<RecordedEvent>) -> impl Future<Output = Result<GlobalPosition, StoreError>> + Send {
        S::import(self, events)
    }
}
