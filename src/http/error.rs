//! The one error type of the HTTP layer: each variant has one status and one stable code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::domain::FieldError;
use crate::rate_limit::Refused;
use crate::vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("request domain does not match the authenticated shop")]
    DomainMismatch {
        jwt_domain: String,
        request_domain: String,
    },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("service is not allowed to perform this operation")]
    ServiceNotAllowed,
    #[error("token not found")]
    TokenNotFound,
    #[error("this token cannot be refreshed (no refresh token, or no provider configured)")]
    NotRefreshable,
    #[error("the platform did not refresh the token")]
    RefreshFailed(&'static str),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    #[error("too many requests")]
    RateLimited(Refused),
    #[error("service temporarily unavailable")]
    Unavailable,
    #[error("request took too long")]
    Timeout,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The error part of the envelope; rendered with its `meta` by the request-context layer.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::DomainMismatch { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ServiceNotAllowed => StatusCode::FORBIDDEN,
            ApiError::TokenNotFound | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotRefreshable => StatusCode::CONFLICT,
            ApiError::RefreshFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::DomainMismatch { .. } => "DOMAIN_MISMATCH",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::ServiceNotAllowed => "SERVICE_NOT_ALLOWED",
            ApiError::TokenNotFound => "TOKEN_NOT_FOUND",
            ApiError::NotRefreshable => "NOT_REFRESHABLE",
            ApiError::RefreshFailed(_) => "REFRESH_FAILED",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Validation(_) => "VALIDATION_ERROR",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::Unavailable | ApiError::Timeout => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The envelope's error for this error; a 500 gets a fresh `error_id`, which is logged
    /// with the full cause so that the opaque answer can be traced.
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::DomainMismatch {
                jwt_domain,
                request_domain,
            } => Some(json!({"jwt_domain": jwt_domain, "request_domain": request_domain})),
            ApiError::Validation(errors) => Some(json!({ "validation_errors": errors })),
            ApiError::RefreshFailed(reason) => Some(json!({ "reason": reason })),
            ApiError::RateLimited(refused) => Some(json!({
                "retryable": true,
                "retry_after_seconds": retry_after_seconds(refused),
                "limit": refused.scope,
            })),
            ApiError::Unavailable | ApiError::Timeout => Some(json!({ "retryable": true })),
            ApiError::Internal(cause) => {
                let error_id = format!("err_{}", crate::http::context::random_hex12());
                tracing::error!(%error_id, error = ?cause, "internal error");
                Some(json!({ "error_id": error_id }))
            }
            _ => None,
        };
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            details,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status_code().into_response();
        if let ApiError::RateLimited(refused) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(refused)),
            );
        }
        response.extensions_mut().insert(self.body());
        response
    }
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` can say.
fn retry_after_seconds(refused: &Refused) -> u64 {
    refused.retry_after.as_secs_f64().ceil().max(1.0) as u64
}

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        match err {
            VaultError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable
            }
            VaultError::ShuttingDown => ApiError::Unavailable,
            VaultError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// What an error response produced outside our handlers (a bare status) is called.
pub fn body_for_status(status: StatusCode) -> ErrorBody {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("METHOD_NOT_ALLOWED", "method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("PAYLOAD_TOO_LARGE", "request body is larger than 64 KiB")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "UNSUPPORTED_MEDIA_TYPE",
            "request body must be application/json",
        ),
        StatusCode::UNAUTHORIZED => ("UNAUTHORIZED", "authentication required"),
        StatusCode::FORBIDDEN => ("FORBIDDEN", "forbidden"),
        StatusCode::SERVICE_UNAVAILABLE => {
            ("SERVICE_UNAVAILABLE", "service temporarily unavailable")
        }
        StatusCode::TOO_MANY_REQUESTS => ("RATE_LIMITED", "too many requests"),
        s if s.is_client_error() => ("BAD_REQUEST", "the request could not be understood"),
        _ => return ApiError::Internal(anyhow::anyhow!("unhandled error status {status}")).body(),
    };
    ErrorBody {
        code,
        message: message.to_owned(),
        details: None,
    }
}
