//! Projectors: read models written once and run on every SQL backend.
//!
//! A [`Projector`] names itself, declares which events it reads and which tables
//! it owns, and turns events into portable [`Sql`] statements. It does no I/O: a
//! backend's [`ReadModel`] runs it, inside one transaction per batch together with
//! the projector's checkpoint, so every event takes effect exactly once even after
//! a crash, a redelivery or two processes running it at once. On SQLite, a read
//! model in the event store's own file also writes it *inline*, in the
//! transaction of the appends themselves (`rewind_sqlite`'s `inline` module).
//!
//! Registering a projector ([`SubscriptionsBuilder::projector`](crate::SubscriptionsBuilder::projector))
//! creates its tables and its subscription under the projector's own name and
//! filter, so neither is stated twice. A rebuild empties the tables it owns
//! ([`Projector::tables`]) and replays from the origin.
//!
//! Per-backend projections (`rewind_sqlite::SqliteProjection`,
//! `rewind_postgres::PostgresProjection`) stay available for what portable SQL
//! cannot say.

use crate::envelope::RecordedEvent;
use crate::event_store::{EventFilter, StoreError};
use crate::sql::{Dialect, Params, Row, Sql, Value};
use crate::subscription::{Consumer, ConsumerError};
use async_trait::async_trait;
use std::sync::Arc;

/// A read model written from events, the same on every backend.
///
/// ```
/// use rewind::sql::{Dialect, Sql};
/// use rewind::{ConsumerError, Projector, RecordedEvent};
///
/// /// How many events of each type were recorded.
/// struct EventCounts;
///
/// impl Projector for EventCounts {
///     fn name(&self) -> &str {
///         "event_counts"
///     }
///     fn schema(&self, _: Dialect) -> &'static str {
///         "CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, n BIGINT NOT NULL)"
///     }
///     fn tables(&self) -> &'static [&'static str] {
///         &["event_counts"]
///     }
///     fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
///         sql.execute(
///             "INSERT INTO event_counts (event_type, n) VALUES ($1, 1)
///              ON CONFLICT (event_type) DO UPDATE SET n = event_counts.n + 1",
///             (event.event_type.as_str(),),
///         );
///         Ok(())
///     }
/// }
///
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] enum Ev { Incremented }
/// # impl rewind::Event for Ev {}
/// // Projecting is pure: the backend runs the statements in its transaction.
/// let event = rewind::testing::recorded("counter-1", 1, &Ev::Incremented).unwrap();
/// let mut sql = Sql::new(Dialect::Sqlite);
/// EventCounts.project(&event, &mut sql).unwrap();
/// assert_eq!(sql.statements().len(), 1);
/// ```
pub trait Projector: Send + Sync + 'static {
    /// The projector's name: its subscription's and its checkpoint's. Stable: a new
    /// name is a new projector, built from the origin.
    fn name(&self) -> &str;

    /// The events it reads (its subscription's filter). Default: all.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// Creates its tables if they do not exist (`CREATE TABLE IF NOT EXISTS …`).
    /// Per dialect because column types differ (`uuid` and `timestamptz` on
    /// PostgreSQL, `TEXT` on SQLite, see [`Value`]); most DDL reads alike on both.
    fn schema(&self, dialect: Dialect) -> &'static str;

    /// The tables it owns: a rebuild empties them, an outdated schema drops them.
    fn tables(&self) -> &'static [&'static str];

    /// A query that returns a row when tables of an older version exist that
    /// [`schema`](Self::schema) cannot bring up to date (a column's type changed).
    /// The backend then drops [`tables`](Self::tables) and forgets the checkpoint
    /// before creating them, so the projector is rebuilt from the origin. Default:
    /// nothing is ever outdated.
    fn outdated(&self, dialect: Dialect) -> Option<&'static str> {
        let _ = dialect;
        None
    }

    /// The statements one event writes. An error is the projector's refusal of the
    /// event: it goes to the subscription's error policy.
    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError>;

    /// The statements a batch of events writes, in order. The default calls
    /// [`project`](Self::project) for each; override it to fold a batch into fewer
    /// statements (one per row rather than one per event). When a batch fails, the
    /// backend replays it event by event to find the failing one, so both must
    /// leave the same tables.
    fn project_batch(&self, events: &[RecordedEvent], sql: &mut Sql) -> Result<(), ConsumerError> {
        events.iter().try_for_each(|event| self.project(event, sql))
    }
}

/// A database projectors write to and queries read from: SQLite's or PostgreSQL's
/// read model.
///
/// A query written once against `&dyn ReadModel` runs on either backend. Here it
/// runs against a stand-in defined for the example (a real one is opened by
/// `rewind-sqlite` or `rewind-postgres`) that answers every query with one fixed row:
///
/// ```
/// use rewind::sql::{Dialect, Row, Value};
/// use rewind::{Consumer, Projector, ReadModel, StoreError};
/// use std::sync::Arc;
///
/// /// The application's query: how many events of a type were counted.
/// async fn count_of(read_model: &dyn ReadModel, event_type: &str) -> Result<i64, StoreError> {
///     let sql = "SELECT n FROM event_counts WHERE event_type = $1";
///     let Some(row) = read_model.query_opt(sql, (event_type,)).await? else { return Ok(0) };
///     row.get(0).map_err(StoreError::backend)
/// }
///
/// /// Answers every query with the row `(3)`; runs no projectors.
/// struct FixedRow;
///
/// #[async_trait::async_trait]
/// impl ReadModel for FixedRow {
///     fn dialect(&self) -> Dialect {
///         Dialect::Sqlite
///     }
///     async fn projector(&self, _: Arc<dyn Projector>) -> Result<Arc<dyn Consumer>, StoreError> {
///         Err(StoreError::Invalid("this stand-in runs no projectors".into()))
///     }
///     async fn query_values(&self, _sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
///         assert_eq!(params, [Value::Text("AccountOpened".into())]);
///         Ok(vec![Row::new(vec![Value::Int(3)])])
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(count_of(&FixedRow, "AccountOpened").await.unwrap(), 3);
/// # });
/// ```
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// The dialect its statements and queries are in.
    fn dialect(&self) -> Dialect;

    /// Creates `projector`'s tables (dropping outdated ones, see
    /// [`Projector::outdated`]) and returns the consumer that runs it for a
    /// subscription. On error nothing changed.
    async fn projector(&self, projector: Arc<dyn Projector>) -> Result<Arc<dyn Consumer>, StoreError>;

    /// Runs a query: `sql` with `$1`, `$2`, … bound to `params`.
    async fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError>;
}

impl dyn ReadModel {
    /// Runs a query; see [`ReadModel::query_values`].
    pub async fn query(&self, sql: &str, params: impl Params) -> Result<Vec<Row>, StoreError> {
        self.query_values(sql, params.into_values()).await
    }

    /// Runs a query for at most one row.
    pub async fn query_opt(&self, sql: &str, params: impl Params) -> Result<Option<Row>, StoreError> {
        Ok(self.query_values(sql, params.into_values()).await?.into_iter().next())
    }
}
