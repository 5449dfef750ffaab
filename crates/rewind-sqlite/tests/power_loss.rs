//! Power loss and disk faults, on the fault-injecting file system (`rewind-faultfs`).
//!
//! A kill -9 alone proves little: the killed process's writes stay in the OS's
//! cache. Here the store runs in a child process (this test binary again, as
//! [`power_loss_child`]) on a FUSE mount served by the test; the parent kills the
//! child, then cuts the power, which drops every write since each file's last
//! fsync, and starts a new child on what is left. Each child first prints every
//! stored event and the file's `PRAGMA integrity_check`, then appends from several
//! tasks, printing `ACK` once an append returned and `ERR` when it failed.
//!
//! * Five rounds of kill -9 + cut: every acknowledged event is there, in place,
//!   and the file is intact. The same rounds with `Synchronous::Normal` must lose
//!   an acknowledged event, which shows the check can fail.
//! * fsync answering EIO: the store refuses every later write, even once fsync
//!   works again, and nothing it acknowledged is lost by the cut that follows.
//! * ENOSPC: appends fail with an error that says the disk is full, the file stays
//!   intact, and appends succeed again once there is room.
//!
//! Skipped, saying so, only where /dev/fuse is missing. The test process never
//! opens the database itself (see `rewind_faultfs` on why).

mod common;

use common::{events, read_everything};
use rewind::{EventStore, ExpectedVersion, GlobalPosition, StreamVersion};
use rewind_faultfs::FaultFs;
use rewind_sqlite::{SqliteConfig, SqliteStore, Synchronous};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Names the child's database file; without it the child test does nothing.
const DB_ENV: &str = "REWIND_SQLITE_POWER_LOSS_DB";
const SYNC_ENV: &str = "REWIND_SQLITE_POWER_LOSS_SYNC";
const WRITERS_ENV: &str = "REWIND_SQLITE_POWER_LOSS_WRITERS";
const CHILD: &str = "power_loss_child";
/// The child stops by itself after this many appends per writer.
const MAX_APPENDS: u64 = 20_000;

/// One event the child reported: acknowledged (`ACK`) or found stored (`HAVE`).
#[derive(Debug, Clone, PartialEq)]
struct Event {
    event_id: Uuid,
    stream_id: String,
    version: StreamVersion,
    position: GlobalPosition,
}

impl Event {
    fn parse(fields: &str) -> Option<Event> {
        let mut fields = fields.split_whitespace();
        let event = Event {
            event_id: fields.next()?.parse().ok()?,
            stream_id: fields.next()?.to_owned(),
            version: StreamVersion(fields.next()?.parse().ok()?),
            position: GlobalPosition(fields.next()?.parse().ok()?),
        };
        fields.next().is_none().then_some(event)
    }
}

/// A line of the child's report.
#[derive(Debug)]
enum Line {
    Have(Event),
    Integrity(String),
    Ready,
    Ack(usize, Event),
    Err(usize, String),
}

impl Line {
    fn parse(line: &str) -> Option<Line> {
        // libtest's "test power_loss_child ... " may begin the child's first line.
        let line = line.rsplit_once(" ... ").map_or(line, |(_, report)| report);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "HAVE" => Event::parse(rest).map(Line::Have),
            "INTEGRITY" => Some(Line::Integrity(rest.to_owned())),
            "READY" => Some(Line::Ready),
            "ACK" => {
                let (writer, event) = rest.split_once(' ')?;
                Some(Line::Ack(writer.parse().ok()?, Event::parse(event)?))
            }
            "ERR" => {
                let (writer, message) = rest.split_once(' ')?;
                Some(Line::Err(writer.parse().ok()?, message.to_owned()))
            }
            _ => None,
        }
    }
}

#[test]
#[ignore = "the child process of the power_loss tests; does nothing on its own"]
fn power_loss_child() {
    let Some(path) = std::env::var_os(DB_ENV) else { return };
    let sync = match std::env::var(SYNC_ENV).as_deref() {
        Ok("normal") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let writers: usize = std::env::var(WRITERS_ENV).ok().and_then(|w| w.parse().ok()).unwrap_or(4);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let config = SqliteConfig::default().synchronous(sync);
        let store = Arc::new(SqliteStore::open_with(&path, config).await.expect("child: open"));
        let mut report = String::new();
        for event in read_everything(&*store).await {
            let (id, stream, version, position) =
                (event.event_id, &event.stream_id, event.stream_version.0, event.position.0);
            report.push_str(&format!("HAVE {id} {stream} {version} {position}\n"));
        }
        let check = rusqlite::Connection::open(&path).expect("child: integrity connection");
        let integrity: String = check.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("child: check");
        drop(check);
        report.push_str(&format!("INTEGRITY {integrity}\nREADY\n"));
        print(&report);
        let tasks: Vec<_> = (0..writers).map(|w| tokio::spawn(append_and_report(store.clone(), w))).collect();
        for task in tasks {
            task.await.expect("child: writer");
        }
    });
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    // The parent closing the pipe ends the child here.
    out.write_all(text.as_bytes()).expect("child: stdout");
    out.flush().expect("child: stdout");
}

async fn append_and_report(store: Arc<SqliteStore>, writer: usize) {
    let stream = format!("power-{writer}");
    let mut version = store.stream_version(&stream).await.expect("child: version");
    for i in 0..MAX_APPENDS {
        let batch = events(1 + (i % 3) as usize);
        match store.append(&stream, ExpectedVersion::Exact(version), batch.clone()).await {
            Ok(appended) => {
                let mut lines = String::new();
                for (k, event) in batch.iter().enumerate() {
                    let (k, id) = (k as u64, event.event_id);
                    let (v, p) = (version.0 + 1 + k, appended.first_position.0 + k);
                    lines.push_str(&format!("ACK {writer} {id} {stream} {v} {p}\n"));
                }
                print(&lines);
                version = appended.stream_version;
            }
            Err(error) => {
                print(&format!("ERR {writer} {}\n", format!("{error:#}").replace('\n', " ")));
                // Paces a store that refuses everything; nothing waits on this.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let Ok(now) = store.stream_version(&stream).await {
                    version = now;
                }
            }
        }
    }
}

/// A running child and its report.
struct Run {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// What the child found stored when it opened the file.
    stored: Vec<Event>,
}

impl Run {
    /// Starts a child on `path` and reads its report up to `READY`; asserts the file
    /// is intact.
    fn start(path: &Path, sync: &str, writers: usize) -> Run {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args(["--exact", CHILD, "--nocapture", "--include-ignored", "--test-threads=1"])
            .env(DB_ENV, path)
            .env(SYNC_ENV, sync)
            .env(WRITERS_ENV, writers.to_string())
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
        let mut stored = Vec::new();
        loop {
            let Some(line) = lines.next() else { panic!("the child ended before READY: {:?}", child.wait()) };
            match Line::parse(&line.expect("child stdout")) {
                Some(Line::Have(event)) => stored.push(event),
                Some(Line::Integrity(result)) => assert_eq!(result, "ok", "PRAGMA integrity_check"),
                Some(Line::Ready) => return Run { child, lines, stored },
                _ => {}
            }
        }
    }

    /// The next `ACK` or `ERR` line.
    fn next(&mut self) -> Line {
        loop {
            let Some(line) = self.lines.next() else { panic!("the child ended early: {:?}", self.child.wait()) };
            if let Some(line @ (Line::Ack(..) | Line::Err(..))) = Line::parse(&line.expect("child stdout")) {
                return line;
            }
        }
    }

    /// kill -9, then every line the child printed before it died.
    fn kill(mut self) -> Vec<Line> {
        self.child.kill().expect("SIGKILL the child");
        let rest = self.lines.by_ref().map_while(Result::ok).filter_map(|line| Line::parse(&line)).collect();
        self.child.wait().expect("reap the child");
        rest
    }
}

impl Drop for Run {
    /// A failed assertion leaves no child behind holding files on the mount.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Acknowledged events that `stored` does not hold where they were acknowledged.
fn lost<'a>(acknowledged: &'a [Event], stored: &[Event]) -> Vec<&'a Event> {
    let by_id: HashMap<Uuid, &Event> = stored.iter().map(|e| (e.event_id, e)).collect();
    acknowledged.iter().filter(|ack| by_id.get(&ack.event_id) != Some(ack)).collect()
}

fn mounted() -> Option<FaultFs> {
    if !FaultFs::available() {
        eprintln!("SKIPPED: /dev/fuse is missing, so the power-loss tests cannot mount their file system");
        return None;
    }
    Some(FaultFs::mount().expect("mount the fault-injecting file system"))
}

/// Rounds of: a child appends, is killed after a random number of acks, the power
/// is cut. Returns, per round, how many acknowledged events the next child lacked.
fn kill_and_cut_rounds(fs: &mut FaultFs, sync: &str, rounds: usize) -> Vec<usize> {
    let path = fs.path().join("events.db");
    let mut acknowledged: Vec<Event> = Vec::new();
    let mut losses = Vec::new();
    let mut run = Run::start(&path, sync, 4);
    for round in 0..rounds {
        let kill_after = rand::random_range(20..400);
        for _ in 0..kill_after {
            if let Line::Ack(_, event) = run.next() {
                acknowledged.push(event);
            }
        }
        acknowledged.extend(acks(run.kill()));
        let cut = fs.power_cut().expect("power cut");
        run = Run::start(&path, sync, 4);
        let lost = lost(&acknowledged, &run.stored);
        eprintln!(
            "{sync}, round {round}: {} acknowledged in all, {} lost; cut: {cut:?}",
            acknowledged.len(),
            lost.len()
        );
        losses.push(lost.len());
        // What a cut took is gone for good; later rounds check only what still stands.
        acknowledged = run.stored.clone();
    }
    run.kill();
    losses
}

#[test]
fn kill_9_and_power_cuts_lose_no_acknowledged_append() {
    let Some(mut fs) = mounted() else { return };
    let losses = kill_and_cut_rounds(&mut fs, "full", 5);
    assert!(losses.iter().all(|&lost| lost == 0), "acknowledged appends lost per round: {losses:?}");
    assert!(fs.fsyncs() > 0, "the store fsynced through the file system");
}

#[test]
fn without_fsync_a_power_cut_loses_acknowledged_appends_so_the_check_can_fail() {
    let Some(mut fs) = mounted() else { return };
    let losses = kill_and_cut_rounds(&mut fs, "normal", 5);
    assert!(losses.iter().any(|&lost| lost > 0), "Synchronous::Normal lost nothing: {losses:?}");
}

/// Reads lines until every writer has reported an error at least once, passing
/// acks to `acknowledged`; returns the errors.
fn until_every_writer_failed(run: &mut Run, writers: usize, acknowledged: &mut Vec<Event>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut failed = vec![false; writers];
    while failed.iter().any(|f| !f) {
        match run.next() {
            Line::Ack(_, event) => acknowledged.push(event),
            Line::Err(writer, message) => {
                failed[writer] = true;
                errors.push(message);
            }
            _ => {}
        }
    }
    errors
}

/// The acknowledged events among `lines`.
fn acks(lines: impl IntoIterator<Item = Line>) -> impl Iterator<Item = Event> {
    lines.into_iter().filter_map(|line| match line {
        Line::Ack(_, event) => Some(event),
        _ => None,
    })
}

/// The events acknowledged among the next `lines` lines of a run.
fn acknowledged_of(run: &mut Run, lines: usize) -> Vec<Event> {
    acks((0..lines).map(|_| run.next())).collect()
}

/// Kills the run, cuts the power, and starts a child on the file again, which checks
/// its integrity: every acknowledged append must be there.
fn kill_cut_and_check(fs: &mut FaultFs, run: Run, writers: usize, mut acknowledged: Vec<Event>) {
    acknowledged.extend(acks(run.kill()));
    fs.power_cut().expect("power cut");
    let run = Run::start(&fs.path().join("events.db"), "full", writers);
    assert_eq!(lost(&acknowledged, &run.stored), Vec::<&Event>::new(), "acknowledged appends lost");
    run.kill();
}

fn fsync_eio_poisons_the_store(writers: usize) {
    let Some(mut fs) = mounted() else { return };
    let path = fs.path().join("events.db");
    let mut run = Run::start(&path, "full", writers);
    let mut acknowledged = acknowledged_of(&mut run, 50);
    fs.fail_fsync(true);
    until_every_writer_failed(&mut run, writers, &mut acknowledged);
    assert!(fs.failed_fsyncs() > 0, "an fsync failed");
    fs.fail_fsync(false);
    // Every writer failed once; from then on the store must refuse every write
    // (the kernel may have dropped the pages it could not write).
    let mut failed_since = 0;
    while failed_since < 20 * writers {
        match run.next() {
            Line::Ack(writer, event) => panic!("writer {writer} was acknowledged after its append failed: {event:?}"),
            Line::Err(_, message) => {
                assert!(message.contains("fsync"), "the refusal says why: {message}");
                failed_since += 1;
            }
            _ => {}
        }
    }
    kill_cut_and_check(&mut fs, run, writers, acknowledged);
}

#[test]
fn fsync_eio_under_concurrent_appends_makes_the_store_refuse_writes() {
    fsync_eio_poisons_the_store(4);
}

#[test]
fn fsync_eio_of_a_lone_commit_makes_the_store_refuse_writes() {
    fsync_eio_poisons_the_store(1);
}

#[test]
fn a_full_disk_is_a_clear_error_and_appends_succeed_once_there_is_room() {
    let Some(mut fs) = mounted() else { return };
    let path = fs.path().join("events.db");
    let writers = 4;
    let mut run = Run::start(&path, "full", writers);
    let mut acknowledged = acknowledged_of(&mut run, 50);
    fs.disk_full(true);
    let errors = until_every_writer_failed(&mut run, writers, &mut acknowledged);
    assert!(fs.refused_writes() > 0, "a write was refused");
    assert!(errors.iter().all(|e| e.contains("full")), "every error says the disk is full: {errors:?}");
    fs.disk_full(false);
    let mut succeeded = vec![false; writers];
    while succeeded.iter().any(|s| !s) {
        if let Line::Ack(writer, event) = run.next() {
            succeeded[writer] = true;
            acknowledged.push(event);
        }
    }
    kill_cut_and_check(&mut fs, run, writers, acknowledged);
}
