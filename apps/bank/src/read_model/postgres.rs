//! The read model on PostgreSQL: [`Change`]s as PostgreSQL statements, views as queries.

use super::{AccountView, Change, Queries, Table, TransactionView, TransferView, changes};
use async_trait::async_trait;
use rewind::{ConsumerError, RecordedEvent, StoreError};
use rewind_postgres::{PostgresProjection, PostgresReadModel};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// The bank's read model projection, on PostgreSQL.
pub struct PostgresBankProjection;

async fn write(tx: &Transaction<'_>, change: &Change) -> Result<u64, tokio_postgres::Error> {
    match change {
        Change::Opened { uuid, balance, version, at } => {
            tx.execute(
                "INSERT INTO accounts VALUES ($1, $2, 'open', $3, $4, $4) ON CONFLICT (uuid) DO NOTHING",
                &[uuid, balance, version, at],
            )
            .await
        }
        Change::Balance { uuid, balance, version, at } => {
            tx.execute(
                "UPDATE accounts SET current_balance = $2, version = $3, updated_at = $4 WHERE uuid = $1",
                &[uuid, balance, version, at],
            )
            .await
        }
        Change::Closed { uuid, version, at } => {
            tx.execute("UPDATE accounts SET status = 'closed', version = $2, updated_at = $3 WHERE uuid = $1", &[uuid, version, at])
                .await
        }
        Change::Version { uuid, version, at } => {
            tx.execute("UPDATE accounts SET version = $2, updated_at = $3 WHERE uuid = $1", &[uuid, version, at]).await
        }
        Change::Transaction { event_id, position, account_uuid, kind, amount, balance_after, transfer_uuid, at } => {
            tx.execute(
                "INSERT INTO account_transactions VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
                &[event_id, position, account_uuid, kind, amount, balance_after, transfer_uuid, at],
            )
            .await
        }
        Change::TransferRequested { uuid, source, destination, amount, at } => {
            tx.execute(
                "INSERT INTO transfers VALUES ($1, $2, $3, $4, 'pending', NULL, $5, $5) ON CONFLICT (uuid) DO NOTHING",
                &[uuid, source, destination, amount, at],
            )
            .await
        }
        Change::TransferSettled { uuid, status, reason, at } => {
            tx.execute("UPDATE transfers SET status = $2, reason = $3, updated_at = $4 WHERE uuid = $1", &[uuid, status, reason, at])
                .await
        }
    }
}

#[async_trait]
impl PostgresProjection for PostgresBankProjection {
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(include_str!("postgres_tables.sql")).await
    }

    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        for change in changes(event)?.iter() {
            write(tx, change).await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        for table in Table::ALL {
            tx.batch_execute(&format!("DELETE FROM {}", table.name())).await?;
        }
        Ok(())
    }
}

/// Queries on a PostgreSQL read model.
pub struct PostgresQueries(pub PostgresReadModel);

fn backend(error: tokio_postgres::Error) -> StoreError {
    StoreError::backend(error)
}

#[async_trait]
impl Queries for PostgresQueries {
    async fn account(&self, id: Uuid) -> Result<Option<AccountView>, StoreError> {
        let client = self.0.client().await?;
        let row = client
            .query_opt("SELECT uuid, current_balance, status, version FROM accounts WHERE uuid = $1", &[&id])
            .await
            .map_err(backend)?;
        row.map(|row| {
            Ok(AccountView {
                uuid: row.try_get(0).map_err(backend)?,
                current_balance: row.try_get(1).map_err(backend)?,
                status: row.try_get(2).map_err(backend)?,
                version: row.try_get(3).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn transactions(&self, account: Uuid) -> Result<Vec<TransactionView>, StoreError> {
        let client = self.0.client().await?;
        let rows = client
            .query(
                "SELECT kind, amount, balance_after, transfer_uuid, occurred_at FROM account_transactions
                 WHERE account_uuid = $1 ORDER BY position",
                &[&account],
            )
            .await
            .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                Ok(TransactionView {
                    kind: row.try_get(0).map_err(backend)?,
                    amount: row.try_get(1).map_err(backend)?,
                    balance_after: row.try_get(2).map_err(backend)?,
                    transfer_uuid: row.try_get(3).map_err(backend)?,
                    occurred_at: row.try_get(4).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn transfer(&self, id: Uuid) -> Result<Option<TransferView>, StoreError> {
        let client = self.0.client().await?;
        let row = client
            .query_opt(
                "SELECT uuid, source_account_uuid, destination_account_uuid, amount, status, reason FROM transfers WHERE uuid = $1",
                &[&id],
            )
            .await
            .map_err(backend)?;
        row.map(|row| {
            Ok(TransferView {
                uuid: row.try_get(0).map_err(backend)?,
                source_account_uuid: row.try_get(1).map_err(backend)?,
                destination_account_uuid: row.try_get(2).map_err(backend)?,
                amount: row.try_get(3).map_err(backend)?,
                status: row.try_get(4).map_err(backend)?,
                reason: row.try_get(5).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn statements(&self, account: Uuid) -> Result<Vec<super::statements::StatementView>, StoreError> {
        let client = self.0.client().await?;
        super::statements::postgres_statements(&client, account).await.map_err(backend)
    }
}
