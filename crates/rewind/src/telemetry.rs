//! The spans of the dispatch path and of the subscribers, and how one
//! OpenTelemetry trace follows a request through every handler it set in motion.
//!
//! Every span here is a `tracing` span of target `rewind` at `DEBUG`, so it costs a
//! disabled-callsite check unless a subscriber asks for it:
//!
//! * `dispatch` (command, command id, correlation id, causation id), around
//!   * `middleware`, the chain's `before_dispatch`;
//!   * `execute` (stream, attempt), the aggregate's decision, then `append` (events,
//!     and `group_commit`: how many appends the store committed together with this
//!     one, and `group_events`, recorded by the store's writer);
//!   * `consistency` (subscriptions waited for), the strong-consistency wait;
//! * `process` (subscription, events): a subscriber's batch, and inside it `handle`
//!   (subscription, event) for each event a process manager or event handler takes.
//!
//! With the `opentelemetry` feature, spans join across processes and time through
//! the ids stored with every event, with nothing added to the event: a trace id *is*
//! a correlation id (both 128 bits), and the `dispatch` span of a command has the
//! span id [`span_id_of`] its command id. So `handle` of an event takes as remote
//! parent (its correlation id, its command's span id) — the `dispatch` that appended
//! it, even when the handler runs in another process a day later — and a command a
//! process manager sends from inside `handle` is that span's child: a transfer is
//! one trace, request → withdraw → process manager → deposit. A dispatch with no
//! correlation id of its own takes the current trace's id as one, so an HTTP request
//! traced by the application names the conversation. Two parts need the tracer
//! provider's id generator to be [`CausalIds`]: without it, spans still join by
//! trace id, but a `handle` span's parent is missing from the trace.

use crate::envelope::RecordedEvent;
use tracing::Span;
use uuid::Uuid;

/// Whether anything listens to Rewind's spans: when nothing does, a dispatch skips
/// them and its future is not wrapped (one check of a cached interest).
pub(crate) fn traced() -> bool {
    tracing::enabled!(target: "rewind", tracing::Level::DEBUG)
}

/// The `dispatch` span of one command.
pub(crate) fn dispatch(command: &str, command_id: Uuid, correlation_id: Uuid, causation_id: Option<Uuid>) -> Span {
    let span = tracing::debug_span!(
        target: "rewind",
        "dispatch",
        command,
        %command_id,
        %correlation_id,
        causation_id = causation_id.map(tracing::field::display),
    );
    #[cfg(feature = "opentelemetry")]
    otel::start_as(&span, correlation_id, command_id);
    span
}

/// The `handle` span of one event taken by a process manager or event handler.
pub(crate) fn handle(subscription: &str, event: &RecordedEvent) -> Span {
    let span = tracing::debug_span!(
        target: "rewind",
        "handle",
        subscription,
        event_type = %event.event_type,
        event_id = %event.event_id,
        stream_id = %event.stream_id,
        position = event.position.0 as i64,
    );
    #[cfg(feature = "opentelemetry")]
    otel::join(&span, event);
    span
}

/// The `process` span of a subscriber's batch; linked to each event's trace.
pub(crate) fn process(subscription: &str, events: &[RecordedEvent]) -> Span {
    let span = tracing::debug_span!(target: "rewind", "process", subscription, events = events.len());
    #[cfg(feature = "opentelemetry")]
    otel::link(&span, events);
    span
}

/// The correlation id a dispatch without one takes: the current trace's id, when
/// the application traces with OpenTelemetry.
pub(crate) fn current_trace() -> Option<Uuid> {
    #[cfg(feature = "opentelemetry")]
    return otel::current_trace();
    #[cfg(not(feature = "opentelemetry"))]
    None
}

/// Records on each caller's `append` span how many requests (and events) the store
/// committed in one transaction with it: what a store's group-commit writer calls,
/// with the spans its callers were in when they submitted (`Span::current()`).
///
/// ```
/// let spans = [tracing::Span::none(), tracing::Span::none()];
/// rewind::telemetry::record_group_commit(&spans, 7);
/// ```
pub fn record_group_commit<'a>(callers: impl IntoIterator<Item = &'a Span, IntoIter: Clone>, events: usize) {
    let callers = callers.into_iter();
    let requests = callers.clone().count();
    for span in callers.filter(|span| !span.is_disabled()) {
        // As i64: an OpenTelemetry attribute keeps an unsigned number as text.
        span.record("group_commit", requests as i64);
        span.record("group_events", events as i64);
    }
}

/// The span id a command's `dispatch` span takes, and a `handle` span's parent: both
/// halves of the id folded together (a v7 UUID's first half is mostly its time).
///
/// ```
/// let id = uuid::Uuid::new_v4();
/// assert_eq!(rewind::telemetry::span_id_of(id), rewind::telemetry::span_id_of(id));
/// assert_ne!(rewind::telemetry::span_id_of(id), 0, "zero is no span");
/// ```
pub fn span_id_of(id: Uuid) -> u64 {
    let (high, low) = id.as_u64_pair();
    match high ^ low {
        0 => 1,
        folded => folded,
    }
}

#[cfg(feature = "opentelemetry")]
pub use otel::CausalIds;

#[cfg(feature = "opentelemetry")]
mod otel {
    use super::span_id_of;
    use crate::envelope::RecordedEvent;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    use std::cell::Cell;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use uuid::Uuid;

    /// Most traces one batch's `process` span links to.
    const MAX_LINKS: usize = 32;

    thread_local! {
        /// The ids the next span built on this thread takes (see [`start_as`]).
        static NEXT: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
    }

    /// The id generator that gives a command's `dispatch` span the ids its events
    /// name (module docs); random ids for every other span. Install it in the tracer
    /// provider:
    ///
    /// ```
    /// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
    ///     .with_id_generator(rewind::telemetry::CausalIds::default())
    ///     .build();
    /// # drop(provider);
    /// ```
    #[derive(Debug, Default)]
    pub struct CausalIds {
        random: RandomIdGenerator,
    }

    impl IdGenerator for CausalIds {
        fn new_trace_id(&self) -> TraceId {
            NEXT.with(Cell::get).map_or_else(|| self.random.new_trace_id(), |(trace, _)| trace)
        }
        fn new_span_id(&self) -> SpanId {
            NEXT.with(Cell::get).map_or_else(|| self.random.new_span_id(), |(_, span)| span)
        }
    }

    fn trace_id(correlation: Uuid) -> TraceId {
        TraceId::from_bytes(*correlation.as_bytes())
    }

    fn span_id(id: Uuid) -> SpanId {
        SpanId::from_bytes(span_id_of(id).to_be_bytes())
    }

    /// Builds the OpenTelemetry span of `span` now, on this thread, with the span id
    /// of `command` (and, when it has no parent to inherit one from, the trace id of
    /// `correlation`). tracing-opentelemetry builds a span lazily; asking for its
    /// context builds it, and the id generator reads the ids set around the call.
    pub(super) fn start_as(span: &Span, correlation: Uuid, command: Uuid) {
        if span.is_disabled() {
            return;
        }
        NEXT.with(|next| next.set(Some((trace_id(correlation), span_id(command)))));
        let _ = span.context();
        NEXT.with(|next| next.set(None));
    }

    /// The remote context an event's handling continues: the `dispatch` of the
    /// command that appended it.
    fn cause(event: &RecordedEvent) -> Option<SpanContext> {
        let correlation = event.metadata.correlation_id?;
        let command = event.metadata.command().unwrap_or(event.event_id);
        Some(SpanContext::new(
            trace_id(correlation),
            span_id(command),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    pub(super) fn join(span: &Span, event: &RecordedEvent) {
        if let Some(cause) = cause(event).filter(|_| !span.is_disabled()) {
            // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cause));
        }
    }

    pub(super) fn link(span: &Span, events: &[RecordedEvent]) {
        if span.is_disabled() {
            return;
        }
        let mut linked: Vec<SpanContext> = Vec::new();
        for cause in events.iter().filter_map(cause) {
            if linked.len() == MAX_LINKS {
                break;
            }
            if !linked.contains(&cause) {
                span.add_link(cause.clone());
                linked.push(cause);
            }
        }
    }

    pub(super) fn current_trace() -> Option<Uuid> {
        let context = Span::current().context();
        let span = context.span();
        let trace = span.span_context();
        trace.is_valid().then(|| Uuid::from_bytes(trace.trace_id().to_bytes()))
    }
}
