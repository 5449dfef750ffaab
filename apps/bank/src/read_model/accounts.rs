//! The `accounts`, `account_transactions` and `transfers` tables, written from the
//! account events by one projector on every backend.
//!
//! Each [`Change`] is one portable statement. A batch is first folded to one
//! write per row ([`Folded`]): the same tables, fewer statements, which is what
//! PostgreSQL pays for (SQLite projects event by event, in process).
//!
//! On SQLite every table is `STRICT`, so a value of the wrong type is refused
//! rather than stored. A file whose tables are from before that is rebuilt when
//! the projector starts ([`Projector::outdated`]): the old tables are dropped, the
//! checkpoint forgotten, and the subscription re-projects every event.

use super::{Change, Folded, PROJECTOR, Table, changes};
use rewind::sql::{Dialect, Sql};
use rewind::{ConsumerError, Projector, RecordedEvent};

/// The bank's read model projector (strongly consistent: a write answers with
/// the account as these tables show it).
pub struct Accounts;

const OPEN: &str = "INSERT INTO accounts (uuid, current_balance, status, version, inserted_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uuid) DO NOTHING";
const UPDATE: &str = "UPDATE accounts SET current_balance = coalesce($2, current_balance),
     status = CASE WHEN $3 THEN 'closed' ELSE status END, version = $4, updated_at = $5 WHERE uuid = $1";
const TRANSACTION: &str = "INSERT INTO account_transactions
     (event_id, position, account_uuid, kind, amount, balance_after, transfer_uuid, occurred_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING";
const REQUESTED: &str = "INSERT INTO transfers (uuid, source_account_uuid, destination_account_uuid, amount, status,
     reason, requested_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', NULL, $5, $5) ON CONFLICT (uuid) DO NOTHING";
const SETTLED: &str = "UPDATE transfers SET status = $2, reason = $3, updated_at = $4 WHERE uuid = $1";

/// Writes one change.
fn write(sql: &mut Sql, change: Change) {
    match change {
        Change::Opened { uuid, balance, version, at } => sql.execute(OPEN, (uuid, balance, "open", version, at, at)),
        Change::Balance { uuid, balance, version, at } => sql.execute(UPDATE, (uuid, balance, false, version, at)),
        Change::Closed { uuid, version, at } => sql.execute(UPDATE, (uuid, None::<i64>, true, version, at)),
        Change::Version { uuid, version, at } => sql.execute(UPDATE, (uuid, None::<i64>, false, version, at)),
        Change::Transaction { event_id, position, account_uuid, kind, amount, balance_after, transfer_uuid, at } => {
            sql.execute(TRANSACTION, (event_id, position, account_uuid, kind, amount, balance_after, transfer_uuid, at))
        }
        Change::TransferRequested { uuid, source, destination, amount, at } => {
            sql.execute(REQUESTED, (uuid, source, destination, amount, at))
        }
        Change::TransferSettled { uuid, status, reason, at } => sql.execute(SETTLED, (uuid, status, reason, at)),
    };
}

impl Projector for Accounts {
    fn name(&self) -> &str {
        PROJECTOR
    }

    fn schema(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => include_str!("accounts_postgres.sql"),
            _ => include_str!("accounts_sqlite.sql"),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        const TABLES: [&str; 3] = [Table::Accounts.name(), Table::Transactions.name(), Table::Transfers.name()];
        &TABLES
    }

    /// The three tables share one checkpoint, so one table from before they were
    /// `STRICT` rebuilds them all.
    fn outdated(&self, dialect: Dialect) -> Option<&'static str> {
        (dialect == Dialect::Sqlite).then_some(
            "SELECT 1 FROM pragma_table_list WHERE schema = 'main' AND strict = 0
             AND name IN ('accounts', 'account_transactions', 'transfers')",
        )
    }

    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        changes(event)?.into_iter().for_each(|change| write(sql, change));
        Ok(())
    }

    /// New accounts, then one update per account, then the movements and
    /// transfers in order: at most one statement per row.
    fn project_batch(&self, events: &[RecordedEvent], sql: &mut Sql) -> Result<(), ConsumerError> {
        let mut all = Vec::with_capacity(events.len() * 2);
        for event in events {
            all.extend(changes(event)?);
        }
        let folded = Folded::new(all);
        for row in folded.opened {
            let status = if row.closed { "closed" } else { "open" };
            sql.execute(OPEN, (row.uuid, row.balance, status, row.version, row.inserted_at, row.updated_at));
        }
        for row in folded.updated {
            sql.execute(UPDATE, (row.uuid, row.balance, row.closed, row.version, row.updated_at));
        }
        for change in folded.transactions.into_iter().chain(folded.requested).chain(folded.settled) {
            write(sql, change);
        }
        Ok(())
    }
}
