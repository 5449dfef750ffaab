//! The bank as a Rewind application: which commands route where, and which
//! middleware guards them.

use crate::domain::*;
use rewind::{AggregateConfig, Application, EventStore, LoggingMiddleware, Router, ValidationMiddleware};

/// The bank's router: every account command to the account aggregate, in streams
/// `account-<uuid>`.
pub fn router() -> Router {
    Router::new()
        .aggregate(AggregateConfig::<Account>::new().identity_prefix("account-").snapshot_every(100, 1))
        .command::<OpenAccount>()
        .command::<DepositIntoAccount>()
        .command::<WithdrawFromAccount>()
        .command::<TransferBetweenAccounts>()
        .command::<FailTransfer>()
        .command::<RefundTransfer>()
        .command::<CloseAccount>()
}

/// The bank's command side on `store`.
pub fn application(store: impl EventStore) -> Application {
    Application::builder(store).router(router()).middleware(LoggingMiddleware).middleware(ValidationMiddleware).build()
}
