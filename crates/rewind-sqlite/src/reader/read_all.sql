-- The global order from a position (inclusive): a range scan of the table's rowid.
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE position >= ?1
ORDER BY position
LIMIT ?2
