//! The account aggregate: the rules of the bank, pure and synchronous.
//!
//! Money is `i64` minor units; every sum is checked, so a deposit that would
//! overflow is refused rather than wrapped.

use crate::domain::commands::*;
use crate::domain::events::AccountEvent;
use rewind::{Aggregate, Execute};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Domain errors, with the messages the HTTP API answers. Serializable, because a
/// refusal is recorded in the log for the command's repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AccountError {
    /// No such account.
    #[error("account not found")]
    NotFound,
    /// Opening an account twice.
    #[error("account already opened")]
    AlreadyOpened,
    /// Moving money on a closed account.
    #[error("account closed")]
    Closed,
    /// Closing twice.
    #[error("account already closed")]
    AlreadyClosed,
    /// Taking out more than there is.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// A transfer whose destination is its source.
    #[error("transfer to the same account")]
    SameAccount,
    /// A sum beyond `i64`.
    #[error("balance would overflow")]
    Overflow,
    /// A non-positive amount (normally caught earlier by validation).
    #[error("amount must be greater than 0")]
    NonPositiveAmount,
}

/// Whether the account exists and is usable.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Never opened.
    #[default]
    Unopened,
    /// Open.
    Open,
    /// Closed.
    Closed,
}

/// The account's state: what its rules need, nothing more.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its id, once opened.
    pub uuid: Option<Uuid>,
    /// Minor units.
    pub balance: i64,
    /// Open or closed.
    pub status: Status,
}

impl Account {
    fn open(&self) -> Result<Uuid, AccountError> {
        match (self.status, self.uuid) {
            (Status::Open, Some(uuid)) => Ok(uuid),
            (Status::Closed, _) => Err(AccountError::Closed),
            _ => Err(AccountError::NotFound),
        }
    }

    fn opened(&self) -> Result<Uuid, AccountError> {
        self.uuid.ok_or(AccountError::NotFound)
    }
}

fn positive(amount: i64) -> Result<i64, AccountError> {
    if amount > 0 { Ok(amount) } else { Err(AccountError::NonPositiveAmount) }
}

impl Aggregate for Account {
    const NAME: &'static str = "account";
    type Event = AccountEvent;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened { account_uuid, initial_balance } => {
                self.uuid = Some(*account_uuid);
                self.balance = *initial_balance;
                self.status = Status::Open;
            }
            AccountEvent::DepositedIntoAccount { new_current_balance, .. }
            | AccountEvent::WithdrawnFromAccount { new_current_balance, .. }
            | AccountEvent::MoneyTransferRefunded { new_current_balance, .. } => self.balance = *new_current_balance,
            AccountEvent::AccountClosed { .. } => self.status = Status::Closed,
            AccountEvent::MoneyTransferRequested { .. } | AccountEvent::MoneyTransferFailed { .. } => {}
        }
    }
}

impl Execute<OpenAccount> for Account {
    fn execute(&self, c: &OpenAccount) -> Result<Vec<AccountEvent>, AccountError> {
        if self.status != Status::Unopened {
            return Err(AccountError::AlreadyOpened);
        }
        let initial_balance = positive(c.initial_balance)?;
        Ok(vec![AccountEvent::AccountOpened { account_uuid: c.account_uuid, initial_balance }])
    }
}

impl Execute<DepositIntoAccount> for Account {
    fn execute(&self, c: &DepositIntoAccount) -> Result<Vec<AccountEvent>, AccountError> {
        let account_uuid = self.open()?;
        let deposit_amount = positive(c.deposit_amount)?;
        let new_current_balance = self.balance.checked_add(deposit_amount).ok_or(AccountError::Overflow)?;
        Ok(vec![AccountEvent::DepositedIntoAccount {
            account_uuid,
            deposit_amount,
            new_current_balance,
            transfer_uuid: c.transfer_uuid,
        }])
    }
}

impl Execute<WithdrawFromAccount> for Account {
    fn execute(&self, c: &WithdrawFromAccount) -> Result<Vec<AccountEvent>, AccountError> {
        let account_uuid = self.open()?;
        let withdraw_amount = positive(c.withdraw_amount)?;
        let new_current_balance = self.balance.checked_sub(withdraw_amount).ok_or(AccountError::Overflow)?;
        if new_current_balance < 0 {
            return Err(AccountError::InsufficientFunds);
        }
        Ok(vec![AccountEvent::WithdrawnFromAccount {
            account_uuid,
            withdraw_amount,
            new_current_balance,
            transfer_uuid: c.transfer_uuid,
        }])
    }
}

impl Execute<TransferBetweenAccounts> for Account {
    fn execute(&self, c: &TransferBetweenAccounts) -> Result<Vec<AccountEvent>, AccountError> {
        let source_account_uuid = self.open()?;
        let amount = positive(c.transfer_amount)?;
        if c.destination_account_uuid == source_account_uuid {
            return Err(AccountError::SameAccount);
        }
        if amount > self.balance {
            return Err(AccountError::InsufficientFunds);
        }
        Ok(vec![AccountEvent::MoneyTransferRequested {
            transfer_uuid: c.transfer_uuid,
            source_account_uuid,
            destination_account_uuid: c.destination_account_uuid,
            amount,
        }])
    }
}

/// Bookkeeping for the transfer process: allowed on a closed account too, since the
/// transfer was requested while it was open.
impl Execute<FailTransfer> for Account {
    fn execute(&self, c: &FailTransfer) -> Result<Vec<AccountEvent>, AccountError> {
        let account_uuid = self.opened()?;
        Ok(vec![AccountEvent::MoneyTransferFailed {
            transfer_uuid: c.transfer_uuid,
            account_uuid,
            reason: c.reason.clone(),
        }])
    }
}

/// A refund returns money that left this account, so it is accepted even after the
/// account was closed: money is never lost.
impl Execute<RefundTransfer> for Account {
    fn execute(&self, c: &RefundTransfer) -> Result<Vec<AccountEvent>, AccountError> {
        let account_uuid = self.opened()?;
        let amount = positive(c.amount)?;
        let new_current_balance = self.balance.checked_add(amount).ok_or(AccountError::Overflow)?;
        Ok(vec![AccountEvent::MoneyTransferRefunded {
            transfer_uuid: c.transfer_uuid,
            account_uuid,
            amount,
            new_current_balance,
            reason: c.reason.clone(),
        }])
    }
}

impl Execute<CloseAccount> for Account {
    fn execute(&self, _: &CloseAccount) -> Result<Vec<AccountEvent>, AccountError> {
        match (self.status, self.uuid) {
            (Status::Closed, _) => Err(AccountError::AlreadyClosed),
            (Status::Open, Some(account_uuid)) => Ok(vec![AccountEvent::AccountClosed { account_uuid }]),
            _ => Err(AccountError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind::testing::given;

    const A: Uuid = Uuid::from_u128(1);
    const B: Uuid = Uuid::from_u128(2);
    const T: Uuid = Uuid::from_u128(3);

    fn opened(balance: i64) -> AccountEvent {
        AccountEvent::AccountOpened { account_uuid: A, initial_balance: balance }
    }

    fn deposit(amount: i64) -> DepositIntoAccount {
        DepositIntoAccount { account_uuid: A, deposit_amount: amount, transfer_uuid: None }
    }

    fn withdraw(amount: i64) -> WithdrawFromAccount {
        WithdrawFromAccount { account_uuid: A, withdraw_amount: amount, transfer_uuid: None }
    }

    fn transfer(amount: i64, to: Uuid) -> TransferBetweenAccounts {
        TransferBetweenAccounts {
            account_uuid: A,
            transfer_uuid: T,
            transfer_amount: amount,
            destination_account_uuid: to,
        }
    }

    #[test]
    fn opens_an_account() {
        given::<Account>([]).when(OpenAccount { account_uuid: A, initial_balance: 1000 }).then_events([opened(1000)]);
    }

    #[test]
    fn rejects_a_non_positive_opening_balance() {
        given::<Account>([])
            .when(OpenAccount { account_uuid: A, initial_balance: 0 })
            .then_error(AccountError::NonPositiveAmount);
    }

    #[test]
    fn rejects_opening_twice() {
        given::<Account>([opened(1)])
            .when(OpenAccount { account_uuid: A, initial_balance: 5 })
            .then_error(AccountError::AlreadyOpened);
    }

    #[test]
    fn deposits_with_the_new_balance() {
        let state =
            given::<Account>([opened(1000)]).when(deposit(42)).then_events([AccountEvent::DepositedIntoAccount {
                account_uuid: A,
                deposit_amount: 42,
                new_current_balance: 1042,
                transfer_uuid: None,
            }]);
        assert_eq!(state.balance, 1042);
    }

    #[test]
    fn rejects_a_deposit_that_would_overflow() {
        given::<Account>([opened(i64::MAX)]).when(deposit(1)).then_error(AccountError::Overflow);
    }

    #[test]
    fn rejects_withdrawal_beyond_balance() {
        given::<Account>([opened(10)]).when(withdraw(11)).then_error(AccountError::InsufficientFunds);
    }

    #[test]
    fn withdraws_down_to_zero() {
        let state =
            given::<Account>([opened(10)]).when(withdraw(10)).then_events([AccountEvent::WithdrawnFromAccount {
                account_uuid: A,
                withdraw_amount: 10,
                new_current_balance: 0,
                transfer_uuid: None,
            }]);
        assert_eq!(state.balance, 0);
    }

    #[test]
    fn refuses_money_movements_on_unknown_and_closed_accounts() {
        given::<Account>([]).when(deposit(1)).then_error(AccountError::NotFound);
        given::<Account>([]).when(CloseAccount { account_uuid: A }).then_error(AccountError::NotFound);
        let closed = || given::<Account>([opened(10), AccountEvent::AccountClosed { account_uuid: A }]);
        closed().when(deposit(1)).then_error(AccountError::Closed);
        closed().when(withdraw(1)).then_error(AccountError::Closed);
        closed().when(transfer(1, B)).then_error(AccountError::Closed);
        closed().when(CloseAccount { account_uuid: A }).then_error(AccountError::AlreadyClosed);
    }

    #[test]
    fn requests_a_transfer_without_moving_money() {
        let state =
            given::<Account>([opened(10)]).when(transfer(10, B)).then_events([AccountEvent::MoneyTransferRequested {
                transfer_uuid: T,
                source_account_uuid: A,
                destination_account_uuid: B,
                amount: 10,
            }]);
        assert_eq!(state.balance, 10);
    }

    #[test]
    fn refuses_transfers_beyond_balance_or_to_itself() {
        given::<Account>([opened(10)]).when(transfer(11, B)).then_error(AccountError::InsufficientFunds);
        given::<Account>([opened(10)]).when(transfer(1, A)).then_error(AccountError::SameAccount);
    }

    #[test]
    fn refunds_even_a_closed_account() {
        let refund = RefundTransfer { account_uuid: A, transfer_uuid: T, amount: 4, reason: "account closed".into() };
        let state = given::<Account>([opened(10), AccountEvent::AccountClosed { account_uuid: A }])
            .when(refund)
            .then_events([AccountEvent::MoneyTransferRefunded {
                transfer_uuid: T,
                account_uuid: A,
                amount: 4,
                new_current_balance: 14,
                reason: "account closed".into(),
            }]);
        assert_eq!((state.balance, state.status), (14, Status::Closed));
    }
}
