//! Operations for Rewind applications, as a command set any application mounts in
//! its own binary: inspect the event store, see and rebuild projections, replay
//! history up to a moment into a new store, export and import.
//!
//! An application describes itself once ([`RewindApp`]: its router and its
//! subscriptions); the commands in [`cli`] use that description, so a rebuild or a
//! replay runs exactly the projectors the service runs, and never its side effects.
//!
//! * The `--database` URL and opening it: [`rewind_backend`], shared with the server.
//! * [`events`]: reading streams and the global order; [`export`]: JSON lines out
//!   and in; [`replay`]: a copy as of a moment.
//! * [`projections`]: status, rebuild, dead letters; [`progress`]: progress bars.
//!
//! ```no_run
//! use clap::{Parser, Subcommand};
//! # struct MyApp;
//! # #[async_trait::async_trait]
//! # impl rewind_cli::RewindApp for MyApp {
//! #     fn application(&self, backend: &rewind_cli::Backend) -> rewind::Application {
//! #         rewind::Application::builder_shared(backend.store.clone()).build()
//! #     }
//! #     async fn subscriptions(&self, builder: rewind::SubscriptionsBuilder, _: &rewind_cli::Backend)
//! #         -> Result<rewind::SubscriptionsBuilder, rewind::StoreError> { Ok(builder) }
//! # }
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: Command,
//! }
//!
//! #[derive(Subcommand)]
//! enum Command {
//!     /// The application's own commands go here (serve, …).
//!     Serve,
//!     #[command(flatten)]
//!     Ops(rewind_cli::OpsCommand),
//! }
//!
//! # async fn main_() -> Result<(), rewind_cli::OpsError> {
//! match Cli::parse().command {
//!     Command::Serve => { /* … */ }
//!     Command::Ops(ops) => rewind_cli::run(ops, &MyApp, &mut std::io::stdout(), std::future::pending()).await?,
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod error;
pub mod events;
pub mod export;
pub mod progress;
pub mod projections;
pub mod replay;

pub use app::RewindApp;
pub use cli::{OpsCommand, run};
pub use error::OpsError;
pub use rewind_backend::{Backend, BadDatabaseUrl, Database, OpenError, OpenMode, ReadModel};
