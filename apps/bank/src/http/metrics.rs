//! Prometheus metrics: request latency by route and status, command latency by
//! command and outcome, and each subscription's position and lag.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};
use rewind::{Middleware, Pipeline, Rejection};
use std::sync::Arc;
use std::time::Instant;

const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The bank's metrics.
pub struct Metrics {
    registry: Registry,
    requests: HistogramVec,
    commands: HistogramVec,
    lag: GaugeVec,
    position: GaugeVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = HistogramVec::new(
            HistogramOpts::new("bank_http_request_duration_seconds", "HTTP request latency").buckets(BUCKETS.to_vec()),
            &["method", "route", "status"],
        )?;
        let commands = HistogramVec::new(
            HistogramOpts::new("bank_command_duration_seconds", "Command dispatch latency").buckets(BUCKETS.to_vec()),
            &["command", "outcome"],
        )?;
        let lag = GaugeVec::new(
            Opts::new("rewind_subscription_lag", "Events a subscription is behind the head"),
            &["subscription"],
        )?;
        let position = GaugeVec::new(
            Opts::new("rewind_subscription_position", "Last position a subscription finished"),
            &["subscription"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(position.clone()))?;
        Ok(Metrics { registry, requests, commands, lag, position })
    }

    /// The text exposition, after refreshing the subscription gauges.
    pub fn render(&self, statuses: &[rewind::SubscriptionStatus]) -> String {
        for status in statuses {
            self.lag.with_label_values(&[&status.name]).set(status.lag as f64);
            self.position.with_label_values(&[&status.name]).set(status.position.0 as f64);
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Times every request; one log line per request.
pub async fn layer(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status();
    metrics.requests.with_label_values(&[method.as_str(), &route, status.as_str()]).observe(elapsed.as_secs_f64());
    tracing::info!(%method, %path, status = status.as_u16(), elapsed_us = elapsed.as_micros() as u64, "request");
    response
}

/// Times every command dispatch.
pub struct CommandMetrics(pub Arc<Metrics>);

struct Started(Instant);

impl CommandMetrics {
    fn observe(&self, pipeline: &Pipeline<'_>, outcome: &str) {
        if let Some(Started(start)) = pipeline.assigned::<Started>() {
            let command = pipeline.command.command_name();
            self.0.commands.with_label_values(&[command, outcome]).observe(start.elapsed().as_secs_f64());
        }
    }
}

#[async_trait::async_trait]
impl Middleware for CommandMetrics {
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
        pipeline.assign(Started(Instant::now()));
        Ok(())
    }
    async fn after_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        self.observe(pipeline, "ok");
    }
    async fn after_failure(&self, pipeline: &mut Pipeline<'_>, _: &(dyn std::error::Error + Send + Sync)) {
        self.observe(pipeline, "error");
    }
}
