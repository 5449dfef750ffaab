-- The last settled position: the last event whose transaction is older than every
-- transaction still running. Positions increase with transaction ids (see
-- writer.rs), so every position up to it is committed or a hole that never fills,
-- and may be followed.
SELECT coalesce(max(position), 0) FROM {schema}.events
WHERE tx < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
