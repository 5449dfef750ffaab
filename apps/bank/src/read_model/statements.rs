//! Monthly statements: per account and calendar month (UTC), the opening balance,
//! money in, money out, the closing balance and the number of movements.
//!
//! This projection did not exist when the first events were written; it is the
//! "mine your old events" example. Deployed on a store that already holds years of
//! events, it starts from the origin and catches up while the service runs (it is
//! not strongly consistent, so no request waits for it), then stays live.
//!
//! The mapping from an event to a [`StatementLine`] is pure; the SQLite and
//! PostgreSQL projections below only write it.

use crate::domain::AccountEvent;
use async_trait::async_trait;
use rewind::{ConsumerError, EventError, RecordedEvent};
use rewind_postgres::PostgresProjection;
use rewind_sqlite::SqliteProjection;
use serde::Serialize;
use uuid::Uuid;

/// The statements projector's (and subscription's) name.
pub const STATEMENTS: &str = "monthly_statements";

/// One money movement, as a statement counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The account.
    pub account_uuid: Uuid,
    /// `YYYY-MM` of the event's commit time.
    pub month: String,
    /// Money in (opening deposit, deposits, incoming transfers, refunds).
    pub credit: i64,
    /// Money out (withdrawals, outgoing transfers).
    pub debit: i64,
    /// The balance after the movement.
    pub balance_after: i64,
}

/// The statement line an event adds, if it moves money.
pub fn statement_line(recorded: &RecordedEvent) -> Result<Option<StatementLine>, EventError> {
    let line = |account_uuid, credit, debit, balance_after| {
        Some(StatementLine {
            account_uuid,
            month: recorded.created_at.format("%Y-%m").to_string(),
            credit,
            debit,
            balance_after,
        })
    };
    Ok(match recorded.decode::<AccountEvent>()? {
        AccountEvent::AccountOpened { account_uuid, initial_balance } => {
            line(account_uuid, initial_balance, 0, initial_balance)
        }
        AccountEvent::DepositedIntoAccount { account_uuid, deposit_amount, new_current_balance, .. } => {
            line(account_uuid, deposit_amount, 0, new_current_balance)
        }
        AccountEvent::WithdrawnFromAccount { account_uuid, withdraw_amount, new_current_balance, .. } => {
            line(account_uuid, 0, withdraw_amount, new_current_balance)
        }
        AccountEvent::MoneyTransferRefunded { account_uuid, amount, new_current_balance, .. } => {
            line(account_uuid, amount, 0, new_current_balance)
        }
        AccountEvent::MoneyTransferRequested { .. }
        | AccountEvent::MoneyTransferFailed { .. }
        | AccountEvent::AccountClosed { .. } => None,
    })
}

/// One month of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementView {
    /// `YYYY-MM`.
    pub month: String,
    /// The balance before the month's first movement.
    pub opening_balance: i64,
    /// Money in.
    pub credits: i64,
    /// Money out.
    pub debits: i64,
    /// The balance after the month's last movement.
    pub closing_balance: i64,
    /// How many movements.
    pub transactions: i64,
}

/// Monthly statements on SQLite.
pub struct SqliteStatements;

impl SqliteProjection for SqliteStatements {
    fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS monthly_statements (
                account_uuid    TEXT NOT NULL,
                month           TEXT NOT NULL,
                opening_balance INTEGER NOT NULL,
                credits         INTEGER NOT NULL,
                debits          INTEGER NOT NULL,
                closing_balance INTEGER NOT NULL,
                transactions    INTEGER NOT NULL,
                PRIMARY KEY (account_uuid, month)
            )",
        )
    }

    fn project(&self, conn: &rusqlite::Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let Some(line) = statement_line(event)? else { return Ok(()) };
        let opening = line.balance_after - line.credit + line.debit;
        conn.prepare_cached(
            "INSERT INTO monthly_statements VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)
             ON CONFLICT (account_uuid, month) DO UPDATE SET
                credits = credits + excluded.credits, debits = debits + excluded.debits,
                closing_balance = excluded.closing_balance, transactions = transactions + 1",
        )?
        .execute(rusqlite::params![
            line.account_uuid.to_string(),
            line.month,
            opening,
            line.credit,
            line.debit,
            line.balance_after
        ])?;
        Ok(())
    }

    fn reset(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM monthly_statements")
    }
}

/// Reads an account's statements on SQLite.
pub fn sqlite_statements(conn: &rusqlite::Connection, account: Uuid) -> rusqlite::Result<Vec<StatementView>> {
    // `+?1`: with `= ?1` and ORDER BY, SQLite re-prepares the statement on every execution.
    let mut statement = conn.prepare_cached(
        "SELECT month, opening_balance, credits, debits, closing_balance, transactions
         FROM monthly_statements WHERE account_uuid = +?1 ORDER BY month",
    )?;
    let rows = statement.query_map([account.to_string()], |row| {
        Ok(StatementView {
            month: row.get(0)?,
            opening_balance: row.get(1)?,
            credits: row.get(2)?,
            debits: row.get(3)?,
            closing_balance: row.get(4)?,
            transactions: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// Monthly statements on PostgreSQL.
pub struct PostgresStatements;

#[async_trait]
impl PostgresProjection for PostgresStatements {
    async fn create(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS monthly_statements (
                account_uuid    uuid   NOT NULL,
                month           text   NOT NULL,
                opening_balance bigint NOT NULL,
                credits         bigint NOT NULL,
                debits          bigint NOT NULL,
                closing_balance bigint NOT NULL,
                transactions    bigint NOT NULL,
                PRIMARY KEY (account_uuid, month)
            )",
        )
        .await
    }

    async fn project(&self, tx: &tokio_postgres::Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let Some(line) = statement_line(event)? else { return Ok(()) };
        let opening = line.balance_after - line.credit + line.debit;
        tx.execute(
            "INSERT INTO monthly_statements VALUES ($1, $2, $3, $4, $5, $6, 1)
             ON CONFLICT (account_uuid, month) DO UPDATE SET
                credits = monthly_statements.credits + excluded.credits,
                debits = monthly_statements.debits + excluded.debits,
                closing_balance = excluded.closing_balance,
                transactions = monthly_statements.transactions + 1",
            &[&line.account_uuid, &line.month, &opening, &line.credit, &line.debit, &line.balance_after],
        )
        .await?;
        Ok(())
    }

    /// A batch in one statement: lines folded per account and month first.
    async fn project_batch(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ConsumerError> {
        let mut index = std::collections::HashMap::new();
        let mut rows: Vec<(Uuid, String, StatementView)> = Vec::new();
        for event in events {
            let Some(line) = statement_line(event)? else { continue };
            let key = (line.account_uuid, line.month.clone());
            let at = *index.entry(key).or_insert_with(|| {
                let opening = line.balance_after - line.credit + line.debit;
                let empty = StatementView {
                    month: line.month.clone(),
                    opening_balance: opening,
                    credits: 0,
                    debits: 0,
                    closing_balance: opening,
                    transactions: 0,
                };
                rows.push((line.account_uuid, line.month.clone(), empty));
                rows.len() - 1
            });
            let row = &mut rows[at].2;
            row.credits += line.credit;
            row.debits += line.debit;
            row.closing_balance = line.balance_after;
            row.transactions += 1;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let accounts: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
        let months: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let column = |f: fn(&StatementView) -> i64| rows.iter().map(|r| f(&r.2)).collect::<Vec<i64>>();
        let (openings, credits, debits) = (column(|v| v.opening_balance), column(|v| v.credits), column(|v| v.debits));
        let (closings, counts) = (column(|v| v.closing_balance), column(|v| v.transactions));
        tx.execute(
            "INSERT INTO monthly_statements
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
             ON CONFLICT (account_uuid, month) DO UPDATE SET
                credits = monthly_statements.credits + excluded.credits,
                debits = monthly_statements.debits + excluded.debits,
                closing_balance = excluded.closing_balance,
                transactions = monthly_statements.transactions + excluded.transactions",
            &[&accounts, &months, &openings, &credits, &debits, &closings, &counts],
        )
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("DELETE FROM monthly_statements").await
    }
}

/// Reads an account's statements on PostgreSQL.
pub async fn postgres_statements(
    client: &tokio_postgres::Client,
    account: Uuid,
) -> Result<Vec<StatementView>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT month, opening_balance, credits, debits, closing_balance, transactions
             FROM monthly_statements WHERE account_uuid = $1 ORDER BY month",
            &[&account],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StatementView {
                month: row.try_get(0)?,
                opening_balance: row.try_get(1)?,
                credits: row.try_get(2)?,
                debits: row.try_get(3)?,
                closing_balance: row.try_get(4)?,
                transactions: row.try_get(5)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind::{GlobalPosition, Metadata, StreamVersion};

    fn recorded(event: AccountEvent, at: &str) -> RecordedEvent {
        let encoded = rewind::encode_event(&event).expect("encode");
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: "account-x".into(),
            stream_version: StreamVersion(1),
            position: GlobalPosition(1),
            event_type: encoded.event_type,
            data: encoded.data,
            metadata: Metadata::default(),
            created_at: chrono::DateTime::parse_from_rfc3339(at).expect("time").to_utc(),
        }
    }

    #[test]
    fn money_movements_become_lines_in_their_month() {
        let a = Uuid::from_u128(7);
        let withdrawn = AccountEvent::WithdrawnFromAccount {
            account_uuid: a,
            withdraw_amount: 30,
            new_current_balance: 70,
            transfer_uuid: None,
        };
        let line = statement_line(&recorded(withdrawn, "2026-01-31T23:59:59Z")).expect("decode").expect("a line");
        assert_eq!(
            line,
            StatementLine { account_uuid: a, month: "2026-01".into(), credit: 0, debit: 30, balance_after: 70 }
        );
        let closed = AccountEvent::AccountClosed { account_uuid: a };
        assert_eq!(statement_line(&recorded(closed, "2026-02-01T00:00:00Z")).expect("decode"), None);
    }
}
