//! The transfer process manager: withdraw from the source, deposit into the
//! destination, and never lose money on the way.
//!
//! Unlike the original BankAPI, every failure ends in a recorded outcome: a refused
//! withdrawal records the transfer as failed (`MoneyTransferFailed`); a refused
//! deposit (destination closed meanwhile) refunds the source
//! (`MoneyTransferRefunded`). Each step is idempotent under redelivery because the
//! framework derives every command id from this process, the transfer and the
//! causing event.

use crate::domain::account::AccountError;
use crate::domain::commands::{DepositIntoAccount, FailTransfer, RefundTransfer, WithdrawFromAccount};
use crate::domain::events::AccountEvent;
use rewind::{CommandFailure, Interest, OnError, ProcessCommand, ProcessManager, RecordedEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One transfer in flight.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Where the money comes from.
    pub source: Uuid,
    /// Where it goes.
    pub destination: Uuid,
    /// How much.
    pub amount: i64,
    /// Whether the source has been debited.
    pub withdrawn: bool,
}

/// The process manager.
#[derive(Debug, Default, Clone, Copy)]
pub struct TransferProcess;

impl ProcessManager for TransferProcess {
    type Event = AccountEvent;
    type State = Transfer;

    fn interested(&self, event: &AccountEvent, _: &RecordedEvent) -> Interest {
        let Some(transfer) = event.transfer_uuid().map(|t| t.to_string()) else { return Interest::Ignore };
        match event {
            AccountEvent::MoneyTransferRequested { .. } => Interest::Start(transfer),
            AccountEvent::WithdrawnFromAccount { .. } => Interest::Continue(transfer),
            AccountEvent::DepositedIntoAccount { .. }
            | AccountEvent::MoneyTransferFailed { .. }
            | AccountEvent::MoneyTransferRefunded { .. } => Interest::Stop(transfer),
            AccountEvent::AccountOpened { .. } | AccountEvent::AccountClosed { .. } => Interest::Ignore,
        }
    }

    fn handle(&self, transfer: &Transfer, event: &AccountEvent, _: &RecordedEvent) -> Vec<ProcessCommand> {
        match event {
            AccountEvent::MoneyTransferRequested { transfer_uuid, source_account_uuid, amount, .. } => {
                vec![ProcessCommand::new(WithdrawFromAccount {
                    account_uuid: *source_account_uuid,
                    withdraw_amount: *amount,
                    transfer_uuid: Some(*transfer_uuid),
                })]
            }
            AccountEvent::WithdrawnFromAccount { transfer_uuid, .. } => vec![ProcessCommand::new(DepositIntoAccount {
                account_uuid: transfer.destination,
                deposit_amount: transfer.amount,
                transfer_uuid: *transfer_uuid,
            })],
            _ => Vec::new(),
        }
    }

    fn apply(&self, transfer: &mut Transfer, event: &AccountEvent) {
        match event {
            AccountEvent::MoneyTransferRequested { source_account_uuid, destination_account_uuid, amount, .. } => {
                *transfer = Transfer {
                    source: *source_account_uuid,
                    destination: *destination_account_uuid,
                    amount: *amount,
                    withdrawn: false,
                };
            }
            AccountEvent::WithdrawnFromAccount { .. } => transfer.withdrawn = true,
            _ => {}
        }
    }

    /// A domain refusal settles the transfer; anything else is not the transfer's
    /// fault: a store outage or an unknown outcome is transient, so failing the
    /// event has the subscription retry it for ever (the same command ids make that
    /// safe) and the withdrawn money always reaches a deposit or a refund.
    fn on_error(&self, failure: &CommandFailure, transfer: &Transfer, event: &AccountEvent) -> OnError {
        let Some(refusal) = failure.domain_error::<AccountError>() else { return OnError::Fail };
        let reason = refusal.to_string();
        match event {
            AccountEvent::MoneyTransferRequested { transfer_uuid, source_account_uuid, .. } => {
                OnError::Compensate(vec![ProcessCommand::new(FailTransfer {
                    account_uuid: *source_account_uuid,
                    transfer_uuid: *transfer_uuid,
                    reason,
                })])
            }
            AccountEvent::WithdrawnFromAccount { transfer_uuid: Some(transfer_uuid), .. } => {
                OnError::Compensate(vec![ProcessCommand::new(RefundTransfer {
                    account_uuid: transfer.source,
                    transfer_uuid: *transfer_uuid,
                    amount: transfer.amount,
                    reason,
                })])
            }
            _ => OnError::Fail,
        }
    }
}
