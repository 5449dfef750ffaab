-- One event by its id, through the unique index on event_id.
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE event_id = ?1
