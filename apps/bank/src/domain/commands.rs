//! The account's commands. Each names its account, so it routes to stream
//! `account-<uuid>` (the prefix is the router's, `app.rs`), and checks its own fields
//! (amounts must be positive).

use crate::domain::account::Account;
use rewind::{Command, ValidationErrors};
use uuid::Uuid;

/// Opens an account.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid, validate = check_open)]
pub struct OpenAccount {
    /// The new account's id.
    pub account_uuid: Uuid,
    /// Minor units, > 0.
    pub initial_balance: i64,
}

/// Puts money in.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid, validate = check_deposit)]
pub struct DepositIntoAccount {
    /// The account.
    pub account_uuid: Uuid,
    /// Minor units, > 0.
    pub deposit_amount: i64,
    /// Set by the transfer process for the receiving leg.
    pub transfer_uuid: Option<Uuid>,
}

/// Takes money out.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid, validate = check_withdrawal)]
pub struct WithdrawFromAccount {
    /// The account.
    pub account_uuid: Uuid,
    /// Minor units, > 0.
    pub withdraw_amount: i64,
    /// Set by the transfer process for the sending leg.
    pub transfer_uuid: Option<Uuid>,
}

/// Asks to move money to another account; the transfer process does the moving.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid, validate = check_transfer)]
pub struct TransferBetweenAccounts {
    /// The source account.
    pub account_uuid: Uuid,
    /// The transfer's id.
    pub transfer_uuid: Uuid,
    /// Minor units, > 0.
    pub transfer_amount: i64,
    /// The destination account.
    pub destination_account_uuid: Uuid,
}

/// Records that a transfer failed before money left the source (sent by the transfer process).
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid)]
pub struct FailTransfer {
    /// The source account.
    pub account_uuid: Uuid,
    /// The transfer.
    pub transfer_uuid: Uuid,
    /// Why.
    pub reason: String,
}

/// Returns a transfer's money to its source (sent by the transfer process).
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid, validate = check_refund)]
pub struct RefundTransfer {
    /// The source account.
    pub account_uuid: Uuid,
    /// The transfer.
    pub transfer_uuid: Uuid,
    /// Minor units, > 0.
    pub amount: i64,
    /// Why the destination refused.
    pub reason: String,
}

/// Closes an account.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Account, id = account_uuid)]
pub struct CloseAccount {
    /// The account.
    pub account_uuid: Uuid,
}

fn positive(errors: &mut ValidationErrors, field: &str, amount: i64) {
    if amount <= 0 {
        errors.add(field, "must be greater than 0");
    }
}

fn check_open(c: &OpenAccount) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    positive(&mut errors, "initial_balance", c.initial_balance);
    errors.into_result()
}

fn check_deposit(c: &DepositIntoAccount) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    positive(&mut errors, "deposit_amount", c.deposit_amount);
    errors.into_result()
}

fn check_withdrawal(c: &WithdrawFromAccount) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    positive(&mut errors, "withdrawal_amount", c.withdraw_amount);
    errors.into_result()
}

fn check_transfer(c: &TransferBetweenAccounts) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    positive(&mut errors, "transfer_amount", c.transfer_amount);
    if c.destination_account_uuid == c.account_uuid {
        errors.add("destination_account", "must be a different account");
    }
    errors.into_result()
}

fn check_refund(c: &RefundTransfer) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    positive(&mut errors, "amount", c.amount);
    errors.into_result()
}
