//! `Idempotency-Key`: a retried POST gets the first answer and causes no second
//! effect.
//!
//! Two layers make that hold. Every id a POST creates (command id, account uuid,
//! transfer uuid) is derived from the key, so a retry sends the very same command and
//! the aggregate runtime appends nothing new — even after a restart. And the first
//! answer is kept (in memory, the most recent 10,000) and replayed verbatim, when it is
//! final (`is_final`). A key must be 1 to 255 printable characters; any other is
//! refused with 400 before anything happens.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use crate::http::error::ApiError;

/// The request header.
pub const HEADER: &str = "idempotency-key";
const NAMESPACE: Uuid = Uuid::from_u128(0x1d3e_5b6a_0c2f_4e71_9a84_6261_6e6b_6964);
const CAPACITY: usize = 10_000;

/// The longest key accepted.
pub const MAX_KEY: usize = 255;

/// A usable key: 1 to [`MAX_KEY`] printable ASCII characters (surrounding spaces
/// ignored). Anything else is refused with 400 by [`layer`], before any effect.
fn valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// The key a request carries: `None` without one, `Err` for one that is not usable.
fn key(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let key = value.to_str().map_err(drop)?.trim();
    if valid(key) { Ok(Some(key)) } else { Err(()) }
}

/// The scope of one key on one route: the seed of every id the request creates.
pub fn scope(headers: &HeaderMap, route: &str) -> Option<Uuid> {
    let key = key(headers).ok()??;
    Some(Uuid::new_v5(&NAMESPACE, format!("{route}\n{key}").as_bytes()))
}

/// Whether an answer is final, the same whenever the request is repeated: not a
/// server error, not a 404 that a lagging read model may have caused, not a 408,
/// 409 or 429 that say "try again".
fn is_final(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
        ))
}

/// An id derived from a scope, or a fresh one without a key.
pub fn derive(scope: Option<Uuid>, purpose: &str) -> Uuid {
    scope.map_or_else(Uuid::new_v4, |scope| Uuid::new_v5(&scope, purpose.as_bytes()))
}

struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// First answers by key.
pub struct Replies {
    /// Plain mutex: lookups and inserts only, never held across an await.
    cache: Mutex<LruCache<(String, String), Arc<Stored>>>,
}

impl Default for Replies {
    fn default() -> Self {
        Replies { cache: Mutex::new(LruCache::new(NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN))) }
    }
}

impl Replies {
    fn get(&self, key: &(String, String)) -> Option<Arc<Stored>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn put(&self, key: (String, String), stored: Stored) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).put(key, Arc::new(stored));
    }
}

/// Replays the first final answer to a POST that repeats an `Idempotency-Key`;
/// refuses an unusable key with 400.
pub async fn layer(State(replies): State<Arc<Replies>>, request: Request, next: Next) -> Response {
    let key = match key(request.headers()) {
        Err(()) => {
            let message = format!("Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters");
            return ApiError::BadRequest(message).into_response();
        }
        Ok(Some(key)) if request.method() == Method::POST => (request.uri().path().to_owned(), key.to_owned()),
        Ok(_) => return next.run(request).await,
    };
    if let Some(stored) = replies.get(&key) {
        let mut response = (stored.status, stored.body.clone()).into_response();
        response.headers_mut().extend(stored.headers.clone());
        response.headers_mut().insert("idempotent-replay", "true".parse().expect("valid header"));
        return response;
    }
    let response = next.run(request).await;
    // Only final answers are remembered: a retry of anything else deserves another try.
    if !is_final(response.status()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response body lost").into_response();
    };
    replies.put(key, Stored { status: parts.status, headers: parts.headers.clone(), body: bytes.clone() });
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_a_repeat_would_get_again_are_final() {
        for status in [StatusCode::OK, StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY, StatusCode::BAD_REQUEST] {
            assert!(is_final(status), "{status}");
        }
        // A 404 may come from a read model that has not caught up with the write.
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert!(!is_final(status), "{status}");
        }
    }

    #[test]
    fn keys_are_one_to_255_printable_characters() {
        assert!(valid("k") && valid(&"k".repeat(255)) && valid("a key with spaces"));
        assert!(!valid("") && !valid(&"k".repeat(256)) && !valid("tab\there") && !valid("é"));
    }
}
