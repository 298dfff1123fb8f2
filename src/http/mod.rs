//! The HTTP interface: routes, authentication, the envelope and errors.

pub mod auth;
mod body;
pub mod context;
pub mod error;
mod health;
pub mod server;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use self::auth::Authenticator;
use self::error::ApiError;
use crate::refresh::Refresher;
use crate::vault::Vault;

pub use body::MAX_BODY_BYTES;

/// What handlers share.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub vault: Vault,
    pub auth: Arc<Authenticator>,
    pub refresher: Arc<Refresher>,
}

/// The whole HTTP application.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .merge(tokens::router())
        .merge(health::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            context::middleware,
        ))
        .with_state(state)
}
