//! `/metrics`: the Prometheus exposition, on the API port or on `METRICS_PORT`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::responses::RateLimited;
use super::AppState;
use crate::metrics::Snapshot;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest a scrape waits for the outbox count.
const OUTBOX_COUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The route on the API port, described in the API document.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The whole application of the separate metrics port: `/metrics` and nothing else.
pub fn metrics_only(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Prometheus metrics
///
/// Request counts and latencies by route and status, token operations by caller and
/// outcome, decryption and audit failures, refreshes, rate limiting, database pool and
/// group-commit figures (OpenMetrics text format). Served on `METRICS_PORT` instead when
/// that is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
        (status = 429, response = RateLimited),
    )
)]
async fn metrics(State(state): State<AppState>) -> Response {
    // The outbox is counted in the database; a slow or absent database must not hold up
    // the rest of the scrape, which then shows the last count.
    let backlog = tokio::time::timeout(OUTBOX_COUNT_TIMEOUT, state.vault.outbox_backlog()).await;
    if let Ok(Ok(pending)) = backlog {
        state
            .vault
            .metrics()
            .set_outbox_backlog(u64::try_from(pending).unwrap_or(0));
    }
    let (pool, queue_depth) = state.vault.usage();
    let snapshot = Snapshot {
        pool_open: pool.open,
        pool_idle: pool.idle,
        pool_max: pool.max,
        queue_depth,
        rate_limit_keys: state.limits.tracked_keys(),
    };
    let mut response = state.vault.metrics().render(&snapshot).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
