//! Export and import: a store as JSON lines, one event per line with every envelope
//! field, and back. An import reproduces the store exactly (event ids, stream
//! versions, global positions, timestamps, metadata), then rebuilds the projections.
//!
//! An import reads its file twice: the first pass checks every line (JSON, dense
//! positions from 1, dense versions per stream, unique ids) and writes nothing if
//! any line is bad, reporting its number; the second pass imports in batches while
//! the next batch is parsed.

use crate::error::OpsError;
use crate::progress::Progress;
use chrono::{DateTime, Utc};
use rewind::{
    EventFilter, EventStore, GlobalPosition, ImportCheck, Metadata, RecordedEvent, SharedStore, StreamVersion,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{BufRead, Write};
use std::path::Path;
use uuid::Uuid;

/// Events per read or import call.
pub(crate) const BATCH: usize = 10_000;

/// One line of an export: an event with every envelope field. `data` is the event's
/// JSON itself, not a string holding it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLine {
    /// Position in the global order.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its type name.
    pub event_type: String,
    /// Its data.
    pub data: Box<RawValue>,
    /// Causation, correlation and custom keys.
    pub metadata: Metadata,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
}

impl ExportLine {
    /// The line for a recorded event.
    pub fn from_event(event: &RecordedEvent) -> Result<ExportLine, serde_json::Error> {
        Ok(ExportLine {
            position: event.position.0,
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version.0,
            event_type: event.event_type.clone(),
            data: RawValue::from_string(event.data.clone())?,
            metadata: event.metadata.clone(),
            created_at: event.created_at,
        })
    }

    /// The recorded event this line describes.
    pub fn into_event(self) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_version: StreamVersion(self.stream_version),
            position: GlobalPosition(self.position),
            event_type: self.event_type,
            data: String::from(self.data.get()),
            metadata: self.metadata,
            created_at: self.created_at,
        }
    }
}

/// Reads `store`'s global order from the origin in pages on a task of its own, so
/// reading the next page overlaps with whatever the caller does with this one. Stops
/// before the first event `keep` refuses.
pub(crate) fn read_pages(
    store: &SharedStore,
    keep: impl Fn(&RecordedEvent) -> bool + Send + 'static,
) -> (tokio::sync::mpsc::Receiver<Vec<RecordedEvent>>, tokio::task::JoinHandle<Result<(), rewind::StoreError>>) {
    let (pages, received) = tokio::sync::mpsc::channel(4);
    let store = store.clone();
    let reader = tokio::spawn(async move {
        let mut from = GlobalPosition(1);
        loop {
            let mut page = store.read_all(from, BATCH, &EventFilter::all()).await?;
            let Some(last) = page.last() else { return Ok(()) };
            from = last.position.next();
            let full = page.len() == BATCH;
            let cut = page.iter().position(|e| !keep(e));
            if let Some(cut) = cut {
                page.truncate(cut);
            }
            if !page.is_empty() && pages.send(page).await.is_err() {
                return Ok(());
            }
            if cut.is_some() || !full {
                return Ok(());
            }
        }
    });
    (received, reader)
}

/// Writes every event of `store` to `out` as JSON lines; returns how many.
pub async fn export(store: &SharedStore, out: &mut dyn Write) -> Result<u64, OpsError> {
    let head = store.settled_head().await.map_err(OpsError::store("the source"))?;
    let progress = Progress::new(head.0, "exporting");
    let (mut received, reader) = read_pages(store, move |event| event.position <= head);
    let mut written = 0;
    let write = |error: std::io::Error| OpsError::Io { what: "writing the export".into(), source: error };
    while let Some(page) = received.recv().await {
        for event in &page {
            let line = ExportLine::from_event(event).map_err(|e| write(e.into()))?;
            serde_json::to_writer(&mut *out, &line).map_err(|e| write(e.into()))?;
            out.write_all(b"\n").map_err(write)?;
            written += 1;
        }
        progress.set(written);
    }
    out.flush().map_err(write)?;
    progress.finish();
    reader
        .await
        .map_err(|e| OpsError::Task(format!("export reader failed: {e}")))?
        .map_err(OpsError::store("the source"))?;
    Ok(written)
}

/// Checks an export file line by line without importing anything: every line
/// parses, positions run 1, 2, 3…, each stream's versions run 1, 2, 3…, ids are
/// unique. Returns the number of events.
pub fn check_file(path: &Path) -> Result<u64, OpsError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(OpsError::io(format!("opening {name}")))?;
    // The same rule a store applies to an import, to an empty store.
    let mut check = ImportCheck::new(GlobalPosition::START);
    let mut count = 0u64;
    for (index, line) in std::io::BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line_no = index as u64 + 1;
        let bad = |reason: String| OpsError::BadLine { file: name.clone(), line: line_no, reason };
        let line = line.map_err(|e| bad(format!("unreadable: {e}")))?;
        let event: ExportLine = serde_json::from_str(&line).map_err(|e| bad(format!("not an exported event: {e}")))?;
        check.check(&event.into_event(), |_| Ok(StreamVersion::NONE)).map_err(|e| bad(e.to_string()))?;
        count += 1;
    }
    Ok(count)
}

/// Imports a file [`check_file`] accepted into `store` (which must be empty);
/// returns the new head.
pub async fn import_file(store: &SharedStore, path: &Path, total: u64) -> Result<GlobalPosition, OpsError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(OpsError::io(format!("opening {name}")))?;
    let progress = Progress::new(total, "importing");
    let (batches, mut received) = tokio::sync::mpsc::channel::<Result<Vec<RecordedEvent>, OpsError>>(4);
    // Parsing the next batch (a blocking thread) overlaps with writing this one.
    let parser = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(BATCH);
        for (index, line) in std::io::BufReader::with_capacity(1 << 20, file).lines().enumerate() {
            let parsed = line
                .map_err(|e| e.to_string())
                .and_then(|line| serde_json::from_str::<ExportLine>(&line).map_err(|e| e.to_string()));
            match parsed {
                Ok(event) => batch.push(event.into_event()),
                Err(reason) => {
                    let line = index as u64 + 1;
                    let _ = batches.blocking_send(Err(OpsError::BadLine { file: name, line, reason }));
                    return;
                }
            }
            if batch.len() == BATCH && batches.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = batches.blocking_send(Ok(batch));
        }
    });
    let mut head = GlobalPosition::START;
    while let Some(batch) = received.recv().await {
        let batch = batch?;
        let count = batch.len() as u64;
        head = store.import(batch).await.map_err(OpsError::store("the destination"))?;
        progress.add(count);
    }
    progress.finish();
    parser.await.map_err(|e| OpsError::Task(format!("import parser failed: {e}")))?;
    Ok(head)
}
