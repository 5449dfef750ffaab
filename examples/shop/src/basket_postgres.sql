CREATE TABLE IF NOT EXISTS basket_orders (
    order_id    uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    checked_out boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS basket_lines (
    order_id       uuid NOT NULL,
    item_id        uuid NOT NULL,
    name           text NOT NULL,
    price_in_cents bigint NOT NULL,
    quantity       bigint NOT NULL,
    PRIMARY KEY (order_id, item_id)
);
