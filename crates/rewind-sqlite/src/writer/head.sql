-- The last committed position (0 when the log is empty); positions are the rowid.
SELECT COALESCE(MAX(position), 0) FROM events
