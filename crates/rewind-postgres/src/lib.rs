//! Rewind event store on postgres (in progress).
