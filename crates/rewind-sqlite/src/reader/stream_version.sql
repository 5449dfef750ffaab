-- A stream's current version: its last event's, by the (stream_id, stream_version)
-- index; NULL means version 0 (no stream). `+?1`: see read_stream_forward.sql.
SELECT max(stream_version) FROM events WHERE stream_id = +?1
