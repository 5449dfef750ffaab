//! The bank's read model: what each event changes in the `accounts`,
//! `account_transactions` and `transfers` tables, and the queries the HTTP API
//! answers from. Queries read only these tables.
//!
//! One projector ([`Accounts`], named [`PROJECTOR`]) writes all three in one
//! transaction per batch: a write can then wait for a single subscription, and each
//! batch costs one commit instead of three.
//!
//! Written once for every backend: the mapping from events to [`Change`]s is pure,
//! [`accounts`] turns changes into portable SQL, [`queries`] reads the views back;
//! only the tables' DDL is per dialect (`accounts_*.sql`). [`statements`] is a
//! second, later projection: monthly statements.
//!
//! Money: these tables copy amounts and balances from the events, which the
//! account checked, and add nothing up; [`statements`] sums, each sum checked, and
//! says so when a month's total is beyond `i64`. On SQLite every table is `STRICT`
//! (see [`accounts`]), so no column silently holds a REAL.

pub mod accounts;
pub mod past;
pub mod queries;
pub mod statements;

pub use accounts::Accounts;
pub use queries::Queries;
pub use statements::Statements;

use crate::domain::AccountEvent;
use chrono::{DateTime, Utc};
use rewind::{EventError, RecordedEvent};
use serde::Serialize;
use uuid::Uuid;

/// The read model projector's (and subscription's) name.
pub const PROJECTOR: &str = "bank_read_model";

/// The read model's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `accounts`: one row per account with its balance, status and version.
    Accounts,
    /// `account_transactions`: every deposit, withdrawal, transfer leg and refund.
    Transactions,
    /// `transfers`: each transfer and its status.
    Transfers,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 3] = [Table::Accounts, Table::Transactions, Table::Transfers];

    /// The table's SQL name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::Transactions => "account_transactions",
            Table::Transfers => "transfers",
        }
    }
}

/// One write to the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new account row.
    Opened { uuid: Uuid, balance: i64, version: i64, at: DateTime<Utc> },
    /// A new balance (and version).
    Balance { uuid: Uuid, balance: i64, version: i64, at: DateTime<Utc> },
    /// The account closed.
    Closed { uuid: Uuid, version: i64, at: DateTime<Utc> },
    /// Only the version moved (an event that changes nothing shown).
    Version { uuid: Uuid, version: i64, at: DateTime<Utc> },
    /// A money movement on an account.
    Transaction {
        event_id: Uuid,
        position: i64,
        account_uuid: Uuid,
        kind: &'static str,
        amount: i64,
        balance_after: i64,
        transfer_uuid: Option<Uuid>,
        at: DateTime<Utc>,
    },
    /// A transfer was requested.
    TransferRequested { uuid: Uuid, source: Uuid, destination: Uuid, amount: i64, at: DateTime<Utc> },
    /// A transfer settled.
    TransferSettled { uuid: Uuid, status: &'static str, reason: Option<String>, at: DateTime<Utc> },
}

impl Change {
    /// The table this change writes.
    pub fn table(&self) -> Table {
        match self {
            Change::Opened { .. } | Change::Balance { .. } | Change::Closed { .. } | Change::Version { .. } => {
                Table::Accounts
            }
            Change::Transaction { .. } => Table::Transactions,
            Change::TransferRequested { .. } | Change::TransferSettled { .. } => Table::Transfers,
        }
    }
}

/// What one recorded event changes in the read model.
pub fn changes(recorded: &RecordedEvent) -> Result<Vec<Change>, EventError> {
    let event: AccountEvent = recorded.decode()?;
    let at = recorded.created_at;
    let version = recorded.stream_version.0 as i64;
    let transaction = |account_uuid, kind, amount, balance_after, transfer_uuid| Change::Transaction {
        event_id: recorded.event_id,
        position: recorded.position.0 as i64,
        account_uuid,
        kind,
        amount,
        balance_after,
        transfer_uuid,
        at,
    };
    Ok(match event {
        AccountEvent::AccountOpened { account_uuid, initial_balance } => {
            vec![Change::Opened { uuid: account_uuid, balance: initial_balance, version, at }]
        }
        AccountEvent::DepositedIntoAccount { account_uuid, deposit_amount, new_current_balance, transfer_uuid } => {
            let mut changes = vec![
                Change::Balance { uuid: account_uuid, balance: new_current_balance, version, at },
                transaction(
                    account_uuid,
                    if transfer_uuid.is_some() { "transfer_in" } else { "deposit" },
                    deposit_amount,
                    new_current_balance,
                    transfer_uuid,
                ),
            ];
            if let Some(uuid) = transfer_uuid {
                changes.push(Change::TransferSettled { uuid, status: "completed", reason: None, at });
            }
            changes
        }
        AccountEvent::WithdrawnFromAccount { account_uuid, withdraw_amount, new_current_balance, transfer_uuid } => {
            vec![
                Change::Balance { uuid: account_uuid, balance: new_current_balance, version, at },
                transaction(
                    account_uuid,
                    if transfer_uuid.is_some() { "transfer_out" } else { "withdrawal" },
                    withdraw_amount,
                    new_current_balance,
                    transfer_uuid,
                ),
            ]
        }
        AccountEvent::MoneyTransferRequested {
            transfer_uuid,
            source_account_uuid,
            destination_account_uuid,
            amount,
        } => {
            vec![
                Change::Version { uuid: source_account_uuid, version, at },
                Change::TransferRequested {
                    uuid: transfer_uuid,
                    source: source_account_uuid,
                    destination: destination_account_uuid,
                    amount,
                    at,
                },
            ]
        }
        AccountEvent::MoneyTransferFailed { transfer_uuid, account_uuid, reason } => vec![
            Change::Version { uuid: account_uuid, version, at },
            Change::TransferSettled { uuid: transfer_uuid, status: "failed", reason: Some(reason), at },
        ],
        AccountEvent::MoneyTransferRefunded { transfer_uuid, account_uuid, amount, new_current_balance, reason } => {
            vec![
                Change::Balance { uuid: account_uuid, balance: new_current_balance, version, at },
                transaction(account_uuid, "refund", amount, new_current_balance, Some(transfer_uuid)),
                Change::TransferSettled { uuid: transfer_uuid, status: "failed", reason: Some(reason), at },
            ]
        }
        AccountEvent::AccountClosed { account_uuid } => vec![Change::Closed { uuid: account_uuid, version, at }],
    })
}

/// An `accounts` row written whole (the account opened within the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub uuid: Uuid,
    pub balance: i64,
    pub closed: bool,
    pub version: i64,
    pub inserted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The net change of an `accounts` row that existed before the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUpdate {
    pub uuid: Uuid,
    /// The new balance, if the batch moved money.
    pub balance: Option<i64>,
    pub closed: bool,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// A batch's changes folded to one write per row, in the order a set-based writer
/// applies them (new rows before updates of the same table). Applying a `Folded`
/// leaves the tables as applying its changes one by one would.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Folded {
    pub opened: Vec<AccountRow>,
    pub updated: Vec<AccountUpdate>,
    /// Every money movement, in order.
    pub transactions: Vec<Change>,
    /// Transfers requested in the batch.
    pub requested: Vec<Change>,
    /// The last settlement of each transfer settled in the batch.
    pub settled: Vec<Change>,
}

impl Folded {
    /// Folds changes in the order they happened.
    pub fn new(changes: impl IntoIterator<Item = Change>) -> Folded {
        use std::collections::HashMap;
        let mut folded = Folded::default();
        let (mut opened, mut updated, mut settled) = (HashMap::new(), HashMap::new(), HashMap::new());
        for change in changes {
            let (uuid, balance, closed, version, at) = match change {
                Change::Opened { uuid, balance, version, at } => {
                    opened.entry(uuid).or_insert_with(|| {
                        folded.opened.push(AccountRow {
                            uuid,
                            balance,
                            closed: false,
                            version,
                            inserted_at: at,
                            updated_at: at,
                        });
                        folded.opened.len() - 1
                    });
                    continue;
                }
                Change::Balance { uuid, balance, version, at } => (uuid, Some(balance), false, version, at),
                Change::Closed { uuid, version, at } => (uuid, None, true, version, at),
                Change::Version { uuid, version, at } => (uuid, None, false, version, at),
                Change::Transaction { .. } => {
                    folded.transactions.push(change);
                    continue;
                }
                Change::TransferRequested { .. } => {
                    folded.requested.push(change);
                    continue;
                }
                Change::TransferSettled { uuid, .. } => {
                    match settled.get(&uuid) {
                        Some(&index) => folded.settled[index] = change,
                        None => {
                            settled.insert(uuid, folded.settled.len());
                            folded.settled.push(change);
                        }
                    }
                    continue;
                }
            };
            if let Some(&index) = opened.get(&uuid) {
                let row: &mut AccountRow = &mut folded.opened[index];
                row.balance = balance.unwrap_or(row.balance);
                row.closed |= closed;
                (row.version, row.updated_at) = (version, at);
                continue;
            }
            let index = *updated.entry(uuid).or_insert_with(|| {
                folded.updated.push(AccountUpdate { uuid, balance: None, closed: false, version, updated_at: at });
                folded.updated.len() - 1
            });
            let row = &mut folded.updated[index];
            row.balance = balance.or(row.balance);
            row.closed |= closed;
            (row.version, row.updated_at) = (version, at);
        }
        folded
    }
}

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    /// Its id.
    pub uuid: Uuid,
    /// Minor units.
    pub current_balance: i64,
    /// `open` or `closed`.
    pub status: String,
    /// The stream version the row reflects (the `ETag`).
    #[serde(skip)]
    pub version: i64,
}

/// One money movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionView {
    /// `deposit`, `withdrawal`, `transfer_in`, `transfer_out` or `refund`.
    pub kind: String,
    /// Minor units.
    pub amount: i64,
    /// The balance after it.
    pub balance_after: i64,
    /// The transfer it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_uuid: Option<Uuid>,
    /// When it was recorded.
    pub occurred_at: DateTime<Utc>,
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    /// Its id.
    pub uuid: Uuid,
    /// Where the money comes from.
    pub source_account_uuid: Uuid,
    /// Where it goes.
    pub destination_account_uuid: Uuid,
    /// Minor units.
    pub amount: i64,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind::{GlobalPosition, Metadata, StreamVersion};

    fn recorded(event: AccountEvent, version: u64) -> RecordedEvent {
        let encoded = rewind::encode_event(&event).expect("encode");
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: "account-x".into(),
            stream_version: StreamVersion(version),
            position: GlobalPosition(version + 10),
            event_type: encoded.event_type,
            data: encoded.data,
            metadata: Metadata::default(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_transfer_deposit_completes_the_transfer() {
        let (a, t) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let event = AccountEvent::DepositedIntoAccount {
            account_uuid: a,
            deposit_amount: 5,
            new_current_balance: 15,
            transfer_uuid: Some(t),
        };
        let changes = changes(&recorded(event, 3)).expect("changes");
        assert_eq!(
            changes.iter().map(Change::table).collect::<Vec<_>>(),
            [Table::Accounts, Table::Transactions, Table::Transfers]
        );
        assert!(matches!(changes[0], Change::Balance { balance: 15, version: 3, .. }));
        assert!(matches!(changes[1], Change::Transaction { kind: "transfer_in", amount: 5, position: 13, .. }));
        assert!(matches!(&changes[2], Change::TransferSettled { uuid, status: "completed", .. } if *uuid == t));
    }

    #[test]
    fn a_batch_folds_to_one_write_per_row() {
        let (a, b, t) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let at = Utc::now();
        let folded = Folded::new([
            Change::Balance { uuid: a, balance: 10, version: 2, at },
            Change::Opened { uuid: b, balance: 5, version: 1, at },
            Change::Version { uuid: a, version: 3, at },
            Change::Balance { uuid: b, balance: 7, version: 2, at },
            Change::TransferRequested { uuid: t, source: a, destination: b, amount: 1, at },
            Change::TransferSettled { uuid: t, status: "completed", reason: None, at },
            Change::Closed { uuid: b, version: 3, at },
        ]);
        assert_eq!(
            folded.updated,
            [AccountUpdate { uuid: a, balance: Some(10), closed: false, version: 3, updated_at: at }],
            "a balance survives a later version-only change"
        );
        assert_eq!(
            folded.opened,
            [AccountRow { uuid: b, balance: 7, closed: true, version: 3, inserted_at: at, updated_at: at }]
        );
        assert_eq!((folded.requested.len(), folded.settled.len(), folded.transactions.len()), (1, 1, 0));
    }

    #[test]
    fn a_refund_fails_the_transfer_and_restores_the_balance() {
        let (a, t) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let event = AccountEvent::MoneyTransferRefunded {
            transfer_uuid: t,
            account_uuid: a,
            amount: 5,
            new_current_balance: 20,
            reason: "account closed".into(),
        };
        let changes = changes(&recorded(event, 4)).expect("changes");
        assert!(matches!(changes[0], Change::Balance { balance: 20, .. }));
        assert!(matches!(changes[1], Change::Transaction { kind: "refund", .. }));
        assert!(
            matches!(&changes[2], Change::TransferSettled { status: "failed", reason: Some(r), .. } if r == "account closed")
        );
    }
}
