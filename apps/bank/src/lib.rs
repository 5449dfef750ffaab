//! BankAPI on Rewind: open accounts, deposit, withdraw, transfer and close, over
//! JSON/HTTP.
//!
//! Layout: [`domain`] holds the rules (pure); [`app`] wires them into a Rewind
//! application (router, middleware, subscriptions).

pub mod app;
pub mod domain;
pub mod read_model;
