-- STRICT: a value of the wrong type is refused rather than stored.
CREATE TABLE IF NOT EXISTS removed_products (
    user_id         TEXT NOT NULL,
    item_id         TEXT NOT NULL,
    name            TEXT NOT NULL,
    price_in_cents  INTEGER NOT NULL,
    times_removed   INTEGER NOT NULL,
    last_removed_at TEXT NOT NULL,
    PRIMARY KEY (user_id, item_id)
) STRICT;
