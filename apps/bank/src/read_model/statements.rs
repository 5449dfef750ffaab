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
//!
//! Money is exact or says it is not. Balances fit in `i64` (the account refuses a
//! movement that would overflow one), but a month's money in or out need not: money
//! that goes in and out again adds up past `i64::MAX`. Such a total is stored as
//! `NULL` and shown as `null`, with `overflow: true` on its statement, and stays so
//! for the month; the other figures stay exact and the projection goes on. Every
//! sum is checked, in Rust (`checked_add`) and in SQL (a `CASE` that yields `NULL`
//! instead of the overflow SQLite would turn into a REAL and PostgreSQL into an
//! error); the SQLite table is `STRICT`, so no REAL can take an integer's place.

use crate::domain::AccountEvent;
use async_trait::async_trait;
use rewind::{ConsumerError, EventError, RecordedEvent};
use rewind_postgres::PostgresProjection;
use rewind_sqlite::SqliteProjection;
use serde::Serialize;
use std::sync::LazyLock;
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
    /// Money in (opening deposit, deposits, incoming transfers, refunds), >= 0.
    pub credit: i64,
    /// Money out (withdrawals, outgoing transfers), >= 0.
    pub debit: i64,
    /// The balance before the movement.
    pub balance_before: i64,
    /// The balance after the movement.
    pub balance_after: i64,
}

/// Why an event cannot go on a statement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// The event does not decode.
    #[error(transparent)]
    Event(#[from] EventError),
    /// No account's history holds this event (an amount below zero, or a balance
    /// before it beyond `i64`): a corrupt or hand-made event.
    #[error("event {event_id} cannot be on a statement: {reason}")]
    Inconsistent {
        /// The event.
        event_id: Uuid,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The statement line an event adds, if it moves money.
pub fn statement_line(recorded: &RecordedEvent) -> Result<Option<StatementLine>, StatementError> {
    let (account_uuid, credit, debit, balance_after) = match recorded.decode::<AccountEvent>()? {
        AccountEvent::AccountOpened { account_uuid, initial_balance } => {
            (account_uuid, initial_balance, 0, initial_balance)
        }
        AccountEvent::DepositedIntoAccount { account_uuid, deposit_amount, new_current_balance, .. } => {
            (account_uuid, deposit_amount, 0, new_current_balance)
        }
        AccountEvent::WithdrawnFromAccount { account_uuid, withdraw_amount, new_current_balance, .. } => {
            (account_uuid, 0, withdraw_amount, new_current_balance)
        }
        AccountEvent::MoneyTransferRefunded { account_uuid, amount, new_current_balance, .. } => {
            (account_uuid, amount, 0, new_current_balance)
        }
        AccountEvent::MoneyTransferRequested { .. }
        | AccountEvent::MoneyTransferFailed { .. }
        | AccountEvent::AccountClosed { .. } => return Ok(None),
    };
    let inconsistent = |reason| StatementError::Inconsistent { event_id: recorded.event_id, reason };
    if credit < 0 || debit < 0 {
        return Err(inconsistent("a negative amount"));
    }
    // The balance before: the account's previous balance, which fits in i64 for
    // any event the account wrote.
    let balance_before = balance_after
        .checked_sub(credit)
        .and_then(|b| b.checked_add(debit))
        .ok_or_else(|| inconsistent("the balance before it is beyond i64"))?;
    Ok(Some(StatementLine {
        account_uuid,
        month: recorded.created_at.format("%Y-%m").to_string(),
        credit,
        debit,
        balance_before,
        balance_after,
    }))
}

/// A month's money in or out plus `amount` (>= 0): `None` once beyond `i64`, and
/// from then on.
pub fn add_to_total(total: Option<i64>, amount: i64) -> Option<i64> {
    total?.checked_add(amount)
}

/// `total = total + excluded.total` for a total that is `NULL` once beyond `i64`,
/// in SQL both dialects read alike (`{table}` is the qualifier PostgreSQL needs,
/// `{total}` the column): `NULL` instead of an overflow. The added amount is never
/// negative, so `9223372036854775807 - amount` cannot overflow itself; `NULL` on
/// either side gives `NULL`.
fn add_total_sql(table: &str, total: &str) -> String {
    format!(
        "{total} = CASE WHEN {table}{total} > 9223372036854775807 - excluded.{total} THEN NULL \
         ELSE {table}{total} + excluded.{total} END"
    )
}

/// The upsert of one or more folded lines; `{table}` as in [`add_total_sql`].
fn upsert_sql(insert: &str, table: &str) -> String {
    format!(
        "{insert}
         ON CONFLICT (account_uuid, month) DO UPDATE SET
            {credits}, {debits},
            closing_balance = excluded.closing_balance,
            transactions = {table}transactions + excluded.transactions",
        credits = add_total_sql(table, "credits"),
        debits = add_total_sql(table, "debits"),
    )
}

/// The upserts, built once (the SQLite one runs in every group of appends).
static SQLITE_UPSERT: LazyLock<String> =
    LazyLock::new(|| upsert_sql("INSERT INTO monthly_statements VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)", ""));
static POSTGRES_UPSERT: LazyLock<String> = LazyLock::new(|| {
    upsert_sql("INSERT INTO monthly_statements VALUES ($1, $2, $3, $4, $5, $6, 1)", "monthly_statements.")
});
static POSTGRES_UPSERT_BATCH: LazyLock<String> = LazyLock::new(|| {
    let insert = "INSERT INTO monthly_statements
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])";
    upsert_sql(insert, "monthly_statements.")
});

/// One month of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementView {
    /// `YYYY-MM`.
    pub month: String,
    /// The balance before the month's first movement.
    pub opening_balance: i64,
    /// Money in; `None` (JSON `null`) once the month's total is beyond `i64`.
    pub credits: Option<i64>,
    /// Money out; `None` (JSON `null`) once the month's total is beyond `i64`.
    pub debits: Option<i64>,
    /// The balance after the month's last movement.
    pub closing_balance: i64,
    /// How many movements.
    pub transactions: i64,
    /// Whether a total is beyond `i64` (and so `null`).
    pub overflow: bool,
}

impl StatementView {
    fn new(
        month: String,
        opening_balance: i64,
        (credits, debits): (Option<i64>, Option<i64>),
        closing_balance: i64,
        transactions: i64,
    ) -> StatementView {
        let overflow = credits.is_none() || debits.is_none();
        StatementView { month, opening_balance, credits, debits, closing_balance, transactions, overflow }
    }
}

/// Monthly statements on SQLite.
pub struct SqliteStatements;

impl SqliteProjection for SqliteStatements {
    fn create(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch(include_str!("statements_sqlite.sql"))
    }

    /// A table from before it was `STRICT` may hold REAL totals: rebuilt.
    fn drop_outdated(&self, conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
        super::sqlite::drop_if_lax(conn, &["monthly_statements"])
    }

    fn project(&self, conn: &rusqlite::Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let Some(line) = statement_line(event)? else { return Ok(()) };
        conn.prepare_cached(&SQLITE_UPSERT)?.execute(rusqlite::params![
            line.account_uuid.to_string(),
            line.month,
            line.balance_before,
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
        Ok(StatementView::new(row.get(0)?, row.get(1)?, (row.get(2)?, row.get(3)?), row.get(4)?, row.get(5)?))
    })?;
    rows.collect()
}

/// Monthly statements on PostgreSQL.
pub struct PostgresStatements;

/// One account's month folded from a batch's lines.
struct Month {
    account_uuid: Uuid,
    month: String,
    opening: i64,
    credits: Option<i64>,
    debits: Option<i64>,
    closing: i64,
    transactions: i64,
}

#[async_trait]
impl PostgresProjection for PostgresStatements {
    async fn create(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(include_str!("statements_postgres.sql")).await
    }

    async fn project(&self, tx: &tokio_postgres::Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let Some(line) = statement_line(event)? else { return Ok(()) };
        tx.execute(
            &*POSTGRES_UPSERT,
            &[&line.account_uuid, &line.month, &line.balance_before, &line.credit, &line.debit, &line.balance_after],
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
        let mut rows: Vec<Month> = Vec::new();
        for event in events {
            let Some(line) = statement_line(event)? else { continue };
            let at = *index.entry((line.account_uuid, line.month.clone())).or_insert_with(|| {
                rows.push(Month {
                    account_uuid: line.account_uuid,
                    month: line.month.clone(),
                    opening: line.balance_before,
                    credits: Some(0),
                    debits: Some(0),
                    closing: line.balance_before,
                    transactions: 0,
                });
                rows.len() - 1
            });
            let row = &mut rows[at];
            row.credits = add_to_total(row.credits, line.credit);
            row.debits = add_to_total(row.debits, line.debit);
            row.closing = line.balance_after;
            // A count of a batch's events: it cannot come near i64.
            row.transactions += 1;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let accounts: Vec<Uuid> = rows.iter().map(|r| r.account_uuid).collect();
        let months: Vec<&str> = rows.iter().map(|r| r.month.as_str()).collect();
        let openings: Vec<i64> = rows.iter().map(|r| r.opening).collect();
        let credits: Vec<Option<i64>> = rows.iter().map(|r| r.credits).collect();
        let debits: Vec<Option<i64>> = rows.iter().map(|r| r.debits).collect();
        let closings: Vec<i64> = rows.iter().map(|r| r.closing).collect();
        let counts: Vec<i64> = rows.iter().map(|r| r.transactions).collect();
        tx.execute(&*POSTGRES_UPSERT_BATCH, &[&accounts, &months, &openings, &credits, &debits, &closings, &counts])
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
            let totals = (row.try_get(2)?, row.try_get(3)?);
            Ok(StatementView::new(row.try_get(0)?, row.try_get(1)?, totals, row.try_get(4)?, row.try_get(5)?))
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
        let expected = StatementLine {
            account_uuid: a,
            month: "2026-01".into(),
            credit: 0,
            debit: 30,
            balance_before: 100,
            balance_after: 70,
        };
        assert_eq!(line, expected);
        let closed = AccountEvent::AccountClosed { account_uuid: a };
        assert_eq!(statement_line(&recorded(closed, "2026-02-01T00:00:00Z")).expect("decode"), None);
    }

    #[test]
    fn a_total_beyond_i64_stays_unknown_for_the_month() {
        let near = add_to_total(Some(0), i64::MAX - 1);
        assert_eq!(near, Some(i64::MAX - 1));
        assert_eq!(add_to_total(near, 1), Some(i64::MAX));
        assert_eq!(add_to_total(near, 2), None, "beyond i64");
        assert_eq!(add_to_total(None, 0), None, "and from then on");
    }

    #[test]
    fn an_event_no_account_could_write_is_refused_not_a_panic() {
        let a = Uuid::from_u128(7);
        let beyond = AccountEvent::WithdrawnFromAccount {
            account_uuid: a,
            withdraw_amount: 2,
            new_current_balance: i64::MAX,
            transfer_uuid: None,
        };
        let refused = statement_line(&recorded(beyond, "2026-01-01T00:00:00Z"));
        assert!(matches!(refused, Err(StatementError::Inconsistent { .. })), "{refused:?}");
        let negative = AccountEvent::DepositedIntoAccount {
            account_uuid: a,
            deposit_amount: -5,
            new_current_balance: 5,
            transfer_uuid: None,
        };
        let refused = statement_line(&recorded(negative, "2026-01-01T00:00:00Z"));
        assert!(matches!(refused, Err(StatementError::Inconsistent { .. })), "{refused:?}");
    }
}
