//! How to reach the database and shape the store: [`PostgresOptions`].
//!
//! Parsing and validation happen here, before any connection is made, so a bad URL or
//! schema name is a [`StoreError::Invalid`] and never a half-opened store.

use rewind::StoreError;
use std::str::FromStr;
use std::time::Duration;

/// Settings for [`PostgresStore::connect_with`](crate::PostgresStore::connect_with).
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
/// database after writing its rows and before committing, holding the append lock.
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

    /// The connection settings of every store connection.
    ///
    /// Statements are prepared once per connection, often while the tables are still
    /// empty, and PostgreSQL would then cache a generic plan costed for an empty table
    /// (a sequential scan) and keep it as the table grows: lookups that should take
    /// microseconds would grow linearly with the log. `plan_cache_mode =
    /// force_custom_plan` plans every execution for the table as it is now.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL connection string: {e}")))?;
        let options = format!("{} -c plan_cache_mode=force_custom_plan", config.get_options().unwrap_or(""));
        config.options(options.trim_start());
        if config.get_application_name().is_none() {
            // So operators can tell a store's connections apart in pg_stat_activity.
            config.application_name(format!("rewind:{}", self.schema));
        }
        bounded_connect(&mut config);
        Ok(config)
    }

    pub(crate) fn validate_schema(&self) -> Result<(), StoreError> {
        validate_schema(&self.schema)
    }
}

/// How long a connection attempt may take when the URL does not say
/// (`connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds connection attempts ([`DEFAULT_CONNECT_TIMEOUT`]) unless the URL does. A
/// server whose host is down (rather than refusing) would otherwise hold each
/// attempt for the system's SYN retries, about two minutes, and every append and
/// subscription with it: while the database is away they should fail fast, and
/// retry.
pub(crate) fn bounded_connect(config: &mut tokio_postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
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
    fn connection_attempts_are_bounded_unless_the_url_says() {
        let config = PostgresOptions::new("postgres://u@db.invalid/bank", "s").pg_config().expect("config");
        assert_eq!(config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        let config = PostgresOptions::new("postgres://u@db.invalid/bank?connect_timeout=1", "s").pg_config();
        assert_eq!(config.expect("config").get_connect_timeout(), Some(&Duration::from_secs(1)));
    }

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
