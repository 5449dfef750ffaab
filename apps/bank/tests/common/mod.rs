//! What the tests that run the real `bank` binary share: a server child process,
//! a fresh database URL per backend, and a direct read of a store's events.

#![allow(dead_code)] // each test file uses a different part

use rewind::{EventFilter, EventStore, GlobalPosition, RecordedEvent};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use uuid::Uuid;

/// A `bank serve` child process.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    pub fn start(database: &str) -> Server {
        Server::start_with(database, &[])
    }

    /// A server with extra `bank serve` arguments.
    pub fn start_with(database: &str, args: &[&str]) -> Server {
        // The server's log goes to a file, shown if it fails to start.
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn bank");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait().expect("wait");
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("bank serve --database {database} did not start ({status}):\n{log}");
        };
        let base = line.strip_prefix("listening on ").expect("listening line").to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, base, http: reqwest::Client::new() }
    }

    pub async fn post(&self, path: &str, body: Value, key: Option<&str>) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("get");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    pub async fn open(&self, balance: i64) -> String {
        let (status, body) =
            self.post("/api/accounts", json!({"account": {"initial_balance": balance}}), None).await.expect("open");
        assert_eq!(status, 201, "{body}");
        body["data"]["uuid"].as_str().expect("uuid").to_owned()
    }

    pub async fn open_many(&self, count: usize, balance: i64) -> Vec<String> {
        let mut accounts = Vec::with_capacity(count);
        for _ in 0..count {
            accounts.push(self.open(balance).await);
        }
        accounts
    }

    pub async fn balance(&self, account: &str) -> i64 {
        self.get(&format!("/api/accounts/{account}")).await.1["data"]["current_balance"].as_i64().expect("balance")
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    /// A test that fails leaves no server behind (a reaped one is not signalled again).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh database URL per backend: SQLite always, PostgreSQL when configured.
pub fn databases(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("bank.db").display())];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("rwt_{}_{}", seconds(), &Uuid::new_v4().simple().to_string()[..12]);
            let separator = if url.contains('?') { '&' } else { '?' };
            urls.push(format!("{url}{separator}schema={schema}"));
        }
        _ => eprintln!("PostgreSQL part skipped: TEST_DATABASE_URL is not set"),
    }
    urls
}

/// Every application event of the store behind `database`, read directly (the
/// framework's own `$` streams, recorded command refusals, left out).
pub async fn all_events(database: &str) -> Vec<RecordedEvent> {
    let mut all = every_event(database).await;
    all.retain(|e| !rewind::command_outcome::is_system_stream(&e.stream_id));
    all
}

/// Every event of the store behind `database`, read directly.
pub async fn every_event(database: &str) -> Vec<RecordedEvent> {
    let database: rewind_cli::Database = database.parse().expect("database");
    let backend = rewind_cli::Backend::open(&database, rewind_cli::OpenMode::Existing).await.expect("open");
    let store = backend.store.clone();
    store.settled_head().await.expect("settled head");
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = all.last().map_or(GlobalPosition(1), |e| e.position.next());
        let batch = store.read_all(from, 5_000, &EventFilter::all()).await.expect("read");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}
