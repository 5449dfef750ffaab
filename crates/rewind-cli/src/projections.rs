//! Projections as an operator sees them: status from what the database records
//! (checkpoints, dead letters, and the failures a running service reports: a
//! subscription retrying or stopped there shows so here), rebuilds that reset a
//! projector and run it to the head, and dead letters.
//!
//! These run in the operator's process, from the application's own subscription
//! list ([`RewindApp`]). A rebuild resets a projector's tables and checkpoint and
//! replays it from the origin; event handlers and process managers are never
//! rebuilt, so no side effect fires twice. A rebuild refuses a projector that a
//! running service holds (its lease), on SQLite and PostgreSQL alike, and removes
//! the rebuilt projector's dead letters, which it supersedes.
//!
//! Dead letters are replayed by the rules of `rewind::dead_letters`: a projector's
//! by rebuilding the projector (once, however many letters it has), so its tables
//! end as a fresh projection's; a process manager's with its lease held (refused
//! while a service runs it), taking effect once; an event handler's by handing it
//! the event again.

use crate::app::RewindApp;
use crate::error::OpsError;
use crate::progress::Progress;
use rewind::{
    Application, ConsumerKind, DeadLetter, EventStore, FailureReport, GlobalPosition, SubscriptionState, Subscriptions,
    SubscriptionsBuilder,
};
use rewind_backend::Backend;
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// Events per projector transaction when an operation catches projectors up: large
/// batches amortise each commit (and its fsync) over more events.
const CATCH_UP_BATCH: usize = 10_000;

/// The application and its registered (not started) subscriptions.
pub async fn registered(
    app: &dyn RewindApp,
    backend: &Backend,
) -> Result<(Application, SubscriptionsBuilder), OpsError> {
    let application = app.application(backend);
    let builder = Subscriptions::builder(&application, backend.bookkeeping.clone());
    let builder = app.subscriptions(builder, backend).await.map_err(OpsError::store(&backend.database))?;
    Ok((application, builder))
}

/// One subscription's recorded state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Its name.
    pub name: String,
    /// Projector, event handler or process manager.
    pub kind: ConsumerKind,
    /// The last position it finished (0: never ran).
    pub position: u64,
    /// Events committed after it.
    pub lag: u64,
    /// `retrying` or `stopped` while a service reports a failure it has not got past;
    /// otherwise `caught up`, `behind` or `never ran`.
    pub state: &'static str,
    /// The reported failure's error, else the error of its newest dead letter.
    pub last_error: Option<String>,
    /// Events it skipped after failing on them.
    pub dead_letters: usize,
    /// The failure a running service reported (attempts, transient or not, since
    /// when, and when it was last reported: an old report may be left by a service
    /// that has since died).
    pub failure: Option<FailureReport>,
}

/// Every subscription's status, as the database records it.
pub async fn status(app: &dyn RewindApp, backend: &Backend) -> Result<Vec<Status>, OpsError> {
    let (_, builder) = registered(app, backend).await?;
    let head = backend.store.head_position().await.map_err(OpsError::store(&backend.database))?;
    let mut failures = backend.bookkeeping.failures(None).await.map_err(OpsError::store(&backend.database))?;
    let mut all = Vec::new();
    for (name, consumer) in builder.registered() {
        let checkpoint = consumer.checkpoint().await.map_err(OpsError::consumer(name, "reading its checkpoint"))?;
        let letters = backend.bookkeeping.dead_letters(Some(name)).await.map_err(OpsError::store(&backend.database))?;
        let failure = failures.iter().position(|f| f.subscription == name).map(|i| failures.swap_remove(i));
        let position = checkpoint.unwrap_or(GlobalPosition::START).0;
        let lag = head.0.saturating_sub(position);
        all.push(Status {
            name: name.to_owned(),
            kind: consumer.kind(),
            position,
            lag,
            state: match (&failure, checkpoint, lag) {
                (Some(failure), _, _) => failure.state.as_str(),
                (None, None, _) if head.0 > 0 => "never ran",
                (None, _, 0) => "caught up",
                _ => "behind",
            },
            last_error: failure
                .as_ref()
                .map(|f| f.error.clone())
                .or_else(|| letters.iter().max_by_key(|l| l.failed_at).map(|l| l.error.clone())),
            dead_letters: letters.len(),
            failure,
        });
    }
    Ok(all)
}

/// A reported failure on one line: `attempt 7, transient, failing for 2m 5s (reported 3s ago): …`.
fn describe_failure(failure: &FailureReport, now: chrono::DateTime<chrono::Utc>) -> String {
    let age = |since: chrono::DateTime<chrono::Utc>| {
        let seconds = (now - since).num_seconds().max(0);
        match seconds {
            0..60 => format!("{seconds}s"),
            60..3_600 => format!("{}m {}s", seconds / 60, seconds % 60),
            _ => format!("{}h {}m", seconds / 3_600, seconds % 3_600 / 60),
        }
    };
    let kind = if failure.transient { "transient" } else { "deterministic" };
    let at = failure.position.map_or(String::new(), |p| format!(" on event #{p}"));
    format!(
        "attempt {}, {kind}{at}, failing for {} (reported {} ago): {}",
        failure.attempt,
        age(failure.since),
        age(failure.updated_at),
        failure.error
    )
}

/// Prints [`status`] as a table or JSON lines.
pub fn print_status(statuses: &[Status], json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        for status in statuses {
            serde_json::to_writer(&mut *out, status)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<16} {:>10} {:>8} {:<10} {:>6}  last error",
        "name", "kind", "position", "lag", "state", "dead"
    )?;
    let now = chrono::Utc::now();
    for s in statuses {
        let kind = match s.kind {
            ConsumerKind::Projector => "projector",
            ConsumerKind::EventHandler => "event handler",
            ConsumerKind::ProcessManager => "process manager",
        };
        writeln!(
            out,
            "{:<24} {:<16} {:>10} {:>8} {:<10} {:>6}  {}",
            s.name,
            kind,
            s.position,
            s.lag,
            s.state,
            s.dead_letters,
            s.failure
                .as_ref()
                .map(|f| describe_failure(f, now))
                .or_else(|| s.last_error.clone())
                .as_deref()
                .unwrap_or("-")
        )?;
    }
    Ok(())
}

/// Projectors started by an operation, to be caught up with [`Running::finish`].
pub struct Running {
    subscriptions: Subscriptions,
    names: Vec<String>,
    /// The application's event handlers, left out: they have side effects.
    pub(crate) handlers: Vec<String>,
}

impl Running {
    /// Waits until every projector has done the store's head as it is now, then
    /// stops them at that checkpoint.
    pub async fn finish(self, backend: &Backend) -> Result<Vec<String>, OpsError> {
        let head = backend.store.settled_head().await.map_err(OpsError::store(&backend.database));
        let result = match head {
            Ok(head) => wait_for_head(&self.subscriptions, &self.names, head).await,
            Err(error) => Err(error),
        };
        self.subscriptions.shutdown().await;
        result.map(|()| self.names)
    }
}

/// Starts the projectors `keep` selects (resetting them first if `reset`), and
/// nothing else. They follow the store as it grows, so a copy can run meanwhile.
pub async fn start_projectors(
    app: &dyn RewindApp,
    backend: &Backend,
    keep: impl Fn(&str) -> bool,
    reset: bool,
) -> Result<Running, OpsError> {
    let (_, builder) = registered(app, backend).await?;
    let handlers = builder
        .registered()
        .filter(|(_, consumer)| consumer.kind() == ConsumerKind::EventHandler)
        .map(|(name, _)| name.to_owned())
        .collect();
    let builder = builder.retain(|name, kind| kind == ConsumerKind::Projector && keep(name)).batch_size(CATCH_UP_BATCH);
    let names: Vec<String> = builder.registered().map(|(name, _)| name.to_owned()).collect();
    if reset {
        for (name, consumer) in builder.registered() {
            // Never reset a projector under a process that is running it.
            let lease = backend.bookkeeping.try_lease(name).await.map_err(OpsError::store(&backend.database))?;
            if lease.is_none() {
                return Err(OpsError::Busy(name.to_owned()));
            }
            rewind::dead_letters::reset_projector(name, &**consumer, &*backend.bookkeeping).await.map_err(|error| {
                match error {
                    rewind::SubscriptionError::Failed(error) => OpsError::consumer(name, "resetting it")(error),
                    other => OpsError::Subscription(other),
                }
            })?;
        }
    }
    Ok(Running { subscriptions: builder.start()?, names, handlers })
}

/// Runs the projectors `keep` selects until they reach the store's head, resetting
/// them first if `reset`; nothing else runs. Returns their names.
pub async fn catch_up(
    app: &dyn RewindApp,
    backend: &Backend,
    keep: impl Fn(&str) -> bool,
    reset: bool,
) -> Result<Vec<String>, OpsError> {
    start_projectors(app, backend, keep, reset).await?.finish(backend).await
}

/// Waits until every named subscription has done `head`, showing progress; fails
/// if one stops on an error instead.
async fn wait_for_head(subscriptions: &Subscriptions, names: &[String], head: GlobalPosition) -> Result<(), OpsError> {
    let progress = Progress::new(head.0 * names.len() as u64, "projecting");
    let all_done = async {
        for name in names {
            subscriptions.wait_for(name, head).await?;
        }
        Ok::<_, OpsError>(())
    };
    tokio::pin!(all_done);
    // The tick only redraws the bar and notices a projector that stopped; completion
    // itself is signalled by `wait_for`.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            done = &mut all_done => {
                progress.finish();
                return done;
            }
            _ = tick.tick() => {
                let mut done = 0;
                for name in names {
                    let Some(status) = subscriptions.status_of(name) else { continue };
                    if status.state == SubscriptionState::Stopped {
                        progress.finish();
                        return Err(OpsError::Stopped {
                            name: name.clone(),
                            position: status.failed_position.unwrap_or(status.position).0,
                            error: status.last_error.unwrap_or_default(),
                        });
                    }
                    done += status.position.0.min(head.0);
                }
                progress.set(done);
            }
        }
    }
}

/// Rebuilds the named projectors (all of them when `names` is empty).
pub async fn rebuild(app: &dyn RewindApp, backend: &Backend, names: &[String]) -> Result<Vec<String>, OpsError> {
    if !names.is_empty() {
        let (_, builder) = registered(app, backend).await?;
        for name in names {
            match builder.kind_of(name) {
                None => return Err(OpsError::Usage(format!("no subscription named `{name}`"))),
                Some(kind) if kind != ConsumerKind::Projector => {
                    return Err(OpsError::Usage(format!(
                        "`{name}` is not a projector; only projectors can be rebuilt"
                    )));
                }
                Some(_) => {}
            }
        }
    }
    // A partition's name stands for its projector: partitions are rebuilt together.
    let (_, builder) = registered(app, backend).await?;
    let groups: Vec<String> = names.iter().filter_map(|n| builder.group_of(n)).map(str::to_owned).collect();
    catch_up(app, backend, |name| names.is_empty() || groups.iter().any(|n| n == name), true).await
}

/// What to do with dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterAction {
    /// Only list them.
    List,
    /// Hand each to its subscription again; remove those that succeed.
    Replay,
    /// Remove them without handling them.
    Skip,
}

/// What [`dead_letters`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handled {
    /// How many letters were replayed or skipped.
    pub letters: usize,
    /// The projectors rebuilt to replay their letters.
    pub rebuilt: Vec<String>,
}

/// Lists dead letters (of one subscription, or all) and replays or skips them (see
/// the module docs for what a replay does). On error, the letters not yet handled
/// stay.
pub async fn dead_letters(
    app: &dyn RewindApp,
    backend: &Backend,
    name: Option<&str>,
    action: DeadLetterAction,
    json: bool,
    out: &mut dyn Write,
) -> Result<Handled, OpsError> {
    let letters = backend.bookkeeping.dead_letters(name).await.map_err(OpsError::store(&backend.database))?;
    print_letters(&letters, json, out)?;
    match action {
        DeadLetterAction::List => Ok(Handled::default()),
        DeadLetterAction::Skip => {
            for letter in &letters {
                let removed = backend.bookkeeping.remove_dead_letter(&letter.subscription, letter.event.event_id);
                removed.await.map_err(OpsError::store(&backend.database))?;
            }
            Ok(Handled { letters: letters.len(), rebuilt: Vec::new() })
        }
        DeadLetterAction::Replay => replay_letters(app, backend, &letters).await,
    }
}

/// Replays `letters`: the projectors' by one rebuild each, then the others one by one.
async fn replay_letters(app: &dyn RewindApp, backend: &Backend, letters: &[DeadLetter]) -> Result<Handled, OpsError> {
    let (_, builder) = registered(app, backend).await?;
    let consumer = |name: &str| {
        builder
            .registered()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| OpsError::Usage(format!("no subscription named `{name}`")))
    };
    let mut rebuilt: Vec<String> = Vec::new();
    for letter in letters {
        // A partition is rebuilt with the rest of its projector.
        let group = builder.group_of(&letter.subscription).unwrap_or(&letter.subscription).to_owned();
        if consumer(&letter.subscription)?.kind() == ConsumerKind::Projector && !rebuilt.contains(&group) {
            rebuilt.push(group);
        }
    }
    if !rebuilt.is_empty() {
        catch_up(app, backend, |name| rebuilt.iter().any(|r| r == name), true).await?;
    }
    let rebuilt_by =
        |letter: &DeadLetter| builder.group_of(&letter.subscription).is_some_and(|g| rebuilt.iter().any(|r| r == g));
    for letter in letters.iter().filter(|l| !rebuilt_by(l)) {
        let consumer = consumer(&letter.subscription)?;
        // A process manager's replay must not run beside its live subscription.
        let _lease = match consumer.kind() {
            ConsumerKind::ProcessManager => Some(
                rewind::dead_letters::hold_lease(&*backend.bookkeeping, &letter.subscription, Duration::ZERO)
                    .await
                    .map_err(|error| match error {
                        rewind::SubscriptionError::Busy(name) => OpsError::Busy(name),
                        other => OpsError::Subscription(other),
                    })?,
            ),
            _ => None,
        };
        rewind::dead_letters::replay(letter, &*consumer, &*backend.bookkeeping).await.map_err(|error| {
            OpsError::Consumer {
                name: letter.subscription.clone(),
                error: format!("failed again on event {}: {error}", letter.event.event_id),
            }
        })?;
    }
    Ok(Handled { letters: letters.len(), rebuilt })
}

fn print_letters(letters: &[DeadLetter], json: bool, out: &mut dyn Write) -> Result<(), OpsError> {
    let write = OpsError::io("writing output");
    for letter in letters {
        if json {
            serde_json::to_writer(&mut *out, letter).map_err(|e| OpsError::io("writing output")(e.into()))?;
            writeln!(out).map_err(OpsError::io("writing output"))?;
        } else {
            writeln!(
                out,
                "{}  event {} (#{} {})  failed {}: {}",
                letter.subscription,
                letter.event.event_id,
                letter.event.position,
                letter.event.event_type,
                letter.failed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                letter.error
            )
            .map_err(OpsError::io("writing output"))?;
        }
    }
    out.flush().map_err(write)
}
