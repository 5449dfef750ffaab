-- The events of one correlation id from a position (inclusive), in the global
-- order: a range of the partial index `events_by_correlation`.
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE correlation_id = ?1 AND position >= ?2
ORDER BY position
