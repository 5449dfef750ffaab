//! `Idempotency-Key`: a retried POST gets the first answer and causes no second
//! effect; the same key on another request is refused.
//!
//! What holds, and what makes it hold:
//! * **One effect.** Every id a POST creates (command id, account uuid, transfer uuid)
//!   derives from the key and the route, so a retry sends the very same command and the
//!   aggregate runtime appends nothing new — even after a restart, since the log records
//!   each command's outcome.
//! * **One request per key.** The request's fingerprint (method, path, `If-Match` and
//!   body: everything that shapes its command) goes
//!   with its command into the log ([`rewind::DispatchOptions::fingerprint`]); the same
//!   key with another request is refused with 422 and changes nothing, whether the
//!   first answer is still remembered here or only the log knows it.
//! * **One answer.** The first final answer (`is_final`) is kept (in memory, the
//!   most recent 10,000) and replayed verbatim; an answer that says "try again" (a 404
//!   a lagging read may cause, 408, 409, 429, 5xx) is not kept, so the retry runs.
//! * **One at a time.** While a request with a key runs, a second with the same key
//!   gets 409 and does nothing.
//!
//! A key must be 1 to 255 printable characters; any other is refused with 400 before
//! anything happens.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use crate::http::BODY_LIMIT;
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

/// The fingerprint of a keyed request, which [`layer`] leaves in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub Uuid);

impl Fingerprint {
    fn of(method: &Method, path: &str, if_match: Option<&[u8]>, body: &[u8]) -> Fingerprint {
        let mut text = Vec::with_capacity(body.len() + path.len() + 32);
        let if_match = if_match.unwrap_or(b"(none)");
        for part in [method.as_str().as_bytes(), b"\n", path.as_bytes(), b"\n", if_match, b"\n", body] {
            text.extend_from_slice(part);
        }
        Fingerprint(Uuid::new_v5(&NAMESPACE, &text))
    }
}

/// What a request's key makes of its dispatch: the seed of every id it creates, and
/// the fingerprint its command is recorded with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keyed {
    /// The scope of the key on this route; `None` without a key.
    pub scope: Option<Uuid>,
    /// The request's fingerprint; `None` without a key.
    pub fingerprint: Option<Uuid>,
}

impl Keyed {
    /// The key of a request to `route` (the route's canonical form, so that two
    /// spellings of one account id share the key's scope).
    pub fn of(headers: &HeaderMap, route: &str, fingerprint: Option<&Fingerprint>) -> Keyed {
        let scope =
            key(headers).ok().flatten().map(|key| Uuid::new_v5(&NAMESPACE, format!("{route}\n{key}").as_bytes()));
        Keyed { scope, fingerprint: scope.and(fingerprint.map(|f| f.0)) }
    }

    /// An id derived from the scope, or a fresh one without a key.
    pub fn derive(&self, purpose: &str) -> Uuid {
        self.scope.map_or_else(Uuid::new_v4, |scope| Uuid::new_v5(&scope, purpose.as_bytes()))
    }
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

struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// A key's state here.
enum Entry {
    /// Its first request is running.
    Running(Fingerprint),
    /// Its first final answer.
    Answered(Fingerprint, Arc<Stored>),
}

/// Keys by (path, key), with their first answers.
pub struct Replies {
    /// Plain mutex: lookups and inserts only, never held across an await.
    cache: Mutex<LruCache<(String, String), Entry>>,
}

impl Default for Replies {
    fn default() -> Self {
        Replies { cache: Mutex::new(LruCache::new(NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN))) }
    }
}

/// What to do with a keyed request.
enum Claim {
    /// Run it: the key is this request's now.
    Run(Running),
    /// Replay the first answer.
    Replay(Arc<Stored>),
    /// Refuse it with this error.
    Refuse(ApiError),
}

impl Replies {
    fn claim(self: &Arc<Self>, key: (String, String), fingerprint: Fingerprint) -> Claim {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&key) {
            Some(Entry::Running(first) | Entry::Answered(first, _)) if *first != fingerprint => {
                Claim::Refuse(ApiError::KeyReused)
            }
            Some(Entry::Running(_)) => Claim::Refuse(ApiError::Http(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still in progress; retry it shortly".into(),
            )),
            Some(Entry::Answered(_, stored)) => Claim::Replay(stored.clone()),
            None => {
                cache.put(key.clone(), Entry::Running(fingerprint));
                Claim::Run(Running { replies: self.clone(), key: Some(key), fingerprint })
            }
        }
    }
}

/// Marks an answer that is not the key's own (its key belongs to another request),
/// so it is not kept as the key's answer.
#[derive(Debug, Clone, Copy)]
pub struct NotTheKeys;

/// A key held by its running request; let go when dropped (the request failed, was
/// not final, or its client went away) unless answered.
struct Running {
    replies: Arc<Replies>,
    key: Option<(String, String)>,
    fingerprint: Fingerprint,
}

impl Running {
    fn answered(mut self, stored: Stored) {
        if let Some(key) = self.key.take() {
            let mut cache = self.replies.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.put(key, Entry::Answered(self.fingerprint, Arc::new(stored)));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut cache = self.replies.cache.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(cache.peek(&key), Some(Entry::Running(_))) {
                cache.pop(&key);
            }
        }
    }
}

/// Gives a keyed POST its fingerprint and runs it once per key: replays the first
/// final answer, refuses another request with the key (422) or a concurrent one (409);
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
    let (mut parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::Http(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or incomplete".into())
            .into_response();
    };
    let if_match = parts.headers.get(axum::http::header::IF_MATCH).map(|value| value.as_bytes());
    let fingerprint = Fingerprint::of(&parts.method, parts.uri.path(), if_match, &body);
    let running = match replies.claim(key, fingerprint) {
        Claim::Run(running) => running,
        Claim::Replay(stored) => return replay(&stored),
        Claim::Refuse(error) => return error.into_response(),
    };
    parts.extensions.insert(fingerprint);
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    // Only final answers are remembered: a retry of anything else deserves another try.
    if !is_final(response.status()) || response.extensions().get::<NotTheKeys>().is_some() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response body lost").into_response();
    };
    running.answered(Stored { status: parts.status, headers: parts.headers.clone(), body: bytes.clone() });
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(stored: &Stored) -> Response {
    let mut response = (stored.status, stored.body.clone()).into_response();
    response.headers_mut().extend(stored.headers.clone());
    response.headers_mut().insert("idempotent-replay", "true".parse().expect("valid header"));
    response
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
    fn a_key_runs_one_request_at_a_time_and_only_that_request() {
        let replies = Arc::new(Replies::default());
        let key = || ("/api/x".to_owned(), "k".to_owned());
        let (this, other) = (Fingerprint(Uuid::from_u128(1)), Fingerprint(Uuid::from_u128(2)));
        let Claim::Run(running) = replies.claim(key(), this) else { panic!("the first request runs") };
        assert!(matches!(replies.claim(key(), this), Claim::Refuse(ApiError::Http(StatusCode::CONFLICT, _))));
        assert!(matches!(replies.claim(key(), other), Claim::Refuse(ApiError::KeyReused)));
        // A request that ends without a final answer lets the key go.
        drop(running);
        let Claim::Run(running) = replies.claim(key(), this) else { panic!("a retry runs") };
        running.answered(Stored { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from_static(b"{}") });
        assert!(matches!(replies.claim(key(), this), Claim::Replay(_)));
        assert!(matches!(replies.claim(key(), other), Claim::Refuse(ApiError::KeyReused)));
    }

    #[test]
    fn the_fingerprint_covers_method_path_if_match_and_body() {
        let base = Fingerprint::of(&Method::POST, "/a", None, b"{}");
        assert_eq!(base, Fingerprint::of(&Method::POST, "/a", None, b"{}"));
        assert_ne!(base, Fingerprint::of(&Method::PUT, "/a", None, b"{}"));
        assert_ne!(base, Fingerprint::of(&Method::POST, "/b", None, b"{}"));
        assert_ne!(base, Fingerprint::of(&Method::POST, "/a", Some(b"\"3\""), b"{}"));
        assert_ne!(base, Fingerprint::of(&Method::POST, "/a", Some(b""), b"{}"));
        assert_ne!(base, Fingerprint::of(&Method::POST, "/a", None, b"{ }"));
    }

    #[test]
    fn keys_are_one_to_255_printable_characters() {
        assert!(valid("k") && valid(&"k".repeat(255)) && valid("a key with spaces"));
        assert!(!valid("") && !valid(&"k".repeat(256)) && !valid("tab\there") && !valid("é"));
    }
}
