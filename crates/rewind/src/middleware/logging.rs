//! Tracing of every dispatch: one event when it starts, one when it ends, with its
//! duration and outcome.

use crate::middleware::{Middleware, Pipeline, Rejection};
use async_trait::async_trait;
use std::time::Instant;

/// Logs each dispatch through `tracing` (debug on success, warn on failure).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingMiddleware;

struct Started(Instant);

fn elapsed_us(pipeline: &Pipeline<'_>) -> u128 {
    pipeline.assigned::<Started>().map_or(0, |s| s.0.elapsed().as_micros())
}

#[async_trait]
impl Middleware for LoggingMiddleware {
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
        pipeline.assign(Started(Instant::now()));
        tracing::trace!(
            command = pipeline.command.command_name(),
            command_id = %pipeline.command_id,
            correlation_id = %pipeline.correlation_id,
            "dispatching"
        );
        Ok(())
    }

    async fn after_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        tracing::debug!(
            command = pipeline.command.command_name(),
            command_id = %pipeline.command_id,
            aggregate = pipeline.command.aggregate_name(),
            elapsed_us = elapsed_us(pipeline) as u64,
            "dispatched"
        );
    }

    async fn after_failure(&self, pipeline: &mut Pipeline<'_>, error: &(dyn std::error::Error + Send + Sync)) {
        tracing::warn!(
            command = pipeline.command.command_name(),
            command_id = %pipeline.command_id,
            aggregate = pipeline.command.aggregate_name(),
            elapsed_us = elapsed_us(pipeline) as u64,
            %error,
            "dispatch failed"
        );
    }
}
