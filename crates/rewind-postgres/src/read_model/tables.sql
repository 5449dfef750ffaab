-- Read-side bookkeeping. Projector checkpoints live beside the read model and are
-- written in the projector's own transactions; the rest serves event handlers and
-- process managers.
CREATE TABLE IF NOT EXISTS rewind_projections (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS rewind_subscriptions (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS rewind_dead_letters (
    subscription text        NOT NULL,
    position     bigint      NOT NULL,
    event_id     uuid        NOT NULL,
    event        jsonb       NOT NULL,
    error        text        NOT NULL,
    failed_at    timestamptz NOT NULL,
    PRIMARY KEY (subscription, position)
);
CREATE TABLE IF NOT EXISTS rewind_process_instances (
    manager  text  NOT NULL,
    instance text  NOT NULL,
    state    jsonb NOT NULL,
    PRIMARY KEY (manager, instance)
);
-- The failure each running subscription has not got past (retrying or stopped),
-- for operators' tools in other processes; removed once it moves on.
CREATE TABLE IF NOT EXISTS rewind_subscription_failures (
    subscription text        PRIMARY KEY,
    state        text        NOT NULL,
    attempt      integer     NOT NULL,
    transient    boolean     NOT NULL,
    error        text        NOT NULL,
    position     bigint,
    since        timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
