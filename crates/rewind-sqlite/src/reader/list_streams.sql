-- A page of streams by id: those starting with ?1 (a prefix, matched with
-- substr so `%` and `_` are not wildcards), after ?2, at most ?3.
SELECT stream_id, version FROM streams
WHERE stream_id > ?2 AND substr(stream_id, 1, length(?1)) = ?1
ORDER BY stream_id
LIMIT ?3
