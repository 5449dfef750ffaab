//! Projectors on SQLite: read models written exactly once per event.
//!
//! A [`SqliteProjection`] gets a transaction for each batch; [`SqliteProjector`]
//! writes the projector's checkpoint in that same transaction, so after a crash each
//! event has taken effect exactly once. The transaction also re-reads the checkpoint
//! and passes over events it already covers, so even two runners that both believe
//! they hold the subscription cannot apply an event twice.
//!
//! A failing event is isolated: the batch is rolled back, the events before the
//! failing one are applied and checkpointed again in a fresh transaction, and the
//! failure goes to the subscription's error policy.

use crate::read_model::SqliteReadModel;
use async_trait::async_trait;
use rewind::{BatchFailure, Consumer, ConsumerError, ConsumerKind, GlobalPosition, RecordedEvent, StoreError};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::sync::Arc;

/// A read model written from events.
///
/// ```
/// use rewind::{ConsumerError, RecordedEvent};
/// use rusqlite::Transaction;
///
/// struct EventCounts;
///
/// impl rewind_sqlite::SqliteProjection for EventCounts {
///     fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
///         conn.execute_batch("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, n INTEGER NOT NULL)")
///     }
///     fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
///         tx.execute(
///             "INSERT INTO event_counts VALUES (?1, 1) ON CONFLICT (event_type) DO UPDATE SET n = n + 1",
///             [&event.event_type],
///         )?;
///         Ok(())
///     }
///     fn reset(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
///         tx.execute_batch("DELETE FROM event_counts")
///     }
/// }
/// ```
pub trait SqliteProjection: Send + Sync + 'static {
    /// Creates the read model's tables if they do not exist.
    fn create(&self, conn: &Connection) -> rusqlite::Result<()>;
    /// Applies one event inside the batch's transaction.
    fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError>;
    /// Deletes the read model's data, for a rebuild.
    fn reset(&self, tx: &Transaction<'_>) -> rusqlite::Result<()>;
}

/// Runs a [`SqliteProjection`] as a subscription consumer.
pub struct SqliteProjector<P> {
    name: Arc<str>,
    projection: Arc<P>,
    model: SqliteReadModel,
}

impl<P: SqliteProjection> SqliteProjector<P> {
    /// Creates the projection's tables in `model`; the projector keeps its
    /// checkpoint there under `name` (which must match the subscription's name).
    pub async fn new(name: &str, projection: P, model: &SqliteReadModel) -> Result<SqliteProjector<P>, StoreError> {
        let projection = Arc::new(projection);
        let create = projection.clone();
        model.write(move |conn| create.create(conn).map_err(StoreError::backend)).await?;
        Ok(SqliteProjector { name: name.into(), projection, model: model.clone() })
    }
}

fn stored_checkpoint(conn: &Connection, name: &str) -> rusqlite::Result<Option<GlobalPosition>> {
    conn.prepare_cached("SELECT position FROM rewind_projections WHERE name = ?1")?
        .query_row([name], |row| row.get::<_, i64>(0))
        .optional()
        .map(|p| p.map(|p| GlobalPosition(p as u64)))
}

fn save_checkpoint(tx: &Transaction<'_>, name: &str, position: GlobalPosition) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO rewind_projections (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)",
    )?
    .execute(params![name, position.0 as i64])
    .map(drop)
}

/// Applies the events the checkpoint does not cover yet; on failure, says which.
fn apply<P: SqliteProjection>(
    projection: &P,
    tx: &Transaction<'_>,
    events: &[RecordedEvent],
    covered: Option<GlobalPosition>,
) -> Result<Option<GlobalPosition>, (usize, ConsumerError)> {
    let mut last = None;
    for (index, event) in events.iter().enumerate() {
        if covered.is_some_and(|done| event.position <= done) {
            continue;
        }
        projection.project(tx, event).map_err(|error| (index, error))?;
        last = Some(event.position);
    }
    Ok(last)
}

/// One transaction: the events (or a prefix of them) and the checkpoint.
fn commit<P: SqliteProjection>(
    projection: &P,
    conn: &mut Connection,
    name: &str,
    events: &[RecordedEvent],
) -> Result<Result<(), (usize, ConsumerError)>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let covered = stored_checkpoint(&tx, name)?;
    match apply(projection, &tx, events, covered) {
        Ok(last) => {
            if let Some(last) = last {
                save_checkpoint(&tx, name, last)?;
            }
            tx.commit()?;
            Ok(Ok(()))
        }
        Err(failure) => Ok(Err(failure)),
    }
}

fn failure(failed_at: usize, error: impl Into<ConsumerError>) -> BatchFailure {
    BatchFailure { failed_at, error: error.into() }
}

#[async_trait]
impl<P: SqliteProjection> Consumer for SqliteProjector<P> {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::Projector
    }

    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        let name = self.name.clone();
        Ok(self.model.read(move |conn| stored_checkpoint(conn, &name)).await?)
    }

    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        let (name, projection) = (self.name.clone(), self.projection.clone());
        let outcome = self
            .model
            .write(move |conn| {
                let failed = match commit(&*projection, conn, &name, &events).map_err(StoreError::backend)? {
                    Ok(()) => return Ok(None),
                    Err(failed) => failed,
                };
                // The batch rolled back: keep what came before the failing event.
                let (index, error) = failed;
                match commit(&*projection, conn, &name, &events[..index]).map_err(StoreError::backend)? {
                    Ok(()) => Ok(Some((index, error))),
                    Err((earlier, error)) => Ok(Some((earlier, error))),
                }
            })
            .await
            .map_err(|error| failure(0, error))?;
        match outcome {
            None => Ok(()),
            Some((index, error)) => Err(failure(index, error)),
        }
    }

    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let (name, position) = (self.name.clone(), event.position);
        self.model
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::backend)?;
                save_checkpoint(&tx, &name, position).map_err(StoreError::backend)?;
                tx.commit().map_err(StoreError::backend)
            })
            .await?;
        Ok(())
    }

    async fn replay(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let (projection, event) = (self.projection.clone(), event.clone());
        self.model
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::backend)?;
                let applied = projection.project(&tx, &event);
                match applied {
                    Ok(()) => tx.commit().map_err(StoreError::backend).map(|()| Ok(())),
                    Err(error) => Ok(Err(error.to_string())),
                }
            })
            .await?
            .map_err(ConsumerError::from)
    }

    async fn reset(&self) -> Result<(), ConsumerError> {
        let (name, projection) = (self.name.clone(), self.projection.clone());
        self.model
            .write(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::backend)?;
                projection.reset(&tx).map_err(StoreError::backend)?;
                tx.execute("DELETE FROM rewind_projections WHERE name = ?1", [&*name]).map_err(StoreError::backend)?;
                tx.commit().map_err(StoreError::backend)
            })
            .await?;
        Ok(())
    }
}
