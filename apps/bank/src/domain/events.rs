//! The account's events. Type names and fields follow the original BankAPI, so its
//! stored events read the same; the transfer outcome events are new.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Everything that can happen to an account.
///
/// Each is stored under its variant's name (`AccountOpened`), as the BankAPI stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, rewind::Event)]
pub enum AccountEvent {
    /// The account exists, with its opening balance.
    AccountOpened {
        /// The account.
        account_uuid: Uuid,
        /// Minor units, > 0.
        initial_balance: i64,
    },
    /// Money came in (a deposit, or the receiving leg of a transfer).
    DepositedIntoAccount {
        /// The account.
        account_uuid: Uuid,
        /// The amount deposited.
        deposit_amount: i64,
        /// The balance after it.
        new_current_balance: i64,
        /// Set when this is the receiving leg of a transfer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer_uuid: Option<Uuid>,
    },
    /// Money went out (a withdrawal, or the sending leg of a transfer).
    WithdrawnFromAccount {
        /// The account.
        account_uuid: Uuid,
        /// The amount withdrawn.
        withdraw_amount: i64,
        /// The balance after it.
        new_current_balance: i64,
        /// Set when this is the sending leg of a transfer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer_uuid: Option<Uuid>,
    },
    /// A transfer out of this account was requested; no money moved yet.
    MoneyTransferRequested {
        /// The transfer.
        transfer_uuid: Uuid,
        /// This account.
        source_account_uuid: Uuid,
        /// Where the money goes.
        destination_account_uuid: Uuid,
        /// How much.
        amount: i64,
    },
    /// A transfer failed before any money left this account.
    MoneyTransferFailed {
        /// The transfer.
        transfer_uuid: Uuid,
        /// This account (the source).
        account_uuid: Uuid,
        /// Why.
        reason: String,
    },
    /// A transfer's money came back because the destination refused it.
    MoneyTransferRefunded {
        /// The transfer.
        transfer_uuid: Uuid,
        /// This account (the source).
        account_uuid: Uuid,
        /// The amount returned.
        amount: i64,
        /// The balance after it.
        new_current_balance: i64,
        /// Why the destination refused.
        reason: String,
    },
    /// The account is closed.
    AccountClosed {
        /// The account.
        account_uuid: Uuid,
    },
}

impl AccountEvent {
    /// The transfer this event belongs to, if any.
    pub fn transfer_uuid(&self) -> Option<Uuid> {
        match self {
            AccountEvent::DepositedIntoAccount { transfer_uuid, .. }
            | AccountEvent::WithdrawnFromAccount { transfer_uuid, .. } => *transfer_uuid,
            AccountEvent::MoneyTransferRequested { transfer_uuid, .. }
            | AccountEvent::MoneyTransferFailed { transfer_uuid, .. }
            | AccountEvent::MoneyTransferRefunded { transfer_uuid, .. } => Some(*transfer_uuid),
            AccountEvent::AccountOpened { .. } | AccountEvent::AccountClosed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AccountEvent;

    #[test]
    fn stores_each_event_under_its_bankapi_name() {
        let names = [
            "AccountOpened",
            "DepositedIntoAccount",
            "WithdrawnFromAccount",
            "MoneyTransferRequested",
            "MoneyTransferFailed",
            "MoneyTransferRefunded",
            "AccountClosed",
        ];
        assert_eq!(rewind::event::type_names::<AccountEvent>(), names);
    }
}
