-- One event. The writer assigns `position` (the next in the global order) and
-- `stream_version` (the next in the stream); the unique index refuses a stored id.
INSERT INTO events (
    position, event_id, stream_id, stream_version, event_type, data,
    causation_id, correlation_id, metadata, created_at
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
