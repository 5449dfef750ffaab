//! The three backends and a fresh store on each: memory, a new SQLite file in a
//! temporary directory (default `synchronous=FULL`), or a new PostgreSQL schema
//! (`rwbench_<secs>_<rand>`) dropped again by [`Target::close`].

use anyhow::Context;
use bank::app::application;
use rewind::{Application, MemoryStore, SharedStore};
use rewind_postgres::PostgresStore;
use rewind_sqlite::SqliteStore;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

/// Where events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `rewind::MemoryStore`.
    Memory,
    /// `rewind_sqlite::SqliteStore`.
    Sqlite,
    /// `rewind_postgres::PostgresStore`.
    Postgres,
}

impl Backend {
    /// The name used on the command line, by the peer and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" | "mem" => Ok(Backend::Memory),
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            other => Err(format!("unknown backend `{other}` (memory, sqlite or postgres)")),
        }
    }
}

/// A fresh store and where it lives.
pub struct Target {
    /// Which backend.
    pub backend: Backend,
    /// The store, typed, so the bank's application wraps it without extra boxing.
    store: Store,
    /// Files of this run (SQLite store, read models, raw tables); removed on drop.
    pub dir: TempDir,
    /// The PostgreSQL URL and schema, for read models and the raw tables.
    pub postgres: Option<PostgresPlace>,
}

/// A PostgreSQL schema of this run.
#[derive(Debug, Clone)]
pub struct PostgresPlace {
    /// The server.
    pub url: String,
    /// The fresh schema.
    pub schema: String,
}

enum Store {
    Memory(Arc<MemoryStore>),
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl Target {
    /// Opens a fresh, empty store on `backend` (`url` is needed for PostgreSQL).
    pub async fn open(backend: Backend, url: Option<&str>) -> anyhow::Result<Target> {
        let dir =
            tempfile::Builder::new().prefix("rewind-bench-").tempdir().context("creating a temporary directory")?;
        let (store, postgres) = match backend {
            Backend::Memory => (Store::Memory(Arc::new(MemoryStore::new())), None),
            Backend::Sqlite => {
                let store =
                    SqliteStore::open(dir.path().join("events.db")).await.context("opening the SQLite store")?;
                (Store::Sqlite(Arc::new(store)), None)
            }
            Backend::Postgres => {
                let url = url.context("PostgreSQL needs --database-url or TEST_DATABASE_URL")?.to_owned();
                let schema = fresh_schema_name();
                let store = PostgresStore::connect(&url, &schema).await.context("opening the PostgreSQL store")?;
                (Store::Postgres(Arc::new(store)), Some(PostgresPlace { url, schema }))
            }
        };
        Ok(Target { backend, store, dir, postgres })
    }

    /// The bank's command side (`bank::app::application`) on this store.
    pub fn bank(&self) -> Application {
        match &self.store {
            Store::Memory(store) => application(store.clone()),
            Store::Sqlite(store) => application(store.clone()),
            Store::Postgres(store) => application(store.clone()),
        }
    }

    /// The store, shared, for applications built here.
    pub fn shared(&self) -> SharedStore {
        match &self.store {
            Store::Memory(store) => store.clone().into(),
            Store::Sqlite(store) => store.clone().into(),
            Store::Postgres(store) => store.clone().into(),
        }
    }

    /// (commits, appends) the store's writer has done so far, to show how many
    /// appends shared a commit; none on memory.
    pub fn commits(&self) -> Option<(u64, u64)> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Sqlite(store) => Some((store.stats().commits, store.stats().requests)),
            Store::Postgres(store) => Some((store.stats().transactions, store.stats().appends)),
        }
    }

    /// The run's temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Drops the PostgreSQL schema (the temporary directory goes with `self`).
    pub async fn close(self) -> anyhow::Result<()> {
        let Target { store, postgres, .. } = self;
        drop(store);
        if let Some(place) = postgres {
            drop_schema(&place.url, &place.schema).await?;
        }
        Ok(())
    }
}

/// `rwbench_<unix seconds>_<8 random hex digits>`.
pub fn fresh_schema_name() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("rwbench_{secs}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A plain connection, its driver task spawned.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Drops `schema` and everything in it.
pub async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let client = connect(url).await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .with_context(|| format!("dropping schema {schema}"))
}
