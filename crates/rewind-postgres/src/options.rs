//! How to reach the database and shape the store: [`PostgresOptions`].
//!
//! Parsing and validation happen here, before any connection is made, so a bad URL or
//! schema name is a [`StoreError::Invalid`] and never a half-opened store.

use crate::connection::Connector;
use rewind::StoreError;
use std::time::Duration;

/// Settings for [`PostgresStore::connect_with`](crate::PostgresStore::connect_with).
///
/// # The URL
///
/// A libpq-style URL (`postgres://user@host:5432/db?key=value&...`) or key=value
/// string (`host=... user=... key=value`). Besides tokio-postgres's keys (`host`,
/// `hostaddr`, `port`, `user`, `password`, `dbname`, `options`, `application_name`,
/// `target_session_attrs`, `channel_binding`, `load_balance_hosts`), these are read,
/// with Rewind's default when the URL does not name them:
///
/// | key | default | what it bounds |
/// | --- | --- | --- |
/// | `connect_timeout` (s) | 5 | one connection attempt: TCP, TLS, authentication |
/// | `keepalives` (0/1) | 1 | TCP keepalive on every connection |
/// | `keepalives_idle` (s) | 10 | idle time before the first probe |
/// | `keepalives_interval` (s) | 5 | between probes |
/// | `keepalives_retries` | 3 | probes unanswered before the connection is dropped |
/// | `tcp_user_timeout` (s; libpq reads ms) | 20 | sent data unacknowledged (Linux) |
/// | `statement_timeout` | 30s | one statement, ended by the server (`-c statement_timeout`) |
/// | `idle_in_transaction_session_timeout` | 60s | a session idle in a transaction, ended by the server |
/// | `query_timeout` | `statement_timeout` + 5s | one round trip, client side: no answer at all and the connection is dropped (0: none) |
/// | `sslmode` | `disable` | `disable`, `prefer`, `require` (encrypted, unverified), `verify-ca` (chain), `verify-full` (chain and host name) |
/// | `sslrootcert` | none | PEM file of trusted certificates; needed by `verify-ca` and `verify-full` |
///
/// Durations of `statement_timeout`, `idle_in_transaction_session_timeout` and
/// `query_timeout` are milliseconds or take a unit (`500ms`, `5s`, `1min`); the two
/// server settings may also be given as `-c name=value` in `options`, and `0` turns
/// each off. Unlike libpq, no `sslmode` means no TLS, and `verify-*` never falls back
/// to a default root file. TLS is rustls's. The append transactions run at `READ
/// COMMITTED` whatever the server's `default_transaction_isolation` (see
/// [`crate::writer`]).
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) max_group_events: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) slow_commits: Option<SlowCommits>,
}

/// Test hook: every `every`-th group transaction sleeps for `delay` inside the
/// database after writing its rows and before committing, with its positions taken.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct SlowCommits {
    pub every: u64,
    pub delay: Duration,
}

impl PostgresOptions {
    /// A store at `url` (a libpq-style URL or key=value string) in PostgreSQL schema
    /// `schema` (created on connect if missing).
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            schema: schema.into(),
            pool_size: 8,
            max_group_events: 10_000,
            poll_interval: Duration::from_millis(500),
            slow_commits: None,
        }
    }

    /// Connections kept for reads (default 8). The writer and the listener each add one.
    pub fn pool_size(mut self, size: usize) -> PostgresOptions {
        self.pool_size = size.max(1);
        self
    }

    /// Events one group commit gathers before it starts its transaction (default
    /// 10,000). A single larger append still commits whole.
    pub fn max_group_events(mut self, events: usize) -> PostgresOptions {
        self.max_group_events = events.max(1);
        self
    }

    /// How often the head is read in case a notification was lost (default 500 ms).
    pub fn poll_interval(mut self, interval: Duration) -> PostgresOptions {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Test hook; see [`SlowCommits`].
    #[doc(hidden)]
    pub fn slow_commits(mut self, slow: SlowCommits) -> PostgresOptions {
        self.slow_commits = Some(slow);
        self
    }

    /// The settings of every connection of the store.
    ///
    /// Statements are prepared once per connection, often while the tables are still
    /// empty, and PostgreSQL would then cache a generic plan costed for an empty table
    /// (a sequential scan) and keep it as the table grows: lookups that should take
    /// microseconds would grow linearly with the log. `plan_cache_mode =
    /// force_custom_plan` plans every execution for the table as it is now.
    pub(crate) fn connector(&self) -> Result<Connector, StoreError> {
        let plans = "-c plan_cache_mode=force_custom_plan".to_owned();
        Connector::new(&self.url, &format!("rewind:{}", self.schema), &[plans])
    }

    pub(crate) fn validate_schema(&self) -> Result<(), StoreError> {
        validate_schema(&self.schema)
    }
}

/// The longest schema name; leaves room in PostgreSQL's 63-byte identifiers for the
/// notification channel `rewind.<schema>`.
pub const MAX_SCHEMA_LEN: usize = 50;

/// Schema names are plain lowercase identifiers, so they can be written into SQL.
fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && schema.len() <= MAX_SCHEMA_LEN {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "schema name `{schema}` must be 1 to {MAX_SCHEMA_LEN} characters of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["rewind", "_x", "events_2024", &"a".repeat(MAX_SCHEMA_LEN)] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "Rewind", "a-b", "a\"b", "a b", &"a".repeat(MAX_SCHEMA_LEN + 1)] {
            assert!(matches!(validate_schema(bad), Err(StoreError::Invalid(_))), "{bad}");
        }
    }
}
