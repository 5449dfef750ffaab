//! Peer baseline for `benches/harness`: the bank account workloads on cqrs-es 0.5 with its
//! in-memory, SQLite (sqlite-es) and PostgreSQL (postgres-es) stores. One JSON line per
//! workload on stdout; everything else goes to stderr.

mod domain;
mod report;
mod schema;
mod workloads;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use cqrs_es::mem_store::MemStore;
use cqrs_es::{CqrsFramework, EventStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, SqlitePool};
use tokio::signal::unix::{Signal, SignalKind, signal};

use domain::{BankAccount, BankAccountCommand};
use report::{Measured, Protocol};
use workloads::{Cqrs, MakeCommand, Projection, drive};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Workload {
    #[value(name = "W1")]
    W1,
    #[value(name = "W2")]
    W2,
    #[value(name = "W3")]
    W3,
    #[value(name = "W4")]
    W4,
    #[value(name = "W5")]
    W5,
}

#[derive(Parser, Debug)]
#[command(version, about = "Peer baseline for benches/harness: the bank account on cqrs-es 0.5")]
struct Args {
    /// Event store to run against.
    #[arg(long, value_enum)]
    backend: Backend,
    /// Divide every count by 10.
    #[arg(long)]
    quick: bool,
    /// PostgreSQL URL; a fresh schema is created in it for the run and dropped afterwards.
    #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Workloads to run, comma-separated, in this order: W1,W2,W3,W4,W5.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5")]
    workloads: Vec<Workload>,
    /// Connection pool size (default: 32 for postgres, 10 for sqlite, sqlite-es's own default).
    #[arg(long)]
    pool_size: Option<u32>,
}

/// Concurrent callers in W2 and W3.
const CALLERS: usize = 32;
const INITIAL_BALANCE: i64 = 100;
const DEPOSIT: i64 = 10;

struct Plan {
    w1: usize,
    w2: usize,
    w3_accounts: usize,
    w3: usize,
    w4: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let d = if quick { 10 } else { 1 };
        Self { w1: 10_000 / d, w2: 10_000 / d, w3_accounts: 1_000 / d, w3: 20_000 / d, w4: 20_000 / d }
    }
}

/// What the projection should find, from the workloads that completed.
#[derive(Default)]
struct Expected {
    events: usize,
    accounts: usize,
    total: i64,
    /// False once a workload failed part-way (its effects are then unknown).
    known: bool,
}

fn open(prefix: &'static str, initial_balance: i64) -> MakeCommand {
    Arc::new(move |i| {
        let id = format!("{prefix}-{i}");
        (id.clone(), BankAccountCommand::OpenAccount { account_id: id, initial_balance })
    })
}

fn deposit(prefix: &'static str, accounts: usize) -> MakeCommand {
    Arc::new(move |i| (format!("{prefix}-{}", i % accounts), BankAccountCommand::DepositMoney { amount: DEPOSIT }))
}

/// W1–W4 against one framework; updates `expected` with what they wrote.
async fn command_workloads<ES>(
    backend: Backend,
    cqrs: Arc<Cqrs<ES>>,
    plan: &Plan,
    selected: &[Workload],
    out: &mut Protocol,
    expected: &mut Expected,
) where
    ES: EventStore<BankAccount> + 'static,
    ES::AC: Send,
{
    for &workload in selected {
        let result: Result<Measured, String> = match workload {
            Workload::W1 => {
                let r = drive(&cqrs, 1, plan.w1, open("w1", INITIAL_BALANCE)).await;
                if r.is_ok() {
                    expected.events += plan.w1;
                    expected.accounts += plan.w1;
                    expected.total += plan.w1 as i64 * INITIAL_BALANCE;
                }
                r
            }
            Workload::W2 => {
                let r = drive(&cqrs, CALLERS, plan.w2, open("w2", INITIAL_BALANCE)).await;
                if r.is_ok() {
                    expected.events += plan.w2;
                    expected.accounts += plan.w2;
                    expected.total += plan.w2 as i64 * INITIAL_BALANCE;
                }
                r
            }
            Workload::W3 => match drive(&cqrs, CALLERS, plan.w3_accounts, open("w3", 0)).await {
                Err(error) => Err(format!("opening the {} accounts: {error}", plan.w3_accounts)),
                Ok(_) => {
                    expected.events += plan.w3_accounts;
                    expected.accounts += plan.w3_accounts;
                    let r = drive(&cqrs, CALLERS, plan.w3, deposit("w3", plan.w3_accounts)).await;
                    if r.is_ok() {
                        expected.events += plan.w3;
                        expected.total += plan.w3 as i64 * DEPOSIT;
                    }
                    r
                }
            },
            Workload::W4 => match drive(&cqrs, 1, 1, open("w4", 0)).await {
                Err(error) => Err(format!("opening the account: {error}")),
                Ok(_) => {
                    expected.events += 1;
                    expected.accounts += 1;
                    let r = drive(&cqrs, 1, plan.w4, deposit("w4", 1)).await;
                    if r.is_ok() {
                        expected.events += plan.w4;
                        expected.total += plan.w4 as i64 * DEPOSIT;
                    }
                    r
                }
            },
            Workload::W5 => continue,
        };
        if result.is_err() {
            expected.known = false;
        }
        out.emit(&report::line(backend.name(), &format!("{workload:?}"), result));
    }
}

/// The projection's outcome checked against what the command workloads wrote.
fn check(
    result: Result<(Measured, Projection), String>,
    expected: &Expected,
    stored: Option<Result<(i64, i64), sqlx::Error>>,
) -> Result<Measured, String> {
    let (mut measured, projection) = result?;
    eprintln!(
        "peer-cqrs-es: W5 folded {} events into {} accounts, total balance {}",
        projection.events,
        projection.balances.len(),
        projection.total()
    );
    if measured.ops == 0 {
        return Err("no events to catch up on (run W5 together with W1–W4)".to_string());
    }
    // A shortfall here is the store's, not the projection's (the in-memory store has no
    // optimistic-concurrency check and can lose a concurrent command's event): the catch-up
    // figure stands, with a warning.
    if expected.known {
        let found = (projection.events, projection.balances.len(), projection.total());
        let wanted = (expected.events, expected.accounts, expected.total);
        if found != wanted {
            let warning = format!(
                "the store holds (events, accounts, total balance) {found:?}, the commands that succeeded wrote {wanted:?}"
            );
            eprintln!("peer-cqrs-es: W5 warning: {warning}");
            measured.warning = Some(warning);
        }
    }
    if let Some(stored) = stored {
        let (rows, sum) = stored.map_err(|e| format!("reading back the balances table: {e}"))?;
        if (rows, sum) != (projection.balances.len() as i64, projection.total()) {
            return Err(format!("balances table holds {rows} rows summing to {sum}, the fold {}", projection.total()));
        }
    }
    Ok(measured)
}

fn main() {
    let args = Args::parse();
    // Before the runtime starts any thread: take stdout for the protocol.
    let mut out = match Protocol::take_stdout() {
        Ok(out) => out,
        Err(error) => {
            eprintln!("peer-cqrs-es: cannot set up stdout: {error}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("peer-cqrs-es: cannot start tokio: {error}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(run(args, &mut out));
    drop(runtime);
    std::process::exit(code);
}

async fn run(args: Args, out: &mut Protocol) -> i32 {
    let mut selected = args.workloads.clone();
    selected.sort();
    selected.dedup();
    let plan = Plan::new(args.quick);
    eprintln!(
        "peer-cqrs-es: backend {}, {} mode, workloads {selected:?}",
        args.backend.name(),
        if args.quick { "quick" } else { "full" }
    );

    let mut stop = match Stop::new() {
        Ok(stop) => stop,
        Err(error) => {
            eprintln!("peer-cqrs-es: cannot watch for signals: {error}");
            return 2;
        }
    };
    let outcome = match args.backend {
        Backend::Memory => {
            Ok(stop.during(run_memory(&plan, &selected, out)).await.map_or(Ended::Stopped, |()| Ended::Done))
        }
        Backend::Sqlite => run_sqlite(&args, &plan, &selected, out, &mut stop).await,
        Backend::Postgres => run_postgres(&args, &plan, &selected, out, &mut stop).await,
    };
    match outcome {
        Ok(Ended::Done) => 0,
        Ok(Ended::Stopped) => {
            eprintln!("peer-cqrs-es: stopped by a signal; workloads not reported did not finish");
            143
        }
        Err(error) => {
            // The backend could not be set up: every selected workload fails with that error.
            eprintln!("peer-cqrs-es: {error}");
            for workload in &selected {
                out.emit(&report::line(args.backend.name(), &format!("{workload:?}"), Err(error.clone())));
            }
            1
        }
    }
}

enum Ended {
    Done,
    Stopped,
}

/// SIGTERM / SIGINT: the harness sends SIGTERM when its time limit is up, and the run then
/// abandons its workloads but still removes its SQLite directory or drops its schema.
struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    fn new() -> std::io::Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Runs `work` to its end, or until a signal (then `None`, and `work` is dropped).
    async fn during<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::select! {
            output = work => Some(output),
            _ = self.term.recv() => None,
            _ = self.int.recv() => None,
        }
    }
}

async fn run_memory(plan: &Plan, selected: &[Workload], out: &mut Protocol) {
    let store = MemStore::<BankAccount>::default();
    let cqrs = Arc::new(CqrsFramework::new(store.clone(), vec![], ()));
    let mut expected = Expected { known: true, ..Default::default() };
    command_workloads(Backend::Memory, cqrs, plan, selected, out, &mut expected).await;
    if selected.contains(&Workload::W5) {
        let result = check(workloads::catch_up_memory(&store), &expected, None);
        out.emit(&report::line("memory", "W5", result));
    }
}

async fn run_sqlite(
    args: &Args,
    plan: &Plan,
    selected: &[Workload],
    out: &mut Protocol,
    stop: &mut Stop,
) -> Result<Ended, String> {
    let dir = tempfile::Builder::new().prefix("peer-cqrs-es-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let pool = sqlite_pool(&dir.path().join("events.db"), args.pool_size.unwrap_or(10))
        .await
        .map_err(|e| format!("sqlite: {e}"))?;
    sqlx::raw_sql(schema::SQLITE).execute(&pool).await.map_err(|e| format!("sqlite schema: {e}"))?;
    let ended =
        stop.during(sqlite_workloads(&pool, plan, selected, out)).await.map_or(Ended::Stopped, |()| Ended::Done);
    pool.close().await;
    drop(dir);
    Ok(ended)
}

async fn sqlite_workloads(pool: &SqlitePool, plan: &Plan, selected: &[Workload], out: &mut Protocol) {
    let cqrs = Arc::new(sqlite_es::sqlite_cqrs(pool.clone(), vec![], ()));
    let mut expected = Expected { known: true, ..Default::default() };
    command_workloads(Backend::Sqlite, cqrs, plan, selected, out, &mut expected).await;
    if selected.contains(&Workload::W5) {
        let caught_up = workloads::catch_up_sqlite(pool).await;
        let stored = sqlx::query_as::<_, (i64, i64)>("SELECT count(*), coalesce(sum(balance), 0) FROM balances")
            .fetch_one(pool)
            .await;
        out.emit(&report::line("sqlite", "W5", check(caught_up, &expected, Some(stored))));
    }
}

/// sqlite-es's `default_sqlite_pool` settings (WAL, foreign keys, 10 connections) except
/// `synchronous`: FULL here (fsync at every commit) where sqlite-es uses NORMAL.
async fn sqlite_pool(path: &Path, size: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    SqlitePoolOptions::new().max_connections(size).connect_with(options).await
}

async fn run_postgres(
    args: &Args,
    plan: &Plan,
    selected: &[Workload],
    out: &mut Protocol,
    stop: &mut Stop,
) -> Result<Ended, String> {
    let url = args.database_url.as_deref().ok_or("postgres needs --database-url or TEST_DATABASE_URL")?;
    let mut admin = PgConnection::connect(url).await.map_err(|e| format!("postgres: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let schema = format!("peer_{}_{:06x}", now.as_secs(), (now.subsec_nanos() ^ std::process::id()) & 0xff_ffff);
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("create schema: {e}"))?;
    eprintln!("peer-cqrs-es: postgres schema {schema}");
    let work = postgres_in_schema(url, &schema, args.pool_size.unwrap_or(32), plan, selected, out);
    let result = stop.during(work).await.unwrap_or(Ok(Ended::Stopped));
    // After a signal, abandoned transactions may hold locks until their connections close.
    let drop_schema = format!("SET lock_timeout = '10s'; DROP SCHEMA {schema} CASCADE");
    let dropped = sqlx::raw_sql(&drop_schema).execute(&mut admin).await;
    if let Err(error) = dropped {
        eprintln!("peer-cqrs-es: could not drop schema {schema}: {error}");
    }
    let _ = admin.close().await;
    result
}

async fn postgres_in_schema(
    url: &str,
    schema: &str,
    size: u32,
    plan: &Plan,
    selected: &[Workload],
    out: &mut Protocol,
) -> Result<Ended, String> {
    // search_path as a startup parameter of every pooled connection, so postgres-es's
    // unqualified `events` resolves to the run's schema.
    let options =
        PgConnectOptions::from_str(url).map_err(|e| format!("database url: {e}"))?.options([("search_path", schema)]);
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(size)
        .connect_with(options)
        .await
        .map_err(|e| format!("postgres pool: {e}"))?;
    sqlx::raw_sql(schema::POSTGRES).execute(&pool).await.map_err(|e| format!("postgres schema: {e}"))?;
    let cqrs = Arc::new(postgres_es::postgres_cqrs(pool.clone(), vec![], ()));
    let mut expected = Expected { known: true, ..Default::default() };
    command_workloads(Backend::Postgres, cqrs, plan, selected, out, &mut expected).await;
    if selected.contains(&Workload::W5) {
        let caught_up = workloads::catch_up_postgres(&pool).await;
        let stored =
            sqlx::query_as::<_, (i64, i64)>("SELECT count(*), coalesce(sum(balance), 0)::bigint FROM balances")
                .fetch_one(&pool)
                .await;
        out.emit(&report::line("postgres", "W5", check(caught_up, &expected, Some(stored))));
    }
    pool.close().await;
    Ok(Ended::Done)
}
