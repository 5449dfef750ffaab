-- The first stream id after ?1 that is not below ?2 (the prefix: ids starting with
-- it sort together, from it on), by the (stream_id, stream_version) index.
SELECT min(stream_id) FROM events WHERE stream_id > ?1 AND stream_id >= ?2
