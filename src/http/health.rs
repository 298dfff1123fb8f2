//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::context::{envelope, RequestContext};
use super::error::ApiError;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The process is up; says nothing about its dependencies.
async fn health(ctx: RequestContext) -> Response {
    let body = json!({
        "status": "healthy",
        "service": "token-service",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    envelope(&ctx, StatusCode::OK, &body)
}

/// Ready to serve: the database answers (the keyring is loaded before the server starts).
async fn ready(ctx: RequestContext, State(state): State<AppState>) -> Response {
    if state.vault.is_ready().await {
        let body = json!({"status": "ready", "checks": {"database": "ok", "keyring": "ok"}});
        envelope(&ctx, StatusCode::OK, &body)
    } else {
        ApiError::Unavailable.into_response()
    }
}
