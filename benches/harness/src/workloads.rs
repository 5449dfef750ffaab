//! The seven workloads, their sizes, and Rewind's side of W1–W4: the bank's real
//! account aggregate (`bank::domain`), opened and deposited into through
//! `Application::dispatch`, with the latency of every dispatch.
//!
//! W1–W3 run on `bank::app::application(store)` exactly as the bank builds it. W4
//! uses the same commands, middleware and aggregate with the one difference the
//! workload asks for: no snapshots (the bank snapshots every 100 events).

use crate::backend::Target;
use crate::measure::{Measurement, run_callers};
use bank::domain::*;
use rewind::{AggregateConfig, Application, LoggingMiddleware, ValidationMiddleware};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use uuid::Uuid;

/// One workload of issue 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// Open accounts, one caller.
    W1,
    /// Open accounts, 32 callers.
    W2,
    /// Deposits spread over existing accounts, 32 callers.
    W3,
    /// Deposits into one account, one caller, no snapshots.
    W4,
    /// A balance projection catching up from the origin.
    W5,
    /// HTTP deposits against `bank serve`.
    W6,
    /// W6's load over 1, 2 and 4 `bank serve` processes on one PostgreSQL schema.
    W7,
}

impl Workload {
    /// All of them, in order.
    pub const ALL: [Workload; 7] =
        [Workload::W1, Workload::W2, Workload::W3, Workload::W4, Workload::W5, Workload::W6, Workload::W7];

    /// What it does, in a few words, for the table.
    pub fn describe(self, sizes: &Sizes) -> String {
        let n = |v: usize| thousands(v as f64);
        match self {
            Workload::W1 => format!("W1 open {} accounts, 1 caller", n(sizes.opens)),
            Workload::W2 => format!("W2 open {} accounts, {} callers", n(sizes.opens), sizes.callers),
            Workload::W3 => format!(
                "W3 {} deposits over {} accounts, {} callers",
                n(sizes.deposits),
                n(sizes.accounts),
                sizes.callers
            ),
            Workload::W4 => format!("W4 {} deposits into 1 account, 1 caller", n(sizes.hot_deposits)),
            Workload::W5 => "W5 balance projection, catch-up (events/s)".to_owned(),
            Workload::W6 => {
                format!("W6 HTTP deposits, {} connections, {} s", sizes.http_connections, sizes.http_seconds)
            }
            Workload::W7 => format!(
                "W7 HTTP deposits, {} connections over 1, 2 and 4 processes on one PostgreSQL schema, {} s",
                sizes.http_connections, sizes.http_seconds
            ),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.to_string().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown workload `{s}` (W1 … W7)"))
    }
}

/// How much each workload does. Quick mode divides the counts by 10, as the peer does.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// W1 and W2: accounts opened.
    pub opens: usize,
    /// Concurrent callers in W2, W3 and the 32-client raw baseline.
    pub callers: usize,
    /// W3: accounts the deposits spread over.
    pub accounts: usize,
    /// W3: deposits.
    pub deposits: usize,
    /// W4: deposits into the one account.
    pub hot_deposits: usize,
    /// Raw baselines: rows in the 100-row-transaction and COPY runs.
    pub bulk_rows: usize,
    /// W6 and W7: accounts opened over HTTP.
    pub http_accounts: usize,
    /// W6: load tool connections (W7 splits them over its processes).
    pub http_connections: usize,
    /// W6 and W7: seconds of load.
    pub http_seconds: u64,
}

impl Sizes {
    /// The counts of issue 7, or a tenth of them.
    pub fn new(quick: bool) -> Sizes {
        let d = if quick { 10 } else { 1 };
        Sizes {
            opens: 10_000 / d,
            callers: 32,
            accounts: 1_000 / d,
            deposits: 20_000 / d,
            hot_deposits: 20_000 / d,
            bulk_rows: if quick { 20_000 } else { 100_000 },
            http_accounts: 1_000,
            http_connections: 64,
            http_seconds: if quick { 5 } else { 20 },
        }
    }
}

/// `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs one of W1–W4 on a fresh application over `target`'s store.
pub async fn run(target: &Target, workload: Workload, sizes: &Sizes) -> anyhow::Result<Measurement> {
    match workload {
        Workload::W1 => open_accounts(target.bank(), sizes.opens, 1).await,
        Workload::W2 => open_accounts(target.bank(), sizes.opens, sizes.callers).await,
        Workload::W3 => spread_deposits(target.bank(), sizes).await,
        Workload::W4 => hot_deposits(without_snapshots(target), sizes.hot_deposits).await,
        Workload::W5 | Workload::W6 | Workload::W7 => anyhow::bail!("{workload} is not a dispatch workload"),
    }
}

fn open(account_uuid: Uuid) -> OpenAccount {
    OpenAccount { account_uuid, initial_balance: 1_000 }
}

fn deposit(account_uuid: Uuid) -> DepositIntoAccount {
    DepositIntoAccount { account_uuid, deposit_amount: 1, transfer_uuid: None }
}

/// Opens `n` new accounts from `callers` concurrent callers.
async fn open_accounts(app: Application, n: usize, callers: usize) -> anyhow::Result<Measurement> {
    run_callers(callers, n, move |_| {
        let app = app.clone();
        async move {
            app.dispatch(open(Uuid::new_v4())).await?;
            Ok(())
        }
    })
    .await
}

/// Opens the accounts (untimed) and returns their ids.
pub async fn opened_accounts(app: &Application, n: usize, callers: usize) -> anyhow::Result<Arc<Vec<Uuid>>> {
    let ids: Arc<Vec<Uuid>> = Arc::new((0..n).map(|_| Uuid::new_v4()).collect());
    let (app, all) = (app.clone(), ids.clone());
    run_callers(callers, n, move |i| {
        let (app, all) = (app.clone(), all.clone());
        async move {
            app.dispatch(open(all[i])).await?;
            Ok(())
        }
    })
    .await?;
    Ok(ids)
}

/// W3: deposits spread round-robin over freshly opened accounts.
async fn spread_deposits(app: Application, sizes: &Sizes) -> anyhow::Result<Measurement> {
    let accounts = opened_accounts(&app, sizes.accounts, sizes.callers).await?;
    run_callers(sizes.callers, sizes.deposits, move |i| {
        let (app, account) = (app.clone(), accounts[i % accounts.len()]);
        async move {
            app.dispatch(deposit(account)).await?;
            Ok(())
        }
    })
    .await
}

/// W4: one account, one caller, every deposit on the live aggregate.
async fn hot_deposits(app: Application, n: usize) -> anyhow::Result<Measurement> {
    let account = Uuid::new_v4();
    app.dispatch(open(account)).await?;
    run_callers(1, n, move |_| {
        let app = app.clone();
        async move {
            app.dispatch(deposit(account)).await?;
            Ok(())
        }
    })
    .await
}

/// `bank::app::application` without the snapshot setting.
fn without_snapshots(target: &Target) -> Application {
    let router = bank::app::router_with(AggregateConfig::<Account>::new().identity_prefix("account-"));
    Application::builder_shared(target.shared())
        .router(router)
        .middleware(LoggingMiddleware)
        .middleware(ValidationMiddleware)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        assert_eq!("w3".parse::<Workload>(), Ok(Workload::W3));
        assert_eq!("W7".parse::<Workload>(), Ok(Workload::W7));
        assert!("W8".parse::<Workload>().is_err());
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[tokio::test]
    async fn every_dispatch_workload_runs_on_memory() {
        let target = Target::open(crate::backend::Backend::Memory, None).await.unwrap();
        let sizes = Sizes { opens: 20, accounts: 5, deposits: 30, hot_deposits: 10, callers: 4, ..Sizes::new(true) };
        for w in [Workload::W1, Workload::W2, Workload::W3, Workload::W4] {
            let m = run(&target, w, &sizes).await.unwrap();
            assert!(m.ops > 0 && m.p99_us.is_some(), "{w}");
        }
    }
}
