//! BankAPI on Rewind: open accounts, deposit, withdraw, transfer and close, over
//! JSON/HTTP.
//!
//! Layout: [`domain`] holds the rules (pure); [`app`] routes them; [`read_model`]
//! projects the events into SQL tables and answers queries; [`service`] runs it all
//! on SQLite or PostgreSQL (the `--database` URL is [`rewind_backend::Database`]); [`http`]
//! is the JSON API and [`server`] serves it within the [`limits`] of each connection; [`telemetry`] installs logs and traces; `main.rs` is the `bank` binary, which also
//! mounts Rewind's operations (`bank events`, `bank projections`, `bank replay`,
//! `bank export`, `bank import`).

pub mod app;
pub mod destination_check;
pub mod domain;
pub mod http;
pub mod limits;
pub mod read_model;
pub mod server;
pub mod service;
pub mod telemetry;
