-- A stream's current version; no row means version 0 (no stream).
SELECT version FROM streams WHERE stream_id = ?1
