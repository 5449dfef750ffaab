//! Every error the API answers, mapped to HTTP in one place.
//!
//! Domain and validation errors are 422 with `{"errors": {"message": …}}` (plus
//! per-field details), an unknown account is 404 `{"errors": {"detail": "Not Found"}}`,
//! malformed input is 400 or 422, a stale `If-Match` is 412, a store that is away is
//! 503, a write whose outcome the store could not tell is 503 saying exactly that
//! (`{"errors": {"message": …, "outcome": "unknown"}}`: retry with the same
//! Idempotency-Key, which finds the first outcome), and anything unexpected is a 500
//! whose details go to the log, not to the client.

use crate::domain::AccountError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rewind::{DispatchError, Rejection, ValidationErrors};
use serde_json::json;

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no such account or transfer.
    #[error("not found")]
    NotFound,
    /// 400: the body is not JSON, or not the JSON expected.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 422: the command's fields are invalid.
    #[error("invalid: {0}")]
    Invalid(ValidationErrors),
    /// 422: the bank's rules refuse the command.
    #[error("{0}")]
    Refused(String),
    /// 412: `If-Match` named another version.
    #[error("the account changed since version {expected}")]
    PreconditionFailed {
        /// The version the client had.
        expected: u64,
    },
    /// 422: the Idempotency-Key was used before for another request.
    #[error("this Idempotency-Key was already used for a different request")]
    KeyReused,
    /// 409: other writers kept winning.
    #[error("the account is busy; try again")]
    Conflict,
    /// 401: missing or wrong bearer token.
    #[error("unauthorized")]
    Unauthorized,
    /// 503: committed, but the read model has not caught up; or the store is away.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the write may or may not have happened.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Any other refusal of the request itself (413 for a body over the limit, 415, …).
    #[error("{1}")]
    Http(StatusCode, String),
    /// 500: logged, answered generically.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) | ApiError::Refused(_) | ApiError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Conflict => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) | ApiError::OutcomeUnknown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Http(status, _) => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A single invalid field.
    pub fn field(field: &str, message: &str) -> ApiError {
        let mut errors = ValidationErrors::new();
        errors.add(field, message);
        ApiError::Invalid(errors)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self {
            ApiError::NotFound => json!({"errors": {"detail": "Not Found"}}),
            ApiError::Invalid(errors) => json!({"errors": {"message": "invalid request", "fields": errors}}),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                json!({"errors": {"message": "internal server error"}})
            }
            ApiError::OutcomeUnknown(message) => json!({"errors": {"message": message, "outcome": "unknown"}}),
            other => json!({"errors": {"message": other.to_string()}}),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::KeyReused = self {
            // Not the key's own answer: the idempotency layer must not keep it for the key.
            response.extensions_mut().insert(crate::http::idempotency::NotTheKeys);
        }
        response
    }
}

impl From<DispatchError<AccountError>> for ApiError {
    fn from(error: DispatchError<AccountError>) -> ApiError {
        match error {
            DispatchError::Domain(AccountError::NotFound) => ApiError::NotFound,
            DispatchError::Domain(refusal) => ApiError::Refused(refusal.to_string()),
            DispatchError::Rejected(Rejection::Invalid(errors)) => ApiError::Invalid(errors),
            DispatchError::Rejected(rejection) => ApiError::Refused(rejection.to_string()),
            DispatchError::WrongVersion { expected, .. } => ApiError::PreconditionFailed { expected: expected.0 },
            DispatchError::Conflict { .. } => ApiError::Conflict,
            DispatchError::CommandIdReused { .. } => ApiError::KeyReused,
            DispatchError::ConsistencyTimeout { .. } => {
                ApiError::Unavailable("committed; the read model has not caught up yet".into())
            }
            DispatchError::Timeout(_) | DispatchError::OutcomeUnknown { .. } => {
                tracing::warn!(error = %rewind::subscription::describe(&error), "outcome unknown");
                ApiError::OutcomeUnknown(
                    "the outcome is unknown: the request may or may not have taken effect; \
                     retry it with the same Idempotency-Key"
                        .into(),
                )
            }
            DispatchError::Store(
                rewind::StoreError::Backend(_) | rewind::StoreError::Closed | rewind::StoreError::Unavailable(_),
            ) => {
                tracing::warn!(error = %rewind::subscription::describe(&error), "store unavailable");
                ApiError::Unavailable("the store is unavailable; nothing was changed, retry later".into())
            }
            other => ApiError::Internal(rewind::subscription::describe(&other)),
        }
    }
}

/// A read that failed: a store that is away (a transient error) is 503, anything
/// else a 500.
impl From<rewind::StoreError> for ApiError {
    fn from(error: rewind::StoreError) -> ApiError {
        if error.is_transient() {
            tracing::warn!(error = %rewind::subscription::describe(&error), "store unavailable for a read");
            return ApiError::Unavailable("the store is unavailable; retry later".into());
        }
        ApiError::Internal(rewind::subscription::describe(&error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: DispatchError<AccountError>) -> (StatusCode, serde_json::Value) {
        let response = ApiError::from(error).into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"))
    }

    fn lost() -> rewind::StoreError {
        rewind::StoreError::backend(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection lost"))
    }

    #[tokio::test]
    async fn an_unknown_outcome_is_a_503_that_says_so() {
        let (status, body) =
            answer(DispatchError::OutcomeUnknown { command_id: uuid::Uuid::nil(), source: lost() }).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["errors"]["outcome"], "unknown");
        assert!(body["errors"]["message"].as_str().expect("message").contains("same Idempotency-Key"), "{body}");
        let (status, body) = answer(DispatchError::Timeout(std::time::Duration::from_secs(1))).await;
        assert_eq!((status, &body["errors"]["outcome"]), (StatusCode::SERVICE_UNAVAILABLE, &"unknown".into()));
    }

    #[tokio::test]
    async fn a_store_that_is_away_is_a_503_that_changed_nothing() {
        let (status, body) = answer(DispatchError::Store(lost())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["errors"].get("outcome").is_none(), "{body}");
        let refused = rewind::StoreError::Unavailable(Box::new(std::io::Error::other("connection refused")));
        assert_eq!(answer(DispatchError::Store(refused)).await.0, StatusCode::SERVICE_UNAVAILABLE);
        // A read that finds the store away is a 503 too; a corrupt row is not.
        assert_eq!(ApiError::from(lost()).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ApiError::from(rewind::StoreError::Corrupt("x".into())).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
