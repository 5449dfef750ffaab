//! `rewind-bench`: one command, one table. Runs the issue 7 workloads (the bank's
//! account: open and deposit) on Rewind over memory, SQLite and PostgreSQL, beside
//! the raw backend written directly and beside cqrs-es 0.5, in one run, and prints
//! one markdown table with the ratios and a goal check.
//!
//! ```text
//! cargo run --release -p rewind-bench -- [--quick] [--backends memory,sqlite,postgres]
//!     [--workloads W1,...,W7] [--database-url URL] [--peer-manifest PATH] [--out FILE]
//! ```
//!
//! W6 drives the real `bank serve` over HTTP with `wrk` (or `oha`) and then, on the
//! same server with the same tool, `GET /health`: that is W6's baseline ("raw"), the
//! HTTP stack's ceiling on this machine. W7 (PostgreSQL only) runs W6's load over 1,
//! 2 and 4 `bank serve` processes on one schema, a fresh schema per step; its rows'
//! baseline is the 1-process step. A plain run measures everything;
//! `--workloads W6` alone starts no W7.
//!
//! Layout: [`workloads`] (sizes, W1–W4 on Rewind), [`projection`] (W5 on Rewind),
//! [`raw`] (the raw baselines), [`peer`] (cqrs-es), [`http`] (W6), [`cluster`]
//! (W7), [`report`] (the table and the goals), [`measure`] (timing), [`backend`]
//! (fresh stores).

mod backend;
mod cluster;
mod http;
mod measure;
mod peer;
mod projection;
mod raw;
mod report;
mod workloads;

use anyhow::Context;
use backend::{Backend, Target};
use clap::Parser;
use measure::Measurement;
use peer::PeerResult;
use raw::{Baseline, Raw};
use report::{Other, Row};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use workloads::{Sizes, Workload};

#[derive(Parser)]
#[command(name = "rewind-bench", about = "Rewind beside the raw backends and cqrs-es: one run, one table")]
struct Cli {
    /// A tenth of the counts (as the peer's --quick) and 5 s of HTTP load (W6, and each W7 step).
    #[arg(long)]
    quick: bool,
    /// Which backends, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "memory,sqlite,postgres")]
    backends: Vec<Backend>,
    /// Which workloads, comma-separated: W1–W5 dispatch, W6 HTTP (and GET /health as its
    /// baseline), W7 HTTP over 1, 2 and 4 bank processes on one schema (PostgreSQL only).
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5,W6,W7")]
    workloads: Vec<Workload>,
    /// PostgreSQL server for the postgres rows (each run uses a fresh schema and drops it).
    #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The peer's Cargo.toml; defaults to benches/peer-cqrs-es/Cargo.toml in the workspace.
    #[arg(long)]
    peer_manifest: Option<PathBuf>,
    /// Leave the peer out.
    #[arg(long)]
    no_peer: bool,
    /// Longest run of the peer per backend, in seconds [default: 60 quick, 3600 full].
    #[arg(long)]
    peer_timeout: Option<u64>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where things are: the workspace, our target directory, cargo.
struct Paths {
    root: PathBuf,
    target: PathBuf,
    cargo: PathBuf,
}

impl Paths {
    fn discover() -> anyhow::Result<Paths> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
        let exe = std::env::current_exe()?;
        // …/<target>/release/rewind-bench
        let target = exe.parent().and_then(Path::parent).context("the binary is not in a target directory")?;
        let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
        Ok(Paths { root, target: target.to_owned(), cargo })
    }
}

/// Everything a run collects.
#[derive(Default)]
struct Run {
    rows: Vec<Row>,
    notices: Vec<String>,
}

impl Run {
    fn notice(&mut self, text: String) {
        eprintln!("notice: {text}");
        self.notices.push(text);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rewind-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let paths = Paths::discover()?;
    let sizes = Sizes::new(cli.quick);
    let mut run = Run::default();
    let wants = |w: Workload| cli.workloads.contains(&w);
    let dispatching = Workload::ALL[..5].iter().any(|w| wants(*w));

    let peer = if dispatching && !cli.no_peer { build_peer(&cli, &paths, &mut run).await } else { None };
    let http_wanted: Vec<Workload> = [Workload::W6, Workload::W7].into_iter().filter(|w| wants(*w)).collect();
    let http = if http_wanted.is_empty() { None } else { prepare_http(&paths, &http_wanted, &mut run).await };
    if http.is_some() && wants(Workload::W6) {
        run.notice(format!(
            "W6 raw = {HEALTH}: right after the deposits, on the same server, with the same connections and \
             duration; the HTTP stack's ceiling here (memory and SQLite answer it in process, PostgreSQL \
             with one query per request)"
        ));
    }
    if http.is_some() && wants(Workload::W7) {
        cluster_notices(&cli, &mut run);
    }

    for &backend in &cli.backends {
        let url = cli.database_url.as_deref();
        if backend == Backend::Postgres && url.is_none() {
            run.notice("PostgreSQL rows skipped: set TEST_DATABASE_URL or pass --database-url".into());
            continue;
        }
        eprintln!("== {backend} (at {:.0} s)", started.elapsed().as_secs_f64());
        let peer_results = match (&peer, dispatching) {
            (Some(binary), true) => run_peer(binary, backend, &cli, url, &mut run).await,
            _ => Vec::new(),
        };
        if dispatching {
            rewind_and_raw(backend, url, &cli.workloads, &sizes, &peer_results, &mut run).await;
        }
        if let Some((bank, tool)) = &http {
            if wants(Workload::W6) {
                let row = w6(bank, tool, backend, url, &sizes, &mut run).await;
                run.rows.push(row);
            }
            if let (Backend::Postgres, Some(url), true) = (backend, url, wants(Workload::W7)) {
                w7(bank, tool, url, &sizes, &mut run).await;
            }
        }
    }

    let report = render(&cli, &run, started.elapsed());
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Builds the peer; `None` (with a notice) if it cannot be built.
async fn build_peer(cli: &Cli, paths: &Paths, run: &mut Run) -> Option<PathBuf> {
    let manifest = cli.peer_manifest.clone().unwrap_or_else(|| paths.root.join("benches/peer-cqrs-es/Cargo.toml"));
    eprintln!("building the peer ({})…", manifest.display());
    let started = Instant::now();
    let built = peer::build(&paths.cargo, &manifest, &paths.target.join("peer")).await;
    eprintln!("  built in {:.0} s", started.elapsed().as_secs_f64());
    match built {
        Ok(binary) => Some(binary),
        Err(error) => {
            run.notice(format!("cqrs-es columns show –: {error:#}"));
            None
        }
    }
}

async fn run_peer(binary: &Path, backend: Backend, cli: &Cli, url: Option<&str>, run: &mut Run) -> Vec<PeerResult> {
    let limit = Duration::from_secs(cli.peer_timeout.unwrap_or(if cli.quick { 60 } else { 3_600 }));
    eprintln!("cqrs-es on {backend}…");
    let started = Instant::now();
    let ran = peer::run(binary, backend, cli.quick, url, &cli.workloads, limit).await;
    eprintln!("  cqrs-es on {backend}: {:.0} s", started.elapsed().as_secs_f64());
    match ran {
        Ok((results, notice)) => {
            if let Some(notice) = notice {
                run.notice(notice);
            }
            for result in &results {
                if let Some(error) = &result.error {
                    run.notice(format!("cqrs-es {} on {backend} failed: {error}", result.workload));
                }
            }
            results
        }
        Err(error) => {
            run.notice(format!("cqrs-es on {backend} did not run: {error:#}"));
            Vec::new()
        }
    }
}

/// Rewind's W1–W5 on a fresh store, then the raw baselines beside it.
async fn rewind_and_raw(
    backend: Backend,
    url: Option<&str>,
    selected: &[Workload],
    sizes: &Sizes,
    peer: &[PeerResult],
    run: &mut Run,
) {
    let target = match Target::open(backend, url).await {
        Ok(target) => target,
        Err(error) => {
            run.notice(format!("{backend}: no store: {error:#}"));
            return;
        }
    };
    let mut rewind = Vec::new();
    let mut grouping = Vec::new();
    for &workload in selected.iter().filter(|w| **w <= Workload::W4) {
        let before = target.commits();
        let result = workloads::run(&target, workload, sizes).await;
        if let (Some((c0, a0)), Some((c1, a1))) = (before, target.commits()) {
            grouping.push(format!("{workload} {:.1}", (a1 - a0) as f64 / (c1 - c0).max(1) as f64));
        }
        rewind.push((workload, progress(backend, workload, result)));
    }
    if !grouping.is_empty() {
        run.notice(format!(
            "{backend} group commit, appends per commit (W3 counts its untimed opens too): {}",
            grouping.join(", ")
        ));
    }
    if selected.contains(&Workload::W5) {
        let result = catch_up(&target, sizes).await;
        rewind.push((Workload::W5, progress(backend, Workload::W5, result)));
    }
    let raws = baselines(&target, selected, sizes, run).await;
    if let Err(error) = target.close().await {
        run.notice(format!("{backend}: cleaning up: {error:#}"));
    }
    for (workload, result) in rewind {
        let matching = match workload {
            Workload::W1 | Workload::W4 => Baseline::Single1,
            Workload::W2 | Workload::W3 => Baseline::Single32,
            _ => Baseline::Upserts,
        };
        run.rows.push(Row {
            label: workload.describe(sizes),
            workload: Some(workload),
            backend,
            processes: None,
            rewind: result,
            peer: peer_cell(peer, workload),
            raw: raw_cell(&raws, matching, backend),
        });
    }
    for extra in [Baseline::Batch100, Baseline::Copy] {
        if let Some(Some(m)) = raws.iter().find(|(b, _)| *b == extra).map(|(_, m)| m) {
            run.rows.push(Row {
                label: format!("raw only: {} rows", workloads::thousands(m.ops as f64)),
                workload: None,
                backend,
                processes: None,
                rewind: Err(String::new()),
                peer: Other::Missing,
                raw: Other::Rate(m.ops_per_sec(), extra.label(backend).into()),
            });
        }
    }
}

/// W5: catches up on what W1–W4 wrote (or, run alone, on W3's events written first, untimed).
async fn catch_up(target: &Target, sizes: &Sizes) -> anyhow::Result<Measurement> {
    use rewind::EventStore;
    if target.shared().head_position().await?.0 == 0 {
        workloads::run(target, Workload::W3, sizes).await?;
    }
    projection::catch_up(target).await
}

/// Prints a finished workload to stderr and keeps its error as text.
fn progress(backend: Backend, workload: Workload, result: anyhow::Result<Measurement>) -> Result<Measurement, String> {
    match result {
        Ok(m) => {
            eprintln!("  {workload} {backend}: {} ops in {:.2} s = {:.0}/s", m.ops, m.seconds, m.ops_per_sec());
            Ok(m)
        }
        Err(error) => {
            eprintln!("  {workload} {backend}: failed: {error:#}");
            Err(format!("failed: {error:#}"))
        }
    }
}

/// The raw baselines the selected workloads need.
async fn baselines(
    target: &Target,
    selected: &[Workload],
    sizes: &Sizes,
    run: &mut Run,
) -> Vec<(Baseline, Option<Measurement>)> {
    let wants = |w: Workload| selected.contains(&w);
    let events = if wants(Workload::W5) { raw::all_events(target).await } else { Ok(Vec::new().into()) };
    let events = match events {
        Ok(events) => events,
        Err(error) => {
            run.notice(format!("{}: reading the events for the W5 baseline: {error:#}", target.backend));
            Vec::new().into()
        }
    };
    let mut plan = Vec::new();
    if wants(Workload::W1) || wants(Workload::W4) {
        plan.push((Baseline::Single1, sizes.opens));
    }
    if wants(Workload::W2) || wants(Workload::W3) {
        plan.push((Baseline::Single32, sizes.deposits));
    }
    plan.push((Baseline::Batch100, sizes.bulk_rows));
    plan.push((Baseline::Copy, sizes.bulk_rows));
    if wants(Workload::W5) && !events.is_empty() {
        plan.push((Baseline::Upserts, events.len()));
    }
    let mut raw = Raw::new(target);
    let mut done = Vec::new();
    for (baseline, rows) in plan {
        let label = baseline.label(target.backend);
        match raw.run(baseline, rows, &events).await {
            Ok(Some(m)) => {
                eprintln!("  raw {label} {}: {:.0}/s", target.backend, m.ops_per_sec());
                done.push((baseline, Some(m)));
            }
            Ok(None) => {}
            Err(error) => {
                run.notice(format!("raw {label} on {}: {error:#}", target.backend));
                done.push((baseline, None));
            }
        }
    }
    done
}

fn raw_cell(raws: &[(Baseline, Option<Measurement>)], baseline: Baseline, backend: Backend) -> Other {
    match raws.iter().find(|(b, _)| *b == baseline) {
        Some((_, Some(m))) => Other::Rate(m.ops_per_sec(), baseline.label(backend).into()),
        _ => Other::Missing,
    }
}

fn peer_cell(results: &[PeerResult], workload: Workload) -> Other {
    let found = results.iter().find(|r| r.workload.eq_ignore_ascii_case(&workload.to_string()) && r.error.is_none());
    match found.and_then(|r| r.ops_per_sec) {
        Some(rate) => Other::Rate(rate, "cqrs-es".into()),
        None => Other::Missing,
    }
}

/// Finds the load tool and builds the bank; `None` (with a notice) skips the HTTP
/// workloads (`wanted`: W6, W7 or both).
async fn prepare_http(paths: &Paths, wanted: &[Workload], run: &mut Run) -> Option<(PathBuf, http::LoadTool)> {
    let names = wanted.iter().map(Workload::to_string).collect::<Vec<_>>().join(" and ");
    let Some(tool) = http::find_load_tool() else {
        run.notice(format!(
            "{names} skipped: no load tool (install wrk, e.g. apt-get install wrk, or cargo install oha)"
        ));
        return None;
    };
    eprintln!("building the bank…");
    let started = Instant::now();
    let built = http::build_bank(&paths.cargo, &paths.root, &paths.target).await;
    eprintln!("  built in {:.0} s", started.elapsed().as_secs_f64());
    match built {
        Ok(bank) => Some((bank, tool)),
        Err(error) => {
            run.notice(format!("{names} skipped: {error:#}"));
            None
        }
    }
}

/// What the HTTP baselines' column says for W6.
const HEALTH: &str = "GET /health, same tool";

async fn w6(
    bank: &Path,
    tool: &http::LoadTool,
    backend: Backend,
    url: Option<&str>,
    sizes: &Sizes,
    run: &mut Run,
) -> Row {
    let mut raw = Other::Missing;
    let rewind = match http::run(bank, tool, backend, url, sizes).await {
        Ok(http::Outcome::Measured { deposits, health }) => {
            if let Some(failed) = &deposits.failed {
                run.notice(format!("W6 {backend}: {failed}"));
            }
            match health {
                Ok(health) => {
                    if let Some(failed) = &health.failed {
                        run.notice(format!("W6 {backend} GET /health: {failed}"));
                    }
                    let m = &health.measurement;
                    eprintln!("  W6 {backend} GET /health ({}): {:.0}/s", health.command, m.ops_per_sec());
                    raw = Other::Rate(m.ops_per_sec(), HEALTH.into());
                }
                Err(error) => run.notice(format!("W6 {backend}: GET /health not measured: {error}")),
            }
            progress(backend, Workload::W6, Ok(deposits.measurement))
        }
        Ok(http::Outcome::Skipped(why)) => {
            run.notice(format!("W6 {backend} skipped: {why}"));
            Err("skipped".into())
        }
        Err(error) => progress(backend, Workload::W6, Err(error)),
    };
    Row {
        label: Workload::W6.describe(sizes),
        workload: Some(Workload::W6),
        backend,
        processes: None,
        rewind,
        peer: Other::Missing,
        raw,
    }
}

/// Says where W7 will not run: it needs PostgreSQL among the backends, with a URL.
fn cluster_notices(cli: &Cli, run: &mut Run) {
    let others: Vec<String> =
        cli.backends.iter().filter(|b| **b != Backend::Postgres).map(Backend::to_string).collect();
    let postgres = cli.backends.contains(&Backend::Postgres);
    if !postgres || cli.database_url.is_none() {
        let why = if postgres { "set TEST_DATABASE_URL or pass --database-url" } else { "add postgres to --backends" };
        run.notice(format!("W7 skipped: it runs on PostgreSQL only ({why})"));
    } else if !others.is_empty() {
        run.notice(format!("W7 runs on PostgreSQL only, not on {}", others.join(" or ")));
    }
}

/// W7: a row per process count, each with the 1-process total as its baseline.
async fn w7(bank: &Path, tool: &http::LoadTool, url: &str, sizes: &Sizes, run: &mut Run) {
    let mut base = None;
    for processes in cluster::PROCESSES {
        eprintln!("  W7 {processes} process(es)…");
        let rewind = match cluster::run(bank, tool, url, sizes, processes).await {
            Ok(step) => {
                run.notice(format!("W7 {processes}: {}", cluster_note(&step)));
                for (i, each) in step.each.iter().enumerate() {
                    if let Some(failed) = &each.failed {
                        run.notice(format!("W7 {processes}, process {}: {failed}", i + 1));
                    }
                }
                progress(Backend::Postgres, Workload::W7, Ok(step.total))
            }
            Err(error) => progress(Backend::Postgres, Workload::W7, Err(error)),
        };
        let rate = rewind.as_ref().ok().map(Measurement::ops_per_sec);
        let raw = match base {
            Some(one) if processes > 1 => Other::Rate(one, "W7, 1 process".into()),
            _ => Other::Missing,
        };
        if processes == 1 {
            base = rate;
        }
        run.rows.push(Row {
            label: cluster::label(processes),
            workload: Some(Workload::W7),
            backend: Backend::Postgres,
            processes: Some(processes),
            rewind,
            peer: Other::Missing,
            raw,
        });
    }
}

/// One W7 step in words: the tool per process, each process's rate and p99, the CPU.
fn cluster_note(step: &cluster::Step) -> String {
    let mut commands: Vec<&str> = step.each.iter().map(|e| e.command.as_str()).collect();
    commands.dedup();
    let load = match commands.as_slice() {
        [one] => format!("{} × {one}", step.each.len()),
        several => several.join(", "),
    };
    let threads = match step.each.iter().map(|e| e.threads).sum::<Option<usize>>() {
        Some(threads) => format!("{threads} load-tool threads in all (W6: {})", http::W6_THREADS),
        None => "the load tool picks its own threads".to_owned(),
    };
    let each: Vec<String> = step
        .each
        .iter()
        .map(|e| {
            let m = &e.measurement;
            format!("{}/s (p99 {})", workloads::thousands(m.ops_per_sec()), report::micros(m.p99_us))
        })
        .collect();
    let mut note =
        format!("{load} at once, {threads}; per process {}; p50 and p99 are the worst process's", each.join(", "));
    if let Some(busy) = step.cpu_busy {
        note.push_str(&format!("; the machine's CPU {:.0} % busy during the load", busy * 100.0));
    }
    note
}

fn render(cli: &Cli, run: &Run, elapsed: Duration) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Rewind side by side: {} mode, {cores} cores, fsync on everywhere, {:.0} s.\n\n",
        if cli.quick { "quick" } else { "full" },
        elapsed.as_secs_f64()
    );
    out.push_str(&report::table(&run.rows));
    out.push('\n');
    out.push_str(&report::goals(&run.rows));
    if !run.notices.is_empty() {
        out.push_str("\nNotes:\n\n");
        for notice in &run.notices {
            out.push_str(&format!("- {notice}\n"));
        }
    }
    out
}
