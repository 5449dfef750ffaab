-- Each projector's checkpoint lives in its read model, written in the same
-- transaction as the projector's changes.
CREATE TABLE IF NOT EXISTS rewind_projections (
    name     TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
);
