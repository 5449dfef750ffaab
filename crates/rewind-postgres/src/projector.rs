//! Projectors on PostgreSQL: read models written exactly once per event.
//!
//! Each batch runs in one transaction that first locks the projector's checkpoint row
//! (`FOR UPDATE`), passes over events the checkpoint already covers, applies the
//! rest and moves the checkpoint. So after a crash, and even if two processes ran the
//! same projector at once, every event takes effect exactly once.
//!
//! Each saved checkpoint is announced to every process (`checkpoint_feed.rs`),
//! so a strongly consistent dispatch wakes as the projection commits wherever it runs.
//!
//! A failing event is isolated: PostgreSQL aborts the transaction, so the batch is
//! rolled back, the events before the failing one are applied again in a fresh
//! transaction, and the failure goes to the subscription's error policy. Unless it
//! is transient ([`crate::is_transient`]: a lost connection, a serialization
//! failure, a server shutting down or read-only): then nothing is isolated and the
//! subscription retries the batch for ever. A dead letter is never applied alone,
//! out of order: rebuilding the projector replays it (`rewind::dead_letters`).

use crate::error::classified;
use crate::read_model::PostgresReadModel;
use async_trait::async_trait;
use rewind::store::BatchFailure;
use rewind::{Consumer, ConsumerError, ConsumerKind, GlobalPosition, RecordedEvent, StoreError, SubscriptionError};
use std::sync::Arc;
use tokio_postgres::{GenericClient, Transaction};

/// A read model written from events.
///
/// ```
/// use rewind::{ConsumerError, RecordedEvent};
/// use tokio_postgres::Transaction;
///
/// struct EventCounts;
///
/// #[async_trait::async_trait]
/// impl rewind_postgres::PostgresProjection for EventCounts {
///     async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
///         tx.batch_execute("CREATE TABLE IF NOT EXISTS event_counts (event_type text PRIMARY KEY, n bigint NOT NULL)").await
///     }
///     async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
///         tx.execute(
///             "INSERT INTO event_counts VALUES ($1, 1) ON CONFLICT (event_type) DO UPDATE SET n = event_counts.n + 1",
///             &[&event.event_type],
///         ).await?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
///         tx.batch_execute("DELETE FROM event_counts").await
///     }
/// }
/// ```
#[async_trait]
pub trait PostgresProjection: Send + Sync + 'static {
    /// Creates the read model's tables if they do not exist.
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error>;
    /// Drops tables an older version of the projection made that [`create`](Self::create)
    /// cannot bring up to date, and says whether it dropped any. The projector then
    /// forgets its checkpoint in the same transaction, before `create`, so its
    /// subscription rebuilds the read model from the origin. Default: nothing is
    /// ever outdated.
    async fn drop_outdated(&self, tx: &Transaction<'_>) -> Result<bool, tokio_postgres::Error> {
        let _ = tx;
        Ok(false)
    }
    /// Applies one event inside the batch's transaction.
    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError>;

    /// Applies several events in order. The default calls [`project`](Self::project)
    /// for each; override it to write a whole batch in a few statements (one round
    /// trip per statement is what limits a projector on PostgreSQL). When it fails,
    /// the projector replays the batch event by event to find the failing one.
    async fn project_batch(&self, tx: &Transaction<'_>, events: &[RecordedEvent]) -> Result<(), ConsumerError> {
        for event in events {
            self.project(tx, event).await?;
        }
        Ok(())
    }
    /// Deletes the read model's data, for a rebuild.
    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error>;
}

/// Runs a [`PostgresProjection`] as a subscription consumer.
pub struct PostgresProjector<P> {
    name: Arc<str>,
    projection: P,
    model: PostgresReadModel,
}

fn backend(error: tokio_postgres::Error) -> StoreError {
    StoreError::backend(error)
}

fn failure(failed_at: usize, error: impl Into<ConsumerError>) -> BatchFailure {
    BatchFailure { failed_at, error: error.into() }
}

async fn stored_checkpoint(
    client: &impl GenericClient,
    name: &str,
    lock: bool,
) -> Result<Option<GlobalPosition>, tokio_postgres::Error> {
    let sql = if lock {
        "SELECT position FROM rewind_projections WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT position FROM rewind_projections WHERE name = $1"
    };
    let row = client.query_opt(sql, &[&name]).await?;
    Ok(row.map(|row| GlobalPosition(row.get::<_, i64>(0).max(0) as u64)))
}

/// Saves the checkpoint (never backwards) and announces the saved value on `channel`
/// ([`crate::checkpoint_feed`]): one statement, so announcing costs no round trip.
async fn save_checkpoint(
    tx: &Transaction<'_>,
    name: &str,
    position: GlobalPosition,
    channel: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "WITH saved AS (
             INSERT INTO rewind_projections (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = GREATEST(rewind_projections.position, EXCLUDED.position)
             RETURNING position)
         SELECT pg_notify($3, saved.position::text || ' ' || $1) FROM saved",
        &[&name, &(position.0 as i64), &channel],
    )
    .await
    .map(drop)
}

impl<P: PostgresProjection> PostgresProjector<P> {
    /// Creates the projection's tables in `model`; the projector keeps its checkpoint
    /// there under `name` (which must match the subscription's name).
    pub async fn new(name: &str, projection: P, model: &PostgresReadModel) -> Result<PostgresProjector<P>, StoreError> {
        let mut client = model.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('rewind:projector'), hashtext($1))", &[&name])
            .await
            .map_err(backend)?;
        if projection.drop_outdated(&tx).await.map_err(backend)? {
            tracing::warn!(projector = %name, "tables of an older version dropped; rebuilding from the origin");
            tx.execute("UPDATE rewind_projections SET position = 0 WHERE name = $1", &[&name])
                .await
                .map_err(backend)?;
        }
        projection.create(&tx).await.map_err(backend)?;
        tx.execute("INSERT INTO rewind_projections (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING", &[&name])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(PostgresProjector { name: name.into(), projection, model: model.clone() })
    }

    /// Applies `events` (those the checkpoint does not cover) in one transaction, as
    /// one batch or event by event. `Ok(Err(i))`: event `i` failed (event by event) or
    /// the batch failed (`i` = 0 with `one_by_one` false), and nothing was committed.
    async fn commit(
        &self,
        events: &[RecordedEvent],
        one_by_one: bool,
    ) -> Result<Result<(), (usize, ConsumerError)>, StoreError> {
        let mut client = self.model.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let covered = stored_checkpoint(&*tx, &self.name, true).await.map_err(backend)?;
        let skip = events.iter().take_while(|e| covered.is_some_and(|done| e.position <= done)).count();
        let fresh = &events[skip..];
        let Some(last) = fresh.last() else { return Ok(Ok(())) };
        // A lost connection or a serialization failure is transient, the projection's
        // own refusal (a constraint, its SQL) is not.
        if one_by_one {
            for (index, event) in fresh.iter().enumerate() {
                if let Err(error) = self.projection.project(&tx, event).await {
                    return Ok(Err((skip + index, classified(error))));
                }
            }
        } else if let Err(error) = self.projection.project_batch(&tx, fresh).await {
            return Ok(Err((skip, classified(error))));
        }
        save_checkpoint(&tx, &self.name, last.position, self.model.checkpoints().channel()).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Ok(()))
    }
}

#[async_trait]
impl<P: PostgresProjection> Consumer for PostgresProjector<P> {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::Projector
    }

    fn announced_checkpoint(&self) -> Option<tokio::sync::watch::Receiver<GlobalPosition>> {
        Some(self.model.checkpoints().watch(&self.name))
    }

    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        let client = self.model.client().await?;
        let stored = stored_checkpoint(&**client, &self.name, false).await?;
        Ok(stored.filter(|p| *p > GlobalPosition::START))
    }

    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        match self.commit(&events, false).await.map_err(|e| failure(0, e))? {
            Ok(()) => return Ok(()),
            // Nothing to isolate: the batch is tried again whole, once the database is back.
            Err((index, error)) if rewind::classify(&*error) == rewind::Fault::Transient => {
                return Err(failure(index, error));
            }
            Err(_) => {}
        }
        let (index, error) = match self.commit(&events, true).await.map_err(|e| failure(0, e))? {
            Ok(()) => return Ok(()), // the failure did not repeat
            Err(failed) => failed,
        };
        match self.commit(&events[..index], false).await.map_err(|e| failure(0, e))? {
            Ok(()) => Err(failure(index, error)),
            Err((earlier, error)) => Err(failure(earlier, error)),
        }
    }

    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let mut client = self.model.client().await?;
        let tx = client.transaction().await?;
        save_checkpoint(&tx, &self.name, event.position, self.model.checkpoints().channel()).await?;
        Ok(tx.commit().await?)
    }

    /// Refused: one event applied after newer ones would leave the tables unlike a
    /// fresh projection's; a rebuild replays a dead letter in order (`rewind::dead_letters`).
    async fn replay(&self, _: &RecordedEvent) -> Result<(), ConsumerError> {
        Err(Box::new(SubscriptionError::ReplayByRebuild(self.name.to_string())))
    }

    async fn reset(&self) -> Result<(), ConsumerError> {
        let mut client = self.model.client().await?;
        let tx = client.transaction().await?;
        self.projection.reset(&tx).await?;
        tx.execute("UPDATE rewind_projections SET position = 0 WHERE name = $1", &[&&*self.name]).await?;
        Ok(tx.commit().await?)
    }
}
