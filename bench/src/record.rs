//! One measured run, as a JSON line: what `load` and `sqlite-ceiling` print, what
//! `bench/run.sh` writes for pgbench, and what `report` reads.

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// What was measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// token-service over HTTP.
    Service,
    /// The storage engine doing the same transaction without the service.
    Ceiling,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: Kind,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// `read-one`, `read-six`, `upsert` or `mixed`.
    pub scenario: String,
    /// Connections (service) or client sessions (ceiling).
    pub concurrency: usize,
    /// `closed` (each connection sends as soon as it has its answer) or `open` (a fixed rate).
    pub mode: String,
    /// A service configuration other than the default, e.g. `one-commit-per-request`.
    #[serde(default)]
    pub variant: Option<String>,
    /// The offered rate of an open-loop run, requests/s.
    #[serde(default)]
    pub target_rate: Option<f64>,
    /// Reads per transaction of a ceiling run (1: one commit per read).
    #[serde(default)]
    pub batch: Option<usize>,
    /// The service's VmHWM during the run, KiB.
    #[serde(default)]
    pub peak_rss_kib: Option<u64>,
    /// Whether the peak was reset before the run; if not it is the peak since start-up.
    #[serde(default)]
    pub peak_rss_reset: Option<bool>,
    /// CPU seconds the service (all threads) and the load generator used in the window.
    #[serde(default)]
    pub service_cpu_s: Option<f64>,
    #[serde(default)]
    pub generator_cpu_s: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub mean_ms: f64,
    /// Percentiles are absent where the tool cannot give them (pgbench).
    #[serde(default)]
    pub p50_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub p999_ms: Option<f64>,
    #[serde(default)]
    pub max_ms: Option<f64>,
}

impl RunRecord {
    pub fn new(kind: Kind, backend: &str, scenario: &str, concurrency: usize, s: Summary) -> Self {
        Self {
            kind,
            backend: backend.to_owned(),
            scenario: scenario.to_owned(),
            concurrency,
            mode: "closed".into(),
            variant: None,
            target_rate: None,
            batch: None,
            peak_rss_kib: None,
            peak_rss_reset: None,
            service_cpu_s: None,
            generator_cpu_s: None,
            requests: s.requests,
            errors: s.errors,
            seconds: s.seconds,
            rps: s.rps,
            mean_ms: s.mean_ms,
            p50_ms: Some(s.p50_ms),
            p99_ms: Some(s.p99_ms),
            p999_ms: Some(s.p999_ms),
            max_ms: Some(s.max_ms),
        }
    }

    /// The service's CPU time per request in the window, microseconds.
    pub fn service_cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.service_cpu_s?;
        (self.requests > 0).then(|| cpu * 1e6 / self.requests as f64)
    }

    pub fn print(&self) {
        println!(
            "{}",
            serde_json::to_string(self).expect("a run record serializes")
        );
    }
}
