//! Prometheus metrics: request latency by route and status, command latency by
//! command and outcome, and each subscription's position, lag and health: its state
//! (one gauge per state, 1 for the current one), the attempt it is retrying, whether
//! it is failing now, and its failures by kind (transient ones are retried for ever;
//! deterministic ones take its error policy). An alert on `failing` held for minutes
//! catches both a database away and a consumer refusing an event.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use rewind::{Middleware, Pipeline, Rejection, SubscriptionState, SubscriptionStatus};
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
    state: GaugeVec,
    attempt: GaugeVec,
    failing: GaugeVec,
    failures: IntCounterVec,
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
        let state = GaugeVec::new(
            Opts::new("rewind_subscription_state", "1 for the state a subscription is in, 0 for the others"),
            &["subscription", "state"],
        )?;
        let attempt = GaugeVec::new(
            Opts::new("rewind_subscription_retry_attempt", "Failures in a row of a retrying subscription (0: none)"),
            &["subscription"],
        )?;
        let failing = GaugeVec::new(
            Opts::new("rewind_subscription_failing", "1 while a subscription has not got past a failure"),
            &["subscription"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new("rewind_subscription_failures_total", "Failures of a subscription, transient or deterministic"),
            &["subscription", "kind"],
        )?;
        for metric in [&lag, &position, &state, &attempt, &failing] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Metrics { registry, requests, commands, lag, position, state, attempt, failing, failures })
    }

    /// The text exposition, after refreshing the subscription metrics.
    pub fn render(&self, statuses: &[SubscriptionStatus]) -> String {
        for status in statuses {
            self.subscription(status);
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Metrics {
    fn subscription(&self, status: &SubscriptionStatus) {
        let name = status.name.as_str();
        self.lag.with_label_values(&[name]).set(status.lag as f64);
        self.position.with_label_values(&[name]).set(status.position.0 as f64);
        for state in SubscriptionState::NAMES {
            let current = f64::from(u8::from(status.state.name() == state));
            self.state.with_label_values(&[name, state]).set(current);
        }
        let attempt = match status.state {
            SubscriptionState::Retrying { attempt, .. } => attempt,
            _ => 0,
        };
        self.attempt.with_label_values(&[name]).set(f64::from(attempt));
        self.failing.with_label_values(&[name]).set(f64::from(u8::from(status.failing_since.is_some())));
        // The status counts from the subscription's start; the counter only moves up
        // (a restarted subscription counts again from zero, and is caught up with).
        for (kind, total) in
            [("transient", status.transient_failures), ("deterministic", status.deterministic_failures)]
        {
            let counter = self.failures.with_label_values(&[name, kind]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rewind::{ConsumerKind, GlobalPosition};

    fn status(name: &str, state: SubscriptionState, failing: bool, transient: u64) -> SubscriptionStatus {
        SubscriptionStatus {
            name: name.into(),
            kind: ConsumerKind::ProcessManager,
            state,
            position: GlobalPosition(40),
            head: GlobalPosition(42),
            lag: 2,
            last_error: failing.then(|| "reading events: connection refused".into()),
            failed_position: None,
            failing_since: failing.then(chrono::Utc::now),
            transient_failures: transient,
            deterministic_failures: 0,
        }
    }

    #[test]
    fn a_retrying_subscription_shows_its_state_attempt_and_failures() {
        let metrics = Metrics::new().expect("metrics");
        let retrying = SubscriptionState::Retrying { attempt: 7, transient: true };
        let text =
            metrics.render(&[status("pm", retrying, true, 7), status("read", SubscriptionState::Live, false, 0)]);
        for line in [
            r#"rewind_subscription_state{state="retrying",subscription="pm"} 1"#,
            r#"rewind_subscription_state{state="live",subscription="pm"} 0"#,
            r#"rewind_subscription_state{state="live",subscription="read"} 1"#,
            r#"rewind_subscription_retry_attempt{subscription="pm"} 7"#,
            r#"rewind_subscription_retry_attempt{subscription="read"} 0"#,
            r#"rewind_subscription_failing{subscription="pm"} 1"#,
            r#"rewind_subscription_failing{subscription="read"} 0"#,
            r#"rewind_subscription_failures_total{kind="transient",subscription="pm"} 7"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        // Recovered: the gauges drop, the counter keeps its count.
        let text = metrics.render(&[status("pm", SubscriptionState::Live, false, 9)]);
        assert!(text.contains(r#"rewind_subscription_failing{subscription="pm"} 0"#));
        assert!(text.contains(r#"rewind_subscription_failures_total{kind="transient",subscription="pm"} 9"#));
        assert!(text.contains(r#"rewind_subscription_state{state="retrying",subscription="pm"} 0"#));
    }
}
