//! The bank as a Rewind application: which commands route where, and which
//! middleware guards them.

use crate::domain::*;
use rewind::{AggregateConfig, Application, EventStore, LoggingMiddleware, Router, ValidationMiddleware};

/// The prefix of every account's stream: `account-<uuid>`.
pub const ACCOUNT_PREFIX: &str = "account-";

/// An account's stream.
pub fn account_stream(account: uuid::Uuid) -> String {
    format!("{ACCOUNT_PREFIX}{account}")
}

/// The bank's router: every account command to the account aggregate, in streams
/// `account-<uuid>`, with a snapshot every 100 events.
pub fn router() -> Router {
    router_with(AggregateConfig::<Account>::new().identity_prefix(ACCOUNT_PREFIX).snapshot_every(100, 1))
}

/// The bank's router with the account aggregate configured as given (benchmarks
/// compare without snapshots).
pub fn router_with(accounts: AggregateConfig<Account>) -> Router {
    Router::new().aggregate(accounts).commands::<(
        OpenAccount,
        DepositIntoAccount,
        WithdrawFromAccount,
        TransferBetweenAccounts,
        FailTransfer,
        RefundTransfer,
        CloseAccount,
    )>()
}

/// The bank's command side on `store`.
pub fn application(store: impl EventStore) -> Application {
    Application::builder(store).router(router()).middleware(LoggingMiddleware).middleware(ValidationMiddleware).build()
}
