//! W6: HTTP deposits against the real `bank serve` binary on a fresh database,
//! driven by a standard load tool (`wrk` with a Lua script, or `oha`), and the
//! same tool's `GET /health` on the same server as the ceiling to compare with.
//!
//! The server starts on 127.0.0.1:0 and says where it listens on stdout; 1,000
//! accounts are opened over HTTP, then the tool posts `{"deposit_amount": 1}` to
//! `/api/accounts/:id/deposit`, spread over them, for a fixed time. Right after, on
//! the same server, with the same connections and duration, it sends `GET /health`:
//! the rate of this machine's HTTP stack (server, tool, loopback) with next to no
//! work behind it, so W6 reads as a fraction of what HTTP allows here. `/health`
//! answers `{"status":"ok","head":N}`; memory and SQLite read the head in process,
//! PostgreSQL with one `SELECT max(position)`, so there the ceiling includes a
//! database round trip. Only 2xx answers count as operations. The load tool and the
//! server share the machine. The server, the account opening and the load runs are
//! also what W7 (`cluster`) runs several of.

use crate::backend::{Backend, drop_schema, fresh_schema_name};
use crate::measure::Measurement;
use crate::workloads::Sizes;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// What W6 gave.
pub enum Outcome {
    /// Measured: the deposits, and `GET /health` on the same server with the same
    /// tool (or why that failed; the deposits stand without it).
    Measured { deposits: Loaded, health: Result<Loaded, String> },
    /// Not run, and why.
    Skipped(String),
}

/// What the load tool sends.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `POST /api/accounts/:id/deposit` with `{"deposit_amount": 1}`, round-robin
    /// over these accounts.
    Deposits(&'a [String]),
    /// `GET /health`.
    Health,
}

/// How hard the tool pushes one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// Open connections.
    pub connections: usize,
    /// wrk threads (at most one per connection; oha picks its own).
    pub threads: usize,
    /// Seconds of load.
    pub seconds: u64,
}

impl Pressure {
    /// W6's: all connections on one server, from two wrk threads.
    pub fn w6(sizes: &Sizes) -> Pressure {
        Pressure { connections: sizes.http_connections, threads: W6_THREADS, seconds: sizes.http_seconds }
    }
}

/// wrk threads in W6 (the load tool's share of the machine; W7 keeps to it where it can).
pub const W6_THREADS: usize = 2;

/// One run of the load tool against one server.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The 2xx answers, their rate and latency.
    pub measurement: Measurement,
    /// The command, short (`wrk -t2 -c64 -d5s`).
    pub command: String,
    /// The tool's threads (wrk); `None` where the tool picks its own (oha).
    pub threads: Option<usize>,
    /// The requests that failed, in words, if any did.
    pub failed: Option<String>,
}

/// A load tool found on `PATH`.
#[derive(Debug, Clone)]
pub enum LoadTool {
    /// `wrk` (driven by a Lua script).
    Wrk(PathBuf),
    /// `oha`.
    Oha(PathBuf),
}

/// `wrk`, else `oha`, else none.
pub fn find_load_tool() -> Option<LoadTool> {
    which("wrk").map(LoadTool::Wrk).or_else(|| which("oha").map(LoadTool::Oha))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// Builds the `bank` binary of the workspace at `root` into `target_dir`.
pub async fn build_bank(cargo: &Path, root: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "bank", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", cargo.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "building the bank failed: {}",
        String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
    );
    Ok(target_dir.join("release").join("bank"))
}

/// Runs W6 on `backend`.
pub async fn run(
    bank: &Path,
    tool: &LoadTool,
    backend: Backend,
    url: Option<&str>,
    sizes: &Sizes,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::Builder::new().prefix("rewind-bench-http-").tempdir()?;
    let schema = fresh_schema_name();
    let database = match (backend, url) {
        (Backend::Memory, _) => "memory://".to_owned(),
        (Backend::Sqlite, _) => format!("sqlite://{}", dir.path().join("bank.db").display()),
        (Backend::Postgres, Some(url)) => schema_url(url, &schema),
        (Backend::Postgres, None) => return Ok(Outcome::Skipped("no PostgreSQL URL".into())),
    };
    let outcome = match Server::start(bank, &database).await {
        Ok(mut server) => {
            let outcome = drive(&server.base, tool, dir.path(), sizes).await;
            server.stop().await;
            outcome
        }
        Err(error) => Ok(Outcome::Skipped(format!("bank serve --database {database} did not start: {error:#}"))),
    };
    // A server that failed after its migrations still leaves a schema behind.
    if let (Backend::Postgres, Some(url)) = (backend, url) {
        drop_schema(url, &schema).await?;
    }
    outcome
}

/// `url` with `schema=NAME` added to its query, which `bank serve` reads as the schema.
pub fn schema_url(url: &str, schema: &str) -> String {
    let separator = match url.find('?') {
        None => "?",
        Some(at) if at + 1 == url.len() || url.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{url}{separator}schema={schema}")
}

async fn drive(base: &str, tool: &LoadTool, dir: &Path, sizes: &Sizes) -> anyhow::Result<Outcome> {
    let accounts = open_accounts(base, sizes.http_accounts).await?;
    let deposits = load(tool, base, Request::Deposits(&accounts), Pressure::w6(sizes), dir).await?;
    let health = load(tool, base, Request::Health, Pressure::w6(sizes), dir).await.map_err(|e| format!("{e:#}"));
    Ok(Outcome::Measured { deposits, health })
}

/// Runs the load tool against the server at `base`; writes its script or URL list
/// into `dir` (one directory per concurrent run).
pub async fn load(
    tool: &LoadTool,
    base: &str,
    request: Request<'_>,
    pressure: Pressure,
    dir: &Path,
) -> anyhow::Result<Loaded> {
    anyhow::ensure!(pressure.connections > 0, "no connections to load {base} with");
    match tool {
        LoadTool::Wrk(wrk) => run_wrk(wrk, base, request, pressure, dir).await,
        LoadTool::Oha(oha) => run_oha(oha, base, request, pressure, dir).await,
    }
}

/// A running `bank serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Server {
    /// Starts the server and waits for its `listening on http://ADDR` line.
    pub async fn start(bank: &Path, database: &str) -> anyhow::Result<Server> {
        let mut child = Command::new(bank)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .env("RUST_LOG", "error")
            .env_remove("BANK_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bank.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(base) = line.strip_prefix("listening on ") {
                    return anyhow::Ok(Some(base.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        match listening {
            Ok(Ok(Some(base))) => {
                // Keep draining stdout so the server never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Server { child, base })
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    err.read_to_string(&mut stderr).await.ok();
                }
                child.wait().await.ok();
                let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                let error = lines.iter().find(|l| l.starts_with("error") || l.starts_with("bank:")).or(lines.last());
                anyhow::bail!("{}", error.copied().unwrap_or("exited without a word"))
            }
            Err(_) => {
                child.start_kill().ok();
                anyhow::bail!("no `listening on` line within 60 s")
            }
        }
    }

    /// Asks the server to shut down (SIGTERM), then kills it if it lingers.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.ok();
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            self.child.start_kill().ok();
            self.child.wait().await.ok();
        }
    }
}

/// Opens `n` accounts over HTTP, 16 at a time; returns their ids.
pub async fn open_accounts(base: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/accounts");
    let mut ids = Vec::with_capacity(n);
    let mut remaining = n;
    while remaining > 0 {
        let batch = remaining.min(16);
        let requests = (0..batch).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client
                    .post(&url)
                    .json(&serde_json::json!({"account": {"initial_balance": 1000}}))
                    .send()
                    .await?
                    .error_for_status()?;
                let body: serde_json::Value = response.json().await?;
                body["data"]["uuid"].as_str().map(str::to_owned).context("no data.uuid in the answer")
            }
        });
        for id in futures_util::future::join_all(requests).await {
            ids.push(id.context("opening an account over HTTP")?);
        }
        remaining -= batch;
    }
    Ok(ids)
}

/// The `done` of every wrk script: one JSON summary line.
const WRK_SUMMARY: &str = r#"done = function(summary, latency, requests)
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// A wrk script for `request`. Deposits: each request deposits into the next account
/// (requests are built once per thread in `init`, so the load tool spends its time
/// sending, not formatting). Health: no `request` function, so wrk sends its plain
/// `GET` of the URL's path. Both end with [`WRK_SUMMARY`].
fn wrk_script(request: Request<'_>) -> String {
    let Request::Deposits(accounts) = request else { return WRK_SUMMARY.to_owned() };
    let ids: Vec<String> = accounts.iter().map(|id| format!("\"{id}\"")).collect();
    format!(
        r#"local ids = {{{}}}
local requests = {{}}
local n = 0
init = function(args)
  for i, id in ipairs(ids) do
    requests[i] = wrk.format("POST", "/api/accounts/" .. id .. "/deposit",
      {{["content-type"] = "application/json"}}, '{{"deposit_amount": 1}}')
  end
end
request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end
{WRK_SUMMARY}"#,
        ids.join(",")
    )
}

async fn run_wrk(
    wrk: &Path,
    base: &str,
    request: Request<'_>,
    pressure: Pressure,
    dir: &Path,
) -> anyhow::Result<Loaded> {
    let (script, url) = match request {
        Request::Deposits(accounts) => {
            anyhow::ensure!(!accounts.is_empty(), "no accounts to deposit into");
            (dir.join("deposits.lua"), base.to_owned())
        }
        Request::Health => (dir.join("health.lua"), format!("{base}/health")),
    };
    std::fs::write(&script, wrk_script(request))?;
    // wrk refuses more threads than connections.
    let threads = pressure.threads.clamp(1, pressure.connections);
    let command = format!("wrk -t{threads} -c{} -d{}s", pressure.connections, pressure.seconds);
    let output = Command::new(wrk)
        .args([format!("-t{threads}"), format!("-c{}", pressure.connections), format!("-d{}s", pressure.seconds)])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix("WRK_JSON "))
        .with_context(|| format!("wrk printed no summary: {}", String::from_utf8_lossy(&output.stderr)))?;
    let summary: serde_json::Value = serde_json::from_str(json)?;
    let field = |name: &str| summary[name].as_f64().unwrap_or(0.0);
    let failed = field("non_2xx") + field("socket_errors");
    let ok = (field("requests") - failed).max(0.0) as u64;
    let failed = (failed > 0.0)
        .then(|| format!("{failed:.0} of {:.0} requests failed (non-2xx or socket errors)", field("requests")));
    let measurement = Measurement {
        ops: ok,
        seconds: field("duration_us") / 1e6,
        p50_us: Some(field("p50_us")),
        p99_us: Some(field("p99_us")),
    };
    Ok(Loaded { measurement, command, threads: Some(threads), failed })
}

async fn run_oha(
    oha: &Path,
    base: &str,
    request: Request<'_>,
    pressure: Pressure,
    dir: &Path,
) -> anyhow::Result<Loaded> {
    let mut command = Command::new(oha);
    command
        .args(["--no-tui", "--output-format", "json", "-z", &format!("{}s", pressure.seconds)])
        .args(["-c", &pressure.connections.to_string()]);
    match request {
        Request::Deposits(accounts) => {
            anyhow::ensure!(!accounts.is_empty(), "no accounts to deposit into");
            let urls = dir.join("urls");
            let lines: Vec<String> = accounts.iter().map(|id| format!("{base}/api/accounts/{id}/deposit")).collect();
            std::fs::write(&urls, lines.join("\n"))?;
            command
                .args(["-m", "POST", "-H", "content-type: application/json"])
                .args(["-d", r#"{"deposit_amount": 1}"#, "--urls-from-file"])
                .arg(&urls);
        }
        Request::Health => {
            command.arg(format!("{base}/health"));
        }
    }
    let output = command.stdin(Stdio::null()).output().await.with_context(|| format!("running {}", oha.display()))?;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("oha printed no JSON: {}", String::from_utf8_lossy(&output.stderr)))?;
    let codes = report["statusCodeDistribution"].as_object().cloned().unwrap_or_default();
    let count = |ok: bool| -> u64 {
        codes.iter().filter(|(code, _)| code.starts_with('2') == ok).filter_map(|(_, n)| n.as_u64()).sum()
    };
    let seconds = report["summary"]["total"].as_f64().unwrap_or(pressure.seconds as f64);
    let failed = (count(false) > 0).then(|| format!("{} requests answered non-2xx", count(false)));
    let percentile = |p: &str| report["latencyPercentiles"][p].as_f64().map(|s| s * 1e6);
    let measurement = Measurement { ops: count(true), seconds, p50_us: percentile("p50"), p99_us: percentile("p99") };
    let command = format!("oha -c{} -z{}s", pressure.connections, pressure.seconds);
    Ok(Loaded { measurement, command, threads: None, failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_joins_the_query() {
        let url = "postgres://postgres@127.0.0.1:5432/test";
        assert_eq!(schema_url(url, "s1"), format!("{url}?schema=s1"));
        assert_eq!(schema_url(&format!("{url}?sslmode=disable"), "s1"), format!("{url}?sslmode=disable&schema=s1"));
        assert_eq!(schema_url(&format!("{url}?"), "s1"), format!("{url}?schema=s1"));
    }

    #[test]
    fn health_scripts_send_no_requests_of_their_own() {
        let health = wrk_script(Request::Health);
        assert!(health.contains("WRK_JSON") && !health.contains("request ="), "{health}");
        let ids = ["a".to_owned(), "b".to_owned()];
        let deposits = wrk_script(Request::Deposits(&ids));
        assert!(deposits.starts_with(r#"local ids = {"a","b"}"#), "{deposits}");
        assert!(deposits.contains("request = function") && deposits.ends_with(WRK_SUMMARY), "{deposits}");
    }
}
