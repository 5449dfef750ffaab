//! A measured run: how many operations, how long they took, and (for commands)
//! the latency of each one, summed up as p50 and p99. Also the one way every
//! concurrent workload here is driven: `callers` tasks sharing the operations.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one workload did.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Operations completed.
    pub ops: u64,
    /// Wall-clock seconds for all of them.
    pub seconds: f64,
    /// Median latency of one operation, in microseconds (none for bulk workloads).
    pub p50_us: Option<f64>,
    /// 99th percentile latency of one operation, in microseconds.
    pub p99_us: Option<f64>,
}

impl Measurement {
    /// A throughput-only measurement (bulk work, catch-up).
    pub fn throughput(ops: u64, elapsed: Duration) -> Measurement {
        Measurement { ops, seconds: elapsed.as_secs_f64(), p50_us: None, p99_us: None }
    }

    /// A measurement with the latency of every operation.
    pub fn with_latencies(elapsed: Duration, mut latencies: Vec<Duration>) -> Measurement {
        latencies.sort_unstable();
        let at = |q: f64| percentile(&latencies, q).map(|d| d.as_secs_f64() * 1e6);
        Measurement { ops: latencies.len() as u64, seconds: elapsed.as_secs_f64(), p50_us: at(0.50), p99_us: at(0.99) }
    }

    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 { self.ops as f64 / self.seconds } else { 0.0 }
    }
}

/// The `q` quantile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// Runs operations `0..ops` on `callers` concurrent tasks (caller `c` takes `c`,
/// `c + callers`, …), timing each operation and the whole run. The first error
/// ends the run.
pub async fn run_callers<F, Fut>(callers: usize, ops: usize, op: F) -> anyhow::Result<Measurement>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers.max(1))
        .map(|caller| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(ops / callers.max(1) + 1);
                for i in (caller..ops).step_by(callers.max(1)) {
                    let began = Instant::now();
                    op(i).await?;
                    latencies.push(began.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ops);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Measurement::with_latencies(start.elapsed(), latencies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let m = Measurement::with_latencies(Duration::from_secs(2), samples);
        assert_eq!((m.ops, m.p50_us, m.p99_us), (100, Some(50.0), Some(99.0)));
        assert_eq!(m.ops_per_sec(), 50.0);
        let empty = Measurement::with_latencies(Duration::from_secs(1), Vec::new());
        assert_eq!(empty.p50_us, None);
    }
}
