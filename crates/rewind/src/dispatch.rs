//! What a dispatch takes besides its command, and what it gives back.
//!
//! A dispatch answers `Ok` only after the store acknowledged the append (durable on
//! the durable backends). Errors keep the aggregate's own error type in
//! [`DispatchError::Domain`], so callers match on domain errors without downcasting.

use crate::envelope::RecordedEvent;
use crate::event::EventError;
use crate::event_store::StoreError;
use crate::middleware::Rejection;
use crate::stream::{GlobalPosition, StreamVersion};
use std::time::Duration;
use uuid::Uuid;

/// How long `dispatch` waits for the read side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Return once the events are stored.
    #[default]
    Eventual,
    /// Also wait until every subscription started with
    /// [`SubscriptionOptions::strong`](crate::SubscriptionOptions::strong) has processed them.
    Strong,
    /// Also wait until these named handlers have processed them.
    Handlers(Vec<String>),
}

/// What a dispatch reports beyond the version and position (which it always reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Returning {
    /// Just the version and position.
    #[default]
    Nothing,
    /// Also the recorded events the command appended.
    Events,
    /// Also the aggregate's state after the command.
    State,
}

/// Options for [`Application::dispatch_with`](crate::Application::dispatch_with).
///
/// ```
/// use rewind::{Consistency, DispatchOptions, Returning};
/// use std::time::Duration;
///
/// let options = DispatchOptions::new()
///     .command_id(uuid::Uuid::now_v7())
///     .consistency(Consistency::Strong)
///     .timeout(Duration::from_secs(5))
///     .returning(Returning::State)
///     .metadata("user_id", "u-42");
/// assert_eq!(options.returning, Returning::State);
/// ```
#[derive(Debug, Clone, Default)]
pub struct DispatchOptions {
    /// The command's id. Give one to make the dispatch idempotent: dispatching the same
    /// id again appends nothing and reports the first outcome. Random by default.
    pub command_id: Option<Uuid>,
    /// A digest of the request this command was made from (an HTTP request's method,
    /// path and body). With a command id: a repeat of the id with another fingerprint
    /// is refused with [`DispatchError::CommandIdReused`] and changes nothing. Kept with
    /// the command's outcome in the log, so this holds across restarts.
    pub fingerprint: Option<Uuid>,
    /// Defaults to the id of the OpenTelemetry trace the dispatch runs in, with the
    /// `opentelemetry` feature and a traced caller (see [`crate::telemetry`]), and
    /// else to the command id (a new conversation).
    pub correlation_id: Option<Uuid>,
    /// What caused this command, if anything.
    pub causation_id: Option<Uuid>,
    /// User keys copied into every event's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// How long to wait for the read side.
    pub consistency: Consistency,
    /// Upper bound on the whole dispatch (`None` = the application's default).
    pub timeout: Option<Duration>,
    /// What to report.
    pub returning: Returning,
    /// Run the command only if the aggregate is at exactly this version (an HTTP
    /// `If-Match`); otherwise fail with [`DispatchError::WrongVersion`].
    pub expected_version: Option<StreamVersion>,
}

impl DispatchOptions {
    /// Defaults: random command id, eventual consistency, the application's timeout.
    pub fn new() -> DispatchOptions {
        DispatchOptions::default()
    }
    /// Sets the command id (see the field).
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }
    /// Sets the request fingerprint (see the field).
    pub fn fingerprint(mut self, fingerprint: Uuid) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }
    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }
    /// Sets the causation id.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }
    /// Adds one metadata key.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Sets the consistency.
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }
    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets what to report.
    pub fn returning(mut self, returning: Returning) -> Self {
        self.returning = returning;
        self
    }
    /// Requires the aggregate to be at `version` (see the field).
    pub fn expected_version(mut self, version: StreamVersion) -> Self {
        self.expected_version = Some(version);
        self
    }
}

/// A successful dispatch.
#[derive(Debug, Clone)]
pub struct Dispatched<A> {
    /// The command's id.
    pub command_id: Uuid,
    /// Its correlation id.
    pub correlation_id: Uuid,
    /// The aggregate's version after the command.
    pub version: StreamVersion,
    /// The global position of the last appended event (`None` if it appended nothing).
    pub position: Option<GlobalPosition>,
    /// True when the command id had been handled before and nothing new was appended.
    pub duplicate: bool,
    /// The appended events, with [`Returning::Events`].
    pub events: Vec<RecordedEvent>,
    /// The aggregate's state, with [`Returning::State`].
    pub state: Option<A>,
}

/// Why a dispatch failed. `E` is the aggregate's domain error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError<E: std::error::Error + 'static> {
    /// The aggregate refused the command; nothing was appended.
    #[error(transparent)]
    Domain(E),
    /// No route is registered for this command type.
    #[error("no route for command `{command}`")]
    NoRoute {
        /// The command's type name.
        command: &'static str,
    },
    /// The command's identity is empty.
    #[error("command `{command}` has an empty aggregate identity")]
    InvalidIdentity {
        /// The command's type name.
        command: &'static str,
    },
    /// Middleware halted the dispatch; nothing was appended.
    #[error(transparent)]
    Rejected(Rejection),
    /// The aggregate was not at the version the dispatch required; nothing was appended.
    #[error("expected aggregate version {expected}, but it is at {actual}")]
    WrongVersion {
        /// What the dispatch required.
        expected: StreamVersion,
        /// Where the aggregate is.
        actual: StreamVersion,
    },
    /// Other writers kept changing the aggregate; gave up after this many attempts.
    #[error("stream `{stream}` kept changing; gave up after {attempts} attempts")]
    Conflict {
        /// The aggregate's stream.
        stream: String,
        /// How many times the command was tried.
        attempts: u32,
    },
    /// The command id was used before for a command made from another request (its
    /// [`fingerprint`](DispatchOptions::fingerprint) differs); nothing was appended.
    #[error("command id {command_id} was used before for a different request")]
    CommandIdReused {
        /// The reused id.
        command_id: Uuid,
    },
    /// The dispatch did not finish in time. The command may or may not have been
    /// appended; dispatch it again with the same command id to find out safely.
    #[error("dispatch timed out after {0:?}; the outcome is unknown")]
    Timeout(Duration),
    /// `Consistency::Handlers` named a subscription that is not running; nothing was appended.
    #[error("no running subscription named `{0}` to wait for")]
    UnknownHandler(String),
    /// The events were appended, but the requested handlers had not processed them in time.
    #[error("committed at position {position}, but the read side had not caught up after {timeout:?}")]
    ConsistencyTimeout {
        /// The position of the last appended event.
        position: GlobalPosition,
        /// How long it waited.
        timeout: Duration,
    },
    /// The store could not say whether the append committed (the connection was lost
    /// after the request was sent, a sync failed after the commit). Dispatch again
    /// with the same command id: the repeat finds the first outcome if there was one,
    /// and otherwise runs the command.
    #[error("the outcome of command {command_id} is unknown ({source}); dispatch it again with the same command id")]
    OutcomeUnknown {
        /// The command's id, to repeat it with.
        command_id: Uuid,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// An event or snapshot could not be encoded or decoded.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
