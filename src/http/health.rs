//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::context::{envelope, RequestContext};
use super::error::ApiError;
use super::openapi::responses::{RateLimited, Unavailable};
use super::schemas::{HealthEnvelope, ReadinessEnvelope};
use super::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// The process is up.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `healthy`.
    #[schema(value_type = String, example = "healthy")]
    status: &'static str,
    /// Always `token-service`.
    #[schema(value_type = String, example = "token-service")]
    service: &'static str,
    #[schema(format = DateTime)]
    timestamp: String,
}

/// The service can serve requests.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// Always `ready`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    checks: ReadinessChecks,
}

/// What readiness checked.
#[derive(Serialize, ToSchema)]
pub(super) struct ReadinessChecks {
    /// `ok`: the database answered (on SQLite: a write committed).
    #[schema(value_type = String, example = "ok")]
    database: &'static str,
    /// `ok`: the keyring is loaded (always, once the service listens).
    #[schema(value_type = String, example = "ok")]
    keyring: &'static str,
}

/// Liveness
///
/// The process is up; says nothing about its dependencies. For a liveness probe.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Up", body = HealthEnvelope),
        (status = 429, response = RateLimited),
    )
)]
async fn health(ctx: RequestContext) -> Response {
    let body = Health {
        status: "healthy",
        service: "token-service",
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    envelope(&ctx, StatusCode::OK, &body)
}

/// Readiness
///
/// Ready to serve: the database answers, and on SQLite a write commits, since every operation
/// writes (the keyring is loaded before the server starts).
/// For a readiness probe and the load balancer's health check.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadinessEnvelope),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
async fn ready(ctx: RequestContext, State(state): State<AppState>) -> Response {
    if state.vault.is_ready().await {
        let body = Readiness {
            status: "ready",
            checks: ReadinessChecks {
                database: "ok",
                keyring: "ok",
            },
        };
        envelope(&ctx, StatusCode::OK, &body)
    } else {
        ApiError::Unavailable.into_response()
    }
}
