//! The commands a simulated user sends, and what the first answer to each command id
//! was, so a repeat can be held to it; and clients that reuse an id for another
//! command, which must be refused without effect.

use bank::domain::{
    AccountError, CloseAccount, DepositIntoAccount, OpenAccount, TransferBetweenAccounts, WithdrawFromAccount,
};
use rand::Rng;
use rand::rngs::StdRng;
use rewind::{Application, DispatchError, DispatchOptions, GlobalPosition, StreamVersion};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// A user command, kept so it can be sent again.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Open(OpenAccount),
    Deposit(DepositIntoAccount),
    Withdraw(WithdrawFromAccount),
    Transfer(TransferBetweenAccounts),
    Close(CloseAccount),
}

/// How a dispatch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done {
        version: StreamVersion,
        position: Option<GlobalPosition>,
        duplicate: bool,
    },
    Refused(AccountError),
    /// Rejected before the aggregate (validation, destination check): not an outcome.
    Rejected,
    /// The store failed; the command may or may not have taken effect.
    Unknown(String),
    /// The id was used before for another command; nothing was appended.
    Reused,
}

fn answer(result: Result<rewind::Dispatched<bank::domain::Account>, DispatchError<AccountError>>) -> Answer {
    match result {
        Ok(done) => Answer::Done { version: done.version, position: done.position, duplicate: done.duplicate },
        Err(DispatchError::Domain(error)) => Answer::Refused(error),
        Err(DispatchError::Rejected(_)) => Answer::Rejected,
        Err(DispatchError::CommandIdReused { .. }) => Answer::Reused,
        Err(other) => Answer::Unknown(other.to_string()),
    }
}

impl UserCommand {
    /// What the command is, as a request fingerprint: two commands that differ in any
    /// field differ here.
    fn fingerprint(&self) -> Uuid {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{self:?}").as_bytes())
    }

    pub async fn send(&self, app: &Application, id: Option<Uuid>) -> Answer {
        let options = match id {
            Some(id) => DispatchOptions::new().command_id(id).fingerprint(self.fingerprint()),
            None => DispatchOptions::new(),
        };
        match self.clone() {
            UserCommand::Open(c) => answer(app.dispatch_with(c, options).await),
            UserCommand::Deposit(c) => answer(app.dispatch_with(c, options).await),
            UserCommand::Withdraw(c) => answer(app.dispatch_with(c, options).await),
            UserCommand::Transfer(c) => answer(app.dispatch_with(c, options).await),
            UserCommand::Close(c) => answer(app.dispatch_with(c, options).await),
        }
    }
}

/// The user's side of the world: accounts known, commands sent, first outcomes.
#[derive(Default)]
pub struct Users {
    pub accounts: Vec<Uuid>,
    /// Commands sent with an id of the caller's choosing, to repeat.
    pub sent: Vec<(Uuid, UserCommand)>,
    /// The final outcome each such id got first.
    pub outcomes: HashMap<Uuid, Answer>,
    /// Acknowledged, newly appended commands: id → (stream version, position).
    pub acknowledged: BTreeMap<Uuid, (StreamVersion, GlobalPosition)>,
}

fn id(rng: &mut StdRng) -> Uuid {
    Uuid::from_u128(rng.random())
}

impl Users {
    fn account(&self, rng: &mut StdRng) -> Option<Uuid> {
        (!self.accounts.is_empty()).then(|| self.accounts[rng.random_range(0..self.accounts.len())])
    }

    fn amount(rng: &mut StdRng, up_to: i64) -> i64 {
        match rng.random_range(0..40) {
            0 => 0,
            1 => i64::MAX / 2,
            _ => rng.random_range(1..=up_to),
        }
    }

    /// A new command for the current accounts.
    pub fn next(&mut self, rng: &mut StdRng) -> UserCommand {
        let Some(account) = self.account(rng).filter(|_| rng.random_range(0..8) != 0) else {
            let account_uuid = id(rng);
            self.accounts.push(account_uuid);
            return UserCommand::Open(OpenAccount { account_uuid, initial_balance: rng.random_range(1..=1_000) });
        };
        match rng.random_range(0..20) {
            0..=6 => UserCommand::Deposit(DepositIntoAccount {
                account_uuid: account,
                deposit_amount: Self::amount(rng, 300),
                transfer_uuid: None,
            }),
            7..=10 => UserCommand::Withdraw(WithdrawFromAccount {
                account_uuid: account,
                withdraw_amount: Self::amount(rng, 400),
                transfer_uuid: None,
            }),
            11..=18 => UserCommand::Transfer(TransferBetweenAccounts {
                account_uuid: account,
                transfer_uuid: id(rng),
                transfer_amount: Self::amount(rng, 400),
                destination_account_uuid: self.account(rng).unwrap_or(account),
            }),
            _ => UserCommand::Close(CloseAccount { account_uuid: account }),
        }
    }

    /// Sends a new command; an id of the caller's choosing more often than not.
    pub async fn send_new(&mut self, app: &Application, rng: &mut StdRng) -> Vec<String> {
        let command = self.next(rng);
        let chosen = rng.random_bool(0.6).then(|| id(rng));
        let answer = command.send(app, chosen).await;
        match chosen {
            Some(command_id) => {
                self.sent.push((command_id, command));
                self.judge(command_id, answer)
            }
            None => Vec::new(),
        }
    }

    /// Sends an earlier command again with its id (a client retrying).
    pub async fn repeat(&mut self, app: &Application, rng: &mut StdRng) -> Vec<String> {
        if self.sent.is_empty() {
            return Vec::new();
        }
        let (command_id, command) = self.sent[rng.random_range(0..self.sent.len())].clone();
        let answer = command.send(app, Some(command_id)).await;
        self.judge(command_id, answer)
    }

    /// Sends another command with the id of one whose outcome is known (a client that
    /// reuses an Idempotency-Key): it must be refused, and change nothing.
    pub async fn reuse(&mut self, app: &Application, rng: &mut StdRng) -> Vec<String> {
        let known: Vec<Uuid> =
            self.sent.iter().map(|(id, _)| *id).filter(|id| self.outcomes.contains_key(id)).collect();
        if known.is_empty() {
            return Vec::new();
        }
        let command_id = known[rng.random_range(0..known.len())];
        let first = self.sent.iter().find(|(id, _)| *id == command_id).map(|(_, c)| c.fingerprint());
        let other = self.next(rng);
        if Some(other.fingerprint()) == first {
            return Vec::new();
        }
        match other.send(app, Some(command_id)).await {
            Answer::Reused | Answer::Rejected | Answer::Unknown(_) => Vec::new(),
            answer => vec![format!("command id {command_id} reused for {other:?} was not refused: {answer:?}")],
        }
    }

    /// Holds an answer to the first final outcome of its command id.
    pub fn judge(&mut self, command_id: Uuid, answer: Answer) -> Vec<String> {
        let mut violations = Vec::new();
        let first = self.outcomes.get(&command_id).cloned();
        match (&first, &answer) {
            (_, Answer::Rejected | Answer::Unknown(_)) => return violations,
            (_, Answer::Reused) => {
                violations.push(format!("command {command_id} sent again as it was is refused as a reuse"));
                return violations;
            }
            (None, Answer::Done { duplicate: false, version, position }) => {
                if let Some(position) = position {
                    self.acknowledged.insert(command_id, (*version, *position));
                }
            }
            (None, _) => {}
            (Some(Answer::Done { version, .. }), Answer::Done { version: again, duplicate, .. }) => {
                if !duplicate || again != version {
                    violations.push(format!(
                        "command {command_id} repeated: first done at version {version}, now {answer:?}"
                    ));
                }
            }
            (Some(first), _) if *first != answer => {
                violations.push(format!("command {command_id} repeated: first {first:?}, now {answer:?}"));
            }
            (Some(_), _) => {}
        }
        if first.is_none() {
            if let Answer::Done { duplicate: true, .. } = answer {
                // Its first attempt's answer was lost: the duplicate is the outcome.
            }
            let mut recorded = answer;
            if let Answer::Done { duplicate, .. } = &mut recorded {
                *duplicate = false;
            }
            self.outcomes.insert(command_id, recorded);
        }
        violations
    }
}
