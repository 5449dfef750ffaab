//! The `bank` binary: parse the command line, set up logs and traces, call the library.
//! `serve` runs the bank; everything else is Rewind's operations command set
//! ([`rewind_cli::OpsCommand`]) mounted here with the bank's description.

use bank::limits::Limits;
use bank::server::{ServeConfig, serve};
use bank::service::BankApp;
use clap::{Parser, Subcommand};
use rewind_backend::Database;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

// The server allocates and frees per request on every thread; glibc's allocator was a
// quarter of the async workers' time under load (`BENCHMARKS.md`, BankAPI over HTTP).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "bank", version, about = "BankAPI on Rewind: accounts, deposits, withdrawals, transfers")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
    /// Send OpenTelemetry traces to this OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318); off when unset.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Subcommand)]
enum Commands {
    /// Serve the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BANK_LISTEN", default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
        /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB[?schema=NAME]`.
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://bank.db")]
        database: Database,
        /// Bearer token every /api request must carry (required off loopback).
        #[arg(long, env = "BANK_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    #[command(flatten)]
    Ops(rewind_cli::OpsCommand),
}

/// What one client may take of the server (`bank::limits`).
#[derive(clap::Args)]
struct LimitArgs {
    /// Seconds a client has to send a complete request head.
    #[arg(long, env = "BANK_HEADER_TIMEOUT", default_value_t = 10.0, value_name = "SECONDS")]
    header_timeout: f64,
    /// Seconds from a request's head to its answer, body included (then 408).
    #[arg(long, env = "BANK_REQUEST_TIMEOUT", default_value_t = 30.0, value_name = "SECONDS")]
    request_timeout: f64,
    /// Seconds a connection may stay silent before it is closed.
    #[arg(long, env = "BANK_IDLE_TIMEOUT", default_value_t = 60.0, value_name = "SECONDS")]
    idle_timeout: f64,
    /// Connections served at once; the next is answered 503.
    #[arg(long, env = "BANK_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
}

impl LimitArgs {
    fn limits(&self) -> Result<Limits, String> {
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--{flag} must be a positive number of seconds, got {value}"))
        };
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        Ok(Limits {
            header_read_timeout: seconds("header-timeout", self.header_timeout)?,
            request_timeout: seconds("request-timeout", self.request_timeout)?,
            idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
            max_connections: self.max_connections,
            ..Limits::default()
        })
    }
}

/// Resolves on Ctrl-C or SIGTERM. The SIGTERM handler is installed here, when this is
/// called, not when the future is first polled: a signal that arrives while the
/// server is still starting (or before its serve loop first polls the future) must
/// shut it down, not kill it with the default action.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
        tracing::info!("shutting down");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime: the OTLP exporter's HTTP client must not start inside it.
    let telemetry = match bank::telemetry::init(cli.otlp_endpoint.as_deref()) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("bank: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(error) => Err(format!("cannot start the runtime: {error}")),
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bank: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Commands) -> Result<(), String> {
    match command {
        Commands::Serve { listen, database, token, limits } => match limits.limits() {
            Ok(limits) => serve(ServeConfig { listen, database, token, limits }, shutdown_signal())
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error),
        },
        Commands::Ops(command) => {
            let mut stdout = std::io::stdout().lock();
            match rewind_cli::run(command, &BankApp::default(), &mut stdout, shutdown_signal()).await {
                // A reader that went away (`bank events all | head`) is not an error.
                Err(rewind_cli::OpsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                    Ok(())
                }
                other => other.map_err(|e| e.to_string()),
            }
        }
    }
}
