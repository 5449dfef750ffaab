//! A web console for any Rewind application: the log (streams, a stream's events,
//! the global order), the subscriptions with their lag over the last minutes, dead
//! letters, and a live tail of new events; with buttons to rebuild a projector and to
//! replay or skip a dead letter.
//!
//! Two routers, so an application decides what guards what: [`page`] serves the
//! console itself (one HTML file embedded in the binary: nothing is fetched from
//! the internet, and it holds no data), [`api`] serves the JSON and the tail the page
//! reads, and is what an application puts behind its token. The page sends the
//! token it is given as `Authorization: Bearer …`, the tail included (read with
//! `fetch`, not `EventSource`, which cannot send headers).
//!
//! Every read is one page of an index-backed store read ([`EventStore::list_streams`](rewind::EventStore::list_streams),
//! [`EventStore::read_stream`](rewind::EventStore::read_stream), [`EventStore::read_all`](rewind::EventStore::read_all)), at most [`MAX_LIMIT`] items,
//! so a view costs the same on a store of a million events as on an empty one (the
//! causation trail reads at most [`TRAIL_SCAN`] events of the global order). Bad
//! parameters are a 400 with the error in JSON, never a panic.
//!
//! Mounting it, with an application's store and subscriptions:
//!
//! ```
//! use rewind::{Application, MemoryStore, MemorySubscriptionStore, Subscriptions};
//! use rewind_console::{Console, api, page};
//! use std::sync::Arc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let app = Application::builder(MemoryStore::new()).build();
//! let subscriptions = Subscriptions::builder(&app, Arc::new(MemorySubscriptionStore::new())).start().unwrap();
//! let console = Arc::new(Console::new(app.store().clone(), Arc::new(subscriptions)));
//! let router: axum::Router = axum::Router::new().nest("/console", page().merge(api(console)));
//! # drop(router);
//! # });
//! ```

mod api;
mod lag;
mod past;
mod tail;
mod trail;

pub use api::{EventView, Page};
pub use lag::{KEPT as LAG_KEPT, LagSample};
pub use past::PastView;
pub use trail::{SCAN as TRAIL_SCAN, Step, Trail};

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rewind::{SharedStore, Subscriptions};
use std::sync::Arc;

/// The most items one read returns.
pub const MAX_LIMIT: usize = 500;

/// What the console reads from and acts on.
pub struct Console {
    store: SharedStore,
    subscriptions: Arc<Subscriptions>,
    pasts: Vec<Arc<dyn PastView>>,
    lag: Arc<lag::LagHistory>,
}

impl Console {
    /// A console over `store` and the application's running `subscriptions`. Made
    /// inside a Tokio runtime, it samples their lag each second for the last
    /// [`LAG_KEPT`] seconds until it is dropped.
    pub fn new(store: SharedStore, subscriptions: Arc<Subscriptions>) -> Console {
        let lag = Arc::new(lag::LagHistory::default());
        lag::start(&lag, &subscriptions);
        Console { store, subscriptions, pasts: Vec::new(), lag }
    }

    /// Shows the streams `view` knows as they were at a moment (the time-travel
    /// view); the first view whose prefix a stream id starts with answers for it.
    pub fn with_past(mut self, view: impl PastView) -> Console {
        self.pasts.push(Arc::new(view));
        self
    }
}

/// `GET /` (and `/index.html`): the console page.
pub fn page() -> Router {
    Router::new().route("/", get(index)).route("/index.html", get(index))
}

/// The console's JSON API and tail, under `/api`:
///
/// * `GET /api/streams?prefix=&after=&limit=`: streams by id, paged (`next` is the
///   `after` of the next page);
/// * `GET /api/streams/{id}?from=&limit=`: a stream's events from a version;
/// * `GET /api/events?from=&limit=`: the global order from a position;
/// * `GET /api/events/{event_id}`: one event;
/// * `GET /api/events/{event_id}/trail?from=&limit=`: its causation trail, every
///   command and event sharing its correlation id, read from the global order where
///   the conversation began ([`Trail`]; at most [`TRAIL_SCAN`] events a request);
/// * `GET /api/as-of/{stream_id}?at=RFC3339`: the stream's state then and now, from
///   the application's [`PastView`] (`GET /api/as-of` lists the prefixes known);
/// * `GET /api/subscriptions`: every subscription's status (position, lag, state,
///   last error);
/// * `GET /api/subscriptions/lag?since=`: every subscription's lag, one
///   [`LagSample`] a second for the last [`LAG_KEPT`] seconds (`since`: the `seq`
///   of the last sample already read);
/// * `POST /api/subscriptions/{name}/rebuild`: rebuilds a projector;
/// * `GET /api/dead-letters`; `POST /api/dead-letters/{subscription}/{event_id}/replay`
///   and `…/skip`;
/// * `GET /api/tail?from=`: server-sent events, one `event` per recorded event, from
///   a position (default: the head).
pub fn api(console: Arc<Console>) -> Router {
    Router::new()
        .route("/api/streams", get(api::streams))
        .route("/api/streams/{id}", get(api::stream))
        .route("/api/events", get(api::events))
        .route("/api/events/{event_id}", get(api::event))
        .route("/api/events/{event_id}/trail", get(trail::trail))
        .route("/api/as-of", get(past::views))
        .route("/api/as-of/{stream_id}", get(past::as_of))
        .route("/api/subscriptions", get(api::subscriptions))
        .route("/api/subscriptions/lag", get(lag::lag))
        .route("/api/subscriptions/{name}/rebuild", post(api::rebuild))
        .route("/api/dead-letters", get(api::dead_letters))
        .route("/api/dead-letters/{name}/{event_id}/replay", post(api::replay))
        .route("/api/dead-letters/{name}/{event_id}/skip", post(api::skip))
        .route("/api/tail", get(tail::tail))
        .with_state(console)
}

async fn index() -> Response {
    let mut response = Html(include_str!("console.html")).into_response();
    // The page is the same for everyone and holds no data; it must not be framed.
    response.headers_mut().insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    response
}
