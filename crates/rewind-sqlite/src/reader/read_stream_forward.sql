-- One stream upward from a version (inclusive), by the (stream_id, stream_version) index.
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE stream_id = ?1 AND stream_version >= ?2
ORDER BY stream_version
LIMIT ?3
