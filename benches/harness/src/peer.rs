//! The peer: cqrs-es 0.5 running the same workloads, in its own cargo project
//! (`benches/peer-cqrs-es/`). Built here with `cargo build --release
//! --manifest-path PATH` into a target directory of its own, then run once per
//! backend; it prints one JSON object per workload on stdout, read as it comes so a
//! run cut short by the time limit still keeps what it finished.

use crate::backend::Backend;
use crate::workloads::Workload;
use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// One line of the peer's output (other fields, such as its latencies, are not shown).
#[derive(Debug, Clone, Deserialize)]
pub struct PeerResult {
    /// `memory`, `sqlite` or `postgres`.
    pub backend: String,
    /// `W1` … `W5`.
    pub workload: String,
    /// Operations per second.
    #[serde(default)]
    pub ops_per_sec: Option<f64>,
    /// Why the workload failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// Builds the peer from `manifest` into `target_dir`; returns its binary.
pub async fn build(cargo: &Path, manifest: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(manifest.is_file(), "no peer project at {}", manifest.display());
    let output = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", cargo.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        anyhow::bail!(
            "building the peer failed ({}):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let binary = target_dir.join("release").join("peer-cqrs-es");
    anyhow::ensure!(binary.is_file(), "the peer built, but {} is missing", binary.display());
    Ok(binary)
}

/// Runs the peer on `backend` (the selected workloads of W1–W5). Lines that are not results are passed on to stderr;
/// after `limit` the peer is stopped and the results so far are returned with a notice.
pub async fn run(
    binary: &Path,
    backend: Backend,
    quick: bool,
    url: Option<&str>,
    workloads: &[Workload],
    limit: Duration,
) -> anyhow::Result<(Vec<PeerResult>, Option<String>)> {
    let mut command = Command::new(binary);
    command.args(["--backend", backend.name()]).stdin(Stdio::null()).stdout(Stdio::piped()).kill_on_drop(true);
    let workloads: Vec<String> = workloads.iter().filter(|w| **w <= Workload::W5).map(Workload::to_string).collect();
    command.args(["--workloads", &workloads.join(",")]);
    if quick {
        command.arg("--quick");
    }
    if let Some(url) = url {
        command.args(["--database-url", url]);
    }
    let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("the peer's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut results = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            match serde_json::from_str::<PeerResult>(&line) {
                Ok(result) if result.backend == backend.name() => results.push(result),
                Ok(result) => eprintln!("peer: ignoring a result for backend {}", result.backend),
                Err(_) if !line.trim().is_empty() => eprintln!("peer: {line}"),
                Err(_) => {}
            }
        }
        anyhow::Ok(())
    };
    let notice = match tokio::time::timeout(limit, read).await {
        Ok(read) => {
            read?;
            let status = child.wait().await?;
            (!status.success()).then(|| format!("cqrs-es on {backend} exited with {status}"))
        }
        Err(_) => {
            // SIGTERM first, so the peer may drop its schema; SIGKILL if it lingers.
            if let Some(pid) = child.id() {
                Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.ok();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                child.start_kill().ok();
                child.wait().await.ok();
            }
            Some(format!("cqrs-es on {backend} stopped after {limit:?}; workloads not finished show –"))
        }
    };
    Ok((results, notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peer_lines() {
        let ok: PeerResult = serde_json::from_str(
            r#"{"impl":"cqrs-es","backend":"sqlite","workload":"W3","ops":20000,"seconds":12.3,"ops_per_sec":1626.0,"p50_us":1800,"p99_us":5200}"#,
        )
        .unwrap();
        assert_eq!((ok.backend.as_str(), ok.workload.as_str(), ok.ops_per_sec), ("sqlite", "W3", Some(1626.0)));
        let failed: PeerResult = serde_json::from_str(
            r#"{"impl":"cqrs-es","backend":"memory","workload":"W5","ops":0,"seconds":0,"ops_per_sec":0,"p50_us":null,"p99_us":null,"error":"boom"}"#,
        )
        .unwrap();
        assert_eq!(failed.error.as_deref(), Some("boom"));
    }
}
