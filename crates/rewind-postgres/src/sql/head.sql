-- The last position. Positions are dense and committed in order, so every event
-- up to it is committed and may be followed.
SELECT coalesce(max(position), 0) FROM {schema}.events
