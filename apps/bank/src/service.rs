//! The running bank: event store, read model, projections and the transfer process
//! on one database (SQLite, PostgreSQL, or memory for trials).
//!
//! [`BankApp`] describes the bank to Rewind's operations ([`rewind_cli`]): its router
//! and middleware, and its subscriptions. The server and every `bank` operation
//! (rebuild, replay, import) use that one description, so they run the same
//! projectors. Everything the HTTP layer needs is in [`Bank`]: [`Bank::app`] for
//! commands and [`Bank::queries`] for reads. The read model projection is strongly
//! consistent, so a write can answer with the account as the read model shows it.

use crate::app::router;
use crate::destination_check::DestinationCheck;
use crate::domain::TransferProcess;
use crate::read_model::{Accounts, Queries, Statements};
use async_trait::async_trait;
use rewind::{
    Application, EventStore, LoggingMiddleware, Middleware, StoreError, SubscriptionOptions, Subscriptions,
    SubscriptionsBuilder, ValidationMiddleware,
};
use rewind_backend::{Backend, Database, OpenError, OpenMode, ReadModel};
use rewind_cli::RewindApp;
use std::sync::Arc;

/// The subscription name of the transfer process.
pub const TRANSFER_PROCESS: &str = "transfer_process";

/// The bank as a Rewind application.
#[derive(Clone)]
pub struct BankApp {
    /// Middleware added after the bank's own (the server's command metrics).
    pub extra: Vec<Arc<dyn Middleware>>,
    /// Whether the monthly statements projection runs (off only to show, in a test,
    /// a store written before that projection existed).
    pub statements: bool,
}

impl Default for BankApp {
    fn default() -> BankApp {
        BankApp { extra: Vec::new(), statements: true }
    }
}

/// The queries over a backend's read model.
pub fn queries(read_model: &ReadModel) -> Queries {
    Queries(read_model.portable())
}

#[async_trait]
impl RewindApp for BankApp {
    fn application(&self, backend: &Backend) -> Application {
        let mut builder = Application::builder_shared(backend.store.clone())
            .router(router())
            .middleware(LoggingMiddleware)
            .middleware(ValidationMiddleware)
            .middleware(DestinationCheck(queries(&backend.read_model)));
        for middleware in &self.extra {
            builder = builder.middleware_shared(middleware.clone());
        }
        // On PostgreSQL several `bank serve` processes may share the store: each keeps
        // the accounts it has cached current with the others' deposits.
        if matches!(backend.read_model, ReadModel::Postgres(_)) {
            builder = builder.keep_instances_fresh();
        }
        builder.build()
    }

    async fn subscriptions(
        &self,
        builder: SubscriptionsBuilder,
        backend: &Backend,
    ) -> Result<SubscriptionsBuilder, StoreError> {
        // On SQLite in the store's own file, projectors are also written with the
        // events (a write's answer, which reads the accounts, then waits for nothing
        // more); their subscriptions catch up whatever the writer could not do.
        let builder = builder
            .read_model(backend.read_model.portable())
            .projector_with(Accounts, SubscriptionOptions::new().strong())
            .await?
            .process_manager(TRANSFER_PROCESS, TransferProcess, SubscriptionOptions::new());
        if self.statements { builder.projector(Statements).await } else { Ok(builder) }
    }
}

/// The bank, running.
pub struct Bank {
    /// Commands go here.
    pub app: Application,
    /// Reads come from here.
    pub queries: Queries,
    /// The projections and the transfer process (shared with the console).
    pub subscriptions: Arc<Subscriptions>,
    /// The database, kept open while the bank runs.
    pub backend: Backend,
}

/// Why the bank could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store or read model failed to open.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Subscriptions could not start.
    #[error("cannot start subscriptions: {0}")]
    Subscriptions(#[from] rewind::SubscriptionError),
}

/// Why [`Bank::settle`] could not wait.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The store could not tell its head.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A subscription is not running: paused (it would never catch up, so it is
    /// not waited for), or gone since it was listed.
    #[error(transparent)]
    Subscriptions(#[from] rewind::SubscriptionError),
}

impl Bank {
    /// Opens the database (creating it if missing), catches up the read model in the
    /// background and starts the transfer process, with `extra` middleware.
    pub async fn start(database: &Database, extra: Vec<Arc<dyn Middleware>>) -> Result<Bank, StartError> {
        Bank::start_app(database, &BankApp { extra, ..BankApp::default() }).await
    }

    /// [`Bank::start`] for a given description of the bank.
    pub async fn start_app(database: &Database, bank: &BankApp) -> Result<Bank, StartError> {
        let backend = Backend::open(database, OpenMode::Create).await?;
        let app = bank.application(&backend);
        let builder = Subscriptions::builder(&app, backend.bookkeeping.clone());
        let subscriptions = bank.subscriptions(builder, &backend).await.map_err(OpenError::store(database))?.start()?;
        Ok(Bank { app, queries: queries(&backend.read_model), subscriptions: Arc::new(subscriptions), backend })
    }

    /// Stops the subscriptions at a checkpoint.
    pub async fn shutdown(&self) {
        self.subscriptions.shutdown().await;
    }

    /// The store's head position.
    pub async fn head(&self) -> Result<rewind::GlobalPosition, StoreError> {
        self.app.store().head_position().await
    }

    /// The head once every append acknowledged so far is readable
    /// ([`rewind::EventStore::settled_head`]): what to wait for before reading
    /// "everything so far".
    pub async fn settled_head(&self) -> Result<rewind::GlobalPosition, StoreError> {
        self.app.store().settled_head().await
    }

    /// Waits until every subscription has handled every event, including the
    /// ones its own reactions appended (a transfer takes several passes:
    /// requested, withdrawn, deposited, completed), and returns that head. One
    /// wait for the head is not enough: the process manager appends after it.
    pub async fn settle(&self) -> Result<rewind::GlobalPosition, SettleError> {
        loop {
            let head = self.settled_head().await?;
            for status in self.subscriptions.status() {
                self.subscriptions.wait_for(&status.name, head).await?;
            }
            if self.settled_head().await? == head {
                return Ok(head);
            }
        }
    }
}
