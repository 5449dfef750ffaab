-- STRICT: a value of the wrong type is refused rather than stored.
CREATE TABLE IF NOT EXISTS basket_orders (
    order_id    TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    checked_out INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS basket_lines (
    order_id       TEXT NOT NULL,
    item_id        TEXT NOT NULL,
    name           TEXT NOT NULL,
    price_in_cents INTEGER NOT NULL,
    quantity       INTEGER NOT NULL,
    PRIMARY KEY (order_id, item_id)
) STRICT;
