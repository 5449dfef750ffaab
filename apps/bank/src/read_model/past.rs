//! The past: an account as it was at a moment, folded from its own stream up to
//! then — no copy of the store, and not the read model, which only knows now.
//!
//! The fold uses the projection's own mapping ([`changes`]), so an account read
//! "as of now" is the row the `accounts` projector writes, and a past one is the
//! row it wrote then. An event belongs to the past when it was committed at or
//! before the moment (`created_at`); a stream's events are committed in version
//! order, so the fold stops at the first later one.

use super::{AccountView, Change, TransactionView, changes};
use crate::app::{ACCOUNT_PREFIX, account_stream};
use chrono::{DateTime, SecondsFormat, Utc};
use rewind::store::BoxFuture;
use rewind::{Direction, EventStore, SharedStore, StoreError, StreamVersion};
use serde::Serialize;
use uuid::Uuid;

/// An account and its money movements at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Past {
    /// The account as it was.
    pub account: AccountView,
    /// Its movements up to then, oldest first.
    pub transactions: Vec<TransactionView>,
}

/// Events read per page of the stream.
const PAGE: usize = 1_000;

/// `account` as it was at `at`: `None` if it did not exist yet (or ever).
pub async fn account_as_of(
    store: &impl EventStore,
    account: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<Past>, StoreError> {
    let stream = account_stream(account);
    let mut past: Option<Past> = None;
    let mut from = StreamVersion(1);
    loop {
        let events = store.read_stream(&stream, from, Direction::Forward, PAGE).await?;
        let full = events.len() == PAGE;
        for event in &events {
            if event.created_at > at {
                return Ok(past);
            }
            let folded = changes(event).map_err(|error| StoreError::Corrupt(format!("{stream}: {error}")))?;
            for change in folded {
                fold(&mut past, change);
            }
            from = StreamVersion(event.stream_version.0 + 1);
        }
        if !full {
            return Ok(past);
        }
    }
}

/// Applies one change as the projector's statements would to the account's rows.
fn fold(past: &mut Option<Past>, change: Change) {
    if let Change::Opened { uuid, balance, version, .. } = change {
        let account = AccountView { uuid, current_balance: balance, status: "open".into(), version };
        past.get_or_insert(Past { account, transactions: Vec::new() });
        return;
    }
    // Anything before the opening would find no row, as its UPDATE would.
    let Some(past) = past else { return };
    match change {
        Change::Balance { balance, version, .. } => {
            (past.account.current_balance, past.account.version) = (balance, version)
        }
        Change::Closed { version, .. } => (past.account.status, past.account.version) = ("closed".into(), version),
        Change::Version { version, .. } => past.account.version = version,
        Change::Transaction { kind, amount, balance_after, transfer_uuid, at, .. } => past
            .transactions
            .push(TransactionView { kind: kind.into(), amount, balance_after, transfer_uuid, occurred_at: at }),
        // The transfers table is not the account's.
        Change::Opened { .. } | Change::TransferRequested { .. } | Change::TransferSettled { .. } => {}
    }
}

/// The console's time-travel view of accounts: the same fold, as JSON.
pub struct AccountsPast;

impl rewind_console::PastView for AccountsPast {
    fn prefix(&self) -> &str {
        ACCOUNT_PREFIX
    }

    fn at<'a>(
        &'a self,
        store: &'a SharedStore,
        stream_id: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            // A stream id that is not an account's names no account: it had no past.
            let Some(account) = stream_id.strip_prefix(ACCOUNT_PREFIX).and_then(|id| id.parse().ok()) else {
                return Ok(None);
            };
            let past = account_as_of(store, account, at).await?;
            past.map(|past| serde_json::to_value(past).map_err(StoreError::backend)).transpose()
        })
    }

    fn replay_command(&self, at: DateTime<Utc>) -> Option<String> {
        let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let file = at.replace([':', '.'], "-");
        Some(format!("bank replay --until {at} --into sqlite://bank-as-of-{file}.db"))
    }
}
