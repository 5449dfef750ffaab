-- The global order from a position (inclusive): a range scan of the table's rowid.
-- No LIMIT: the caller stops stepping (SQLite re-prepares a statement each time a
-- bound LIMIT changes value, and callers' limits differ).
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE position >= ?1
ORDER BY position
