//! Opening a [`Database`]: its event store, read model database and subscription
//! bookkeeping, the same way for serving and for every operation.
//!
//! On SQLite the read model shares the store's file and writer (one fsync per group
//! commit for events and projections alike, and projectors written inline); on
//! PostgreSQL it shares the store's schema; `memory://` keeps events in memory and
//! the read model in a temporary SQLite file removed when the backend is dropped.

use crate::database::Database;
use crate::error::OpenError;
use rewind::{Application, EventStore, SharedStore, SubscriptionStore, Subscriptions, SubscriptionsBuilder};
use std::sync::Arc;

/// The read model database of a backend, where projectors write their tables: for
/// SQL a projector cannot say portably ([`ReadModel::portable`] is what portable
/// projectors and queries use).
#[derive(Clone)]
pub enum ReadModel {
    /// A SQLite file (the store's own on `sqlite://`).
    #[cfg(feature = "sqlite")]
    Sqlite(rewind_sqlite::SqliteReadModel),
    /// A PostgreSQL schema (the store's own).
    #[cfg(feature = "postgres")]
    Postgres(Box<rewind_postgres::PostgresReadModel>),
}

impl ReadModel {
    /// The read model as every backend's projectors and queries see it.
    pub fn portable(&self) -> Arc<dyn rewind::ReadModel> {
        match self {
            #[cfg(feature = "sqlite")]
            ReadModel::Sqlite(model) => Arc::new(model.clone()),
            #[cfg(feature = "postgres")]
            ReadModel::Postgres(model) => Arc::new(model.as_ref().clone()),
        }
    }
}

/// What an operation or a server needs the database to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the store if it is missing (serving).
    Create,
    /// The store must exist (inspecting, exporting, the source of a replay).
    Existing,
    /// Create the store if missing; it must hold no events (import, replay target).
    Empty,
}

/// An opened database.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use rewind_backend::{Backend, OpenMode};
///
/// let backend = Backend::open(&"memory://".parse().unwrap(), OpenMode::Create).await.unwrap();
/// let app = rewind::Application::builder_shared(backend.store.clone()).build();
/// // Projectors registered here write to the backend's read model.
/// let subscriptions = backend.subscriptions(&app).start().unwrap();
/// assert!(subscriptions.status().is_empty());
/// # });
/// ```
pub struct Backend {
    /// Which database.
    pub database: Database,
    /// The event store.
    pub store: SharedStore,
    /// Where projectors write.
    pub read_model: ReadModel,
    /// Checkpoints, dead letters, process manager state.
    pub bookkeeping: Arc<dyn SubscriptionStore>,
    /// `memory://`'s read model file, removed on drop (after the read model).
    _scratch: Option<tempfile::TempDir>,
}

impl Backend {
    /// Opens `database` as `mode` requires.
    pub async fn open(database: &Database, mode: OpenMode) -> Result<Backend, OpenError> {
        let backend = match database {
            Database::Sqlite(path) => sqlite::open(database, path, mode).await?,
            Database::Postgres { url, schema } => postgres::open(database, url, schema, mode).await?,
            Database::Memory => sqlite::memory(database, mode).await?,
        };
        if mode == OpenMode::Empty {
            let head = backend.store.settled_head().await.map_err(OpenError::store(database))?;
            if head.0 > 0 {
                return Err(OpenError::NotEmpty { database: database.to_string(), events: head.0 });
            }
        }
        Ok(backend)
    }

    /// A subscriptions builder for `app` with this backend's bookkeeping and read
    /// model, ready for [`projector`](SubscriptionsBuilder::projector)s.
    pub fn subscriptions(&self, app: &Application) -> SubscriptionsBuilder {
        Subscriptions::builder(app, self.bookkeeping.clone()).read_model(self.read_model.portable())
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use rewind::MemoryStore;
    use rewind_sqlite::{SqliteReadModel, SqliteStore, SqliteSubscriptionStore};
    use std::path::Path;

    pub(super) async fn open(database: &Database, path: &Path, mode: OpenMode) -> Result<Backend, OpenError> {
        if mode == OpenMode::Existing && !path.exists() {
            return Err(OpenError::Missing(database.to_string()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(OpenError::io(format!("creating {}", dir.display())))?;
        }
        let fail = || OpenError::store(database);
        let store = Arc::new(SqliteStore::open(path).await.map_err(fail())?);
        let model = SqliteReadModel::sharing(store.clone()).await.map_err(fail())?;
        let bookkeeping = SqliteSubscriptionStore::open(&model).await.map_err(fail())?;
        Ok(Backend {
            database: database.clone(),
            store: SharedStore::from(store),
            read_model: ReadModel::Sqlite(model),
            bookkeeping: Arc::new(bookkeeping),
            _scratch: None,
        })
    }

    pub(super) async fn memory(database: &Database, mode: OpenMode) -> Result<Backend, OpenError> {
        if mode == OpenMode::Existing {
            return Err(OpenError::Missing(format!("{database} (a memory store lives only inside its server)")));
        }
        let scratch = tempfile::tempdir().map_err(OpenError::io("creating a temporary directory"))?;
        let fail = || OpenError::store(database);
        let model = SqliteReadModel::open(scratch.path().join("read_model.db")).await.map_err(fail())?;
        let bookkeeping = SqliteSubscriptionStore::open(&model).await.map_err(fail())?;
        Ok(Backend {
            database: database.clone(),
            store: SharedStore::new(MemoryStore::new()),
            read_model: ReadModel::Sqlite(model),
            bookkeeping: Arc::new(bookkeeping),
            _scratch: Some(scratch),
        })
    }
}

#[cfg(not(feature = "sqlite"))]
mod sqlite {
    use super::*;

    pub(super) async fn open(database: &Database, _: &std::path::Path, _: OpenMode) -> Result<Backend, OpenError> {
        Err(OpenError::NotBuilt { database: database.to_string(), feature: "sqlite" })
    }

    pub(super) async fn memory(database: &Database, _: OpenMode) -> Result<Backend, OpenError> {
        Err(OpenError::NotBuilt { database: database.to_string(), feature: "sqlite" })
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use rewind_postgres::{PostgresReadModel, PostgresStore, PostgresSubscriptionStore};

    pub(super) async fn open(
        database: &Database,
        url: &str,
        schema: &str,
        mode: OpenMode,
    ) -> Result<Backend, OpenError> {
        let fail = || OpenError::store(database);
        if mode == OpenMode::Existing && !PostgresStore::exists(url, schema).await.map_err(fail())? {
            return Err(OpenError::Missing(database.to_string()));
        }
        let store = PostgresStore::connect(url, schema).await.map_err(fail())?;
        let model = PostgresReadModel::connect(url, schema).await.map_err(fail())?;
        Ok(Backend {
            database: database.clone(),
            store: SharedStore::new(store),
            bookkeeping: Arc::new(PostgresSubscriptionStore::new(&model)),
            read_model: ReadModel::Postgres(Box::new(model)),
            _scratch: None,
        })
    }
}

#[cfg(not(feature = "postgres"))]
mod postgres {
    use super::*;

    pub(super) async fn open(database: &Database, _: &str, _: &str, _: OpenMode) -> Result<Backend, OpenError> {
        Err(OpenError::NotBuilt { database: database.to_string(), feature: "postgres" })
    }
}
