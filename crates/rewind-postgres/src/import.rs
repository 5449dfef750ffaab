//! Imports: events copied verbatim from another store (see [`rewind::import`]),
//! written with binary `COPY` in one transaction.
//!
//! The events are checked against the last position taken so far; then the
//! transaction takes their positions, like every append (see [`crate::writer`]),
//! before it writes: `take_import_positions` takes them only if no append took them
//! meanwhile. A follower sees the import commit as one step.

use crate::codec::{Json, to_i64, to_u64};
use crate::error::{from_pg, from_pool};
use bytes::{BufMut, BytesMut};
use deadpool_postgres::Pool;
use futures_util::pin_mut;
use rewind::{GlobalPosition, RecordedEvent, StoreError, StreamVersion};
use std::collections::HashMap;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The statements an import runs, rendered for one schema.
#[derive(Debug, Clone)]
pub(crate) struct ImportSql {
    pub taken: String,
    pub take_positions: String,
    pub versions: String,
    pub copy: String,
}

/// JSON text sent as `jsonb` without parsing it again (binary format: a version
/// byte, then the text).
#[derive(Debug)]
struct RawJsonb<'a>(&'a str);

impl ToSql for RawJsonb<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// An event's JSON columns, checked.
struct Columns {
    data: Json,
    custom: Json,
}

/// Writes `events` if they continue the store; returns the new head.
pub(crate) async fn import(
    pool: &Pool,
    sql: &ImportSql,
    events: &[RecordedEvent],
) -> Result<GlobalPosition, StoreError> {
    let columns = events
        .iter()
        .map(|e| {
            Ok(Columns {
                data: Json::check(e.data.clone(), "data", e.event_id)?,
                custom: Json::check(e.metadata.custom_json(), "metadata", e.event_id)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut client = pool.get().await.map_err(from_pool)?;
    let tx = client.transaction().await.map_err(from_pg)?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(StoreError::Invalid("an import needs at least one event".into()));
    };
    let (first, last) = (to_i64(first.position.0), to_i64(last.position.0));
    // Checked against the last position taken so far, then taken (only if still
    // free): a refused import takes nothing.
    let head = to_u64(tx.query_one(&sql.taken, &[]).await.map_err(from_pg)?.try_get(0).map_err(from_pg)?, "head")?;
    let streams: Vec<&str> = {
        let mut names: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    let mut stored = HashMap::with_capacity(streams.len());
    for row in tx.query(&sql.versions, &[&streams]).await.map_err(from_pg)? {
        let stream: String = row.try_get(0).map_err(from_pg)?;
        stored.insert(stream, StreamVersion(to_u64(row.try_get(1).map_err(from_pg)?, "stream version")?));
    }
    rewind::check_import(events, GlobalPosition(head), |stream| {
        Ok(stored.get(stream).copied().unwrap_or(StreamVersion::NONE))
    })?;
    let row = tx.query_one(&sql.take_positions, &[&first, &last]).await.map_err(from_pg)?;
    let taken = to_u64(row.try_get(0).map_err(from_pg)?, "head")?;
    if taken >= first as u64 {
        return Err(StoreError::Invalid(format!(
            "cannot import from position {first}: an append took positions up to {taken} meanwhile"
        )));
    }
    let types = [
        Type::INT8,
        Type::UUID,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::UUID,
        Type::UUID,
        Type::TIMESTAMPTZ,
    ];
    let sink = tx.copy_in(&sql.copy).await.map_err(from_pg)?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (event, columns) in events.iter().zip(&columns) {
        let position = to_i64(event.position.0);
        let version = to_i64(event.stream_version.0);
        let data = columns.data.as_jsonb().map(RawJsonb);
        let custom = columns.custom.as_jsonb().map(RawJsonb);
        let row: [&(dyn ToSql + Sync); 12] = [
            &position,
            &event.event_id,
            &event.stream_id,
            &version,
            &event.event_type,
            &data,
            &columns.data.as_text(),
            &custom,
            &columns.custom.as_text(),
            &event.metadata.causation_id,
            &event.metadata.correlation_id,
            &event.created_at,
        ];
        writer.as_mut().write(&row).await.map_err(from_pg)?;
    }
    writer.finish().await.map_err(from_pg)?;
    tx.commit().await.map_err(from_pg)?;
    Ok(GlobalPosition(to_u64(last, "position")?))
}
