//! Middleware: code that runs around every dispatch.
//!
//! `before_dispatch` runs in registration order and may halt the dispatch with a
//! [`Rejection`]; the command is then not executed and nothing is appended.
//! `after_dispatch` (on success) and `after_failure` (on any error, halts included)
//! run in reverse order, so the first middleware registered wraps all the others.
//! Values carried from one hook to the next live in the pipeline's assigns.

pub mod logging;
pub mod validation;

use crate::command::AnyCommand;
use crate::middleware::validation::ValidationErrors;
use async_trait::async_trait;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use uuid::Uuid;

/// One dispatch as middleware sees it.
pub struct Pipeline<'c> {
    /// The command; downcast with `command.as_any()` to inspect a particular type.
    pub command: &'c dyn AnyCommand,
    /// The command's id (the causation id of the events it produces).
    pub command_id: Uuid,
    /// Shared by everything the original request set in motion.
    pub correlation_id: Uuid,
    /// What caused this command (an event id, for commands sent by process managers).
    pub causation_id: Option<Uuid>,
    /// User metadata; copied into every event the command produces.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    assigns: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl<'c> Pipeline<'c> {
    pub(crate) fn new(
        command: &'c dyn AnyCommand,
        command_id: Uuid,
        correlation_id: Uuid,
        causation_id: Option<Uuid>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Pipeline<'c> {
        Pipeline { command, command_id, correlation_id, causation_id, metadata, assigns: HashMap::new() }
    }

    /// Stores a value for later hooks, one per type (a second assign replaces the first).
    pub fn assign<T: Any + Send + Sync>(&mut self, value: T) {
        self.assigns.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// A value assigned earlier in this dispatch.
    pub fn assigned<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.assigns.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref())
    }
}

/// Why middleware halted a dispatch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The command's fields are invalid.
    #[error("invalid command: {0}")]
    Invalid(ValidationErrors),
    /// The caller may not send this command.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Any other reason, as a message for the caller.
    #[error("{0}")]
    Other(String),
}

/// A hook around every dispatch. Every method has a do-nothing default.
///
/// ```
/// use rewind::{Middleware, Pipeline, Rejection};
///
/// struct ReadOnly;
///
/// #[async_trait::async_trait]
/// impl Middleware for ReadOnly {
///     async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
///         Err(Rejection::Unauthorized(format!("{} refused: read-only", pipeline.command.command_name())))
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Runs before the command reaches its aggregate; `Err` halts the dispatch.
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
        let _ = pipeline;
        Ok(())
    }

    /// Runs after a successful dispatch.
    async fn after_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        let _ = pipeline;
    }

    /// Runs after a failed or halted dispatch.
    async fn after_failure(&self, pipeline: &mut Pipeline<'_>, error: &(dyn std::error::Error + Send + Sync)) {
        let _ = (pipeline, error);
    }
}
