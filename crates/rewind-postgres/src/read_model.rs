//! A read model database on PostgreSQL: a connection pool whose connections work in
//! one schema (`search_path`), so projections write plain table names and every
//! test or tenant can have its own schema.
//!
//! The schema and the read side's bookkeeping tables are created on connect, under a
//! transaction-scoped advisory lock so concurrent processes do not race.

use crate::checkpoint_feed::CheckpointFeed;
use crate::connection::Connector;
use deadpool_postgres::{Object, Pool};
use rewind::StoreError;
use std::sync::Arc;

/// A PostgreSQL read model database. Cheap to clone.
///
/// ```no_run
/// # async fn example() -> Result<(), rewind::StoreError> {
/// let model = rewind_postgres::PostgresReadModel::connect("postgres://postgres@127.0.0.1/bank", "bank").await?;
/// let client = model.client().await?;
/// let rows = client.query("SELECT name, position FROM rewind_projections", &[]).await.map_err(rewind::StoreError::backend)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresReadModel {
    pool: Pool,
    schema: String,
    connector: Connector,
    checkpoints: Arc<CheckpointFeed>,
}

fn valid_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("`{schema}` is not a plain schema name ([A-Za-z_][A-Za-z0-9_]*)")))
    }
}

impl PostgresReadModel {
    /// Connects to `url` (its keys are those of [`PostgresOptions`](crate::PostgresOptions))
    /// and works in `schema` (created if missing).
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresReadModel, StoreError> {
        valid_schema(schema)?;
        let connector = Connector::new(url, &format!("rewind:{schema}"), &[format!("-c search_path={schema}")])?;
        let pool = connector.pool(8)?;
        let checkpoints = Arc::new(CheckpointFeed::new(connector.clone(), schema));
        let model = PostgresReadModel { pool, schema: schema.to_owned(), connector, checkpoints };
        model.migrate().await?;
        Ok(model)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::backend)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('rewind:read_model'), hashtext($1))", &[&self.schema])
            .await
            .map_err(StoreError::backend)?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.schema))
            .await
            .map_err(StoreError::backend)?;
        tx.batch_execute(include_str!("read_model/tables.sql")).await.map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }

    /// A pooled connection working in the read model's schema.
    pub async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(StoreError::backend)
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// How this model's connections are made.
    #[cfg(test)]
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The projectors' announced checkpoints ([`crate::checkpoint_feed`]).
    pub(crate) fn checkpoints(&self) -> &CheckpointFeed {
        &self.checkpoints
    }

    /// A connection outside the pool (leases hold one for as long as they live).
    pub(crate) async fn dedicated(&self) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
        let (client, connection) = self.connector.connect_raw().await.map_err(|e| e.into_store())?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "lease connection closed");
            }
        });
        Ok((client, driver))
    }

    /// `work` on this model's connections, bounded by `query_timeout`
    /// ([`crate::connection`]). On a stall every idle connection is closed: the one
    /// that stalled went back to the pool with an answer still owed, and it cannot be
    /// told apart from the others (which likely share its broken path anyway).
    pub(crate) async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.connector.bounded(work).await {
            Ok(result) => result,
            Err(stalled) => {
                self.pool.retain(|_, _| false);
                Err(StoreError::backend(stalled))
            }
        }
    }
}
