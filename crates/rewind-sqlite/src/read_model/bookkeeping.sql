-- Subscription bookkeeping: checkpoints of event handlers and process managers,
-- dead letters, and process manager instance state.
CREATE TABLE IF NOT EXISTS rewind_subscriptions (
    name     TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rewind_dead_letters (
    subscription TEXT NOT NULL,
    position     INTEGER NOT NULL,
    event_id     TEXT NOT NULL,
    event        TEXT NOT NULL,
    error        TEXT NOT NULL,
    failed_at    TEXT NOT NULL,
    PRIMARY KEY (subscription, position)
);
CREATE TABLE IF NOT EXISTS rewind_process_instances (
    manager  TEXT NOT NULL,
    instance TEXT NOT NULL,
    state    TEXT NOT NULL,
    PRIMARY KEY (manager, instance)
);
-- The failure each running subscription has not got past (retrying or stopped),
-- for operators' tools in other processes; removed once it moves on.
CREATE TABLE IF NOT EXISTS rewind_subscription_failures (
    subscription TEXT PRIMARY KEY NOT NULL,
    state        TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    transient    INTEGER NOT NULL,
    error        TEXT NOT NULL,
    position     INTEGER,
    since        TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
