//! The writer's fast path: a group commit as one function call per layer, decided
//! and written by PostgreSQL itself (`append_layer` and `append_one` in
//! `sql/schema_v2.sql`), so the whole transaction is one round trip.
//!
//! A layer is a run of consecutive requests of a group that name distinct streams:
//! within one statement no append can see another's rows, so a request naming a
//! stream already in the layer starts the next layer (a later statement of the same
//! transaction, which sees the earlier ones' rows). The statement decides each
//! request as [`crate::group::Group`] would, except for events already stored, which
//! it cannot tell apart: those fail the statement with a unique violation, and the
//! writer redoes the group on the careful path.
//!
//! A group of one layer is one call in a transaction of its own (no `BEGIN` or
//! `COMMIT` to send, parse and answer), and a layer of one append calls
//! `append_one`, which skips the many-request machinery.

use crate::codec::{to_i64, to_u64};
use crate::writer::{Connection, Done, Pending, Reply, Statements, settled_head, slow_down};
use rewind::{AppendOutcome, AppendResult, ExpectedVersion, GlobalPosition, StoreError, StreamVersion};
use std::collections::HashSet;
use std::ops::Range;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

/// The parameters of one `append_layer` (or `append_one`) call.
#[derive(Default)]
pub(crate) struct Layer<'a> {
    /// The requests of the group in this layer.
    pub requests: Range<usize>,
    request: Vec<i32>,
    stream_id: Vec<&'a str>,
    kind: Vec<i32>,
    expected: Vec<i64>,
    count: Vec<i64>,
    append: Vec<i64>,
    offset: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    data: Vec<Option<&'a str>>,
    data_text: Sparse<&'a str>,
    /// Custom metadata; empty metadata (`{}`) is sent as NULL.
    metadata: Sparse<&'a str>,
    metadata_text: Sparse<&'a str>,
    causation_id: Sparse<Uuid>,
    correlation_id: Sparse<Uuid>,
}

/// A column of optional values that is sent as a NULL array while every value is
/// missing (`unnest` pads a NULL array with NULLs): most events have no causation,
/// no `*_text` fallback and no custom metadata.
struct Sparse<T> {
    values: Option<Vec<Option<T>>>,
    len: usize,
}

impl<T> Default for Sparse<T> {
    fn default() -> Self {
        Sparse { values: None, len: 0 }
    }
}

impl<T> Sparse<T> {
    fn push(&mut self, value: Option<T>) {
        match (&mut self.values, value) {
            (Some(values), value) => values.push(value),
            (None, Some(value)) => {
                let mut values = Vec::with_capacity(self.len + 1);
                values.resize_with(self.len, || None);
                values.push(Some(value));
                self.values = Some(values);
            }
            (None, None) => {}
        }
        self.len += 1;
    }
}

/// Runs the fast path: one call per layer, pipelined in one round trip; a group of
/// several layers (or one the test hook slows down) in one `BEGIN` ... `COMMIT`. If a
/// call fails, the ones after it fail too (the transaction is aborted) and `COMMIT`
/// rolls back.
pub(crate) async fn run_fast(
    connection: &Connection,
    group: &[&Pending],
    sleep: Option<f64>,
) -> Result<Done, tokio_postgres::Error> {
    let (client, st) = (&connection.client, &connection.statements);
    let layers = layers(group);
    // Layers after the first share its reservation (`layer_positions`); a lone
    // layer takes exactly what it writes.
    let group_events: i64 = match layers.len() {
        1 => 0,
        _ => group.iter().map(|p| p.event_count() as i64).sum(),
    };
    // The settled head is read after the commit, in the same round trip.
    let (rows, settled) = match layers.as_slice() {
        [layer] if sleep.is_none() => {
            let (rows, settled) = tokio::try_join!(layer.call(client, st, group_events), settled_head(connection))?;
            (vec![rows], settled)
        }
        _ => {
            let calls = layers.iter().map(|layer| layer.call(client, st, group_events));
            let (_, rows, _, _, settled) = tokio::try_join!(
                // READ COMMITTED: see `crate::writer` (one snapshot per statement).
                client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                futures_util::future::try_join_all(calls),
                slow_down(connection, sleep),
                client.batch_execute("COMMIT"),
                settled_head(connection),
            )?;
            (rows, settled)
        }
    };
    let mut done = Done { replies: Vec::with_capacity(group.len()), last: 0, settled, events: 0 };
    for (layer, rows) in layers.iter().zip(&rows) {
        let (replies, last, events) = layer.replies(group, rows);
        done.replies.extend(replies);
        done.last = done.last.max(last);
        done.events += events;
    }
    Ok(done)
}

/// Splits a group into layers of requests naming distinct streams, in order.
pub(crate) fn layers<'a>(group: &[&'a Pending]) -> Vec<Layer<'a>> {
    let mut layers = Vec::new();
    let mut start = 0;
    let mut streams = HashSet::new();
    for (index, pending) in group.iter().enumerate() {
        if pending.appends.iter().any(|a| streams.contains(a.stream_id.as_str())) {
            layers.push(Layer::new(group, start..index));
            streams.clear();
            start = index;
        }
        streams.extend(pending.appends.iter().map(|a| a.stream_id.as_str()));
    }
    layers.push(Layer::new(group, start..group.len()));
    layers
}

impl<'a> Layer<'a> {
    fn new(group: &[&'a Pending], requests: Range<usize>) -> Layer<'a> {
        let mut layer = Layer { requests: requests.clone(), ..Layer::default() };
        for (request, pending) in group[requests].iter().copied().enumerate() {
            for append in &pending.appends {
                let (kind, expected) = match append.expected {
                    ExpectedVersion::Any => (0, 0),
                    ExpectedVersion::NoStream => (1, 0),
                    ExpectedVersion::StreamExists => (2, 0),
                    ExpectedVersion::Exact(v) => (3, to_i64(v.0)),
                };
                layer.request.push(request as i32);
                layer.stream_id.push(&append.stream_id);
                layer.kind.push(kind);
                layer.expected.push(expected);
                layer.count.push(append.events.len() as i64);
                let ordinal = layer.request.len() as i64;
                for (offset, event) in (1..).zip(&append.events) {
                    layer.append.push(ordinal);
                    layer.offset.push(offset);
                    layer.event_id.push(event.event_id);
                    layer.event_type.push(&event.event_type);
                    layer.data.push(event.data.as_jsonb());
                    layer.data_text.push(event.data.as_text());
                    layer.metadata.push(event.custom.as_jsonb().filter(|json| *json != "{}"));
                    layer.metadata_text.push(event.custom.as_text());
                    layer.causation_id.push(event.causation_id);
                    layer.correlation_id.push(event.correlation_id);
                }
            }
        }
        layer
    }

    /// The layer's call: `append_one` for a lone append, else `append_layer`. Its
    /// first poll sends the call (so calls polled in order reach the server in order).
    async fn call(
        &self,
        client: &Client,
        statements: &Statements,
        group_events: i64,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let (statement, mut params): (_, Vec<&(dyn ToSql + Sync)>) = match self.stream_id.as_slice() {
            [stream_id] => (&statements.append_one, vec![stream_id, &self.kind[0], &self.expected[0]]),
            _ => (
                &statements.append_layer,
                vec![
                    &self.request,
                    &self.stream_id,
                    &self.kind,
                    &self.expected,
                    &self.count,
                    &self.append,
                    &self.offset,
                ],
            ),
        };
        params.extend(self.event_columns());
        params.push(&group_events);
        client.query(statement, &params).await
    }

    /// The events' columns, the last parameters of both functions.
    fn event_columns(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.event_id,
            &self.event_type,
            &self.data,
            &self.data_text.values,
            &self.metadata.values,
            &self.metadata_text.values,
            &self.causation_id.values,
            &self.correlation_id.values,
        ]
    }

    /// Turns the statement's rows (one per append, in order) into each request's
    /// reply (`None`: to be decided on the careful path); also returns the last
    /// position the layer wrote (0 if none) and the number of events it wrote.
    ///
    /// Runs after `COMMIT`, so it cannot fail the transaction: a row it cannot read
    /// becomes a [`StoreError::Corrupt`] reply for its request (whose events may be
    /// written; the error says so).
    pub(crate) fn replies(&self, group: &[&Pending], rows: &[Row]) -> (Vec<Option<Reply>>, u64, u64) {
        let mut rows = rows.iter();
        let mut replies = Vec::with_capacity(self.requests.len());
        let (mut head, mut inserted) = (0, 0);
        for pending in &group[self.requests.clone()] {
            let mut results = Vec::with_capacity(pending.appends.len());
            let mut failure = None;
            let mut stored = false;
            for append in &pending.appends {
                let outcome = match rows.next() {
                    Some(row) => decode(row),
                    None => Err("too few rows".to_owned()),
                };
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        let message =
                            format!("unreadable append outcome ({error}); read the stream to see if it was written");
                        failure = Some(StoreError::Corrupt(message));
                        break;
                    }
                };
                (head, inserted) = (outcome.head, outcome.inserted);
                stored |= outcome.stored;
                let count = append.events.len() as u64;
                if !outcome.passed && failure.is_none() {
                    let (stream, expected) = (append.stream_id.clone(), append.expected);
                    failure = Some(StoreError::Conflict { stream, expected, actual: StreamVersion(outcome.actual) });
                }
                if outcome.written {
                    results.push(written_result(head + outcome.before, outcome.actual, count));
                }
            }
            replies.push(if stored { None } else { Some(failure.map_or(Ok(results), Err)) });
        }
        (replies, if inserted > 0 { head + inserted } else { 0 }, inserted)
    }
}

/// One row of `append_layer` or `append_one`.
struct Outcome {
    written: bool,
    passed: bool,
    actual: u64,
    before: u64,
    head: u64,
    inserted: u64,
    stored: bool,
}

fn decode(row: &Row) -> Result<Outcome, String> {
    let number = |i| {
        row.try_get::<_, i64>(i).map_err(|e| e.to_string()).and_then(|n| to_u64(n, "count").map_err(|e| e.to_string()))
    };
    Ok(Outcome {
        written: row.try_get(1).map_err(|e| e.to_string())?,
        passed: row.try_get(2).map_err(|e| e.to_string())?,
        actual: number(3)?,
        before: number(4)?,
        head: number(5)?,
        inserted: number(6)?,
        stored: row.try_get(7).map_err(|e| e.to_string())?,
    })
}

fn written_result(before: u64, actual: u64, count: u64) -> AppendResult {
    let (first, last) = if count == 0 {
        (GlobalPosition::START, GlobalPosition::START)
    } else {
        (GlobalPosition(before + 1), GlobalPosition(before + count))
    };
    AppendResult {
        outcome: AppendOutcome::Appended,
        stream_version: StreamVersion(actual + count),
        first_position: first,
        last_position: last,
    }
}
