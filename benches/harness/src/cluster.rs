//! W7 ("cluster"): 1, then 2, then 4 `bank serve` processes sharing one PostgreSQL
//! schema, the way the bank scales out, with W6's load split between them.
//!
//! Each step starts from an empty store: a fresh schema, N servers started one after
//! another on it (each on its own 127.0.0.1:0 port), W6's 1,000 accounts opened
//! through the first, then one load tool per server, all at once, for W6's duration,
//! W6's connections split evenly over them. The processes share the accounts, so a
//! deposit may meet a stream another process moved (the aggregate then reloads and
//! retries), and appends from every process serialize on the schema's advisory lock;
//! only the `accounts` projector's lease holder projects, and the others' deposits
//! wait for the checkpoint it announces (NOTIFY). What W7 shows is what all of that costs or
//! gains against one process. The step's rate is the sum of the processes' rates,
//! its latency the worst process's; the schema is dropped after every step.

use crate::backend::{drop_schema, fresh_schema_name};
use crate::http::{self, LoadTool, Loaded, Pressure, Request, Server, W6_THREADS};
use crate::measure::Measurement;
use crate::workloads::Sizes;
use std::path::Path;

/// How many processes each step runs, in order; the first is the ratios' base.
pub const PROCESSES: [usize; 3] = [1, 2, 4];

/// One step of W7, measured.
#[derive(Debug, Clone)]
pub struct Step {
    /// The sum of the processes' rates, with the worst process's p50 and p99.
    pub total: Measurement,
    /// Each process's own run, in the order the servers started.
    pub each: Vec<Loaded>,
    /// How busy the whole machine's CPU was during the load (0–1), where `/proc/stat` tells.
    pub cpu_busy: Option<f64>,
}

/// The table's label for a step.
pub fn label(processes: usize) -> String {
    let noun = if processes == 1 { "process" } else { "processes" };
    format!("W7 HTTP deposits, {processes} {noun} on one PostgreSQL schema")
}

/// `total` connections over `processes` servers, as even as can be (the first get
/// one more when it does not divide); each server needs at least one.
pub fn split(total: usize, processes: usize) -> anyhow::Result<Vec<usize>> {
    anyhow::ensure!(processes > 0, "W7 needs at least one process");
    anyhow::ensure!(
        total >= processes,
        "{total} connections cannot be split over {processes} processes (at least one each)"
    );
    let (each, rest) = (total / processes, total % processes);
    Ok((0..processes).map(|i| each + usize::from(i < rest)).collect())
}

/// wrk threads per server: W6's two in all while they divide over the servers, one
/// each beyond that (a wrk process has at least one thread, and one thread drives one
/// server), so 4 processes take 4 threads.
pub fn threads_per_process(processes: usize) -> usize {
    (W6_THREADS / processes.max(1)).max(1)
}

/// One figure for processes that ran at the same time: their rates add up (`ops`
/// is the sum, `seconds` chosen so that `ops_per_sec` is the sum of theirs), their
/// latency is the worst one's. `None` for no processes.
pub fn combine(parts: &[Measurement]) -> Option<Measurement> {
    if parts.is_empty() {
        return None;
    }
    let ops: u64 = parts.iter().map(|m| m.ops).sum();
    let rate: f64 = parts.iter().map(Measurement::ops_per_sec).sum();
    let longest = parts.iter().map(|m| m.seconds).fold(0.0, f64::max);
    let seconds = if rate > 0.0 { ops as f64 / rate } else { longest };
    // A process without a figure leaves the worst unknown rather than better than it is.
    let worst = |get: fn(&Measurement) -> Option<f64>| -> Option<f64> {
        parts.iter().map(get).try_fold(0.0, |worst: f64, v| v.map(|v| worst.max(v)))
    };
    Some(Measurement { ops, seconds, p50_us: worst(|m| m.p50_us), p99_us: worst(|m| m.p99_us) })
}

/// Runs one step: `processes` servers on a fresh schema at `url`.
pub async fn run(bank: &Path, tool: &LoadTool, url: &str, sizes: &Sizes, processes: usize) -> anyhow::Result<Step> {
    let connections = split(sizes.http_connections, processes)?;
    let schema = fresh_schema_name();
    let database = http::schema_url(url, &schema);
    let mut servers = Vec::with_capacity(processes);
    let mut started = Ok(());
    // One after another: the first creates the schema, the rest find it migrated.
    for i in 0..processes {
        match Server::start(bank, &database).await {
            Ok(server) => servers.push(server),
            Err(error) => {
                started = Err(error.context(format!("starting bank serve {} of {processes}", i + 1)));
                break;
            }
        }
    }
    let step = match started {
        Ok(()) => drive(&servers, tool, &connections, sizes).await,
        Err(error) => Err(error),
    };
    for server in &mut servers {
        server.stop().await;
    }
    drop_schema(url, &schema).await?;
    step
}

async fn drive(servers: &[Server], tool: &LoadTool, connections: &[usize], sizes: &Sizes) -> anyhow::Result<Step> {
    let first = servers.first().map(|s| s.base.as_str()).unwrap_or_default();
    let accounts = http::open_accounts(first, sizes.http_accounts).await?;
    let threads = threads_per_process(servers.len());
    // A directory per run: each tool writes its own script.
    let dirs = (0..servers.len())
        .map(|i| tempfile::Builder::new().prefix(&format!("rewind-bench-w7-{i}-")).tempdir())
        .collect::<Result<Vec<_>, _>>()?;
    let runs = servers.iter().zip(connections).zip(&dirs).map(|((server, &connections), dir)| {
        let pressure = Pressure { connections, threads, seconds: sizes.http_seconds };
        http::load(tool, &server.base, Request::Deposits(&accounts), pressure, dir.path())
    });
    let before = cpu_sample();
    let each = futures_util::future::join_all(runs).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let cpu_busy = before.zip(cpu_sample()).and_then(|(a, b)| busy_between(a, b));
    let parts: Vec<Measurement> = each.iter().map(|l| l.measurement.clone()).collect();
    let total = combine(&parts).ok_or_else(|| anyhow::anyhow!("no process ran"))?;
    Ok(Step { total, each, cpu_busy })
}

/// Busy and total jiffies of all CPUs so far.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuSample {
    busy: u64,
    total: u64,
}

fn cpu_sample() -> Option<CpuSample> {
    parse_cpu_line(std::fs::read_to_string("/proc/stat").ok()?.lines().next()?)
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal
/// (guest time is already in user); idle and iowait are the idle part.
fn parse_cpu_line(line: &str) -> Option<CpuSample> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    if values.len() < 5 {
        return None;
    }
    let total: u64 = values.iter().sum();
    Some(CpuSample { busy: total - values[3] - values[4], total })
}

fn busy_between(before: CpuSample, after: CpuSample) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)?;
    let busy = after.busy.checked_sub(before.busy)?;
    Some(busy as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ops: u64, seconds: f64, p99: Option<f64>) -> Measurement {
        Measurement { ops, seconds, p50_us: p99.map(|p| p / 2.0), p99_us: p99 }
    }

    #[test]
    fn connections_split_evenly_and_never_to_nothing() {
        assert_eq!(split(64, 1).unwrap(), vec![64]);
        assert_eq!(split(64, 2).unwrap(), vec![32, 32]);
        assert_eq!(split(64, 4).unwrap(), vec![16; 4]);
        assert_eq!(split(64, 3).unwrap(), vec![22, 21, 21]);
        assert_eq!(split(3, 3).unwrap(), vec![1, 1, 1]);
        assert!(split(2, 4).is_err());
        assert!(split(64, 0).is_err());
    }

    #[test]
    fn wrk_threads_stay_at_w6s_two_while_they_can() {
        let total = |n: usize| n * threads_per_process(n);
        assert_eq!((threads_per_process(1), total(1)), (2, 2));
        assert_eq!((threads_per_process(2), total(2)), (1, 2));
        assert_eq!((threads_per_process(4), total(4)), (1, 4));
        assert_eq!(threads_per_process(0), 2);
    }

    #[test]
    fn rates_add_up_and_the_worst_latency_wins() {
        let total = combine(&[m(1_000, 1.0, Some(20_000.0)), m(3_000, 2.0, Some(35_000.0))]).unwrap();
        assert_eq!(total.ops, 4_000);
        assert!((total.ops_per_sec() - 2_500.0).abs() < 1e-9, "{}", total.ops_per_sec());
        assert_eq!((total.p50_us, total.p99_us), (Some(17_500.0), Some(35_000.0)));
        let unknown = combine(&[m(10, 1.0, Some(1.0)), m(10, 1.0, None)]).unwrap();
        assert_eq!(unknown.p99_us, None);
        let idle = combine(&[m(0, 5.0, None), m(0, 4.0, None)]).unwrap();
        assert_eq!((idle.ops_per_sec(), idle.seconds), (0.0, 5.0));
        assert!(combine(&[]).is_none());
    }

    #[test]
    fn labels_count_processes() {
        assert_eq!(label(1), "W7 HTTP deposits, 1 process on one PostgreSQL schema");
        assert_eq!(label(4), "W7 HTTP deposits, 4 processes on one PostgreSQL schema");
    }

    #[test]
    fn cpu_lines_parse_and_busy_is_a_fraction() {
        let before = parse_cpu_line("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        assert_eq!(before, CpuSample { busy: 150, total: 1_000 });
        let after = parse_cpu_line("cpu  400 0 150 1400 50 0 0 0 0 0").unwrap();
        assert_eq!(busy_between(before, after), Some(0.4));
        assert_eq!(busy_between(after, after), None);
        assert!(parse_cpu_line("cpu0 1 2 3 4 5").is_none());
        assert!(parse_cpu_line("cpu  1 2 x 4 5").is_none());
        assert!(parse_cpu_line("cpu  1 2").is_none());
    }
}
