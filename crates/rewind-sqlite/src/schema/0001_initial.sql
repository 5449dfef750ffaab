-- Rewind SQLite store, schema version 1.
--
-- The whole store lives in one file. Invariants (kept by the writer, `writer.rs` and
-- `append.rs`, which is the only code that changes these tables):
--   * events.position is the global order: 1, 2, 3, ... dense, in commit order.
--   * for each stream, events.stream_version runs 1..=streams.version, dense.
--   * an event id is stored at most once in the whole store.

-- The event log. `position` is the rowid, so reading the global order is a scan of
-- the table itself.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL UNIQUE,        -- 16-byte UUID
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version >= 1),
    event_type     TEXT    NOT NULL,
    data           TEXT    NOT NULL,               -- JSON text, as given
    causation_id   BLOB,                           -- 16-byte UUID or NULL
    correlation_id BLOB,                           -- 16-byte UUID or NULL
    metadata       TEXT    NOT NULL DEFAULT '{}',  -- custom metadata keys, JSON object
    created_at     INTEGER NOT NULL,               -- commit time, microseconds since the Unix epoch
    UNIQUE (stream_id, stream_version)
) STRICT;

-- One row per stream that holds at least one event: its current version. The
-- expected-version check of an append reads this row.
CREATE TABLE streams (
    stream_id TEXT    PRIMARY KEY,
    version   INTEGER NOT NULL CHECK (version >= 1)
) STRICT, WITHOUT ROWID;

-- The newest snapshot of each stream.
CREATE TABLE snapshots (
    stream_id  TEXT    PRIMARY KEY,
    version    INTEGER NOT NULL CHECK (version >= 0),
    tag        TEXT    NOT NULL,
    data       TEXT    NOT NULL,                   -- JSON text, as given
    created_at INTEGER NOT NULL                    -- microseconds since the Unix epoch
) STRICT;
