//! The HTTP interface: routes, authentication, the envelope and errors, the API document.

pub mod auth;
mod body;
pub mod context;
mod docs;
pub mod error;
mod health;
mod limits;
mod metrics;
pub mod openapi;
mod schemas;
pub mod server;
mod token_views;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::response::IntoResponse;
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::auth::Authenticator;
use self::context::RequestPolicy;
use self::error::ApiError;
use crate::rate_limit::RateLimits;
use crate::refresh::Refresher;
use crate::vault::Vault;

pub use body::MAX_BODY_BYTES;
pub use metrics::metrics_only;

/// What handlers share.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub vault: Vault,
    pub auth: Arc<Authenticator>,
    pub refresher: Arc<Refresher>,
    /// Per-caller rate limits, checked by the auth extractors and the address middleware.
    pub limits: Arc<RateLimits>,
}

/// How the router is put together.
#[derive(Debug, Clone, Copy)]
pub struct RouterSettings {
    /// A request taking longer answers 503.
    pub request_timeout: Duration,
    /// Serve `/metrics` on this router (false when it has a port of its own).
    pub serve_metrics: bool,
}

/// Every route the API serves, each with its OpenAPI description: the document is built
/// from exactly these, so it cannot list a route that is not served or miss one that is.
pub fn api(serve_metrics: bool) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(tokens::router())
        .merge(health::router())
        .merge(docs::router());
    match serve_metrics {
        true => api.merge(metrics::router()),
        false => api,
    }
}

/// The whole HTTP application.
pub fn router(state: AppState, settings: RouterSettings) -> Router {
    let (routes, document) = api(settings.serve_metrics).split_for_parts();
    let document = document.to_json().expect("the OpenAPI document serializes");
    let policy = RequestPolicy {
        timeout: settings.request_timeout,
        metrics: state.vault.metrics().clone(),
    };
    routes
        .layer(Extension(docs::OpenApiJson(document.into_bytes().into())))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            limits::per_address,
        ))
        .layer(axum::middleware::from_fn_with_state(
            policy,
            context::middleware,
        ))
        .with_state(state)
}
