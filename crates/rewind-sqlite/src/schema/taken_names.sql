-- The first object of a file without a Rewind schema that has a name the schema
-- is about to create (the migrations' tables and the indexes SQLite makes for them).
SELECT name FROM sqlite_schema
WHERE name IN ('events', 'streams', 'snapshots')
   OR name LIKE 'sqlite_autoindex_events_%'
   OR name LIKE 'sqlite_autoindex_streams_%'
   OR name LIKE 'sqlite_autoindex_snapshots_%'
LIMIT 1
