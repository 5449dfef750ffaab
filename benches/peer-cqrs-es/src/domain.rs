//! The bank account aggregate, written the way the cqrs-es 0.5 book writes aggregates.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

// Clone only because `MemStore<A>`'s derived `Clone` asks for `A: Clone`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct BankAccount {
    opened: bool,
    balance: i64,
}

#[derive(Debug)]
pub enum BankAccountCommand {
    OpenAccount { account_id: String, initial_balance: i64 },
    DepositMoney { amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    AccountOpened { initial_balance: i64 },
    Deposited { amount: i64, new_balance: i64 },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AccountOpened { .. } => "AccountOpened".to_string(),
            Self::Deposited { .. } => "Deposited".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug)]
pub struct BankAccountError(pub String);

impl std::fmt::Display for BankAccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BankAccountError {}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "BankAccount";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BankAccountCommand::OpenAccount { account_id, initial_balance } => {
                if self.opened {
                    return Err(BankAccountError(format!("account {account_id} is already open")));
                }
                sink.write(BankAccountEvent::AccountOpened { initial_balance }, self).await;
            }
            BankAccountCommand::DepositMoney { amount } => {
                if !self.opened {
                    return Err(BankAccountError("account is not open".to_string()));
                }
                let new_balance = self.balance + amount;
                sink.write(BankAccountEvent::Deposited { amount, new_balance }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankAccountEvent::AccountOpened { initial_balance } => {
                self.opened = true;
                self.balance = initial_balance;
            }
            BankAccountEvent::Deposited { new_balance, .. } => self.balance = new_balance,
        }
    }
}

/// The projection's fold step: what an event does to the projected balance.
pub fn fold(balance: &mut i64, event: &BankAccountEvent) {
    match event {
        BankAccountEvent::AccountOpened { initial_balance } => *balance = *initial_balance,
        BankAccountEvent::Deposited { amount, .. } => *balance += amount,
    }
}
