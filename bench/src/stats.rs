//! Latency histograms (microseconds) and the numbers reported for one run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A histogram of latencies in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, h.high());
    h.record(micros).expect("clamped into range");
}

/// Throughput and latency of one measured window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Requests (or transactions' reads) completed in the window.
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// `operations` may exceed the histogram's count when one timed unit holds several.
    pub fn new(h: &Histogram<u64>, operations: u64, errors: u64, window: Duration) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let seconds = window.as_secs_f64();
        let empty = h.is_empty();
        Self {
            requests: operations,
            errors,
            seconds,
            rps: if seconds > 0.0 {
                operations as f64 / seconds
            } else {
                0.0
            },
            mean_ms: if empty { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rate_come_out_in_milliseconds() {
        let mut h = histogram();
        for i in 1..=1000u64 {
            record(&mut h, Duration::from_micros(i * 10));
        }
        let s = Summary::new(&h, 1000, 2, Duration::from_secs(2));
        assert_eq!(s.rps, 500.0);
        assert_eq!(s.errors, 2);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 0.02, "{}", s.p99_ms);
        assert!((s.max_ms - 10.0).abs() < 0.02, "{}", s.max_ms);
    }

    #[test]
    fn absurd_latencies_are_clamped_not_lost() {
        let mut h = histogram();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(100_000));
        assert_eq!(h.len(), 2);
    }
}
