//! `Idempotency-Key`: a retried POST gets the first answer and causes no second
//! effect.
//!
//! Two layers make that hold. Every id a POST creates (command id, account uuid,
//! transfer uuid) is derived from the key, so a retry sends the very same command and
//! the aggregate runtime appends nothing new — even after a restart. And the first
//! answer is kept (in memory, the most recent 10,000) and replayed verbatim.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// The request header.
pub const HEADER: &str = "idempotency-key";
const NAMESPACE: Uuid = Uuid::from_u128(0x1d3e_5b6a_0c2f_4e71_9a84_6261_6e6b_6964);
const CAPACITY: usize = 10_000;

/// The scope of one key on one route: the seed of every id the request creates.
pub fn scope(headers: &HeaderMap, route: &str) -> Option<Uuid> {
    let key = headers.get(HEADER)?.to_str().ok()?.trim();
    (!key.is_empty() && key.len() <= 255).then(|| Uuid::new_v5(&NAMESPACE, format!("{route}\n{key}").as_bytes()))
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

/// Replays the first answer to a POST that repeats an `Idempotency-Key`.
pub async fn layer(State(replies): State<Arc<Replies>>, request: Request, next: Next) -> Response {
    let key = match (request.method(), request.headers().get(HEADER).and_then(|v| v.to_str().ok())) {
        (&Method::POST, Some(key)) if !key.trim().is_empty() => {
            (request.uri().path().to_owned(), key.trim().to_owned())
        }
        _ => return next.run(request).await,
    };
    if let Some(stored) = replies.get(&key) {
        let mut response = (stored.status, stored.body.clone()).into_response();
        response.headers_mut().extend(stored.headers.clone());
        response.headers_mut().insert("idempotent-replay", "true".parse().expect("valid header"));
        return response;
    }
    let response = next.run(request).await;
    // Server errors are not remembered: the retry deserves another try.
    if response.status().is_server_error() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response body lost").into_response();
    };
    replies.put(key, Stored { status: parts.status, headers: parts.headers.clone(), body: bytes.clone() });
    Response::from_parts(parts, Body::from(bytes))
}
