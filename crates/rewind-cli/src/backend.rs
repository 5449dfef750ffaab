//! Opening a [`Database`]: its event store, read model database and subscription
//! bookkeeping, the same way for serving and for every operation.
//!
//! On SQLite the read model shares the store's file and writer (one fsync per group
//! commit for events and projections alike); on PostgreSQL it shares the store's
//! schema; `memory://` keeps events in memory and the read model in a temporary
//! SQLite file removed when the backend is dropped.

use crate::database::Database;
use crate::error::OpsError;
use rewind::{EventStore, MemoryStore, SharedStore, SubscriptionStore};
use rewind_postgres::{PostgresReadModel, PostgresStore, PostgresSubscriptionStore};
use rewind_sqlite::{SqliteReadModel, SqliteStore, SqliteSubscriptionStore};
use std::sync::Arc;

/// The read model database of a backend, where projectors write their tables.
#[derive(Clone)]
pub enum ReadModel {
    /// A SQLite file (the store's own on `sqlite://`).
    Sqlite(SqliteReadModel),
    /// A PostgreSQL schema (the store's own).
    Postgres(Box<PostgresReadModel>),
}

impl ReadModel {
    /// The read model as every backend's projectors and queries see it.
    pub fn portable(&self) -> Arc<dyn rewind::ReadModel> {
        match self {
            ReadModel::Sqlite(model) => Arc::new(model.clone()),
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
    pub async fn open(database: &Database, mode: OpenMode) -> Result<Backend, OpsError> {
        let fail = OpsError::store(database);
        let backend = match database {
            Database::Sqlite(path) => {
                if mode == OpenMode::Existing && !path.exists() {
                    return Err(OpsError::Missing(database.to_string()));
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(OpsError::io(format!("creating {}", dir.display())))?;
                }
                let store = Arc::new(SqliteStore::open(path).await.map_err(fail)?);
                let model = SqliteReadModel::sharing(store.clone()).await.map_err(OpsError::store(database))?;
                let bookkeeping = SqliteSubscriptionStore::open(&model).await.map_err(OpsError::store(database))?;
                Backend {
                    database: database.clone(),
                    store: SharedStore::from(store),
                    read_model: ReadModel::Sqlite(model),
                    bookkeeping: Arc::new(bookkeeping),
                    _scratch: None,
                }
            }
            Database::Postgres { url, schema } => {
                if mode == OpenMode::Existing && !PostgresStore::exists(url, schema).await.map_err(fail)? {
                    return Err(OpsError::Missing(database.to_string()));
                }
                let store = PostgresStore::connect(url, schema).await.map_err(OpsError::store(database))?;
                let model = PostgresReadModel::connect(url, schema).await.map_err(OpsError::store(database))?;
                Backend {
                    database: database.clone(),
                    store: SharedStore::new(store),
                    bookkeeping: Arc::new(PostgresSubscriptionStore::new(&model)),
                    read_model: ReadModel::Postgres(Box::new(model)),
                    _scratch: None,
                }
            }
            Database::Memory => {
                if mode == OpenMode::Existing {
                    return Err(OpsError::Missing(format!("{database} (a memory store lives only inside its server)")));
                }
                let scratch = tempfile::tempdir().map_err(OpsError::io("creating a temporary directory"))?;
                let model = SqliteReadModel::open(scratch.path().join("read_model.db")).await.map_err(fail)?;
                let bookkeeping = SqliteSubscriptionStore::open(&model).await.map_err(OpsError::store(database))?;
                Backend {
                    database: database.clone(),
                    store: SharedStore::new(MemoryStore::new()),
                    read_model: ReadModel::Sqlite(model),
                    bookkeeping: Arc::new(bookkeeping),
                    _scratch: Some(scratch),
                }
            }
        };
        if mode == OpenMode::Empty {
            let head = backend.store.head_position().await.map_err(OpsError::store(database))?;
            if head.0 > 0 {
                return Err(OpsError::NotEmpty { database: database.to_string(), events: head.0 });
            }
        }
        Ok(backend)
    }
}
