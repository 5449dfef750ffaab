-- A page of streams by id: those starting with $1 (compared with left(), so `%`
-- and `_` are not wildcards), after $2, at most $3, with their versions.
SELECT stream_id, max(stream_version) FROM {schema}.events
WHERE stream_id > $2 AND left(stream_id, length($1)) = $1
GROUP BY stream_id
ORDER BY stream_id
LIMIT $3
