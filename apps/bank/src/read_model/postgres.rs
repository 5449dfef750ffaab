//! The read model on PostgreSQL: [`Change`]s as PostgreSQL statements, views as queries.

use super::{AccountView, Change, Folded, Queries, Table, TransactionView, TransferView, changes};
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

/// Writes a folded batch with `unnest` arrays: new accounts, account updates,
/// transactions, new transfers, settled transfers.
async fn write_folded(tx: &Transaction<'_>, folded: &Folded) -> Result<(), tokio_postgres::Error> {
    if !folded.opened.is_empty() {
        let rows = &folded.opened;
        let uuids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
        let balances: Vec<i64> = rows.iter().map(|r| r.balance).collect();
        let statuses: Vec<&str> = rows.iter().map(|r| if r.closed { "closed" } else { "open" }).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let inserted: Vec<_> = rows.iter().map(|r| r.inserted_at).collect();
        let updated: Vec<_> = rows.iter().map(|r| r.updated_at).collect();
        tx.execute(
            "INSERT INTO accounts SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[],
                 $5::timestamptz[], $6::timestamptz[])
             ON CONFLICT (uuid) DO NOTHING",
            &[&uuids, &balances, &statuses, &versions, &inserted, &updated],
        )
        .await?;
    }
    if !folded.updated.is_empty() {
        let rows = &folded.updated;
        let uuids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
        let balances: Vec<Option<i64>> = rows.iter().map(|r| r.balance).collect();
        let closed: Vec<bool> = rows.iter().map(|r| r.closed).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let updated: Vec<_> = rows.iter().map(|r| r.updated_at).collect();
        tx.execute(
            "UPDATE accounts a SET current_balance = coalesce(u.balance, a.current_balance),
                 status = CASE WHEN u.closed THEN 'closed' ELSE a.status END,
                 version = u.version, updated_at = u.updated_at
             FROM unnest($1::uuid[], $2::bigint[], $3::bool[], $4::bigint[], $5::timestamptz[])
                 AS u(uuid, balance, closed, version, updated_at)
             WHERE a.uuid = u.uuid",
            &[&uuids, &balances, &closed, &versions, &updated],
        )
        .await?;
    }
    if !folded.transactions.is_empty() {
        let (mut ids, mut positions, mut accounts, mut kinds, mut amounts, mut afters, mut transfers, mut ats) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for change in &folded.transactions {
            if let Change::Transaction {
                event_id,
                position,
                account_uuid,
                kind,
                amount,
                balance_after,
                transfer_uuid,
                at,
            } = change
            {
                ids.push(*event_id);
                positions.push(*position);
                accounts.push(*account_uuid);
                kinds.push(*kind);
                amounts.push(*amount);
                afters.push(*balance_after);
                transfers.push(*transfer_uuid);
                ats.push(*at);
            }
        }
        tx.execute(
            "INSERT INTO account_transactions SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[],
                 $5::bigint[], $6::bigint[], $7::uuid[], $8::timestamptz[])
             ON CONFLICT (event_id) DO NOTHING",
            &[&ids, &positions, &accounts, &kinds, &amounts, &afters, &transfers, &ats],
        )
        .await?;
    }
    if !folded.requested.is_empty() {
        let (mut uuids, mut sources, mut destinations, mut amounts, mut ats) = (vec![], vec![], vec![], vec![], vec![]);
        for change in &folded.requested {
            if let Change::TransferRequested { uuid, source, destination, amount, at } = change {
                uuids.push(*uuid);
                sources.push(*source);
                destinations.push(*destination);
                amounts.push(*amount);
                ats.push(*at);
            }
        }
        tx.execute(
            "INSERT INTO transfers
             SELECT uuid, source, destination, amount, 'pending', NULL, at, at
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::timestamptz[])
                 AS r(uuid, source, destination, amount, at)
             ON CONFLICT (uuid) DO NOTHING",
            &[&uuids, &sources, &destinations, &amounts, &ats],
        )
        .await?;
    }
    if !folded.settled.is_empty() {
        let (mut uuids, mut statuses, mut reasons, mut ats) = (vec![], vec![], vec![], vec![]);
        for change in &folded.settled {
            if let Change::TransferSettled { uuid, status, reason, at } = change {
                uuids.push(*uuid);
                statuses.push(*status);
                reasons.push(reason.as_deref());
                ats.push(*at);
            }
        }
        tx.execute(
            "UPDATE transfers t SET status = s.status, reason = s.reason, updated_at = s.at
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS s(uuid, status, reason, at)
             WHERE t.uuid = s.uuid",
            &[&uuids, &statuses, &reasons, &ats],
        )
        .await?;
    }
    Ok(())
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

    /// A batch in at most five statements, one per table and kind of write.
    async fn project_batch(&self, tx: &Transaction<'_>, events: &[RecordedEvent]) -> Result<(), ConsumerError> {
        let mut all = Vec::with_capacity(events.len() * 2);
        for event in events {
            all.extend(changes(event)?);
        }
        write_folded(tx, &Folded::new(all)).await?;
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
