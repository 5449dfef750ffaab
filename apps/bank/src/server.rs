//! `bank serve`: the HTTP API on a listener until a shutdown signal, then the
//! subscriptions stop at a checkpoint.

use crate::http::{AppState, metrics::CommandMetrics, metrics::Metrics, router};
use crate::limits::{self, Limits};
use crate::service::Bank;
use rewind_backend::Database;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding beyond loopback with no token would expose the bank to anyone.
    #[error("refusing to listen on {0} without BANK_API_TOKEN: set a token, or listen on 127.0.0.1")]
    UnprotectedAddress(SocketAddr),
    /// The bank did not start.
    #[error(transparent)]
    Start(#[from] crate::service::StartError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The socket failed.
    #[error("cannot listen on {address}: {source}")]
    Io {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What `serve` needs.
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the data lives.
    pub database: Database,
    /// The bearer token `/api` requires, if any.
    pub token: Option<String>,
    /// What one connection may take.
    pub limits: Limits,
}

/// Runs the bank until `shutdown` resolves: drains in-flight requests, stops the
/// subscriptions at a checkpoint, and returns.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    if !config.listen.ip().is_loopback() && config.token.as_deref().is_none_or(str::is_empty) {
        return Err(ServeError::UnprotectedAddress(config.listen));
    }
    let metrics = Arc::new(Metrics::new()?);
    let bank = Arc::new(Bank::start(&config.database, vec![Arc::new(CommandMetrics(metrics.clone()))]).await?);
    let state = AppState { bank: bank.clone(), metrics, replies: Arc::default(), token: config.token.map(Arc::from) };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Io { address: config.listen.to_string(), source })?;
    let address =
        listener.local_addr().map_err(|source| ServeError::Io { address: config.listen.to_string(), source })?;
    // Tests and scripts read this line to learn the port.
    println!("listening on http://{address}");
    tracing::info!(%address, database = %config.database, "bank serving");
    let app = router(state).layer(limits::RequestTimeout(config.limits.request_timeout));
    let served = limits::serve(listener, app, config.limits, shutdown).await;
    bank.shutdown().await;
    served.map_err(|source| ServeError::Io { address: address.to_string(), source })
}
