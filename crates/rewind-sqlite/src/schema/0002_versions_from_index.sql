-- Rewind SQLite store, schema version 2.
--
-- A stream's version is the largest `stream_version` of its events, which the
-- UNIQUE (stream_id, stream_version) index of `events` finds in one probe. The
-- `streams` table kept a copy of it, and updating that copy cost every append one
-- more randomly placed page in the write-ahead log (and in each checkpoint).
DROP TABLE streams;
