//! The output protocol: one JSON object per workload on the real stdout, nothing else.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

pub const IMPL: &str = "cqrs-es";

/// What a workload measured: how many operations, how long in all, and (for commands) the
/// wall time of each `cqrs.execute(...)`.
pub struct Measured {
    pub ops: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// Something the run noticed that does not invalidate the figure (printed as `"warning"`).
    pub warning: Option<String>,
}

/// Nearest-rank percentile in whole microseconds; `None` when nothing was timed.
pub fn percentile_us(sorted: &[Duration], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index].as_micros() as u64)
}

pub fn line(backend: &str, workload: &str, result: Result<Measured, String>) -> Value {
    match result {
        Ok(mut m) => {
            m.latencies.sort_unstable();
            let seconds = m.elapsed.as_secs_f64();
            let rate = if seconds > 0.0 { m.ops as f64 / seconds } else { 0.0 };
            let mut line = json!({
                "impl": IMPL,
                "backend": backend,
                "workload": workload,
                "ops": m.ops,
                "seconds": round(seconds, 3),
                "ops_per_sec": round(rate, 1),
                "p50_us": percentile_us(&m.latencies, 0.50),
                "p99_us": percentile_us(&m.latencies, 0.99),
            });
            if let Some(warning) = m.warning {
                line["warning"] = Value::String(warning);
            }
            line
        }
        Err(error) => json!({
            "impl": IMPL,
            "backend": backend,
            "workload": workload,
            "error": error,
        }),
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The protocol's stdout. `MemStore` `println!`s two lines for every command it loads and
/// commits, so file descriptor 1 is pointed at /dev/null for the whole run and the protocol
/// is written to a duplicate of the original stdout taken before that.
pub struct Protocol {
    out: File,
}

impl Protocol {
    pub fn take_stdout() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain descriptor juggling at start-up, before any other thread exists;
        // every return value is checked, and `saved` is a fresh descriptor owned by the File.
        unsafe {
            let saved = libc::dup(1);
            if saved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if null < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(null, 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(null);
            Ok(Self { out: File::from_raw_fd(saved) })
        }
    }

    pub fn emit(&mut self, value: &Value) {
        let mut text = value.to_string();
        text.push('\n');
        if let Err(error) = self.out.write_all(text.as_bytes()).and_then(|()| self.out.flush()) {
            eprintln!("peer-cqrs-es: cannot write to stdout: {error}");
        }
        eprint!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&v, 0.50), Some(50));
        assert_eq!(percentile_us(&v, 0.99), Some(99));
        assert_eq!(percentile_us(&v[..1], 0.99), Some(1));
        assert_eq!(percentile_us(&[], 0.5), None);
    }
}
