//! How every connection of the crate is made: the writer's, the pools' (reads,
//! read models, subscription bookkeeping), the listener's and the leases'. One
//! function reads the URL (`Connector::new`) and one connects (`Connector::connect`
//! and the pool's `Connect` impl, which calls it), so TLS, timeouts and keepalive
//! are decided once.
//!
//! Promises:
//!
//! * A connection attempt (TCP, TLS, authentication) ends within `connect_timeout`.
//! * A dead peer is noticed by the kernel: TCP keepalive probes an idle connection and
//!   `tcp_user_timeout` bounds unacknowledged sends.
//! * The server ends statements past `statement_timeout` and sessions idle inside a
//!   transaction past `idle_in_transaction_session_timeout`.
//! * A round trip that gets no answer at all within `query_timeout` fails with
//!   [`Stalled`] and its connection is dropped, never reused. This is what notices a
//!   path that stopped forwarding but still acknowledges TCP (a proxy, a NAT), which
//!   neither keepalive nor `tcp_user_timeout` can see, and where the server never
//!   saw the statement, so its own timeouts cannot fire.
//!
//! The URL keys are listed on [`PostgresOptions`](crate::PostgresOptions).

use crate::tls::{MakeRustls, RustlsStream, Verify};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use rewind::StoreError;
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Socket};

/// How long a connection attempt may take when the URL does not say (`connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle time before the first keepalive probe (`keepalives_idle`) unless the URL says.
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
/// Between keepalive probes (`keepalives_interval`); 3 probes (`keepalives_retries`).
pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
/// How long sent data may stay unacknowledged before the kernel drops the connection
/// (`tcp_user_timeout`).
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// The server's bound on one statement (`statement_timeout`) unless the URL says.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's bound on a session idle inside a transaction
/// (`idle_in_transaction_session_timeout`) unless the URL says.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How much longer than `statement_timeout` the client waits for an answer when the
/// URL names no `query_timeout`: the server's own timeout should fire first, so a
/// [`Stalled`] means the path, not the statement.
pub const QUERY_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// A round trip that got no answer: the connection was dropped.
///
/// For an append the outcome is unknown (the commit may have reached the server).
#[derive(Debug, thiserror::Error)]
#[error("no answer from PostgreSQL within {0:?} (query_timeout); the connection was dropped")]
pub struct Stalled(pub Duration);

/// Keys tokio-postgres does not know, read here and removed before it parses the rest.
const OUR_KEYS: &[&str] =
    &["sslmode", "sslrootcert", "statement_timeout", "idle_in_transaction_session_timeout", "query_timeout"];

/// The settings of every connection of one store or read model.
#[derive(Clone)]
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustls,
    query_timeout: Option<Duration>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("query_timeout", &self.query_timeout).finish_non_exhaustive()
    }
}

/// A connection's driver task, aborted when dropped (a driver waiting on a stalled
/// peer would otherwise wait as long as the socket lives).
pub(crate) struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Connector {
    /// Reads `url` (a URL or key=value string; see [`PostgresOptions`](crate::PostgresOptions)
    /// for the keys), adding `server_options` (`-c name=value` words) to its `options`
    /// and naming connections `application_name` unless the URL does.
    pub(crate) fn new(url: &str, application_name: &str, server_options: &[String]) -> Result<Connector, StoreError> {
        let invalid = |e: &dyn std::fmt::Display| StoreError::Invalid(format!("bad PostgreSQL connection string: {e}"));
        let parts = split(url).map_err(|e| invalid(&e))?;
        let mut config = tokio_postgres::Config::from_str(&parts.rest).map_err(|e| invalid(&e))?;
        let ours = |key: &str| parts.ours(key);
        let present = |key: &str| parts.keys.contains(key);
        let (mode, verify) = match ours("sslmode").unwrap_or("disable") {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "prefer" => (SslMode::Prefer, Verify::Nothing),
            "require" => (SslMode::Require, Verify::Nothing),
            "verify-ca" => (SslMode::Require, Verify::Chain),
            "verify-full" => (SslMode::Require, Verify::ChainAndHost),
            other => {
                return Err(invalid(&format!(
                    "sslmode `{other}`: expected disable, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        config.ssl_mode(mode);
        let roots = ours("sslrootcert").map(PathBuf::from);
        let tls = MakeRustls::new(&verify, roots.as_deref()).map_err(|e| invalid(&e))?;
        defaults(&mut config, &present);
        let mut words: Vec<String> = server_options.to_vec();
        let given = config.get_options().map(str::to_owned).unwrap_or_default();
        let statement = server_setting(&given, &parts, "statement_timeout", DEFAULT_STATEMENT_TIMEOUT, &mut words)
            .map_err(|e| invalid(&e))?;
        server_setting(
            &given,
            &parts,
            "idle_in_transaction_session_timeout",
            DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
            &mut words,
        )
        .map_err(|e| invalid(&e))?;
        let query_timeout = match ours("query_timeout") {
            Some(value) => Some(duration(value).map_err(|e| invalid(&format!("query_timeout: {e}")))?),
            None => Some(statement + QUERY_TIMEOUT_MARGIN).filter(|_| !statement.is_zero()),
        }
        .filter(|d| !d.is_zero());
        let options = std::iter::once(given).chain(words).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
        config.options(options);
        if config.get_application_name().is_none() {
            // So operators can tell a store's connections apart in pg_stat_activity.
            config.application_name(application_name);
        }
        Ok(Connector { config, tls, query_timeout })
    }

    /// Opens a connection and returns its driver for the caller to run (the listener
    /// reads its notifications). The whole attempt is bounded by `connect_timeout`.
    pub(crate) async fn connect_raw(
        &self,
    ) -> Result<(Client, tokio_postgres::Connection<Socket, RustlsStream<Socket>>), ConnectError> {
        let limit = self.config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        match tokio::time::timeout(limit, self.config.connect(self.tls.clone())).await {
            Ok(result) => result.map_err(ConnectError::Failed),
            Err(_) => Err(ConnectError::TimedOut(limit)),
        }
    }

    /// Opens a connection whose driver runs on its own task until [`Driver`] drops.
    pub(crate) async fn connect(&self) -> Result<(Client, Driver), ConnectError> {
        let (client, connection) = self.connect_raw().await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection ended");
            }
        });
        Ok((client, Driver(driver)))
    }

    /// A pool of `size` connections made by [`Connector::connect`].
    pub(crate) fn pool(&self, size: usize) -> Result<Pool, StoreError> {
        let manager = Manager::from_connect(
            self.config.clone(),
            self.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let create = self.config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        Pool::builder(manager)
            .max_size(size)
            .create_timeout(Some(create))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(StoreError::backend)
    }

    /// `work` bounded by `query_timeout` (unbounded without one). On [`Stalled`] the
    /// caller must drop the connection `work` used: it may still owe an answer.
    pub(crate) async fn bounded<T>(&self, work: impl Future<Output = T>) -> Result<T, Stalled> {
        match self.query_timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| Stalled(limit)),
            None => Ok(work.await),
        }
    }
}

/// Why no connection was made. Nothing was sent on it: an append that meets this
/// is known not to have happened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Failed(tokio_postgres::Error),
    #[error("connecting to PostgreSQL took longer than {0:?} (connect_timeout)")]
    TimedOut(Duration),
}

impl ConnectError {
    /// As a store error: the database is [unavailable](StoreError::Unavailable), or the
    /// server refused what was asked (a missing database, bad credentials: still
    /// unavailable to this store, and nothing was written).
    pub(crate) fn into_store(self) -> StoreError {
        StoreError::Unavailable(Box::new(self))
    }
}

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        _: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        // The pool's copy of the config is ours. The whole attempt is bounded by the
        // pool's create timeout (`connect_timeout`, see `pool`): a driver error cannot
        // be made here to say so.
        Box::pin(async move {
            let (client, connection) = self.config.connect(self.tls.clone()).await?;
            let driver = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "pooled PostgreSQL connection ended");
                }
            });
            Ok((client, driver))
        })
    }
}

/// Kernel-level settings the URL did not give.
fn defaults(config: &mut tokio_postgres::Config, present: &dyn Fn(&str) -> bool) {
    if !present("connect_timeout") {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if !present("keepalives_idle") {
        config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
    }
    if !present("keepalives_interval") {
        config.keepalives_interval(DEFAULT_KEEPALIVES_INTERVAL);
    }
    if !present("keepalives_retries") {
        config.keepalives_retries(3);
    }
    if !present("tcp_user_timeout") {
        config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
    }
}

/// The value of a server setting: from the URL key, else from `-c name=value` in
/// the URL's `options` (left there), else `default`. Adds `-c name=<ms>` to `words`
/// unless `options` has it already.
fn server_setting(
    options: &str,
    parts: &Parts,
    name: &str,
    default: Duration,
    words: &mut Vec<String>,
) -> Result<Duration, String> {
    let in_options = option_value(options, name);
    let value = match (parts.ours(name), &in_options) {
        (Some(value), _) => duration(value).map_err(|e| format!("{name}: {e}"))?,
        (None, Some(value)) => duration(value).map_err(|e| format!("{name} in options: {e}"))?,
        (None, None) => default,
    };
    if in_options.is_none() || parts.ours(name).is_some() {
        // Later `-c` words win over earlier ones, so the URL key beats `options`.
        words.push(format!("-c {name}={}", value.as_millis()));
    }
    Ok(value)
}

/// `name`'s value in a server options string (`-c name=v`, `-cname=v`, `--name=v`).
fn option_value(options: &str, name: &str) -> Option<String> {
    let mut words = options.split_whitespace().peekable();
    let mut found = None;
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => words.next().unwrap_or(""),
            w if w.starts_with("--") => &w[2..],
            w if w.starts_with("-c") => &w[2..],
            _ => continue,
        };
        if let Some((key, value)) = setting.split_once('=')
            && key.replace('-', "_") == name
        {
            found = Some(value.to_owned());
        }
    }
    found
}

/// A duration as PostgreSQL writes one: a number of milliseconds, or a number with
/// a unit (`us`, `ms`, `s`, `min`, `h`, `d`).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (say 500ms, 5s, 1min)"))?;
    let seconds = match unit.trim() {
        "" | "ms" => number / 1000.0,
        "us" => number / 1_000_000.0,
        "s" => number,
        "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (us, ms, s, min, h, d)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// A connection string taken apart: what tokio-postgres should parse, the keys only
/// Rewind reads, and every key named.
#[derive(Debug, Default)]
struct Parts {
    rest: String,
    ours: Vec<(String, String)>,
    keys: HashSet<String>,
}

impl Parts {
    /// The last value of one of [`OUR_KEYS`].
    fn ours(&self, key: &str) -> Option<&str> {
        self.ours.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn split(url: &str) -> Result<Parts, String> {
    match ["postgres://", "postgresql://"].iter().any(|p| url.starts_with(p)) {
        true => split_url(url),
        false => split_key_values(url),
    }
}

fn split_url(url: &str) -> Result<Parts, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(Parts { rest: url.to_owned(), ..Parts::default() });
    };
    let mut parts = Parts::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if OUR_KEYS.contains(&key.as_str()) {
            parts.ours.push((key.clone(), percent_decode(value)?));
        } else {
            kept.push(pair);
        }
        parts.keys.insert(key);
    }
    parts.rest = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    Ok(parts)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| format!("bad percent escape in `{text}`"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent escape in `{text}`"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// `key=value` words (values may be single-quoted with `\` escapes, as libpq's).
fn split_key_values(text: &str) -> Result<Parts, String> {
    let mut parts = Parts::default();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().is_none_or(|(_, c)| c != '=') {
            return Err(format!("expected `=` after `{key}`"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated quoted value".into()),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        if OUR_KEYS.contains(&key.as_str()) {
            parts.ours.push((key.clone(), value));
        } else {
            kept.push(&text[start..end]);
        }
        parts.keys.insert(key);
    }
    parts.rest = kept.join(" ");
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str) -> Connector {
        Connector::new(url, "rewind:test", &[]).expect("connector")
    }

    #[test]
    fn bounds_connections_unless_the_url_says() {
        let c = connector("postgres://u@db.invalid/bank");
        assert_eq!(c.config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(c.config.get_keepalives_idle(), DEFAULT_KEEPALIVES_IDLE);
        assert_eq!(c.config.get_tcp_user_timeout(), Some(&DEFAULT_TCP_USER_TIMEOUT));
        assert_eq!(c.config.get_ssl_mode(), SslMode::Disable);
        let options = c.config.get_options().expect("options");
        assert!(options.contains("-c statement_timeout=30000"), "{options}");
        assert!(options.contains("-c idle_in_transaction_session_timeout=60000"), "{options}");
        assert_eq!(c.query_timeout, Some(DEFAULT_STATEMENT_TIMEOUT + QUERY_TIMEOUT_MARGIN));

        let c = connector(
            "postgres://u@db.invalid/bank?connect_timeout=1&keepalives_idle=3&tcp_user_timeout=7\
             &statement_timeout=2s&idle_in_transaction_session_timeout=1500&query_timeout=250ms&sslmode=require",
        );
        assert_eq!(c.config.get_connect_timeout(), Some(&Duration::from_secs(1)));
        assert_eq!(c.config.get_keepalives_idle(), Duration::from_secs(3));
        assert_eq!(c.config.get_tcp_user_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
        let options = c.config.get_options().expect("options");
        assert!(options.contains("-c statement_timeout=2000"), "{options}");
        assert!(options.contains("-c idle_in_transaction_session_timeout=1500"), "{options}");
        assert_eq!(c.query_timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn the_same_keys_work_in_key_value_strings_and_options() {
        let c = connector("host=db.invalid user=u options='-c statement_timeout=4s' query_timeout=0");
        let options = c.config.get_options().expect("options");
        assert_eq!(options.matches("statement_timeout").count(), 1, "{options}");
        assert_eq!(c.query_timeout, None, "query_timeout=0 switches the client-side bound off");
        let c = connector("host=db.invalid statement_timeout=0");
        assert_eq!(c.query_timeout, None, "no server bound, no client bound derived from it");
        let c = connector("postgres://u@h/db?options=-c%20statement_timeout%3D4s");
        assert_eq!(c.query_timeout, Some(Duration::from_secs(4) + QUERY_TIMEOUT_MARGIN));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "postgres://u@h/db?sslmode=verify-full",
            "postgres://u@h/db?sslmode=sometimes",
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt",
            "postgres://u@h/db?statement_timeout=soon",
            "postgres://u@h/db?query_timeout=5parsecs",
            "postgres://u@h/db?no_such_key=1",
            "host=h statement_timeout='5s",
        ] {
            assert!(matches!(Connector::new(bad, "x", &[]), Err(StoreError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn reads_postgres_durations() {
        assert_eq!(duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2min"), Ok(Duration::from_secs(120)));
        assert!(duration("-1s").is_err());
        assert!(duration("").is_err());
    }
}
