//! The running bank: event store, read model, projections and the transfer process
//! on one database, SQLite or PostgreSQL.
//!
//! Everything the HTTP layer needs is here: [`Bank::app`] for commands and
//! [`Bank::queries`] for reads. The read model projection is strongly consistent, so
//! a write can answer with the account as the read model shows it.

use crate::app::router;
use crate::database::Database;
use crate::destination_check::DestinationCheck;
use crate::domain::TransferProcess;
use crate::read_model::postgres::{PostgresBankProjection, PostgresQueries};
use crate::read_model::sqlite::{SqliteBankProjection, SqliteQueries};
use crate::read_model::{PROJECTOR, Queries};
use rewind::{
    Application, Consumer, EventStore, LoggingMiddleware, Middleware, StoreError, SubscriptionOptions,
    SubscriptionStore, Subscriptions, ValidationMiddleware,
};
use rewind_postgres::{PostgresProjector, PostgresReadModel, PostgresStore, PostgresSubscriptionStore};
use rewind_sqlite::{SqliteProjector, SqliteReadModel, SqliteStore, SqliteSubscriptionStore};
use std::sync::Arc;

/// The subscription name of the transfer process.
pub const TRANSFER_PROCESS: &str = "transfer_process";

/// The bank, running.
pub struct Bank {
    /// Commands go here.
    pub app: Application,
    /// Reads come from here.
    pub queries: Arc<dyn Queries>,
    /// The projections and the transfer process.
    pub subscriptions: Subscriptions,
}

/// Why the bank could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store or read model failed to open.
    #[error("cannot open {database}: {source}")]
    Store {
        /// Which database.
        database: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Subscriptions could not start.
    #[error("cannot start subscriptions: {0}")]
    Subscriptions(#[from] rewind::SubscriptionError),
}

/// What differs per backend.
struct Parts {
    store: rewind::SharedStore,
    queries: Arc<dyn Queries>,
    bookkeeping: Arc<dyn SubscriptionStore>,
    projector: Arc<dyn Consumer>,
}

async fn sqlite(path: &std::path::Path) -> Result<Parts, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
    }
    let store = Arc::new(SqliteStore::open(path).await?);
    let model = SqliteReadModel::sharing(store.clone()).await?;
    let projector = Arc::new(SqliteProjector::new(PROJECTOR, SqliteBankProjection, &model).await?);
    Ok(Parts {
        store: rewind::SharedStore::from(store),
        bookkeeping: Arc::new(SqliteSubscriptionStore::open(&model).await?),
        queries: Arc::new(SqliteQueries(model)),
        projector,
    })
}

async fn postgres(url: &str, schema: &str) -> Result<Parts, StoreError> {
    let store = PostgresStore::connect(url, schema).await?;
    let model = PostgresReadModel::connect(url, schema).await?;
    let projector = Arc::new(PostgresProjector::new(PROJECTOR, PostgresBankProjection, &model).await?);
    Ok(Parts {
        store: rewind::SharedStore::new(store),
        bookkeeping: Arc::new(PostgresSubscriptionStore::new(&model)),
        queries: Arc::new(PostgresQueries(model)),
        projector,
    })
}

impl Bank {
    /// Opens the database, catches up the read model in the background and starts
    /// the transfer process.
    pub async fn start(database: &Database, extra: Vec<Arc<dyn Middleware>>) -> Result<Bank, StartError> {
        let parts = match database {
            Database::Sqlite(path) => sqlite(path).await,
            Database::Postgres { url, schema } => postgres(url, schema).await,
        }
        .map_err(|source| StartError::Store { database: database.to_string(), source })?;
        let mut builder = Application::builder_shared(parts.store.clone())
            .router(router())
            .middleware(LoggingMiddleware)
            .middleware(ValidationMiddleware)
            .middleware(DestinationCheck(parts.queries.clone()));
        for middleware in extra {
            builder = builder.middleware_shared(middleware);
        }
        let app = builder.build();
        let subscriptions = Subscriptions::builder(&app, parts.bookkeeping)
            .consumer(PROJECTOR, parts.projector, SubscriptionOptions::new().strong())
            .process_manager(TRANSFER_PROCESS, TransferProcess, SubscriptionOptions::new())
            .start()?;
        Ok(Bank { app, queries: parts.queries, subscriptions })
    }

    /// Stops the subscriptions at a checkpoint.
    pub async fn shutdown(&self) {
        self.subscriptions.shutdown().await;
    }

    /// The store's head position.
    pub async fn head(&self) -> Result<rewind::GlobalPosition, StoreError> {
        self.app.store().head_position().await
    }
}
