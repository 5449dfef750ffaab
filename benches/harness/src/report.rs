//! The one table (markdown) and the goal check under it.
//!
//! One row per workload and backend: Rewind's rate and latency, cqrs-es's rate,
//! the raw baseline that matches the workload (1 client for W1/W4, 32 clients for
//! W2/W3, the direct upserts for W5, `GET /health` on the same server for W6) and
//! the two ratios. Raw baselines that match no workload (100-row transactions, COPY)
//! get rows of their own. W7 has a row per process count, whose baseline is W7 with
//! one process, so its ratio column reads "÷ 1 process". A cell with no figure
//! shows –.

use crate::backend::Backend;
use crate::measure::Measurement;
use crate::workloads::{Workload, thousands};
use std::fmt::Write;

/// A figure from another system: its rate, or why there is none.
#[derive(Debug, Clone)]
pub enum Other {
    /// Operations per second, with what it was.
    Rate(f64, String),
    /// No figure.
    Missing,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran (the workload's description, or the raw baseline's).
    pub label: String,
    /// Which workload, if this is one.
    pub workload: Option<Workload>,
    /// Where.
    pub backend: Backend,
    /// W7: how many `bank serve` processes shared the schema (`None` elsewhere).
    pub processes: Option<usize>,
    /// Rewind's measurement, or why there is none (empty: a raw-only row).
    pub rewind: Result<Measurement, String>,
    /// cqrs-es.
    pub peer: Other,
    /// The matching raw baseline.
    pub raw: Other,
}

impl Row {
    fn rewind_rate(&self) -> Option<f64> {
        self.rewind.as_ref().ok().map(Measurement::ops_per_sec)
    }

    fn rewind_p99(&self) -> Option<f64> {
        self.rewind.as_ref().ok().and_then(|m| m.p99_us)
    }
}

fn rate(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), thousands)
}

/// `850 µs`, `3.5 ms`, `22 ms`, or – for none.
pub fn micros(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(us) if us >= 10_000.0 => format!("{:.0} ms", us / 1_000.0),
        Some(us) if us >= 1_000.0 => format!("{:.1} ms", us / 1_000.0),
        Some(us) => format!("{us:.0} µs"),
    }
}

fn ratio(rewind: Option<f64>, other: &Other) -> String {
    match (rewind, other) {
        (Some(r), Other::Rate(o, _)) if *o > 0.0 => format!("{:.2}×", r / o),
        _ => "–".to_owned(),
    }
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | backend | Rewind ops/s | p50 | p99 | cqrs-es ops/s | Rewind ÷ cqrs-es | raw ops/s (which raw) | Rewind ÷ raw |\n",
    );
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n");
    for row in rows {
        let (rewind, p50, p99) = match &row.rewind {
            Ok(m) => (rate(Some(m.ops_per_sec())), micros(m.p50_us), micros(m.p99_us)),
            Err(why) if why.is_empty() => ("–".into(), "–".into(), "–".into()),
            Err(why) => (format!("– ({why})"), "–".into(), "–".into()),
        };
        let peer = match &row.peer {
            Other::Rate(r, _) => thousands(*r),
            Other::Missing => "–".into(),
        };
        let raw = match &row.raw {
            Other::Rate(r, which) => format!("{} ({which})", thousands(*r)),
            Other::Missing => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {rewind} | {p50} | {p99} | {peer} | {} | {raw} | {} |",
            row.label,
            row.backend,
            ratio(row.rewind_rate(), &row.peer),
            ratio(row.rewind_rate(), &row.raw),
        );
    }
    out
}

/// Which side of its figure a goal wants to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    AtLeast,
    /// For latencies, where less is better.
    AtMost,
}

/// One goal and whether this run met it.
struct Goal {
    what: String,
    need: Need,
    needed: f64,
    got: Option<f64>,
    unit: &'static str,
}

impl Goal {
    fn met(&self, got: f64) -> bool {
        match self.need {
            Need::AtLeast => got >= self.needed,
            Need::AtMost => got <= self.needed,
        }
    }

    fn line(&self) -> String {
        let (verdict, got) = match self.got {
            None => ("not measured", "–".to_owned()),
            Some(got) if self.met(got) => ("met", self.show(got)),
            Some(got) => ("**missed**", self.show(got)),
        };
        let sign = if self.need == Need::AtMost { "≤" } else { "≥" };
        format!("- {}: need {sign} {}, got {got}: {verdict}", self.what, self.show(self.needed))
    }

    fn show(&self, value: f64) -> String {
        if self.unit == "×" { format!("{value:.2}×") } else { format!("{}{}", thousands(value), self.unit) }
    }
}

fn find(rows: &[Row], workload: Workload, backend: Backend) -> Option<&Row> {
    rows.iter().find(|r| r.workload == Some(workload) && r.backend == backend)
}

/// Rewind ÷ cqrs-es (`peer`) or Rewind ÷ raw.
fn versus(rows: &[Row], workload: Workload, backend: Backend, peer: bool) -> Option<f64> {
    let row = find(rows, workload, backend)?;
    let other = if peer { &row.peer } else { &row.raw };
    match (row.rewind_rate(), other) {
        (Some(r), Other::Rate(o, _)) if *o > 0.0 => Some(r / o),
        _ => None,
    }
}

fn own(rows: &[Row], workload: Workload, backend: Backend) -> Option<f64> {
    find(rows, workload, backend)?.rewind_rate()
}

/// W7 with `processes` processes.
fn cluster(rows: &[Row], processes: usize) -> Option<&Row> {
    rows.iter().find(|r| r.workload == Some(Workload::W7) && r.processes == Some(processes))
}

/// `of(W7 with a processes) ÷ of(W7 with b)`.
fn cluster_ratio(rows: &[Row], a: usize, b: usize, of: fn(&Row) -> Option<f64>) -> Option<f64> {
    let (a, b) = (of(cluster(rows, a)?)?, of(cluster(rows, b)?)?);
    (b > 0.0).then(|| a / b)
}

/// The goal check block.
pub fn goals(rows: &[Row]) -> String {
    let (peer, raw) = (true, false);
    let mut goals = vec![
        Goal {
            what: "W3 PostgreSQL ≥ 10× cqrs-es".into(),
            need: Need::AtLeast,
            needed: 10.0,
            got: versus(rows, Workload::W3, Backend::Postgres, peer),
            unit: "×",
        },
        Goal {
            what: "W3 PostgreSQL ≥ 1.5× raw 32-client single-row commits".into(),
            need: Need::AtLeast,
            needed: 1.5,
            got: versus(rows, Workload::W3, Backend::Postgres, raw),
            unit: "×",
        },
        Goal {
            what: "W3 SQLite ≥ 20× cqrs-es".into(),
            need: Need::AtLeast,
            needed: 20.0,
            got: versus(rows, Workload::W3, Backend::Sqlite, peer),
            unit: "×",
        },
    ];
    for backend in [Backend::Memory, Backend::Sqlite, Backend::Postgres] {
        goals.push(Goal {
            what: format!("W4 {backend} ≥ 50× cqrs-es (no snapshots)"),
            need: Need::AtLeast,
            needed: 50.0,
            got: versus(rows, Workload::W4, backend, peer),
            unit: "×",
        });
    }
    goals.push(Goal {
        what: "W5 SQLite ≥ 200,000 events/s".into(),
        need: Need::AtLeast,
        needed: 200_000.0,
        got: own(rows, Workload::W5, Backend::Sqlite),
        unit: "/s",
    });
    let commanded = [
        (Workload::W1, 650.0),
        (Workload::W2, 1_400.0),
        (Workload::W3, 1_600.0),
        (Workload::W4, 650.0),
        (Workload::W5, 1_800.0),
    ];
    for backend in [Backend::Postgres, Backend::Sqlite] {
        for (workload, reference) in commanded {
            goals.push(Goal {
                what: format!("{workload} {backend} ≥ 10× Commanded ({}/s)", thousands(reference)),
                need: Need::AtLeast,
                needed: reference * 10.0,
                got: own(rows, workload, backend),
                unit: "/s",
            });
        }
    }
    goals.extend([
        Goal {
            what: "W7 2 processes ≥ 1.3× 1 process".into(),
            need: Need::AtLeast,
            needed: 1.3,
            got: cluster_ratio(rows, 2, 1, Row::rewind_rate),
            unit: "×",
        },
        Goal {
            what: "W7 4 processes ≥ W7 2 processes".into(),
            need: Need::AtLeast,
            needed: 1.0,
            got: cluster_ratio(rows, 4, 2, Row::rewind_rate),
            unit: "×",
        },
        Goal {
            what: "W7 2 processes p99 ≤ 1.5× 1 process p99".into(),
            need: Need::AtMost,
            needed: 1.5,
            got: cluster_ratio(rows, 2, 1, Row::rewind_p99),
            unit: "×",
        },
    ]);
    let mut out = String::from("Goals:\n\n");
    for goal in goals {
        out.push_str(&goal.line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(workload: Workload, backend: Backend, ops: u64, peer: f64, raw: f64) -> Row {
        Row {
            label: workload.to_string(),
            workload: Some(workload),
            backend,
            processes: None,
            rewind: Ok(Measurement::throughput(ops, Duration::from_secs(1))),
            peer: Other::Rate(peer, "cqrs-es".into()),
            raw: Other::Rate(raw, "32 clients".into()),
        }
    }

    #[test]
    fn ratios_and_goals() {
        let rows = vec![row(Workload::W3, Backend::Postgres, 30_000, 1_000.0, 25_000.0)];
        let table = table(&rows);
        assert!(table.contains("| 30,000 |") && table.contains("30.00×") && table.contains("1.20×"), "{table}");
        let goals = goals(&rows);
        assert!(goals.contains("W3 PostgreSQL ≥ 10× cqrs-es: need ≥ 10.00×, got 30.00×: met"), "{goals}");
        assert!(goals.contains("raw 32-client single-row commits: need ≥ 1.50×, got 1.20×: **missed**"), "{goals}");
        assert!(goals.contains("W3 SQLite ≥ 20× cqrs-es: need ≥ 20.00×, got –: not measured"), "{goals}");
    }

    fn w7(processes: usize, ops: u64, p99_ms: f64, base: Option<f64>) -> Row {
        Row {
            label: format!("W7 {processes}"),
            workload: Some(Workload::W7),
            backend: Backend::Postgres,
            processes: Some(processes),
            rewind: Ok(Measurement { ops, seconds: 1.0, p50_us: None, p99_us: Some(p99_ms * 1_000.0) }),
            peer: Other::Missing,
            raw: base.map_or(Other::Missing, |b| Other::Rate(b, "W7, 1 process".into())),
        }
    }

    #[test]
    fn cluster_goals_compare_process_counts() {
        let rows = vec![w7(1, 1_000, 20.0, None), w7(2, 1_400, 31.0, Some(1_000.0)), w7(4, 1_300, 60.0, Some(1_000.0))];
        let shown = table(&rows);
        assert!(shown.contains("| 1,400 | – | 31 ms | – | – | 1,000 (W7, 1 process) | 1.40× |"), "{shown}");
        let checked = goals(&rows);
        assert!(checked.contains("W7 2 processes ≥ 1.3× 1 process: need ≥ 1.30×, got 1.40×: met"), "{checked}");
        assert!(checked.contains("W7 4 processes ≥ W7 2 processes: need ≥ 1.00×, got 0.93×: **missed**"), "{checked}");
        assert!(checked.contains("1 process p99: need ≤ 1.50×, got 1.55×: **missed**"), "{checked}");
        let calm = goals(&[w7(1, 1_000, 20.0, None), w7(2, 1_000, 30.0, Some(1_000.0))]);
        assert!(calm.contains("1 process p99: need ≤ 1.50×, got 1.50×: met"), "{calm}");
        assert!(calm.contains("W7 4 processes ≥ W7 2 processes: need ≥ 1.00×, got –: not measured"), "{calm}");
    }
}
