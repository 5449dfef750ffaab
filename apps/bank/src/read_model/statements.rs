//! Monthly statements: per account and calendar month (UTC), the opening balance,
//! money in, money out, the closing balance and the number of movements.
//!
//! This projection did not exist when the first events were written; it is the
//! "mine your old events" example. Deployed on a store that already holds years of
//! events, it starts from the origin and catches up while the service runs (it is
//! not strongly consistent, so no request waits for it), then stays live.
//!
//! The mapping from an event to a [`StatementLine`] is pure; [`Statements`] writes
//! it as one portable upsert, on every backend.
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
use rewind::sql::{Dialect, Sql, Value};
use rewind::{ConsumerError, EventError, Projector, RecordedEvent};
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

/// `total = total + excluded.total` for a total that is `NULL` once beyond `i64`:
/// `NULL` instead of the overflow SQLite would turn into a REAL and PostgreSQL into
/// an error. The added amount is never negative, so `9223372036854775807 - amount`
/// cannot overflow itself; `NULL` on either side gives `NULL`.
macro_rules! add_total {
    ($total:literal) => {
        concat!(
            $total,
            " = CASE WHEN monthly_statements.",
            $total,
            " > 9223372036854775807 - excluded.",
            $total,
            " THEN NULL ELSE monthly_statements.",
            $total,
            " + excluded.",
            $total,
            " END"
        )
    };
}

/// The columns every upsert writes, and what a row adds to an account's month that
/// already has one: literals, so the three statements below are built from them.
macro_rules! insert_columns {
    () => {
        "INSERT INTO monthly_statements
         (account_uuid, month, opening_balance, credits, debits, closing_balance, transactions) "
    };
}
macro_rules! on_conflict {
    () => {
        concat!(
            " ON CONFLICT (account_uuid, month) DO UPDATE SET ",
            add_total!("credits"),
            ", ",
            add_total!("debits"),
            ", closing_balance = excluded.closing_balance,
             transactions = monthly_statements.transactions + excluded.transactions"
        )
    };
}

const ON_CONFLICT: &str = on_conflict!();

const INSERT: &str = concat!(insert_columns!(), "VALUES ");

/// Adds `$7` movements of one account's month; the same text on every backend.
const UPSERT: &str = concat!(insert_columns!(), "VALUES ($1, $2, $3, $4, $5, $6, $7)", on_conflict!());

/// A batch's months at once on PostgreSQL: one array per column.
const UNNEST: &str = concat!(
    insert_columns!(),
    "SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])",
    on_conflict!()
);

/// Rows per multi-row upsert: a batch's months go in statements of this many (one
/// statement is what a server charges for, not a row), well inside both backends'
/// parameter limits (PostgreSQL 65,535; SQLite 32,766).
const ROWS_PER_UPSERT: usize = 500;

/// The upsert of `rows` months at once, `$1` … `$(7 × rows)`; the same text on
/// every backend. Each month appears once (a batch is folded first), as a
/// multi-row upsert requires.
fn upsert_text(rows: usize) -> String {
    let mut text = String::from(INSERT);
    for row in 0..rows {
        let first = row * 7;
        let values: Vec<String> = (1..=7).map(|column| format!("${}", first + column)).collect();
        text.push_str(if row == 0 { "(" } else { ", (" });
        text.push_str(&values.join(", "));
        text.push(')');
    }
    text.push_str(ON_CONFLICT);
    text
}

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
    pub(crate) fn new(
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

/// Monthly statements, on every backend.
pub struct Statements;

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

impl Month {
    fn write(self, sql: &mut Sql) {
        sql.execute(UPSERT, self.values());
    }

    fn values(self) -> [Value; 7] {
        let Month { account_uuid, month, opening, credits, debits, closing, transactions } = self;
        [
            account_uuid.into(),
            month.into(),
            opening.into(),
            credits.into(),
            debits.into(),
            closing.into(),
            transactions.into(),
        ]
    }
}

impl Projector for Statements {
    fn name(&self) -> &str {
        STATEMENTS
    }

    fn schema(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => include_str!("statements_postgres.sql"),
            _ => include_str!("statements_sqlite.sql"),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["monthly_statements"]
    }

    /// A table from before it was `STRICT` may hold REAL totals: rebuilt.
    fn outdated(&self, dialect: Dialect) -> Option<&'static str> {
        (dialect == Dialect::Sqlite).then_some(
            "SELECT 1 FROM pragma_table_list WHERE schema = 'main' AND strict = 0 AND name = 'monthly_statements'",
        )
    }

    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        let Some(line) = statement_line(event)? else { return Ok(()) };
        let month = Month {
            account_uuid: line.account_uuid,
            month: line.month,
            opening: line.balance_before,
            credits: Some(line.credit),
            debits: Some(line.debit),
            closing: line.balance_after,
            transactions: 1,
        };
        month.write(sql);
        Ok(())
    }

    /// One upsert per account and month: lines folded first.
    fn project_batch(&self, events: &[RecordedEvent], sql: &mut Sql) -> Result<(), ConsumerError> {
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
        if sql.dialect() == Dialect::Postgres {
            // One statement for the batch: PostgreSQL plans a long VALUES list row by
            // row, and a batch of arrays not at all.
            let mut columns: [Vec<Value>; 7] = Default::default();
            for row in rows {
                for (column, value) in columns.iter_mut().zip(row.values()) {
                    column.push(value);
                }
            }
            if !columns[0].is_empty() {
                sql.execute(UNNEST, Vec::from(columns.map(Value::List)));
            }
            return Ok(());
        }
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Month> = rows.by_ref().take(ROWS_PER_UPSERT).collect();
            let text = upsert_text(chunk.len());
            let values: Vec<Value> = chunk.into_iter().flat_map(Month::values).collect();
            sql.execute(text, values);
        }
        Ok(())
    }
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
    fn a_batch_is_written_in_few_statements_of_its_folded_months() {
        let events: Vec<RecordedEvent> = (0..1_001u128)
            .map(|a| {
                let opened = AccountEvent::AccountOpened { account_uuid: Uuid::from_u128(a + 1), initial_balance: 5 };
                recorded(opened, "2026-01-01T00:00:00Z")
            })
            .collect();
        let mut postgres = Sql::new(Dialect::Postgres);
        Statements.project_batch(&events, &mut postgres).expect("project");
        let arrays = postgres.statements().iter().map(|s| s.params.clone()).collect::<Vec<_>>();
        assert_eq!(arrays.len(), 1, "one statement for the batch on PostgreSQL");
        assert!(arrays[0].iter().all(|column| matches!(column, Value::List(rows) if rows.len() == 1_001)));
        let mut sql = Sql::new(Dialect::Sqlite);
        Statements.project_batch(&events, &mut sql).expect("project");
        let sizes: Vec<usize> = sql.statements().iter().map(|s| s.params.len()).collect();
        assert_eq!(sizes, [3_500, 3_500, 7], "1,001 months in rows of 500");
        let last = &sql.statements()[1].sql;
        assert!(last.contains("$3500)") && !last.contains("$3501"), "numbered to the last parameter");
        assert!(sql.statements()[2].sql.ends_with(ON_CONFLICT));
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
