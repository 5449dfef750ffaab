//! A small bank account domain and a fault-injecting store wrapper, shared by the
//! dispatch tests and the dispatch benchmark.
#![allow(dead_code)]

use rewind::store::StreamAppend;
use rewind::{
    Aggregate, AppendResult, Command, Direction, EventFilter, EventStore, Execute, ExpectedVersion, GlobalPosition,
    MemoryStore, NewEvent, RecordedEvent, Snapshot, StoreError, StreamVersion, ValidationErrors,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::watch;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub opened: bool,
    pub closed: bool,
    pub balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountOpened { initial_balance: i64 },
    Deposited { amount: i64, balance: i64 },
    Withdrawn { amount: i64, balance: i64 },
    AccountClosed,
}

impl rewind::Event for AccountEvent {
    fn upcast(event_type: &str, data: &str) -> Option<(String, serde_json::Value)> {
        // Version 1 called deposits "MoneyDeposited" and kept no running balance;
        // the running balance cannot be recomputed here, so it is marked unknown (-1).
        (event_type == "MoneyDeposited").then(|| {
            let old: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            ("Deposited".to_owned(), serde_json::json!({"amount": old["amount"], "balance": -1}))
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum AccountError {
    #[error("account already opened")]
    AlreadyOpened,
    #[error("account not found")]
    NotFound,
    #[error("account closed")]
    Closed,
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("balance overflow")]
    Overflow,
}

impl Aggregate for Account {
    const NAME: &'static str = "account";
    type Event = AccountEvent;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened { initial_balance } => {
                self.opened = true;
                self.balance = *initial_balance;
            }
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrawn { amount, .. } => self.balance -= amount,
            AccountEvent::AccountClosed => self.closed = true,
        }
    }
}

impl Account {
    fn usable(&self) -> Result<(), AccountError> {
        match (self.opened, self.closed) {
            (false, _) => Err(AccountError::NotFound),
            (true, true) => Err(AccountError::Closed),
            (true, false) => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Open {
    pub id: String,
    pub initial_balance: i64,
}
#[derive(Debug, Clone)]
pub struct Deposit {
    pub id: String,
    pub amount: i64,
}
#[derive(Debug, Clone)]
pub struct Withdraw {
    pub id: String,
    pub amount: i64,
}
#[derive(Debug, Clone)]
pub struct Close {
    pub id: String,
}
/// A command that decides nothing happens.
#[derive(Debug, Clone)]
pub struct Touch {
    pub id: String,
}
/// Routed nowhere in any test.
#[derive(Debug, Clone)]
pub struct Unrouted {
    pub id: String,
}

impl Execute<Open> for Account {
    fn execute(&self, c: &Open) -> Result<Vec<AccountEvent>, AccountError> {
        if self.opened {
            return Err(AccountError::AlreadyOpened);
        }
        Ok(vec![AccountEvent::AccountOpened { initial_balance: c.initial_balance }])
    }
}
impl Execute<Deposit> for Account {
    fn execute(&self, c: &Deposit) -> Result<Vec<AccountEvent>, AccountError> {
        self.usable()?;
        let balance = self.balance.checked_add(c.amount).ok_or(AccountError::Overflow)?;
        Ok(vec![AccountEvent::Deposited { amount: c.amount, balance }])
    }
}
impl Execute<Withdraw> for Account {
    fn execute(&self, c: &Withdraw) -> Result<Vec<AccountEvent>, AccountError> {
        self.usable()?;
        if c.amount > self.balance {
            return Err(AccountError::InsufficientFunds);
        }
        Ok(vec![AccountEvent::Withdrawn { amount: c.amount, balance: self.balance - c.amount }])
    }
}
impl Execute<Close> for Account {
    fn execute(&self, _: &Close) -> Result<Vec<AccountEvent>, AccountError> {
        self.usable()?;
        Ok(vec![AccountEvent::AccountClosed])
    }
}
impl Execute<Touch> for Account {
    fn execute(&self, _: &Touch) -> Result<Vec<AccountEvent>, AccountError> {
        Ok(vec![])
    }
}
impl Execute<Unrouted> for Account {
    fn execute(&self, _: &Unrouted) -> Result<Vec<AccountEvent>, AccountError> {
        Ok(vec![])
    }
}

macro_rules! account_command {
    ($($command:ty),*) => {$(
        impl Command for $command {
            type Aggregate = Account;
            fn aggregate_id(&self) -> String {
                self.id.clone()
            }
        }
    )*};
}
account_command!(Deposit, Withdraw, Close, Touch, Unrouted);

impl Command for Open {
    type Aggregate = Account;
    fn aggregate_id(&self) -> String {
        self.id.clone()
    }
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.initial_balance <= 0 {
            errors.add("initial_balance", "must be greater than 0");
        }
        errors.into_result()
    }
}

/// The router every test uses (`Unrouted` deliberately missing).
pub fn router(config: rewind::AggregateConfig<Account>) -> rewind::Router {
    rewind::Router::new()
        .aggregate(config)
        .command::<Open>()
        .command::<Deposit>()
        .command::<Withdraw>()
        .command::<Close>()
        .command::<Touch>()
}

/// A MemoryStore that counts stream reads and can be told to fail appends.
#[derive(Default)]
pub struct FaultyStore {
    pub inner: MemoryStore,
    pub stream_reads: AtomicUsize,
    pub appends: AtomicUsize,
    /// Fail every append with a conflict.
    pub always_conflict: AtomicBool,
    /// Fail the next append with a backend error (after writing it, like a lost ack).
    pub lose_next_ack: AtomicBool,
    /// Never finish appends.
    pub hang: AtomicBool,
    /// Fail this many appends (before writing) with a backend error.
    pub failing_appends: AtomicUsize,
    /// Fail this many reads of the global order with a backend error.
    pub failing_reads: AtomicUsize,
}

/// Takes one from `left` if any are left.
fn take(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

#[derive(Debug, thiserror::Error)]
#[error("connection reset")]
pub struct ConnectionReset;

impl EventStore for FaultyStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if take(&self.failing_appends) {
            return Err(StoreError::backend(ConnectionReset));
        }
        if self.always_conflict.load(Ordering::SeqCst) {
            let actual = self.inner.stream_version(stream_id).await?;
            return Err(StoreError::Conflict { stream: stream_id.into(), expected, actual });
        }
        let result = self.inner.append(stream_id, expected, events).await?;
        if self.lose_next_ack.swap(false, Ordering::SeqCst) {
            return Err(StoreError::backend(ConnectionReset));
        }
        Ok(result)
    }
    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        self.inner.append_batch(appends).await
    }
    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream_id, from, direction, limit).await
    }
    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if take(&self.failing_reads) {
            return Err(StoreError::backend(ConnectionReset));
        }
        self.inner.read_all(from, limit, filter).await
    }
    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        self.inner.stream_version(stream_id).await
    }
    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.inner.read_event(event_id).await
    }
    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        self.inner.head_position().await
    }
    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.inner.watch_head()
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream_id).await
    }
    async fn list_streams(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<rewind::StreamInfo>, StoreError> {
        self.inner.list_streams(prefix, after, limit).await
    }
    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        self.inner.import(events).await
    }
}

/// Folds the recorded events of one stream into a fresh aggregate.
pub async fn rebuild<S: EventStore>(store: &S, stream_id: &str) -> (Account, StreamVersion) {
    let events = store.read_stream(stream_id, StreamVersion(1), Direction::Forward, usize::MAX).await.expect("read");
    let mut account = Account::default();
    for recorded in &events {
        account.apply(&recorded.decode::<AccountEvent>().expect("decode"));
    }
    (account, events.last().map_or(StreamVersion::NONE, |e| e.stream_version))
}

pub fn shared<S>(store: S) -> Arc<S> {
    Arc::new(store)
}
