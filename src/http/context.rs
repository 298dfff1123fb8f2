//! Per-request context and the response envelope.
//!
//! The middleware here gives every request its ids, bounds its duration, renders every
//! error into the envelope, sets the common response headers and logs one line per request.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{body_for_status, ApiError, ErrorBody};
use crate::metrics::Metrics;

const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");
const REQUEST_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const SERVICE_HEADER: HeaderName = HeaderName::from_static("x-service-name");

/// The ids of one request, available to handlers as an extractor.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub correlation_id: String,
    /// Who the request authenticated as; set once by the auth extractors, logged at the end.
    caller: Arc<OnceLock<String>>,
}

impl RequestContext {
    pub fn set_caller(&self, caller: &str) {
        let _ = self.caller.set(caller.to_owned());
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("request context layer missing")))
    }
}

/// Twelve random lowercase hex digits.
pub fn random_hex12() -> String {
    let mut bytes = [0u8; 6];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A caller's correlation id is kept if it is short printable ASCII; otherwise a new one.
fn correlation_id(request: &Request) -> String {
    request
        .headers()
        .get(&CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("corr_{}", random_hex12()))
}

#[derive(Serialize)]
struct Meta<'a> {
    request_id: &'a str,
    correlation_id: &'a str,
    timestamp: String,
}

fn meta(ctx: &RequestContext) -> Meta<'_> {
    Meta {
        request_id: &ctx.request_id,
        correlation_id: &ctx.correlation_id,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A success answer: `{"data": ..., "meta": ...}`.
pub fn envelope<T: Serialize>(ctx: &RequestContext, status: StatusCode, data: &T) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        data: &'a T,
        meta: Meta<'a>,
    }
    match serde_json::to_vec(&Envelope {
        data,
        meta: meta(ctx),
    }) {
        Ok(body) => json_response(status, body),
        Err(e) => ApiError::Internal(anyhow::Error::new(e).context("serializing a response"))
            .into_response(),
    }
}

fn error_envelope(ctx: &RequestContext, status: StatusCode, error: &ErrorBody) -> Response {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        details: Option<&'a serde_json::Value>,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Error<'a>,
        meta: Meta<'a>,
    }
    let body = serde_json::to_vec(&Envelope {
        error: Error {
            code: error.code,
            message: &error.message,
            details: error.details.as_ref(),
        },
        meta: meta(ctx),
    })
    .unwrap_or_else(|_| {
        br#"{"error":{"code":"INTERNAL_ERROR","message":"internal error"}}"#.to_vec()
    });
    json_response(status, body)
}

/// What the outermost middleware needs: the request timeout, and where to count requests.
#[derive(Clone)]
pub struct RequestPolicy {
    pub timeout: Duration,
    pub metrics: Metrics,
}

/// The outermost middleware (see the module docs).
pub async fn middleware(
    State(policy): State<RequestPolicy>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let ctx = RequestContext {
        request_id: format!("req_{}", random_hex12()),
        correlation_id: correlation_id(&request),
        caller: Arc::default(),
    };
    request.extensions_mut().insert(ctx.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());

    let response = match tokio::time::timeout(policy.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    };

    let status = response.status();
    let error = response
        .extensions()
        .get::<ErrorBody>()
        .cloned()
        .or_else(|| {
            let is_json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let is_error = status.is_client_error() || status.is_server_error();
            (is_error && !is_json).then(|| body_for_status(status))
        });
    let mut response = match &error {
        Some(body) => {
            let mut rendered = error_envelope(&ctx, status, body);
            // Keep headers such as Allow or Retry-After that the original answer carried.
            for (name, value) in response.headers() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    rendered.headers_mut().insert(name.clone(), value.clone());
                }
            }
            rendered
        }
        None => response,
    };

    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(REQUEST_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.correlation_id) {
        headers.insert(CORRELATION_HEADER, v);
    }
    headers.insert(SERVICE_HEADER, HeaderValue::from_static("token-service"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    policy.metrics.observe_request(
        method.as_str(),
        route.as_deref(),
        status.as_u16(),
        started.elapsed(),
    );
    let error_id = error
        .as_ref()
        .and_then(|e| e.details.as_ref())
        .and_then(|d| d.get("error_id"))
        .and_then(|v| v.as_str());
    tracing::info!(
        request_id = %ctx.request_id,
        correlation_id = %ctx.correlation_id,
        method = %method,
        route = route.as_deref().unwrap_or("unmatched"),
        status = status.as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        caller = ctx.caller.get().map(String::as_str).unwrap_or("anonymous"),
        error_code = error.as_ref().map(|e| e.code),
        error_id,
        "request"
    );
    response
}
