//! A JSON body extractor whose rejections have the API's error shape: syntax errors
//! are 400, well-formed JSON of the wrong shape (missing fields, strings for
//! numbers, fractions, numbers beyond `i64`) is 422.

use crate::http::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// `Json<T>` with API-shaped errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::JsonDataError(error)) => {
                Err(ApiError::Refused(format!("invalid body: {}", error.body_text())))
            }
            Err(JsonRejection::JsonSyntaxError(error)) => {
                Err(ApiError::BadRequest(format!("malformed JSON: {}", error.body_text())))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::BadRequest("expected Content-Type: application/json".into()))
            }
            Err(other) => Err(ApiError::Http(other.status(), other.body_text())),
        }
    }
}
