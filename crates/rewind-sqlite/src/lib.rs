//! Rewind event store on sqlite (in progress).
