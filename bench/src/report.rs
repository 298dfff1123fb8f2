//! Turns the run records of one benchmark into `bench/results/<date>.json` and a markdown
//! report: a table per backend, the service against its storage-engine ceiling, and the
//! issue's targets, each marked met or not.

use std::fmt::Write;

use serde::Serialize;
use serde_json::{json, Value};

use crate::record::{Kind, RunRecord};

/// Upper bound on p99 at half of the maximum read throughput.
const HALF_RATE_P99_MS: f64 = 10.0;
/// Upper bound on the service's peak RSS at concurrency 64.
const PEAK_RSS_MIB: f64 = 64.0;

const BACKENDS: [(&str, &str); 2] = [("sqlite", "SQLite"), ("postgres", "PostgreSQL")];

/// One target of the issue, evaluated.
#[derive(Debug, Serialize, PartialEq)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None` when the runs needed to judge it are missing.
    pub met: Option<bool>,
}

fn scenario_title(scenario: &str) -> &str {
    match scenario {
        "read-one" => "read one token",
        "read-six" => "read a merchant's six tokens",
        "upsert" => "upsert",
        "mixed" => "mixed 90% read / 10% upsert",
        other => other,
    }
}

fn service<'a>(runs: &'a [RunRecord], backend: &str) -> impl Iterator<Item = &'a RunRecord> {
    let backend = backend.to_owned();
    runs.iter()
        .filter(move |r| r.kind == Kind::Service && r.backend == backend)
}

/// The service's closed-loop read-one rate, by default or in a named variant.
fn read_one_rate(
    runs: &[RunRecord],
    backend: &str,
    concurrency: usize,
    variant: Option<&str>,
) -> Option<f64> {
    service(runs, backend)
        .find(|r| {
            r.mode == "closed"
                && r.scenario == "read-one"
                && r.concurrency == concurrency
                && r.variant.as_deref() == variant
        })
        .map(|r| r.rps)
}

fn closed_read_one(runs: &[RunRecord], backend: &str, concurrency: usize) -> Option<f64> {
    read_one_rate(runs, backend, concurrency, None)
}

/// The service configured to commit every request on its own (`DATABASE_MAX_BATCH=1`).
pub const ONE_COMMIT_PER_REQUEST: &str = "one-commit-per-request";

fn ceiling(runs: &[RunRecord], backend: &str, concurrency: usize, batch: usize) -> Option<f64> {
    runs.iter()
        .find(|r| {
            r.kind == Kind::Ceiling
                && r.backend == backend
                && r.concurrency == concurrency
                && r.batch.unwrap_or(1) == batch
        })
        .map(|r| r.rps)
}

/// `service / baseline` as text, and whether `good` holds for it.
fn ratio(
    service: Option<f64>,
    baseline: Option<f64>,
    unit: &str,
    good: impl Fn(f64) -> bool,
) -> (String, Option<bool>) {
    match (service, baseline) {
        (Some(s), Some(b)) if b > 0.0 => (
            format!("{s:.0} req/s vs {b:.0} {unit} = {:.2}x", s / b),
            Some(good(s / b)),
        ),
        _ => ("not measured".to_owned(), None),
    }
}

/// The targets against these runs. The SQLite engine's own one-commit loop is in
/// the ceiling table: it is bound by the disk's sync latency, not by anything the service does.
pub fn targets(runs: &[RunRecord]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    // PostgreSQL: against pgbench running the SQL of one read transaction per commit.
    let (measured, met) = ratio(
        closed_read_one(runs, "postgres", 16),
        ceiling(runs, "postgres", 16, 1),
        "reads/s",
        |r| r >= 1.0,
    );
    checks.push(TargetCheck {
        target: "PostgreSQL: read one token at concurrency 16 >= 1.0x the pgbench \
                 one-transaction-per-read ceiling"
            .into(),
        measured,
        met,
    });
    // Group commit against the same binary answering every request after its own commit.
    for (backend, title) in BACKENDS {
        let factor = if backend == "sqlite" { 3.0 } else { 1.0 };
        let (measured, met) = ratio(
            closed_read_one(runs, backend, 16),
            read_one_rate(runs, backend, 16, Some(ONE_COMMIT_PER_REQUEST)),
            "req/s",
            |r| {
                if factor > 1.0 {
                    r >= factor
                } else {
                    r > factor
                }
            },
        );
        let bound = if factor > 1.0 { ">= 3.0x" } else { "beats" };
        checks.push(TargetCheck {
            target: format!(
                "{title}: read one token at concurrency 16, group commit {bound} the same service \
                 committing each request (DATABASE_MAX_BATCH=1)"
            ),
            measured,
            met,
        });
    }
    for (backend, title) in BACKENDS {
        let open: Vec<_> = service(runs, backend)
            .filter(|r| r.mode == "open")
            .collect();
        let worst = open
            .iter()
            .filter_map(|r| r.p99_ms)
            .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
        let detail: Vec<String> = open
            .iter()
            .map(|r| {
                format!(
                    "{} at {:.0}/s: p99 {:.2} ms",
                    r.scenario,
                    r.target_rate.unwrap_or_default(),
                    r.p99_ms.unwrap_or_default()
                )
            })
            .collect();
        checks.push(TargetCheck {
            target: format!(
                "{title}: reads' p99 at half of the maximum throughput < {HALF_RATE_P99_MS} ms"
            ),
            measured: if detail.is_empty() {
                "not measured".into()
            } else {
                detail.join("; ")
            },
            met: worst.map(|p| p < HALF_RATE_P99_MS),
        });
    }
    for (backend, title) in BACKENDS {
        let peak = service(runs, backend)
            .filter(|r| r.concurrency == 64 && r.mode == "closed" && r.variant.is_none())
            .filter_map(|r| r.peak_rss_kib)
            .max();
        checks.push(TargetCheck {
            target: format!("{title}: peak RSS at concurrency 64 < {PEAK_RSS_MIB} MiB"),
            measured: peak.map_or("not measured".into(), |k| format!("{:.1} MiB", mib(k))),
            met: peak.map(|k| mib(k) < PEAK_RSS_MIB),
        });
    }
    let service_runs: Vec<_> = runs.iter().filter(|r| r.kind == Kind::Service).collect();
    let errors: u64 = service_runs.iter().map(|r| r.errors).sum();
    checks.push(TargetCheck {
        target: "zero errors in every scenario".into(),
        measured: format!("{errors} errors in {} runs", service_runs.len()),
        met: (!service_runs.is_empty()).then_some(errors == 0),
    });
    checks
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

/// The markdown report.
pub fn markdown(runs: &[RunRecord], meta: &Value) -> String {
    let mut out = String::new();
    let get = |key: &str| {
        meta.get(key).map_or("?".to_owned(), |v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let _ = writeln!(out, "## token-service benchmark, {}\n", get("date"));
    let _ = writeln!(
        out,
        "Commit `{}`; {} cores; load average {} before, {} after; {} merchants ({} token rows); \
         {} s warm-up, {} s measured per run; closed loop unless marked open. \
         Latencies are measured by the client, over loopback HTTP/1.1 keep-alive.\n",
        get("git_commit"),
        get("cores"),
        get("load_before"),
        get("load_after"),
        get("merchants"),
        get("token_rows"),
        get("warmup_s"),
        get("duration_s"),
    );
    if let Some(disk) = meta.get("disk_sync_write_ms").and_then(Value::as_str) {
        let _ = writeln!(
            out,
            "Disk probe, milliseconds per appending O_DSYNC 4 KiB write (its commit latency varies \
             with what else the machine writes; compare between runs): {disk}.\n"
        );
    }
    if let Some(note) = meta.get("note").and_then(Value::as_str) {
        let _ = writeln!(out, "{note}\n");
    }
    for (backend, title) in BACKENDS {
        let rows: Vec<_> = service(runs, backend).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "| scenario | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB | service CPU µs/req |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let mut title = match (r.mode.as_str(), r.target_rate) {
                ("open", Some(rate)) => format!(
                    "{}, open loop at {rate:.0}/s (50% of max)",
                    scenario_title(&r.scenario)
                ),
                _ => scenario_title(&r.scenario).to_owned(),
            };
            if let Some(variant) = &r.variant {
                title = format!("{title}, {}", variant.replace('-', " "));
            }
            let _ = writeln!(
                out,
                "| {title} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                r.concurrency,
                r.rps,
                opt_ms(r.p50_ms),
                opt_ms(r.p99_ms),
                opt_ms(r.p999_ms),
                r.errors,
                r.peak_rss_kib
                    .map_or("–".into(), |k| format!("{:.1}", mib(k))),
                r.service_cpu_us_per_request()
                    .map_or("–".into(), |us| format!("{us:.0}")),
            );
        }
        let ceilings: Vec<_> = runs
            .iter()
            .filter(|r| r.kind == Kind::Ceiling && r.backend == backend)
            .collect();
        if !ceilings.is_empty() {
            let how = if backend == "postgres" {
                "pgbench, one client session per connection, the read transaction's SQL \
                 (SELECT the row, UPDATE its counters, INSERT the audit row, COMMIT)"
            } else {
                "the same read transaction in-process, calling SQLite directly (one \
                 connection shared by all clients, WAL, synchronous=FULL)"
            };
            let _ = writeln!(
                out,
                "\nCeiling without the service: {how}. The ratio compares the service's read-one \
                 throughput at the same concurrency (for a batched ceiling, its best).\n"
            );
            let _ = writeln!(
                out,
                "| ceiling | concurrency | reads/s | mean ms | p99 ms | service read-one req/s | service / ceiling |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
            for c in ceilings {
                let batch = c.batch.unwrap_or(1);
                let what = if batch == 1 {
                    "one commit per read".to_owned()
                } else {
                    format!("{batch} reads per commit")
                };
                // A batched ceiling bounds group commit: compare the service at its best.
                let served = if batch == 1 {
                    closed_read_one(runs, backend, c.concurrency)
                } else {
                    service(runs, backend)
                        .filter(|r| r.mode == "closed" && r.scenario == "read-one")
                        .filter(|r| r.variant.is_none())
                        .map(|r| r.rps)
                        .reduce(f64::max)
                };
                let _ = writeln!(
                    out,
                    "| {what} | {} | {:.0} | {:.2} | {} | {} | {} |",
                    c.concurrency,
                    c.rps,
                    c.mean_ms,
                    opt_ms(c.p99_ms),
                    served.map_or("–".into(), |s| format!("{s:.0}")),
                    served.map_or("–".into(), |s| format!("{:.2}x", s / c.rps)),
                );
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "### Targets\n");
    let _ = writeln!(out, "| target | measured | met |");
    let _ = writeln!(out, "|---|---|---|");
    for t in targets(runs) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {met} |", t.target, t.measured);
    }
    out
}

/// The results file: the metadata, every run, and the targets.
pub fn json(runs: &[RunRecord], meta: &Value) -> Value {
    json!({
        "meta": meta,
        "runs": runs,
        "targets": targets(runs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn run(kind: Kind, backend: &str, scenario: &str, c: usize, rps: f64) -> RunRecord {
        let summary = Summary {
            requests: 100,
            errors: 0,
            seconds: 1.0,
            rps,
            mean_ms: 1.0,
            p50_ms: 1.0,
            p99_ms: 4.0,
            p999_ms: 9.0,
            max_ms: 12.0,
        };
        let mut r = RunRecord::new(kind, backend, scenario, c, summary);
        r.peak_rss_kib = Some(30 * 1024);
        r
    }

    #[test]
    fn targets_compare_against_the_ceiling_at_concurrency_16() {
        let mut open = run(Kind::Service, "sqlite", "read-one", 64, 500.0);
        open.mode = "open".into();
        open.target_rate = Some(500.0);
        let mut single = run(Kind::Service, "sqlite", "read-one", 16, 1100.0);
        single.variant = Some(ONE_COMMIT_PER_REQUEST.into());
        let runs = vec![
            single,
            run(Kind::Service, "postgres", "read-one", 16, 900.0),
            run(Kind::Ceiling, "postgres", "read-one", 16, 1000.0),
            run(Kind::Service, "sqlite", "read-one", 16, 3100.0),
            run(Kind::Ceiling, "sqlite", "read-one", 16, 1000.0),
            run(Kind::Service, "sqlite", "read-one", 64, 3000.0),
            open,
        ];
        let checks = targets(&runs);
        assert_eq!(checks[0].met, Some(false), "{:?}", checks[0]);
        assert!(checks[0].measured.contains("0.90x"));
        // 3100 vs 1100 one-commit requests/s: group commit wins, but by less than 3x.
        assert_eq!(checks[1].met, Some(false), "{:?}", checks[1]);
        assert!(checks[1].measured.contains("2.82x"), "{:?}", checks[1]);
        assert_eq!(
            checks[2].met, None,
            "postgres one-commit variant not measured"
        );
        assert_eq!(checks[3].met, Some(true), "sqlite half-rate p99");
        assert_eq!(checks[4].met, None, "postgres half-rate not measured");
        assert_eq!(checks[5].met, Some(true), "sqlite RSS");
        assert_eq!(checks[7].met, Some(true), "errors");
        let md = markdown(&runs, &json!({"date": "2026-12-04"}));
        assert!(
            md.contains("| read one token | 16 | 3100 | 1.00 | 4.00 | 9.00 | 0 | 30.0 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| one commit per read | 16 | 1000 | 1.00 | 4.00 | 3100 | 3.10x |"),
            "{md}"
        );
    }

    #[test]
    fn an_error_anywhere_fails_the_zero_error_target() {
        let mut bad = run(Kind::Service, "sqlite", "upsert", 1, 10.0);
        bad.errors = 1;
        let checks = targets(&[bad]);
        assert_eq!(checks.last().unwrap().met, Some(false));
    }
}
