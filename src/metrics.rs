//! The service's Prometheus metrics, rendered at `/metrics`.
//!
//! One [`Metrics`] per running service (not a process-wide recorder), handed to the parts
//! that count: the HTTP layer, the vault and its group-commit writers, the refresher and
//! the rate limits. Every label value comes from a bounded set: route templates, never raw
//! paths; `shop` or a configured service name, never a shop domain or a merchant id; codes
//! that are `&'static str` in the code. That keeps the number of series bounded whatever
//! the traffic, and no label can carry a secret.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// Seconds; from 1 ms to the 30 s default request timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    caller: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    purpose: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metrics of one running service. Cheap to clone; every clone counts into the same
/// registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    token_operations: Family<OperationLabels, Counter>,
    decryption_failures: Counter,
    audit_write_failures: Counter,
    refreshes: Family<RefreshLabels, Counter>,
    rate_limited: Family<ScopeLabels, Counter>,
    rate_limit_keys: Family<ScopeLabels, Gauge>,
    batch_size: Histogram,
    batch_duration: Histogram,
    queue_depth: Gauge,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    outbox_backlog: Gauge,
}

/// Registers `metric` under `name` and hands it back for counting.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Values read when `/metrics` is scraped rather than counted as they happen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Connections the pool holds open, and how many of them are idle.
    pub pool_open: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
    /// Jobs waiting for a group-commit writer.
    pub queue_depth: usize,
    /// Keys each rate limiter tracks: (scope, keys).
    pub rate_limit_keys: [(&'static str, usize); 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (at zero until something happens).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("token_service");
        let r = &mut registry;
        let inner = Inner {
            http_requests: registered(
                r,
                "http_requests",
                "HTTP requests answered, by method, route template and status",
                Family::default(),
            ),
            http_duration: registered(
                r,
                "http_request_duration_seconds",
                "Time from receiving a request to its answer, by method, route template and status",
                Family::new_with_constructor(latency_histogram),
            ),
            token_operations: registered(
                r,
                "token_operations",
                "Authenticated token operations (store, read, delete, refresh) by caller \
                 (`shop` or the service name) and outcome (`success` or the error code)",
                Family::default(),
            ),
            decryption_failures: registered(
                r,
                "decryption_failures",
                "Stored tokens that could not be decrypted when read (tampered, or unknown key id)",
                Counter::default(),
            ),
            audit_write_failures: registered(
                r,
                "audit_write_failures",
                "Audit rows that could not be written; their operations failed closed",
                Counter::default(),
            ),
            refreshes: registered(
                r,
                "token_refreshes",
                "Token refreshes run, by purpose (due, forced, exchange) and outcome",
                Family::default(),
            ),
            rate_limited: registered(
                r,
                "rate_limited",
                "Requests refused with 429, by limit (ip, shop, service)",
                Family::default(),
            ),
            rate_limit_keys: registered(
                r,
                "rate_limit_keys",
                "Callers each rate limiter currently tracks",
                Family::default(),
            ),
            batch_size: registered(
                r,
                "db_batch_size",
                "Operations committed together by one group-commit transaction",
                Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            ),
            batch_duration: registered(
                r,
                "db_batch_duration_seconds",
                "Time one group-commit batch took, from its first statement to its commit",
                Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            ),
            queue_depth: registered(
                r,
                "db_queue_depth",
                "Operations waiting for a group-commit writer",
                Gauge::default(),
            ),
            pool_connections: registered(
                r,
                "db_pool_connections",
                "Database connections open, by state (idle, in_use)",
                Family::default(),
            ),
            pool_max: registered(
                r,
                "db_pool_max_connections",
                "Largest number of database connections the pool may open",
                Gauge::default(),
            ),
            outbox_backlog: registered(
                r,
                "outbox_backlog",
                "Events in the outbox not yet published to NATS (counted at each scrape)",
                Gauge::default(),
            ),
            registry,
        };
        Self(Arc::new(inner))
    }

    /// One answered HTTP request. `route` is the matched route template (`None` when no
    /// route matched), never the raw path.
    pub fn observe_request(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: bounded_method(method),
            route: route.unwrap_or("unmatched").to_owned(),
            status,
        };
        self.0.http_requests.get_or_create(&labels).inc();
        self.0
            .http_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One authenticated token operation. `caller` is `shop` or a configured service name;
    /// `outcome` is `success` or the stable error code the caller received.
    pub fn token_operation(&self, operation: &'static str, caller: &str, outcome: &'static str) {
        let labels = OperationLabels {
            operation,
            caller: caller.to_owned(),
            outcome,
        };
        self.0.token_operations.get_or_create(&labels).inc();
    }

    /// Stored tokens that did not decrypt (counted once per row and read, after commit).
    pub fn decryption_failures(&self, count: u64) {
        if count > 0 {
            self.0.decryption_failures.inc_by(count);
        }
    }

    /// The counter the group-commit writers bump when an audit row cannot be written.
    pub fn audit_write_failures(&self) -> Counter {
        self.0.audit_write_failures.clone()
    }

    /// One refresh that ran (joined callers of a shared refresh are not counted again).
    pub fn refresh(&self, purpose: &'static str, outcome: &'static str) {
        self.0
            .refreshes
            .get_or_create(&RefreshLabels { purpose, outcome })
            .inc();
    }

    /// The counter of 429s for one limit (`ip`, `shop` or `service`).
    pub fn rate_limited(&self, scope: &'static str) -> Counter {
        self.0
            .rate_limited
            .get_or_create(&ScopeLabels { scope })
            .clone()
    }

    /// One group-commit transaction of `jobs` operations that took `took`.
    pub fn batch(&self, jobs: usize, took: Duration) {
        self.0.batch_size.observe(jobs as f64);
        self.0.batch_duration.observe(took.as_secs_f64());
    }

    /// The events in the outbox not yet published (`crate::events`, SPEC §5). `/metrics`
    /// counts them in the database when scraped, so the gauge also shows events piling up
    /// while no relay runs (NATS unreachable or `NATS_URL` unset).
    pub fn set_outbox_backlog(&self, pending: u64) {
        self.0
            .outbox_backlog
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition (OpenMetrics 1.0), with `snapshot`'s gauges updated.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let inner = &self.0;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        inner.queue_depth.set(gauge(snapshot.queue_depth));
        inner.pool_max.set(snapshot.pool_max.into());
        let idle = snapshot.pool_idle.min(snapshot.pool_open);
        for (state, value) in [("idle", idle), ("in_use", snapshot.pool_open - idle)] {
            inner
                .pool_connections
                .get_or_create(&PoolLabels { state })
                .set(value.into());
        }
        for (scope, keys) in snapshot.rate_limit_keys {
            inner
                .rate_limit_keys
                .get_or_create(&ScopeLabels { scope })
                .set(gauge(keys));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &inner.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// HTTP methods are open-ended; anything but the common ones is counted as `other`.
fn bounded_method(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn requests_are_counted_by_route_template_and_odd_methods_are_folded() {
        let metrics = Metrics::new();
        let took = Duration::from_millis(3);
        metrics.observe_request("GET", Some("/api/v1/tokens/{merchant_id}"), 200, took);
        metrics.observe_request("GET", Some("/api/v1/tokens/{merchant_id}"), 200, took);
        metrics.observe_request("BREW", None, 404, took);
        let text = metrics.render(&Snapshot::default());
        let read = r#"token_service_http_requests_total{method="GET",route="/api/v1/tokens/{merchant_id}",status="200"}"#;
        assert_eq!(sample(&text, read), Some(2.0));
        let odd =
            r#"token_service_http_requests_total{method="other",route="unmatched",status="404"}"#;
        assert_eq!(sample(&text, odd), Some(1.0));
        assert!(text.contains("token_service_http_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn scrape_time_gauges_take_the_snapshot() {
        let metrics = Metrics::new();
        let snapshot = Snapshot {
            pool_open: 5,
            pool_idle: 2,
            pool_max: 10,
            queue_depth: 7,
            rate_limit_keys: [("ip", 3), ("shop", 1), ("service", 0)],
        };
        let text = metrics.render(&snapshot);
        let at = |prefix| sample(&text, prefix);
        assert_eq!(
            at(r#"token_service_db_pool_connections{state="in_use"}"#),
            Some(3.0)
        );
        assert_eq!(
            at(r#"token_service_db_pool_connections{state="idle"}"#),
            Some(2.0)
        );
        assert_eq!(at("token_service_db_pool_max_connections "), Some(10.0));
        assert_eq!(at("token_service_db_queue_depth "), Some(7.0));
        assert_eq!(
            at(r#"token_service_rate_limit_keys{scope="ip"}"#),
            Some(3.0)
        );
        metrics.set_outbox_backlog(12);
        let text = metrics.render(&snapshot);
        assert_eq!(sample(&text, "token_service_outbox_backlog "), Some(12.0));
    }
}
