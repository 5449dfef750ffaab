CREATE TABLE IF NOT EXISTS removed_products (
    user_id         uuid NOT NULL,
    item_id         uuid NOT NULL,
    name            text NOT NULL,
    price_in_cents  bigint NOT NULL,
    times_removed   bigint NOT NULL,
    last_removed_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, item_id)
);
