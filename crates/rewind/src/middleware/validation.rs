//! Command validation: field-level messages, checked before a command runs.

use crate::middleware::{Middleware, Pipeline, Rejection};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Messages per field, as the HTTP edge reports them.
///
/// ```
/// let mut errors = rewind::ValidationErrors::new();
/// errors.add("deposit_amount", "must be greater than 0");
/// assert_eq!(errors.to_string(), "deposit_amount: must be greater than 0");
/// assert!(errors.into_result().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors {
    fields: BTreeMap<String, Vec<String>>,
}

impl ValidationErrors {
    /// No errors yet.
    pub fn new() -> ValidationErrors {
        ValidationErrors::default()
    }

    /// Records one message for a field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.fields.entry(field.into()).or_default().push(message.into());
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The messages, by field.
    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.fields
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, messages) in &self.fields {
            for message in messages {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{field}: {message}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Halts any command whose [`Command::validate`](crate::Command::validate) fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationMiddleware;

#[async_trait]
impl Middleware for ValidationMiddleware {
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
        pipeline.command.validate().map_err(Rejection::Invalid)
    }
}
