-- The current version of each stream an import touches (0 for a new stream), one
-- index probe per stream (a plain max() over the streams would read every event of
-- them). A race with an append is refused by the unique index.
SELECT s.stream_id,
       coalesce((SELECT e.stream_version FROM {schema}.events e
                 WHERE e.stream_id = s.stream_id
                 ORDER BY e.stream_version DESC LIMIT 1), 0)
FROM unnest($1::text[]) AS s(stream_id)
