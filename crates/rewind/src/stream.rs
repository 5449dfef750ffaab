//! Positions in the event log: a stream's version, the global position, and the
//! expected-version rule an append is checked against.
//!
//! Versions count from 1: the first event of a stream has version 1, so version 0
//! means "no stream". Global positions also count from 1 and only ever grow; every
//! store promises that a reader following positions upward never skips a committed
//! event (see `docs/design.md`, promise 3).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The version of one stream: how many events it holds (0 = the stream does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// No stream: the version before the first event.
    pub const NONE: StreamVersion = StreamVersion(0);
    /// Reading backward from `END` starts at the stream's last event.
    pub const END: StreamVersion = StreamVersion(u64::MAX);

    /// The version after this one.
    pub fn next(self) -> StreamVersion {
        StreamVersion(self.0.saturating_add(1))
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The position of an event in the global (`$all`) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GlobalPosition(pub u64);

impl GlobalPosition {
    /// Before the first event: reading from `START.next()` reads everything.
    pub const START: GlobalPosition = GlobalPosition(0);

    /// The position after this one.
    pub fn next(self) -> GlobalPosition {
        GlobalPosition(self.0.saturating_add(1))
    }
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an append expects of its stream; a mismatch fails the append with
/// [`StoreError::Conflict`](crate::StoreError::Conflict) and writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must hold at least one event.
    StreamExists,
    /// The stream must be exactly at this version (`Exact(StreamVersion(0))` = `NoStream`).
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn accepts(self, actual: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == StreamVersion::NONE,
            ExpectedVersion::StreamExists => actual != StreamVersion::NONE,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Which way a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the given version upward.
    Forward,
    /// From the given version (inclusive; [`StreamVersion::END`] for the last) downward.
    Backward,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_rules() {
        let none = StreamVersion::NONE;
        let three = StreamVersion(3);
        assert!(ExpectedVersion::Any.accepts(none) && ExpectedVersion::Any.accepts(three));
        assert!(ExpectedVersion::NoStream.accepts(none) && !ExpectedVersion::NoStream.accepts(three));
        assert!(!ExpectedVersion::StreamExists.accepts(none));
        assert!(ExpectedVersion::StreamExists.accepts(three));
        assert!(ExpectedVersion::Exact(three).accepts(three));
        assert!(!ExpectedVersion::Exact(three).accepts(StreamVersion(2)));
        assert!(ExpectedVersion::Exact(none).accepts(none));
    }
}
