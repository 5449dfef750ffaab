-- The stored snapshot of a stream, if any.
SELECT stream_id, version, tag, data, created_at FROM snapshots WHERE stream_id = ?1
