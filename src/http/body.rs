//! The JSON request body: content type checked, size bounded, bytes left for the domain to parse.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};

use super::error::ApiError;

/// Largest request body accepted (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The raw bytes of an `application/json` body.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Bytes::from_request(request, state)
            .await
            .map(JsonBody)
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::Validation(vec![crate::domain::FieldError::new(
                    "body",
                    "body_unreadable",
                    "the request body could not be read",
                )]),
            })
    }
}
