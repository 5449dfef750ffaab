//! Projectors on SQLite: read models written exactly once per event.
//!
//! A [`SqliteProjection`] writes each batch inside one transaction of its
//! [`SqliteReadModel`]; [`SqliteProjector`] writes the projector's checkpoint in that
//! same transaction, so after a crash each event has taken effect exactly once. The
//! transaction also re-reads the checkpoint and passes over events it already covers,
//! so even two runners that both believe they hold the subscription cannot apply an
//! event twice.
//!
//! A failing event is isolated: the batch is rolled back, the events before the
//! failing one are applied and checkpointed again in a fresh transaction, and the
//! failure goes to the subscription: retried for ever if SQLite's error is transient
//! (busy, locked, I/O, full: [`crate::is_transient`]), to its error policy if the
//! projection refused the event (a constraint, its own SQL). A dead letter is never
//! applied alone, out of order: rebuilding the projector replays it
//! (`rewind::dead_letters`).

use crate::error::classified;
use crate::inline::InlineProjection;
use crate::read_model::SqliteReadModel;
use async_trait::async_trait;
use rewind::store::BatchFailure;
use rewind::{
    Consumer, ConsumerError, ConsumerKind, EventFilter, GlobalPosition, RecordedEvent, StoreError, SubscriptionError,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A read model written from events. Every method runs inside a transaction that
/// the projector opened (and commits), so none begins or commits one itself.
///
/// ```
/// use rewind::{ConsumerError, RecordedEvent};
/// use rusqlite::Connection;
///
/// struct EventCounts;
///
/// impl rewind_sqlite::SqliteProjection for EventCounts {
///     fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
///         conn.execute_batch("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, n INTEGER NOT NULL)")
///     }
///     fn project(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
///         conn.prepare_cached("INSERT INTO event_counts VALUES (?1, 1) ON CONFLICT (event_type) DO UPDATE SET n = n + 1")?
///             .execute([&event.event_type])?;
///         Ok(())
///     }
///     fn reset(&self, conn: &Connection) -> rusqlite::Result<()> {
///         conn.execute_batch("DELETE FROM event_counts")
///     }
/// }
/// ```
pub trait SqliteProjection: Send + Sync + 'static {
    /// Creates the read model's tables if they do not exist.
    fn create(&self, conn: &Connection) -> rusqlite::Result<()>;
    /// Drops tables an older version of the projection made that [`create`](Self::create)
    /// cannot bring up to date (a column's type changed, a table became `STRICT`),
    /// and says whether it dropped any. The projector then forgets its checkpoint in
    /// the same transaction, before `create`, so its subscription rebuilds the read
    /// model from the origin: a projection can always be rebuilt. Default: nothing
    /// is ever outdated.
    fn drop_outdated(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let _ = conn;
        Ok(false)
    }
    /// Applies one event inside the batch's transaction.
    fn project(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ConsumerError>;
    /// Deletes the read model's data, for a rebuild.
    fn reset(&self, conn: &Connection) -> rusqlite::Result<()>;
}

/// Runs a [`SqliteProjection`] as a subscription consumer.
pub struct SqliteProjector<P> {
    name: Arc<str>,
    projection: Arc<P>,
    model: SqliteReadModel,
    /// The last position written inline and durable (0: none), see [`SqliteProjector::inline`].
    /// Invariant: the tables hold every event up to it; so a reset sets it to 0.
    covered: Arc<AtomicU64>,
}

impl<P: SqliteProjection> SqliteProjector<P> {
    /// Creates the projection's tables in `model`; the projector keeps its
    /// checkpoint there under `name` (which must match the subscription's name).
    /// Tables an older version made are dropped first and the checkpoint forgotten,
    /// so the projection is rebuilt from the origin
    /// ([`SqliteProjection::drop_outdated`]): a process of that older version must
    /// not be running on the file. On error nothing changed.
    pub async fn new(name: &str, projection: P, model: &SqliteReadModel) -> Result<SqliteProjector<P>, StoreError> {
        let projection = Arc::new(projection);
        let (create, checkpoint) = (projection.clone(), name.to_owned());
        model
            .transaction(move |conn| {
                if create.drop_outdated(conn).map_err(StoreError::backend)? {
                    tracing::warn!(projector = %checkpoint, "tables of an older version dropped; rebuilding from the origin");
                    conn.prepare_cached("DELETE FROM rewind_projections WHERE name = ?1")
                        .and_then(|mut s| s.execute([&checkpoint]))
                        .map_err(StoreError::backend)?;
                }
                create.create(conn).map_err(StoreError::backend)
            })
            .await?;
        Ok(SqliteProjector { name: name.into(), projection, model: model.clone(), covered: Arc::default() })
    }

    /// Also writes the projection *inline*: inside the transaction of every group
    /// of appends to the store whose file `model` shares ([`SqliteReadModel::sharing`]).
    /// The read model is then durable, and a strongly consistent dispatch done, as
    /// soon as the append is acknowledged. The subscription must still run: it
    /// catches up after a start or a rebuild and handles failures, and the two never
    /// apply an event twice (see the `inline` module). `filter` must be the
    /// subscription's filter.
    ///
    /// Fails with [`StoreError::Invalid`] on a read model with a file of its own:
    /// there is no transaction to share.
    ///
    /// ```
    /// use rewind::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent};
    /// use rewind_sqlite::{SqliteProjection, SqliteProjector, SqliteReadModel, SqliteStore};
    /// use std::sync::Arc;
    ///
    /// struct Count;
    /// impl SqliteProjection for Count {
    ///     fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    ///         conn.execute_batch("CREATE TABLE IF NOT EXISTS seen (n INTEGER); INSERT INTO seen VALUES (0)")
    ///     }
    ///     fn project(&self, conn: &rusqlite::Connection, _: &rewind::RecordedEvent) -> Result<(), rewind::ConsumerError> {
    ///         conn.execute("UPDATE seen SET n = n + 1", [])?;
    ///         Ok(())
    ///     }
    ///     fn reset(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    ///         conn.execute_batch("UPDATE seen SET n = 0")
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Arc::new(SqliteStore::open(dir.path().join("bank.db")).await.unwrap());
    /// let model = SqliteReadModel::sharing(store.clone()).await.unwrap();
    /// let _projector = SqliteProjector::new("count", Count, &model).await.unwrap().inline(EventFilter::all()).unwrap();
    ///
    /// let event = NewEvent { event_id: uuid::Uuid::now_v7(), event_type: "Opened".into(), data: "{}".into(), metadata: Metadata::default() };
    /// store.append("account-1", ExpectedVersion::Any, vec![event]).await.unwrap();
    /// // Projected in the append's own transaction: no subscription has run yet.
    /// let seen: i64 = model.lookup(|conn| conn.query_row("SELECT n FROM seen", [], |r| r.get(0))).unwrap();
    /// assert_eq!(seen, 1);
    /// # });
    /// ```
    pub fn inline(self, filter: EventFilter) -> Result<SqliteProjector<P>, StoreError> {
        let store = self.model.store().ok_or_else(|| {
            StoreError::Invalid(format!(
                "projector `{}` cannot be written inline: its read model is not in the event store's file",
                self.name
            ))
        })?;
        store.add_inline(InlineProjection {
            name: self.name.clone(),
            filter,
            projection: self.projection.clone(),
            covered: self.covered.clone(),
        });
        Ok(self)
    }
}

pub(crate) fn stored_checkpoint(conn: &Connection, name: &str) -> rusqlite::Result<Option<GlobalPosition>> {
    conn.prepare_cached("SELECT position FROM rewind_projections WHERE name = ?1")?
        .query_row([name], |row| row.get::<_, i64>(0))
        .optional()
        .map(|p| p.map(|p| GlobalPosition(p as u64)))
}

pub(crate) fn save_checkpoint(conn: &Connection, name: &str, position: GlobalPosition) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rewind_projections (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)",
    )?
    .execute(params![name, position.0 as i64])
    .map(drop)
}

/// Why a batch's transaction rolled back.
enum Rollback {
    /// The projection failed on the event at this index.
    Event(usize, ConsumerError),
    /// The database failed.
    Store(StoreError),
}

impl From<StoreError> for Rollback {
    fn from(error: StoreError) -> Self {
        Rollback::Store(error)
    }
}

/// Applies the events the checkpoint does not cover yet, and moves the checkpoint.
fn apply<P: SqliteProjection>(
    projection: &P,
    conn: &Connection,
    name: &str,
    events: &[RecordedEvent],
) -> Result<(), Rollback> {
    let covered = stored_checkpoint(conn, name).map_err(|e| Rollback::Store(StoreError::backend(e)))?;
    let mut last = None;
    for (index, event) in events.iter().enumerate() {
        if covered.is_some_and(|done| event.position <= done) {
            continue;
        }
        // A busy or full database is transient, the projection's own refusal is not.
        projection.project(conn, event).map_err(|error| Rollback::Event(index, classified(error)))?;
        last = Some(event.position);
    }
    if let Some(last) = last {
        save_checkpoint(conn, name, last).map_err(|e| Rollback::Store(StoreError::backend(e)))?;
    }
    Ok(())
}

fn failure(failed_at: usize, error: impl Into<ConsumerError>) -> BatchFailure {
    BatchFailure { failed_at, error: error.into() }
}

impl<P: SqliteProjection> SqliteProjector<P> {
    async fn commit(&self, events: Arc<[RecordedEvent]>, len: usize) -> Result<(), Rollback> {
        let (name, projection) = (self.name.clone(), self.projection.clone());
        self.model.transaction(move |conn| apply(&*projection, conn, &name, &events[..len])).await
    }
}

#[async_trait]
impl<P: SqliteProjection> Consumer for SqliteProjector<P> {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::Projector
    }

    fn covered(&self) -> Option<GlobalPosition> {
        Some(GlobalPosition(self.covered.load(Ordering::Acquire))).filter(|p| p.0 > 0)
    }

    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        let name = self.name.clone();
        Ok(self.model.read(move |conn| stored_checkpoint(conn, &name)).await?)
    }

    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        let (index, error) = match self.commit(events.clone(), events.len()).await {
            Ok(()) => return Ok(()),
            Err(Rollback::Store(error)) => return Err(failure(0, error)),
            Err(Rollback::Event(index, error)) => (index, error),
        };
        // The batch rolled back: keep what came before the failing event.
        match self.commit(events, index).await {
            Ok(()) => Err(failure(index, error)),
            Err(Rollback::Event(earlier, error)) => Err(failure(earlier, error)),
            Err(Rollback::Store(store)) => Err(failure(0, store)),
        }
    }

    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let (name, position) = (self.name.clone(), event.position);
        self.model.transaction(move |conn| save_checkpoint(conn, &name, position).map_err(StoreError::backend)).await?;
        Ok(())
    }

    /// Refused: one event applied after newer ones would leave the tables unlike a
    /// fresh projection's; a rebuild replays a dead letter in order (`rewind::dead_letters`).
    async fn replay(&self, _: &RecordedEvent) -> Result<(), ConsumerError> {
        Err(Box::new(SubscriptionError::ReplayByRebuild(self.name.to_string())))
    }

    /// Empties the tables, deletes the checkpoint and forgets what was written
    /// inline, so the next run starts from the origin. On error the reset may or may
    /// not have committed; `covered` is forgotten either way (a lower `covered` only
    /// costs a read).
    async fn reset(&self) -> Result<(), ConsumerError> {
        let (name, projection) = (self.name.clone(), self.projection.clone());
        let reset = self
            .model
            .transaction(move |conn| {
                projection.reset(conn).map_err(StoreError::backend)?;
                conn.prepare_cached("DELETE FROM rewind_projections WHERE name = ?1")
                    .and_then(|mut s| s.execute([&*name]))
                    .map_err(StoreError::backend)
            })
            .await;
        // After the transaction is answered, not inside it: groups committed before
        // the reset publish their inline progress before the reset's own answer (the
        // writer and syncer answer groups in commit order), so nothing older can
        // raise `covered` again. A group committed after the reset is projected
        // inline only if the checkpoint sits right before it, which without a
        // checkpoint means the store was empty: its `covered` is true of the tables.
        // Left as it was, the subscription would start at `covered` and the rebuilt
        // tables would miss the history (issue 14).
        self.covered.store(0, Ordering::Release);
        reset?;
        Ok(())
    }
}
