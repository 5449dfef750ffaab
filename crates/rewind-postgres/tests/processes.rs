//! The global order across real processes: 4 child processes × 8 writer tasks append to
//! one schema, with transactions held open on purpose after their positions are
//! assigned and appends failing their version check, while a follower in this process
//! tails `read_all`. The follower must see every acknowledged event exactly once, in
//! increasing position order, and nothing of a failed append. This is the promise any
//! change to how appends of many processes commit must keep (issue 17).

mod common;

use rewind::conformance::{follow, write_randomly};
use rewind_postgres::PostgresStore;
use rewind_postgres::options::SlowCommits;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

const CHILD_ENV: &str = "REWIND_PROCESSES_CHILD";
const PROCESSES: usize = 4;
const WRITERS: usize = 8;
const APPENDS: usize = 60;

/// One child: 8 writers on one store, each append's ids printed as `ACK` or `FAIL`.
#[test]
#[ignore = "a child process of followers_never_skip_across_four_processes; does nothing alone"]
fn appending_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.splitn(3, '|');
    let (Some(url), Some(schema), Some(index)) = (parts.next(), parts.next(), parts.next()) else { return };
    let index: u64 = index.parse().expect("child index");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // The test harness has printed `test appending_child ... ` with no newline yet.
    println!();
    runtime.block_on(async move {
        // Every few transactions sleeps inside, after its positions are assigned.
        let slow = SlowCommits { every: 3 + index, delay: Duration::from_millis(15 + 5 * index) };
        let options = common::options(url, schema).pool_size(2).slow_commits(slow);
        let store = Arc::new(PostgresStore::connect_with(options).await.expect("open store"));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_randomly(store.clone(), index as usize * WRITERS + w, APPENDS)))
            .collect();
        for writer in writers {
            let (acknowledged, failed) = writer.await.expect("writer");
            acknowledged.iter().for_each(|id| println!("ACK {id}"));
            failed.iter().for_each(|id| println!("FAIL {id}"));
        }
        println!("DONE");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_never_skip_across_four_processes() {
    let Some(url) = common::database_url("followers_never_skip_across_four_processes") else { return };
    let schema = common::fresh_schema();
    let store = Arc::new(common::open(&url, &schema).await);
    let done = Arc::new(Notify::new());
    let follower = tokio::spawn(follow(store.clone(), done.clone()));

    let children: Vec<_> = (0..PROCESSES)
        .map(|index| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", "appending_child", "--nocapture", "--include-ignored", "--test-threads=1"])
                .env(CHILD_ENV, format!("{url}|{schema}|{index}"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let readers: Vec<_> = children
        .into_iter()
        .map(|mut child| {
            let stdout = child.stdout.take().expect("stdout");
            std::thread::spawn(move || {
                let lines: Vec<String> = BufReader::new(stdout).lines().map_while(Result::ok).collect();
                let status = child.wait().expect("reap child");
                (status, lines)
            })
        })
        .collect();
    let (mut acknowledged, mut failed) = (HashSet::new(), HashSet::new());
    for reader in readers {
        let (status, lines) = tokio::task::spawn_blocking(move || reader.join().expect("reader")).await.expect("join");
        assert!(status.success(), "a child failed: {status}");
        assert_eq!(lines.iter().filter(|l| *l == "DONE").count(), 1, "the child finished");
        for line in lines {
            match line.split_once(' ') {
                Some(("ACK", id)) => assert!(acknowledged.insert(id.parse::<Uuid>().expect("id"))),
                Some(("FAIL", id)) => assert!(failed.insert(id.parse::<Uuid>().expect("id"))),
                _ => {}
            }
        }
    }
    done.notify_one();
    let seen = follower.await.expect("follower");

    let positions: Vec<u64> = seen.iter().map(|(p, _)| p.0).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions increase along the order");
    let ids: Vec<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    let distinct: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no event seen twice");
    assert!(failed.len() > 50, "the load included failing appends ({})", failed.len());
    assert!(acknowledged.len() > 1_000, "a thousand events and more ({})", acknowledged.len());
    assert!(distinct.is_disjoint(&failed), "nothing of a failed append is readable");
    let missed: Vec<_> = acknowledged.difference(&distinct).take(5).collect();
    assert!(missed.is_empty(), "the follower skipped acknowledged events, such as {missed:?}");
    let unknown: Vec<_> = distinct.difference(&acknowledged).take(5).collect();
    assert!(unknown.is_empty(), "the follower saw events no writer acknowledged, such as {unknown:?}");
    let raw = common::raw_client(&url).await;
    raw.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.expect("drop schema");
}
