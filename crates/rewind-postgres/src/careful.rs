//! The writer's careful path: one group transaction decided in Rust.
//!
//! `BEGIN` and the group's positions (`take_positions`), then, in the same round
//! trip, the current versions of the streams named and which of the group's event
//! ids are stored; [`Group`]
//! decides every request with the exact rules of `rewind::MemoryStore` (retries,
//! duplicates, several requests to one stream); then (a second round trip) one
//! multi-row insert of what is written and `COMMIT`. Slower than the fast path
//! ([`crate::layer`]) by a round trip, it handles every case; the writer sends it
//! only what the fast path could not decide.

use crate::codec::to_i64;
use crate::group::{Group, Stored};
use crate::sql::Sql;
use crate::writer::{Connection, Done, Params, Pending, Reply, settled_head, slow_down};
use std::collections::HashSet;
use uuid::Uuid;

/// The careful path: takes positions, reads the state, decides in Rust ([`Group`]),
/// then writes. Two round trips; handles every case (retries, duplicates, one stream
/// named by several requests of the group).
pub(crate) async fn run_careful(
    connection: &Connection,
    sql: &Sql,
    group: &[&Pending],
    sleep: Option<f64>,
) -> Result<Done, tokio_postgres::Error> {
    let (client, st) = (&connection.client, &connection.statements);
    let mut streams = HashSet::new();
    let mut ids = Vec::new();
    for append in group.iter().flat_map(|p| &p.appends) {
        streams.insert(append.stream_id.as_str());
        ids.extend(append.events.iter().map(|e| e.event_id));
    }
    let streams: Vec<&str> = streams.into_iter().collect();
    // Positions for every event of the group, taken before anything is written;
    // those the decisions leave unused are holes.
    let group_events = to_i64(ids.len() as u64);
    let (stream_params, id_params, take_params): (Params<1>, Params<1>, Params<1>) =
        ([&streams], [&ids], [&group_events]);
    let take = async {
        match group_events {
            0 => Ok(1),
            _ => client.query_one(&st.take_positions, &take_params).await?.try_get::<_, i64>(0),
        }
    };
    // Pipelined: sent together, executed in order. After a failure the server answers
    // every later statement of the transaction with "transaction is aborted", so the
    // results are taken in statement order: the error returned is the one that
    // failed the transaction (`try_join!` could return any of them).
    let (begun, first, versions, stored) = tokio::join!(
        client.batch_execute(&sql.begin_append),
        take,
        client.query(&st.versions, &stream_params),
        client.query(&st.stored_ids, &id_params),
    );
    let (first, versions, stored) = (begun.and(first)?, versions?, stored?);
    let head = first - 1;
    let versions = versions.iter().map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)));
    let versions = versions.collect::<Result<Vec<(&str, u64)>, tokio_postgres::Error>>()?;
    let stored = stored.iter().map(|r| {
        let at = Stored {
            stream_id: r.try_get(1)?,
            version: r.try_get::<_, i64>(2)? as u64,
            position: r.try_get::<_, i64>(3)? as u64,
        };
        Ok((r.try_get::<_, Uuid>(0)?, at))
    });
    let stored = stored.collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let mut decisions = Group::new(head as u64, versions, stored);
    let replies: Vec<Option<Reply>> =
        group.iter().enumerate().map(|(i, p)| Some(decisions.apply(i, &p.appends))).collect();
    let rows = Rows::collect(group, &decisions);
    let events = rows.position.len() as u64;
    let last = if events == 0 { 0 } else { decisions.head() };
    if events == 0 {
        let (_, settled) = tokio::try_join!(client.batch_execute("COMMIT"), settled_head(connection))?;
        return Ok(Done { replies, last, settled, events });
    }
    let insert_params: Params<11> = [
        &rows.position,
        &rows.event_id,
        &rows.stream_id,
        &rows.stream_version,
        &rows.event_type,
        &rows.data,
        &rows.data_text,
        &rows.metadata,
        &rows.metadata_text,
        &rows.causation_id,
        &rows.correlation_id,
    ];
    // In statement order, as above: a lost race fails the insert, and the test hook's
    // sleep after it would only report the aborted transaction.
    let (inserted, slept, committed, settled) = tokio::join!(
        client.execute(&st.insert, &insert_params),
        slow_down(connection, sleep),
        client.batch_execute("COMMIT"),
        settled_head(connection),
    );
    inserted?;
    slept?;
    committed?;
    Ok(Done { replies, last, settled: settled?, events })
}

/// The `insert_events.sql` parameters: one array per column.
#[derive(Default)]
struct Rows<'a> {
    position: Vec<i64>,
    event_id: Vec<Uuid>,
    stream_id: Vec<&'a str>,
    stream_version: Vec<i64>,
    event_type: Vec<&'a str>,
    data: Vec<Option<&'a str>>,
    data_text: Vec<Option<&'a str>>,
    metadata: Vec<Option<&'a str>>,
    metadata_text: Vec<Option<&'a str>>,
    causation_id: Vec<Option<Uuid>>,
    correlation_id: Vec<Option<Uuid>>,
}

impl<'a> Rows<'a> {
    fn collect(group: &[&'a Pending], decisions: &Group<'_>) -> Rows<'a> {
        let mut rows = Rows::default();
        for write in &decisions.writes {
            let append = &group[write.request].appends[write.append];
            for (offset, event) in (0..).zip(&append.events) {
                rows.position.push(to_i64(write.first_position + offset));
                rows.event_id.push(event.event_id);
                rows.stream_id.push(&append.stream_id);
                rows.stream_version.push(to_i64(write.first_version + offset));
                rows.event_type.push(&event.event_type);
                rows.data.push(event.data.as_jsonb());
                rows.data_text.push(event.data.as_text());
                rows.metadata.push(event.custom.as_jsonb());
                rows.metadata_text.push(event.custom.as_text());
                rows.causation_id.push(event.causation_id);
                rows.correlation_id.push(event.correlation_id);
            }
        }
        debug_assert!(rows.position.windows(2).all(|w| w[1] == w[0] + 1), "positions are dense");
        rows
    }
}
