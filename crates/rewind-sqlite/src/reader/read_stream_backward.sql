-- One stream downward from a version (inclusive), by the (stream_id, stream_version) index.
-- The caller stops stepping at its limit (see read_all.sql). `+?1` keeps the planner
-- from treating the bound stream id as a plan input: with `= ?1` and ORDER BY, SQLite
-- re-prepares the statement on every execution.
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE stream_id = +?1 AND stream_version <= ?2
ORDER BY stream_version DESC
