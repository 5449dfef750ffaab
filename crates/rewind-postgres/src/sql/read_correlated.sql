-- The events of one correlation id from a position (inclusive), in the global
-- order: a range of `events_by_correlation`. Committed events, settled or not: an
-- operator's read, not a follower's.
SELECT position, event_id, stream_id, stream_version, event_type,
       coalesce(data_text, data::text), coalesce(metadata_text, metadata::text),
       causation_id, correlation_id, created_at
FROM {schema}.events
WHERE correlation_id = $1 AND position >= $2
ORDER BY position
LIMIT $3
