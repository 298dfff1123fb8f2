//! The per-address rate limit, applied to every request before anything else reads it.
//! (The per-shop and per-service limits apply as soon as the auth extractors know the caller.)

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::rate_limit::RateLimits;

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(super) async fn per_address(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        // Proxies may each add a header line; together they are one list, in order.
        let forwarded: Vec<&str> = request
            .headers()
            .get_all(&FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
        if let Err(refused) = limits.check_ip(peer.ip(), forwarded.as_deref()) {
            return ApiError::RateLimited(refused).into_response();
        }
    }
    next.run(request).await
}
