-- Streams by id: those starting with ?1 (a prefix, matched with substr so `%` and
-- `_` are not wildcards), after ?2. The caller stops stepping at its page size.
SELECT stream_id, version FROM streams
WHERE stream_id > ?2 AND substr(stream_id, 1, length(?1)) = ?1
ORDER BY stream_id
