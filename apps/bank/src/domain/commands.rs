//! The account's commands. Each names its account, so it routes to stream
//! `account-<uuid>`, and checks its own fields (amounts must be positive).

use crate::domain::account::Account;
use rewind::{Command, ValidationErrors};
use uuid::Uuid;

fn positive(errors: &mut ValidationErrors, field: &str, amount: i64) {
    if amount <= 0 {
        errors.add(field, "must be greater than 0");
    }
}

/// Opens an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAccount {
    /// The new account's id.
    pub account_uuid: Uuid,
    /// Minor units, > 0.
    pub initial_balance: i64,
}

/// Puts money in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositIntoAccount {
    /// The account.
    pub account_uuid: Uuid,
    /// Minor units, > 0.
    pub deposit_amount: i64,
    /// Set by the transfer process for the receiving leg.
    pub transfer_uuid: Option<Uuid>,
}

/// Takes money out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawFromAccount {
    /// The account.
    pub account_uuid: Uuid,
    /// Minor units, > 0.
    pub withdraw_amount: i64,
    /// Set by the transfer process for the sending leg.
    pub transfer_uuid: Option<Uuid>,
}

/// Asks to move money to another account; the transfer process does the moving.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailTransfer {
    /// The source account.
    pub account_uuid: Uuid,
    /// The transfer.
    pub transfer_uuid: Uuid,
    /// Why.
    pub reason: String,
}

/// Returns a transfer's money to its source (sent by the transfer process).
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseAccount {
    /// The account.
    pub account_uuid: Uuid,
}

macro_rules! account_command {
    ($command:ty) => {
        impl Command for $command {
            type Aggregate = Account;
            fn aggregate_id(&self) -> String {
                self.account_uuid.to_string()
            }
        }
    };
    ($command:ty, |$this:ident, $errors:ident| $checks:block) => {
        impl Command for $command {
            type Aggregate = Account;
            fn aggregate_id(&self) -> String {
                self.account_uuid.to_string()
            }
            fn validate(&self) -> Result<(), ValidationErrors> {
                let $this = self;
                let mut $errors = ValidationErrors::new();
                $checks
                $errors.into_result()
            }
        }
    };
}

account_command!(OpenAccount, |c, errors| { positive(&mut errors, "initial_balance", c.initial_balance) });
account_command!(DepositIntoAccount, |c, errors| { positive(&mut errors, "deposit_amount", c.deposit_amount) });
account_command!(WithdrawFromAccount, |c, errors| { positive(&mut errors, "withdrawal_amount", c.withdraw_amount) });
account_command!(TransferBetweenAccounts, |c, errors| {
    positive(&mut errors, "transfer_amount", c.transfer_amount);
    if c.destination_account_uuid == c.account_uuid {
        errors.add("destination_account", "must be a different account");
    }
});
account_command!(FailTransfer);
account_command!(RefundTransfer, |c, errors| { positive(&mut errors, "amount", c.amount) });
account_command!(CloseAccount);
