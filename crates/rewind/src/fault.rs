//! Transient or deterministic: the one place Rewind decides whether a failure is
//! worth retrying for ever or belongs to a subscription's error policy.
//!
//! A *transient* failure is one that trying the same thing again later may get past
//! without anyone changing code or data: the database is away, a connection was lost,
//! a lock or serialization conflict, a command whose outcome is unknown. A subscription
//! retries it for ever with capped backoff and shows it as `retrying`; it never skips
//! or dead-letters an event for it, since the event is not at fault. A *deterministic*
//! failure is the consumer's own code refusing an event (a decode error, a handler's
//! error, a process manager's command refused by the domain): it repeats on every
//! try, so the subscription's [`ErrorPolicy`](crate::ErrorPolicy) retries, skips or
//! stops.
//!
//! How a failure is told apart ([`classify`]): its chain of causes is walked from the
//! outside in, and the first link that says which it is decides:
//!
//! * [`Transient`]: a consumer or backend marked the error transient (backends wrap
//!   their database's transient errors in it: PostgreSQL's lost connections and
//!   serialization failures, SQLite's `BUSY`);
//! * [`StoreError`]: by [`StoreError::is_transient`];
//! * [`CommandFailure`]: by [`CommandFailure::transient`], set from
//!   [`DispatchError::is_transient`] when a process manager's command failed.
//!
//! A chain with none of them is the consumer's own error: deterministic. So a consumer
//! that calls some other system marks that system's outages with [`Transient`].

use crate::dispatch::DispatchError;
use crate::event_store::StoreError;
use crate::process_manager::CommandFailure;
use crate::subscription::ConsumerError;
use serde::Serialize;
use std::error::Error;

/// Which kind of failure an error is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Trying again later may succeed: retried for ever, never skipped.
    Transient,
    /// The consumer refuses the event: the subscription's error policy applies.
    Deterministic,
}

/// Marks an error as transient: the subscription retries it for ever instead of
/// applying its error policy. Shows as the error it wraps.
///
/// ```
/// use rewind::{ConsumerError, Fault, Transient, classify};
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let error: ConsumerError = Box::new(Transient::new(refused));
/// assert_eq!(classify(&*error), Fault::Transient);
/// assert_eq!(error.to_string(), "connection refused");
///
/// let own: ConsumerError = "amount must be positive".into();
/// assert_eq!(classify(&*own), Fault::Deterministic);
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Transient(pub ConsumerError);

impl Transient {
    /// Wraps `error`.
    pub fn new(error: impl Into<ConsumerError>) -> Transient {
        Transient(error.into())
    }
}

/// Whether `error` is transient or deterministic, from the first link of its chain
/// of causes that says (see the module docs); deterministic if none does.
pub fn classify(error: &(dyn Error + 'static)) -> Fault {
    let mut link = Some(error);
    while let Some(error) = link {
        if error.is::<Transient>() {
            return Fault::Transient;
        }
        if let Some(store) = error.downcast_ref::<StoreError>() {
            return fault(store.is_transient());
        }
        if let Some(failure) = error.downcast_ref::<CommandFailure>() {
            return fault(failure.transient);
        }
        link = error.source();
    }
    Fault::Deterministic
}

fn fault(transient: bool) -> Fault {
    if transient { Fault::Transient } else { Fault::Deterministic }
}

impl StoreError {
    /// Whether trying the same call again later may succeed.
    ///
    /// * Transient: [`Backend`](StoreError::Backend) (the database, a connection, I/O:
    ///   backends map what retrying cannot change to the other variants),
    ///   [`Unavailable`](StoreError::Unavailable) (the database could not be
    ///   reached), [`Closed`](StoreError::Closed) (the store or its writer is gone: nothing
    ///   about the event can be blamed, so it is never skipped for it), and
    ///   [`Conflict`](StoreError::Conflict) (another writer moved the stream; the
    ///   aggregate runtime already retries these, so one reaching a subscription
    ///   means contention that a later try rides out).
    /// * Deterministic: [`Invalid`](StoreError::Invalid),
    ///   [`DuplicateEvent`](StoreError::DuplicateEvent) and
    ///   [`Corrupt`](StoreError::Corrupt): the same request meets the same refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Backend(_) | StoreError::Unavailable(_) | StoreError::Closed | StoreError::Conflict { .. } => {
                true
            }
            StoreError::Invalid(_) | StoreError::DuplicateEvent { .. } | StoreError::Corrupt(_) => false,
        }
    }
}

impl<E: Error + 'static> DispatchError<E> {
    /// Whether dispatching the same command again (with the same command id) may
    /// succeed: a process manager's command that failed so is retried for ever.
    ///
    /// Transient: the store's transient errors ([`StoreError::is_transient`]), a
    /// [`Timeout`](DispatchError::Timeout) and
    /// [`OutcomeUnknown`](DispatchError::OutcomeUnknown) (the same command id makes the
    /// retry safe: it finds the first outcome), a [`Conflict`](DispatchError::Conflict) that outlasted
    /// the runtime's attempts, and a
    /// [`ConsistencyTimeout`](DispatchError::ConsistencyTimeout) (appended; the read
    /// side was slow). Everything else is decided by the command and the aggregate:
    /// the domain's refusal, a middleware's rejection, a wrong version, no route, an
    /// event that does not encode.
    pub fn is_transient(&self) -> bool {
        // Exhaustive on purpose: a new variant has to be classified here.
        match self {
            DispatchError::Store(error) => error.is_transient(),
            DispatchError::Timeout(_)
            | DispatchError::OutcomeUnknown { .. }
            | DispatchError::Conflict { .. }
            | DispatchError::ConsistencyTimeout { .. } => true,
            DispatchError::Domain(_)
            | DispatchError::NoRoute { .. }
            | DispatchError::InvalidIdentity { .. }
            | DispatchError::Rejected(_)
            | DispatchError::WrongVersion { .. }
            | DispatchError::CommandIdReused { .. }
            | DispatchError::UnknownHandler(_)
            | DispatchError::Event(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("projecting failed")]
    struct Wrapper(#[source] ConsumerError);

    #[test]
    fn the_first_link_that_knows_decides() {
        let lost: ConsumerError = Box::new(StoreError::Closed);
        assert_eq!(classify(&*lost), Fault::Transient);
        let invalid: ConsumerError = Box::new(StoreError::Invalid("empty stream id".into()));
        assert_eq!(classify(&*invalid), Fault::Deterministic);
        // Found through an untyped wrapper.
        let wrapped = Wrapper(Box::new(StoreError::backend(std::io::Error::other("reset"))));
        assert_eq!(classify(&wrapped), Fault::Transient);
        // A transient mark outside a deterministic cause wins: the outside knows more.
        let marked = Transient::new(StoreError::Invalid("x".into()));
        assert_eq!(classify(&marked), Fault::Transient);
        assert_eq!(classify(&Wrapper("decode failed".into())), Fault::Deterministic);
    }

    #[derive(Debug, thiserror::Error, PartialEq)]
    #[error("insufficient funds")]
    struct Refused;

    #[test]
    fn dispatch_failures_are_transient_unless_the_command_decides_them() {
        let transient: [DispatchError<Refused>; 5] = [
            DispatchError::Store(StoreError::backend(std::io::Error::other("connection refused"))),
            DispatchError::Timeout(std::time::Duration::from_secs(1)),
            DispatchError::Conflict { stream: "s".into(), attempts: 5 },
            DispatchError::Store(StoreError::Closed),
            DispatchError::Store(StoreError::Unavailable("connection refused".into())),
        ];
        assert!(transient.iter().all(DispatchError::is_transient));
        let deterministic: [DispatchError<Refused>; 3] = [
            DispatchError::Domain(Refused),
            DispatchError::NoRoute { command: "C" },
            DispatchError::Store(StoreError::Invalid("too big".into())),
        ];
        assert!(!deterministic.iter().any(DispatchError::is_transient));
    }
}
