-- Schema version 3: appends from many processes commit concurrently (the argument
-- is in writer.rs). The append lock no longer spans a transaction: it covers only
-- the moment a transaction takes its transaction id and its positions, so positions
-- increase with transaction ids. Each event records the id of the transaction that
-- wrote it (`tx`); a reader follows only events whose transaction is older than
-- every transaction still running, which makes every position below them settled.
-- A transaction that rolls back after taking positions leaves a hole.
--
-- Stop every process of an older version before this migration runs: their appends
-- would still hold the lock across COMMIT, but their reads would not wait for
-- settled positions.

-- Events written before this version were committed one transaction at a time, so
-- they are settled; 0 is below every transaction id.
ALTER TABLE {schema}.events ADD COLUMN tx xid8 NOT NULL DEFAULT '0';
ALTER TABLE {schema}.events ALTER COLUMN tx SET DEFAULT pg_current_xact_id();

CREATE SEQUENCE {schema}.positions AS bigint MINVALUE 1;
SELECT setval('{schema}.positions', greatest(coalesce(max(position), 0), 1), max(position) IS NOT NULL)
FROM {schema}.events;

-- Takes `n` (> 0) positions for the calling transaction and returns the first. The
-- transaction must not have written anything yet: its id is assigned here, under the
-- lock, so that a transaction holding lower positions always has a lower id. Each
-- transaction takes positions once. The lock is a session lock, released before the
-- function returns, also when an error or a cancel strikes while it is held (a
-- session lock outlives its transaction).
CREATE FUNCTION {schema}.take_positions(n bigint) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    first bigint;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'rewind: a transaction takes positions before it writes, and once';
    END IF;
    PERFORM pg_advisory_lock({lock_key});
    BEGIN
        PERFORM pg_current_xact_id();
        first := nextval('{schema}.positions');
        IF n > 1 THEN
            PERFORM setval('{schema}.positions', first + n - 1);
        END IF;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock({lock_key});
        RAISE;
    END;
    PERFORM pg_advisory_unlock({lock_key});
    RETURN first;
END
$fn$;

-- For an import: takes positions `first..=last` if `first` is above every position
-- taken so far; returns the last position taken before (the import's head), which
-- the import checks its events against.
CREATE FUNCTION {schema}.take_import_positions(first bigint, last bigint) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    head bigint;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'rewind: a transaction takes positions before it writes, and once';
    END IF;
    PERFORM pg_advisory_lock({lock_key});
    BEGIN
        PERFORM pg_current_xact_id();
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO head FROM {schema}.positions;
        IF first > head THEN
            PERFORM setval('{schema}.positions', last);
        END IF;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock({lock_key});
        RAISE;
    END;
    PERFORM pg_advisory_unlock({lock_key});
    RETURN head;
END
$fn$;

-- The first of a layer's `n` positions. The layers of one group commit share one
-- reservation of `group_events` (every event the group could write; 0 for a group
-- of one layer, which takes just its `n`), taken by the first layer that writes;
-- the next free one is kept in a transaction-local setting. Positions a group leaves
-- unused are holes. 0 when `n` is 0.
CREATE FUNCTION {schema}.layer_positions(group_events bigint, n bigint) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    next text := current_setting('rewind.next_position', true);
    first bigint;
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    IF next IS NULL OR next = '' THEN
        first := {schema}.take_positions(greatest(group_events, n));
    ELSE
        first := next::bigint;
    END IF;
    PERFORM set_config('rewind.next_position', (first + n)::text, true);
    RETURN first;
END
$fn$;

-- The fast path's functions (see schema_v2.sql for their parameters and rows) without
-- the lock across COMMIT: the version checks read the committed state, and the
-- unique index on (stream_id, stream_version) refuses an append that raced another
-- to the same stream, which the writer then decides again on its careful path. The
-- new last parameter is `group_events`, see `layer_positions`. `o_head` is the
-- position before the layer's first (0 if it writes nothing).
DROP FUNCTION {schema}.append_layer(
    int[], text[], int[], bigint[], bigint[],
    bigint[], bigint[], uuid[], text[], text[], text[], text[], text[], uuid[], uuid[]
);
DROP FUNCTION {schema}.append_one(text, int, bigint, uuid[], text[], text[], text[], text[], text[], uuid[], uuid[]);

CREATE FUNCTION {schema}.append_layer(
    int[], text[], int[], bigint[], bigint[],
    bigint[], bigint[], uuid[], text[], text[], text[], text[], text[], uuid[], uuid[], bigint
) RETURNS TABLE (
    o_ord bigint, o_written boolean, o_passed boolean, o_actual bigint, o_before bigint,
    o_head bigint, o_inserted bigint, o_stored boolean
) LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY
        WITH appends AS (
            SELECT a.ord, a.request, a.stream_id, a.kind, a.expected, a.count,
                   coalesce((SELECT e.stream_version FROM {schema}.events e
                             WHERE e.stream_id = a.stream_id
                             ORDER BY e.stream_version DESC LIMIT 1), 0) AS actual
            FROM unnest($1::int[], $2::text[], $3::int[], $4::bigint[], $5::bigint[])
                 WITH ORDINALITY AS a(request, stream_id, kind, expected, count, ord)
        ), checked AS (
            SELECT appends.*,
                   CASE kind WHEN 0 THEN true
                             WHEN 1 THEN actual = 0
                             WHEN 2 THEN actual > 0
                             ELSE actual = expected END AS passed
            FROM appends
        ), requests AS (
            SELECT request, bool_and(passed) AS written FROM checked GROUP BY request
        ), placed AS (
            SELECT c.*, r.written,
                   coalesce(sum(CASE WHEN r.written THEN c.count ELSE 0 END)
                            OVER (ORDER BY c.ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::bigint AS before
            FROM checked c JOIN requests r USING (request)
        ), head AS MATERIALIZED (
            -- Evaluated once, before the first row is inserted (every row needs it).
            SELECT greatest({schema}.layer_positions($16, coalesce(sum(count) FILTER (WHERE written), 0)::bigint) - 1, 0)
                   AS head
            FROM placed
        ), inserted AS (
            INSERT INTO {schema}.events (
                position, event_id, stream_id, stream_version, event_type,
                data, data_text, metadata, metadata_text, causation_id, correlation_id, created_at
            )
            SELECT head.head + p.before + e.k, e.event_id, p.stream_id, p.actual + e.k, e.event_type,
                   e.data::jsonb, e.data_text,
                   coalesce(e.metadata, CASE WHEN e.metadata_text IS NULL THEN '{}' END)::jsonb, e.metadata_text,
                   e.causation_id, e.correlation_id, now()
            FROM unnest(
                $6::bigint[], $7::bigint[], $8::uuid[], $9::text[], $10::text[], $11::text[],
                $12::text[], $13::text[], $14::uuid[], $15::uuid[]
            ) AS e(append, k, event_id, event_type, data, data_text, metadata, metadata_text, causation_id, correlation_id)
            JOIN placed p ON p.ord = e.append
            CROSS JOIN head
            WHERE p.written
            -- Every transaction inserts in (stream, version) order, so two that wait
            -- on each other's rows of one stream cannot also wait the other way round
            -- on another stream (a deadlock, which PostgreSQL finds only after a second).
            ORDER BY p.stream_id, p.actual + e.k
            RETURNING 1
        )
        SELECT p.ord, p.written, p.passed, p.actual, p.before, head.head, (SELECT count(*) FROM inserted),
               (NOT p.written AND EXISTS (
                    SELECT 1 FROM unnest($6::bigint[], $8::uuid[]) AS x(append, event_id)
                    JOIN {schema}.events s ON s.event_id = x.event_id
                    WHERE x.append = p.ord)) AS stored
        FROM placed p CROSS JOIN head
        ORDER BY p.ord;
END
$fn$;

CREATE FUNCTION {schema}.append_one(
    text, int, bigint, uuid[], text[], text[], text[], text[], text[], uuid[], uuid[], bigint
) RETURNS TABLE (
    o_ord bigint, o_written boolean, o_passed boolean, o_actual bigint, o_before bigint,
    o_head bigint, o_inserted bigint, o_stored boolean
) LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY
        WITH state AS (
            SELECT coalesce((SELECT e.stream_version FROM {schema}.events e
                             WHERE e.stream_id = $1
                             ORDER BY e.stream_version DESC LIMIT 1), 0) AS actual
        ), checked AS MATERIALIZED (
            -- Evaluated once, before the first row is inserted (every row needs it).
            SELECT s.actual, p.passed,
                   CASE WHEN p.passed THEN greatest({schema}.layer_positions($12, cardinality($4)) - 1, 0)
                        ELSE 0 END AS head
            FROM state s,
                 LATERAL (SELECT CASE $2 WHEN 0 THEN true
                                         WHEN 1 THEN s.actual = 0
                                         WHEN 2 THEN s.actual > 0
                                         ELSE s.actual = $3 END AS passed) p
        ), inserted AS (
            INSERT INTO {schema}.events (
                position, event_id, stream_id, stream_version, event_type,
                data, data_text, metadata, metadata_text, causation_id, correlation_id, created_at
            )
            SELECT c.head + e.k, e.event_id, $1, c.actual + e.k, e.event_type,
                   e.data::jsonb, e.data_text,
                   coalesce(e.metadata, CASE WHEN e.metadata_text IS NULL THEN '{}' END)::jsonb, e.metadata_text,
                   e.causation_id, e.correlation_id, now()
            FROM checked c,
                 unnest($4, $5, $6, $7, $8, $9, $10, $11) WITH ORDINALITY
                     AS e(event_id, event_type, data, data_text, metadata, metadata_text, causation_id, correlation_id, k)
            WHERE c.passed
            RETURNING 1
        )
        SELECT 1::bigint, c.passed, c.passed, c.actual, 0::bigint, c.head, (SELECT count(*) FROM inserted),
               (NOT c.passed AND EXISTS (SELECT 1 FROM {schema}.events s WHERE s.event_id = ANY ($4)))
        FROM checked c;
END
$fn$;
