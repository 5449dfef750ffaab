//! Dead letters: the events a subscription skipped after failing on them, kept in
//! the [`SubscriptionStore`] for an operator to replay or discard, and what
//! replaying one means for each kind of subscription. [`Subscriptions`](crate::Subscriptions)
//! (in-process) and the operator's tools (`rewind_cli`) both go by these rules.
//!
//! Promises (`docs/design.md`, promises 4, 8 and 10: a replayed dead letter keeps exactly-once):
//! * **Projectors**: a dead letter is replayed by rebuilding the projector. Handing
//!   it the one event late would apply it after newer events (a read model that
//!   writes absolute balances would move back) and, for a projection that adds,
//!   twice if a rebuild ran meanwhile. A rebuild re-runs every event in order, the
//!   dead-lettered ones included, so its tables equal a fresh projection's.
//! * **A rebuild supersedes the rebuilt projector's dead letters**: [`reset_projector`]
//!   removes them (and no other subscription's) once the reset committed. If the
//!   removal fails, the letters left over are harmless: replaying one rebuilds again.
//! * **Process managers**: the event is handled late, against its instance's state
//!   as it is now (that is what an operator replays it for). Its commands carry the
//!   same ids as on first delivery, so a repeat appends nothing; the instance's new
//!   state commits in one transaction with the letter's removal
//!   ([`SubscriptionStore::commit_replayed`]), so a replay takes effect once, however
//!   often it is tried. It runs while no subscription of the manager does (it holds
//!   the manager's lease), so no live event of the instance interleaves with it.
//! * **Event handlers**: the event is handed to the handler again, out of order, and
//!   its letter removed once the handler succeeded: at least once, like every
//!   delivery to a handler (a failure in between repeats it; handlers that must not
//!   repeat an effect deduplicate by event id). Handlers are never rebuilt.

use crate::subscription::{Consumer, ConsumerKind};
use crate::subscription_store::{DeadLetter, Lease, SubscriptionStore};
use crate::subscriptions::SubscriptionError;
use std::time::Duration;

/// How long to wait for a lease this process has just given up (a PostgreSQL
/// session lock is freed once the server notices its connection closed).
const RELEASE_PATIENCE: Duration = Duration::from_secs(2);
/// How often to ask for the lease meanwhile.
const LEASE_POLL: Duration = Duration::from_millis(20);

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> SubscriptionError {
    SubscriptionError::Failed(Box::new(error))
}

/// Resets projector `name` for a rebuild: its read model and checkpoint, then its
/// dead letters, which the rebuild supersedes. Refuses anything but a projector.
///
/// On error the reset may have committed while the letters stayed (see the module
/// docs: replaying one then rebuilds again).
pub async fn reset_projector(
    name: &str,
    consumer: &dyn Consumer,
    bookkeeping: &dyn SubscriptionStore,
) -> Result<(), SubscriptionError> {
    if consumer.kind() != ConsumerKind::Projector {
        return Err(SubscriptionError::NotRebuildable(name.into()));
    }
    consumer.reset().await.map_err(SubscriptionError::Failed)?;
    // After the reset, not before: a failed reset keeps the letters that explain
    // what the tables lack.
    bookkeeping.clear_dead_letters(name).await.map_err(failed)?;
    Ok(())
}

/// Replays one dead letter of an event handler or a process manager, by the rules
/// in the module docs, and removes it. A projector's letter is refused with
/// [`SubscriptionError::ReplayByRebuild`]. For a process manager the caller must
/// hold the manager's lease ([`hold_lease`]) and run no subscription of it.
///
/// On error the letter stays; a process manager's replay then wrote nothing (its
/// commands may have been sent: sending them again appends nothing).
pub async fn replay(
    letter: &DeadLetter,
    consumer: &dyn Consumer,
    bookkeeping: &dyn SubscriptionStore,
) -> Result<(), SubscriptionError> {
    let name = &letter.subscription;
    match consumer.kind() {
        ConsumerKind::Projector => Err(SubscriptionError::ReplayByRebuild(name.clone())),
        // Removes the letter itself, in the transaction of its state.
        ConsumerKind::ProcessManager => {
            consumer.replay(&letter.event).await.map_err(|error| match error.downcast::<SubscriptionError>() {
                Ok(gone) => *gone,
                Err(error) => SubscriptionError::Failed(error),
            })
        }
        ConsumerKind::EventHandler => {
            consumer.replay(&letter.event).await.map_err(SubscriptionError::Failed)?;
            bookkeeping.remove_dead_letter(name, letter.event.event_id).await.map_err(failed)?;
            Ok(())
        }
    }
}

/// Takes subscription `name`'s lease for an operation that must not run beside
/// it, waiting up to `patience` for a lease this process has just given up.
/// [`SubscriptionError::Busy`] if another process holds it.
pub async fn hold_lease(
    bookkeeping: &dyn SubscriptionStore,
    name: &str,
    patience: Duration,
) -> Result<Lease, SubscriptionError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(lease) = bookkeeping.try_lease(name).await.map_err(failed)? {
            return Ok(lease);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SubscriptionError::Busy(name.into()));
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// [`hold_lease`] with the patience an in-process operation needs right after it
/// stopped the subscription.
pub(crate) async fn retake_lease(bookkeeping: &dyn SubscriptionStore, name: &str) -> Result<Lease, SubscriptionError> {
    hold_lease(bookkeeping, name, RELEASE_PATIENCE).await
}
