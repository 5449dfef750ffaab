//! The command-line face of the operations: a clap subcommand group an application
//! mounts in its own binary (`#[command(flatten)]`), and [`run`], which carries a
//! parsed command out against the application's [`RewindApp`] description.

use crate::app::RewindApp;
use crate::error::OpsError;
use crate::events::{self, Format};
use crate::export;
use crate::projections::{self, DeadLetterAction};
use crate::replay::{self, Until};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use rewind::{EventFilter, GlobalPosition};
use rewind_backend::{Backend, Database, OpenMode};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;

/// The database every operation works on.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArg {
    /// `sqlite://PATH` or `postgres://USER@HOST/DB[?schema=NAME]`.
    #[arg(long, env = "DATABASE_URL")]
    pub database: Database,
}

/// Operations every Rewind application gets.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Read the event store: streams, one stream, the global order, a live tail.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Projections and other subscriptions: status, rebuild, dead letters.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Copy the events up to a moment into an empty store and project them there.
    Replay(ReplayArgs),
    /// Write every event as JSON lines.
    Export(ExportArgs),
    /// Load an export into an empty store and rebuild the projections.
    Import(ImportArgs),
}

/// `events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List streams and their versions.
    Streams {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// Only streams whose id starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print one stream's events.
    Read {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// The stream id.
        stream: String,
        /// The first version to print (default: the first, or the last with --backward).
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// At most this many events.
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the global order.
    All {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// The first position to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only events of this type (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Follow new commits live until interrupted.
    Tail {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// Start at this position instead of the next commit.
        #[arg(long)]
        from: Option<u64>,
        /// Only events of this type (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `projections …`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each subscription's position, lag, state, last error and dead letters.
    Status {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Reset projectors and rebuild them from the origin (their dead letters with them).
    Rebuild {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// The projectors to rebuild.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Rebuild every projector.
        #[arg(long)]
        all: bool,
    },
    /// List dead letters, and optionally replay or skip them.
    DeadLetters {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
        /// Only this subscription's.
        #[arg(long)]
        name: Option<String>,
        /// Replay them in order: a projector's by rebuilding the projector, a
        /// process manager's or event handler's by handing it the event again;
        /// remove those that succeed.
        #[arg(long, conflicts_with = "skip")]
        replay: bool,
        /// Remove them without handling them.
        #[arg(long)]
        skip: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `replay …`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    db: DatabaseArg,
    /// Copy events committed up to this time (RFC 3339, e.g. 2026-11-27T09:30:00Z).
    #[arg(long, conflicts_with = "position", required_unless_present = "position")]
    until: Option<DateTime<Utc>>,
    /// Copy events up to this global position.
    #[arg(long)]
    position: Option<u64>,
    /// The new store (any backend; must be empty).
    #[arg(long)]
    into: Database,
}

/// `export …`
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    db: DatabaseArg,
    /// The file to write, `-` for standard output.
    #[arg(long)]
    out: PathBuf,
}

/// `import …`
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    db: DatabaseArg,
    /// The export file to read.
    #[arg(long = "in")]
    input: PathBuf,
}

fn format(json: bool) -> Format {
    if json { Format::Json } else { Format::Human }
}

fn filter(types: Vec<String>) -> EventFilter {
    EventFilter { stream_prefix: None, event_types: types }
}

/// Carries out `command` for `app`, writing results to `out` and a summary to
/// stderr. `stop` ends `events tail` (pass the process's shutdown signal).
pub async fn run(
    command: OpsCommand,
    app: &dyn RewindApp,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<(), OpsError> {
    let existing = |db: DatabaseArg| async move { Backend::open(&db.database, OpenMode::Existing).await };
    match command {
        OpsCommand::Events(command) => match command {
            EventsCommand::Streams { db, prefix, json } => {
                events::streams(&existing(db).await?.store, &prefix, format(json), out).await
            }
            EventsCommand::Read { db, stream, from, backward, limit, json } => {
                events::read(&existing(db).await?.store, &stream, from, backward, limit, format(json), out).await
            }
            EventsCommand::All { db, from, types, json } => {
                events::all(&existing(db).await?.store, GlobalPosition(from), &filter(types), format(json), out).await
            }
            EventsCommand::Tail { db, from, types, json } => {
                let backend = existing(db).await?;
                events::tail(&backend.store, from.map(GlobalPosition), &filter(types), format(json), out, stop).await
            }
        },
        OpsCommand::Projections(command) => match command {
            ProjectionsCommand::Status { db, json } => {
                let statuses = projections::status(app, &existing(db).await?).await?;
                projections::print_status(&statuses, json, out).map_err(OpsError::io("writing output"))
            }
            ProjectionsCommand::Rebuild { db, names, all: _ } => {
                let backend = existing(db).await?;
                let rebuilt = projections::rebuild(app, &backend, &names).await?;
                eprintln!("rebuilt {}", rebuilt.join(", "));
                Ok(())
            }
            ProjectionsCommand::DeadLetters { db, name, replay, skip, json } => {
                let action = match (replay, skip) {
                    (true, _) => DeadLetterAction::Replay,
                    (_, true) => DeadLetterAction::Skip,
                    _ => DeadLetterAction::List,
                };
                let backend = existing(db).await?;
                let handled = projections::dead_letters(app, &backend, name.as_deref(), action, json, out).await?;
                let count = handled.letters;
                match action {
                    DeadLetterAction::Replay if handled.rebuilt.is_empty() => {
                        eprintln!("replayed {count} dead letters")
                    }
                    DeadLetterAction::Replay => {
                        eprintln!("replayed {count} dead letters (rebuilt {})", handled.rebuilt.join(", "))
                    }
                    DeadLetterAction::Skip => eprintln!("skipped {count} dead letters"),
                    DeadLetterAction::List => {}
                }
                Ok(())
            }
        },
        OpsCommand::Replay(args) => {
            let until = match (args.until, args.position) {
                (Some(time), _) => Until::Time(time),
                (None, Some(position)) => Until::Position(GlobalPosition(position)),
                (None, None) => return Err(OpsError::Usage("give --until TIME or --position N".into())),
            };
            if args.into == args.db.database {
                return Err(OpsError::Usage("--into must be another database than --database".into()));
            }
            let source = existing(args.db).await?;
            let destination = Backend::open(&args.into, OpenMode::Empty).await?;
            let copied = replay::replay(app, &source, &destination, until).await?;
            eprintln!(
                "copied {} events into {}; projected by {}",
                copied.events,
                args.into,
                copied.projectors.join(", ")
            );
            Ok(())
        }
        OpsCommand::Export(args) => {
            let backend = existing(args.db).await?;
            let count = if args.out.as_os_str() == "-" {
                let mut stdout = std::io::BufWriter::with_capacity(1 << 20, out);
                export::export(&backend.store, &mut stdout).await?
            } else {
                let file = std::fs::File::create(&args.out)
                    .map_err(OpsError::io(format!("creating {}", args.out.display())))?;
                let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
                let count = export::export(&backend.store, &mut file).await?;
                file.into_inner()
                    .map_err(|e| OpsError::io("writing the export")(e.into_error()))?
                    .sync_all()
                    .map_err(OpsError::io("writing the export"))?;
                count
            };
            eprintln!("exported {count} events");
            Ok(())
        }
        OpsCommand::Import(args) => {
            // The whole file is checked before the destination is even opened.
            let total = export::check_file(&args.input)?;
            let backend = Backend::open(&args.db.database, OpenMode::Empty).await?;
            let projectors = replay::start_copy(app, &backend).await?;
            let head = export::import_file(&backend.store, &args.input, total).await?;
            let projectors = replay::finish_copy(&backend, projectors).await?;
            eprintln!("imported {} events; projected by {}", head.0, projectors.join(", "));
            Ok(())
        }
    }
}
