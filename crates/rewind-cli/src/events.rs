//! Reading the event store as an operator: streams, one stream, the global order,
//! and a live tail. Output is one line per item, readable by a person by default,
//! or JSON lines (the export format, see [`crate::export`]) with `--json`.

use crate::error::OpsError;
use crate::export::ExportLine;
use rewind::{Direction, EventFilter, EventStore, GlobalPosition, RecordedEvent, SharedStore, StreamVersion};
use std::future::Future;
use std::io::Write;

/// How many events or streams one read asks for.
const PAGE: usize = 1_000;

/// How often `tail` looks for commits nobody announced.
pub const TAIL_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How output lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for a person.
    Human,
    /// One JSON object per line.
    Json,
}

fn write_event(out: &mut dyn Write, event: &RecordedEvent, format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let line = ExportLine::from_event(event).map_err(std::io::Error::other)?;
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)
        }
        Format::Human => writeln!(
            out,
            "{:>8}  {}@{}  {}  {}  {}",
            event.position,
            event.stream_id,
            event.stream_version,
            event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            event.event_type,
            event.data
        ),
    }
}

fn output(error: std::io::Error) -> OpsError {
    OpsError::Io { what: "writing output".into(), source: error }
}

/// Lists streams (id and version) whose id starts with `prefix`.
pub async fn streams(store: &SharedStore, prefix: &str, format: Format, out: &mut dyn Write) -> Result<(), OpsError> {
    let mut after = String::new();
    loop {
        let page = store.list_streams(prefix, &after, PAGE).await.map_err(OpsError::store("the store"))?;
        for stream in &page {
            match format {
                Format::Json => serde_json::to_writer(&mut *out, stream).map_err(|e| output(e.into()))?,
                Format::Human => write!(out, "{}  {}", stream.stream_id, stream.version).map_err(output)?,
            }
            writeln!(out).map_err(output)?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.stream_id.clone(),
            _ => return Ok(()),
        }
    }
}

/// Prints up to `limit` events of one stream from version `from`, forward or backward.
pub async fn read(
    store: &SharedStore,
    stream: &str,
    from: Option<u64>,
    backward: bool,
    limit: usize,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let (direction, mut from) = if backward {
        (Direction::Backward, StreamVersion(from.unwrap_or(u64::MAX)))
    } else {
        (Direction::Forward, StreamVersion(from.unwrap_or(1)))
    };
    let mut left = limit;
    while left > 0 {
        let page =
            store.read_stream(stream, from, direction, left.min(PAGE)).await.map_err(OpsError::store("the store"))?;
        for event in &page {
            write_event(out, event, format).map_err(output)?;
        }
        left -= page.len();
        match page.last() {
            Some(last) if page.len() == PAGE => {
                from = if backward {
                    StreamVersion(last.stream_version.0.saturating_sub(1))
                } else {
                    last.stream_version.next()
                };
                if from.0 == 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    Ok(())
}

/// Prints the global order from `from`, keeping events that pass `filter`.
pub async fn all(
    store: &SharedStore,
    from: GlobalPosition,
    filter: &EventFilter,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let mut from = from.max(GlobalPosition(1));
    loop {
        let page = store.read_all(from, PAGE, filter).await.map_err(OpsError::store("the store"))?;
        for event in &page {
            write_event(out, event, format).map_err(output)?;
        }
        match page.last() {
            Some(last) => from = last.position.next(),
            None => return Ok(()),
        }
    }
}

/// Prints events as they are committed, from `from` (default: the next one), until
/// `stop` resolves. Each line is flushed as it is written.
///
/// Commits made by this process wake it at once; commits from other processes are
/// announced on PostgreSQL but not on SQLite, so it also looks every
/// [`TAIL_POLL`] (the tail of a store a server writes in another process).
pub async fn tail(
    store: &SharedStore,
    from: Option<GlobalPosition>,
    filter: &EventFilter,
    format: Format,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<(), OpsError> {
    let mut head = store.watch_head();
    let mut from = match from {
        Some(from) => from.max(GlobalPosition(1)),
        None => store.head_position().await.map_err(OpsError::store("the store"))?.next(),
    };
    tokio::pin!(stop);
    loop {
        // Marked seen before reading, so a commit during the read wakes the next wait.
        head.borrow_and_update();
        loop {
            let page = store.read_all(from, PAGE, filter).await.map_err(OpsError::store("the store"))?;
            for event in &page {
                write_event(out, event, format).map_err(output)?;
            }
            out.flush().map_err(output)?;
            match page.last() {
                Some(last) => from = last.position.next(),
                None => break,
            }
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return Ok(()) },
            () = tokio::time::sleep(TAIL_POLL) => {}
            () = &mut stop => return Ok(()),
        }
    }
}
