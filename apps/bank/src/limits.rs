//! The accept loop, with the limits that keep one client from holding the server.
//!
//! `axum::serve` sets no timer and no bound: a client that sends half a request header,
//! or opens connections and says nothing, holds a socket and a task for ever. Here every
//! connection is bounded:
//! * **Header read timeout**: a request head not complete within it of its first byte
//!   closes the connection (hyper's own timer).
//! * **Request timeout**: from the head to the end of the handler, which includes reading
//!   the body; past it the answer is 408 and the handler is dropped.
//! * **Idle timeout**: a connection that moved no byte for this long is closed, after the
//!   request it is serving, if any, has been answered. This is what closes a connection
//!   that never sends a byte, or waits between keep-alive requests.
//! * **Connection limit**: beyond it a new connection is answered 503 and closed at
//!   once, so the excess never takes a worker; a connection frees its place when closed.
//!
//! Shutdown stops accepting, asks every connection to finish its request and close,
//! and waits for them up to the drain timeout.

use crate::http::error::ApiError;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// What one connection may take. The defaults suit a service behind a load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a complete request head (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest time from a request's head to its answer, body included (default 30 s).
    pub request_timeout: Duration,
    /// A connection that moves no byte for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Connections served at once (default 1,024); the next is answered 503.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish (default 30 s).
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The layer that answers 408 (with the API's error body) to a request that outlives
/// [`Limits::request_timeout`], dropping its handler. A plain tower layer rather than
/// `axum::middleware::from_fn`, which boxes a future and a service per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

impl<S> tower::Layer<S> for RequestTimeout {
    type Service = WithTimeout<S>;

    fn layer(&self, inner: S) -> WithTimeout<S> {
        WithTimeout { inner, limit: self.0 }
    }
}

/// The service [`RequestTimeout`] makes.
#[derive(Debug, Clone)]
pub struct WithTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithTimeout<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TimedOut<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        TimedOut { inner: tokio::time::timeout(self.limit, self.inner.call(request)) }
    }
}

pin_project_lite::pin_project! {
    /// A handler's answer, or 408 past the limit.
    pub struct TimedOut<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

impl<F, E> Future for TimedOut<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(_)) => {
                Poll::Ready(Ok(ApiError::Http(StatusCode::REQUEST_TIMEOUT, "request timeout".into()).into_response()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped at shutdown: every connection sees the channel close and finishes.
    let (stop, stopping) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match places.clone().try_acquire_owned() {
            Ok(place) => {
                let (app, stopping) = (app.clone(), stopping.clone());
                tokio::spawn(async move {
                    connection(stream, app, limits, stopping).await;
                    drop(place);
                });
            }
            Err(_) => {
                tokio::spawn(refuse(stream));
            }
        }
    }
    drop(listener);
    drop(stop);
    let everyone = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, places.acquire_many(everyone)).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    Ok(())
}

/// Accept errors are the peer's (reset before accept) or the process's (out of
/// descriptors); the latter passes only as connections close, so wait a little.
async fn pause_after(error: &io::Error) {
    let per_connection = matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    );
    if !per_connection {
        tracing::warn!(%error, "accept failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answer to a connection beyond the limit: 503 with the API's error body, then close.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"errors":{"message":"too many connections, try again later"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    // A client that does not read its refusal gets a closed socket instead.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// One connection, from accept to close.
async fn connection(stream: TcpStream, app: Router, limits: Limits, mut stopping: watch::Receiver<()>) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(limits.idle_timeout / 2);
    let mut served = pin!(builder.serve_connection_with_upgrades(io, TowerToHyperService::new(app)));
    let mut closing = false;
    loop {
        let quiet_until = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(quiet_until), if !closing => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stopping.changed(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records when it last moved a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
