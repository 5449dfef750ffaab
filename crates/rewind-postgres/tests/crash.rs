//! Crash safety: a child process appends in a loop and reports each acknowledged
//! append on stdout; it is killed with SIGKILL at a random moment; a new store on the
//! schema holds every acknowledged event, with dense versions and increasing positions, and
//! still accepts appends.
//!
//! The child is this test binary itself, running the ignored test `crash_child`.

mod common;

use rewind::conformance::event;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, StreamVersion};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

const URL_VAR: &str = "REWIND_CRASH_URL";
const SCHEMA_VAR: &str = "REWIND_CRASH_SCHEMA";

/// One acknowledged append as the child reports it.
#[derive(Debug, PartialEq, Eq)]
struct Ack {
    event_id: Uuid,
    stream: String,
    version: u64,
    position: u64,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let ack = Ack {
        event_id: parts.next()?.parse().ok()?,
        stream: parts.next()?.to_owned(),
        version: parts.next()?.parse().ok()?,
        position: parts.next()?.parse().ok()?,
    };
    Some(ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let Some(url) = common::database_url("acknowledged_appends_survive_sigkill") else { return };
    let schema = common::fresh_schema();
    drop(common::open(&url, &schema).await);
    let kill_after = 200 + (Uuid::new_v4().as_u64_pair().0 % 800) as usize;
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--include-ignored", "--test-threads=1"])
        .env(URL_VAR, &url)
        .env(SCHEMA_VAR, &schema)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acks = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read child") {
        acks.extend(parse(&line));
        if acks.len() == kill_after {
            child.start_kill().expect("SIGKILL");
        }
    }
    let status = child.wait().await.expect("child status");
    assert!(acks.len() >= kill_after, "child stopped early ({status}) after {} acks", acks.len());
    assert!(!status.success(), "the child was killed, not finished");

    let store = common::open(&url, &schema).await;
    // Everything committed before the kill is readable once the transactions running
    // now (the killed child's are rolled back; other tests' may be open) have ended.
    store.settled_head().await.expect("settled head");
    let mut all = Vec::new();
    let mut from = GlobalPosition::START.next();
    loop {
        let batch = store.read_all(from, 1_000, &EventFilter::all()).await.expect("read_all");
        let Some(last) = batch.last() else { break };
        from = last.position.next();
        all.extend(batch);
    }
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "increasing positions");
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for e in &all {
        let version = versions.entry(&e.stream_id).or_insert(0);
        *version += 1;
        assert_eq!(e.stream_version.0, *version, "versions of {} are dense", e.stream_id);
    }
    let stored: HashMap<Uuid, (&str, u64, u64)> =
        all.iter().map(|e| (e.event_id, (e.stream_id.as_str(), e.stream_version.0, e.position.0))).collect();
    for ack in &acks {
        let found = stored.get(&ack.event_id);
        assert_eq!(found, Some(&(ack.stream.as_str(), ack.version, ack.position)), "acknowledged {ack:?} is stored");
    }
    let stream = &acks[0].stream;
    let current = store.stream_version(stream).await.expect("version");
    let next = store.append(stream, ExpectedVersion::Exact(current), vec![event("After", serde_json::json!({}))]).await;
    assert_eq!(next.expect("append after the crash").stream_version, current.next());
}

/// The child: 8 tasks append to their own streams as fast as they can and print each
/// acknowledged event. Runs only when started by the test above (it is ignored, and
/// returns at once without its environment); stops by itself after 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by acknowledged_appends_survive_sigkill"]
async fn crash_child() {
    let (Ok(url), Ok(schema)) = (std::env::var(URL_VAR), std::env::var(SCHEMA_VAR)) else { return };
    let store = Arc::new(common::open(&url, &schema).await);
    let stdout = Arc::new(tokio::sync::Mutex::new(tokio::io::stdout()));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (store, stdout) = (store.clone(), stdout.clone());
            tokio::spawn(async move {
                let stream = format!("crash-{t}");
                let mut version = 0;
                while tokio::time::Instant::now() < deadline {
                    let events: Vec<_> =
                        (0..1 + version % 3).map(|i| event("Tick", serde_json::json!({ "i": i }))).collect();
                    let result = store
                        .append(&stream, ExpectedVersion::Exact(StreamVersion(version)), events.clone())
                        .await
                        .expect("append");
                    let mut out = String::new();
                    for (offset, e) in (0..).zip(&events) {
                        let position = result.first_position.0 + offset;
                        out.push_str(&format!("ack {} {stream} {} {position}\n", e.event_id, version + 1 + offset));
                    }
                    version = result.stream_version.0;
                    let mut stdout = stdout.lock().await;
                    stdout.write_all(out.as_bytes()).await.expect("stdout");
                    stdout.flush().await.expect("flush");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}
