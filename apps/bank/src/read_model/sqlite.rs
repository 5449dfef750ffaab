//! The read model on SQLite: [`Change`]s as SQLite statements, views as queries.
//!
//! Every table is `STRICT`, so a value of the wrong type is refused rather than
//! stored. A file whose tables are from before that is rebuilt when the projector
//! starts ([`SqliteProjection::drop_outdated`]): the old tables are dropped, the
//! checkpoint forgotten, and the subscription re-projects every event.

use super::{AccountView, Change, Queries, Table, TransactionView, TransferView, changes};
use async_trait::async_trait;
use rewind::{ConsumerError, RecordedEvent, StoreError};
use rewind_sqlite::{SqliteProjection, SqliteReadModel};
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

/// The bank's read model projection, on SQLite.
pub struct SqliteBankProjection;

fn write(conn: &Connection, change: &Change) -> rusqlite::Result<usize> {
    match change {
        Change::Opened { uuid, balance, version, at } => conn.prepare_cached("INSERT INTO accounts VALUES (?1, ?2, 'open', ?3, ?4, ?4) ON CONFLICT (uuid) DO NOTHING")?.execute(
            params![uuid.to_string(), balance, version, at.to_rfc3339()],
        ),
        Change::Balance { uuid, balance, version, at } => conn.prepare_cached("UPDATE accounts SET current_balance = ?2, version = ?3, updated_at = ?4 WHERE uuid = ?1")?.execute(
            params![uuid.to_string(), balance, version, at.to_rfc3339()],
        ),
        Change::Closed { uuid, version, at } => conn.prepare_cached("UPDATE accounts SET status = 'closed', version = ?2, updated_at = ?3 WHERE uuid = ?1")?.execute(
            params![uuid.to_string(), version, at.to_rfc3339()],
        ),
        Change::Version { uuid, version, at } => conn.prepare_cached("UPDATE accounts SET version = ?2, updated_at = ?3 WHERE uuid = ?1")?.execute(
            params![uuid.to_string(), version, at.to_rfc3339()],
        ),
        Change::Transaction { event_id, position, account_uuid, kind, amount, balance_after, transfer_uuid, at } => {
            conn.prepare_cached("INSERT INTO account_transactions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (event_id) DO NOTHING")?.execute(
                params![
                    event_id.to_string(),
                    position,
                    account_uuid.to_string(),
                    kind,
                    amount,
                    balance_after,
                    transfer_uuid.map(|t| t.to_string()),
                    at.to_rfc3339()
                ],
            )
        }
        Change::TransferRequested { uuid, source, destination, amount, at } => conn.prepare_cached("INSERT INTO transfers VALUES (?1, ?2, ?3, ?4, 'pending', NULL, ?5, ?5) ON CONFLICT (uuid) DO NOTHING")?.execute(
            params![uuid.to_string(), source.to_string(), destination.to_string(), amount, at.to_rfc3339()],
        ),
        Change::TransferSettled { uuid, status, reason, at } => conn.prepare_cached("UPDATE transfers SET status = ?2, reason = ?3, updated_at = ?4 WHERE uuid = ?1")?.execute(
            params![uuid.to_string(), status, reason, at.to_rfc3339()],
        ),
    }
}

/// Whether any of `tables` exists without being `STRICT`: made before the read
/// model's tables were, when a column could silently hold a value of another type.
pub(crate) fn any_lax(conn: &Connection, tables: &[&str]) -> rusqlite::Result<bool> {
    let mut statement =
        conn.prepare_cached("SELECT strict FROM pragma_table_list WHERE schema = 'main' AND name = ?1")?;
    for table in tables {
        if statement.query_row([table], |row| row.get::<_, bool>(0)).optional()? == Some(false) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Drops `tables` (and their indexes) if any of them is not `STRICT`; whether it did.
/// `STRICT` cannot be added to a table in place, and the projection can be rebuilt.
pub(crate) fn drop_if_lax(conn: &Connection, tables: &[&str]) -> rusqlite::Result<bool> {
    if !any_lax(conn, tables)? {
        return Ok(false);
    }
    for table in tables {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
    }
    Ok(true)
}

impl SqliteProjection for SqliteBankProjection {
    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(include_str!("sqlite_tables.sql"))
    }

    /// The three tables share one checkpoint, so one lax table rebuilds them all.
    fn drop_outdated(&self, conn: &Connection) -> rusqlite::Result<bool> {
        drop_if_lax(conn, &Table::ALL.map(Table::name))
    }

    fn project(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        for change in changes(event)?.iter() {
            write(conn, change)?;
        }
        Ok(())
    }

    fn reset(&self, conn: &Connection) -> rusqlite::Result<()> {
        for table in Table::ALL {
            conn.execute_batch(&format!("DELETE FROM {}", table.name()))?;
        }
        Ok(())
    }
}

/// Queries on a SQLite read model.
pub struct SqliteQueries(pub SqliteReadModel);

fn uuid(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    text.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

fn time(row: &Row<'_>, index: usize) -> rusqlite::Result<chrono::DateTime<chrono::Utc>> {
    let text: String = row.get(index)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| t.to_utc())
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

#[async_trait]
impl Queries for SqliteQueries {
    async fn account(&self, id: Uuid) -> Result<Option<AccountView>, StoreError> {
        self.0.lookup(move |conn| {
            conn.prepare_cached("SELECT uuid, current_balance, status, version FROM accounts WHERE uuid = ?1")?
                .query_row([id.to_string()], |row| {
                    Ok(AccountView {
                        uuid: uuid(row, 0)?,
                        current_balance: row.get(1)?,
                        status: row.get(2)?,
                        version: row.get(3)?,
                    })
                })
                .optional()
        })
    }

    async fn transactions(&self, account: Uuid) -> Result<Vec<TransactionView>, StoreError> {
        self.0
            .read(move |conn| {
                // `+?1`: with `= ?1` and ORDER BY, SQLite re-prepares the statement on
                // every execution (the index is used either way).
                let mut statement = conn.prepare_cached(
                    "SELECT kind, amount, balance_after, transfer_uuid, occurred_at FROM account_transactions
                     WHERE account_uuid = +?1 ORDER BY position",
                )?;
                let rows = statement.query_map([account.to_string()], |row| {
                    let transfer: Option<String> = row.get(3)?;
                    Ok(TransactionView {
                        kind: row.get(0)?,
                        amount: row.get(1)?,
                        balance_after: row.get(2)?,
                        transfer_uuid: transfer.and_then(|t| t.parse().ok()),
                        occurred_at: time(row, 4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn transfer(&self, id: Uuid) -> Result<Option<TransferView>, StoreError> {
        self.0.lookup(move |conn| {
                conn.prepare_cached("SELECT uuid, source_account_uuid, destination_account_uuid, amount, status, reason FROM transfers WHERE uuid = ?1")?.query_row(
                    [id.to_string()],
                    |row| {
                        Ok(TransferView {
                            uuid: uuid(row, 0)?,
                            source_account_uuid: uuid(row, 1)?,
                            destination_account_uuid: uuid(row, 2)?,
                            amount: row.get(3)?,
                            status: row.get(4)?,
                            reason: row.get(5)?,
                        })
                    },
                )
                .optional()
        })
    }

    async fn statements(&self, account: Uuid) -> Result<Vec<super::statements::StatementView>, StoreError> {
        self.0.read(move |conn| super::statements::sqlite_statements(conn, account)).await
    }
}
