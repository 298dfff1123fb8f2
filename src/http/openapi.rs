//! The OpenAPI 3.1 document: built from the routes themselves (each handler carries its
//! `#[utoipa::path]`, and `super::api` registers exactly the routes it serves), plus what
//! no handler says: the API's description, tags, security schemes and shared responses.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::schemas::{ErrorCode, ErrorEnvelope};

const DESCRIPTION: &str = "\
The one place that holds merchants' third-party platform credentials (OAuth tokens, API \
keys, basic-auth pairs), encrypted at rest, every access audited in the same transaction.

**Envelope.** Every JSON answer is `{\"data\": …, \"meta\": …}` or `{\"error\": {\"code\", \
\"message\", \"details\"?}, \"meta\": …}`. Match errors on `error.code`; the codes are listed \
in the `ErrorCode` schema. An `X-Correlation-ID` request header is carried into `meta`, the \
logs and the audit trail.

**Who calls.** The BFF stores and deletes tokens for a shop with a client JWT \
(`client_jwt`); allow-listed internal services read and refresh them with a service key \
(`service_key`).

**Limits.** Requests are rate limited per client address, per shop and per service (429 \
`RATE_LIMITED` with `Retry-After`); bodies are at most 64 KiB; a request taking longer than \
the configured timeout answers 503 `SERVICE_UNAVAILABLE`.";

/// The parts of the document that are not routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "token-service",
        description = DESCRIPTION,
    ),
    tags(
        (name = "tokens", description = "Store, read, refresh and delete credentials"),
        (name = "operations", description = "Probes and metrics for operators"),
        (name = "documentation", description = "This document and the page that shows it"),
    ),
    components(
        schemas(ErrorCode, ErrorEnvelope),
        responses(
            responses::Unauthorized,
            responses::StoreUnauthorized,
            responses::ShopForbidden,
            responses::ServiceNotAllowed,
            responses::TokenNotFound,
            responses::NotRefreshable,
            responses::PayloadTooLarge,
            responses::UnsupportedMediaType,
            responses::ValidationFailed,
            responses::RateLimited,
            responses::InternalError,
            responses::RefreshFailed,
            responses::Unavailable,
        ),
    ),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// The two bearer credentials.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A shop's JWT, issued by the BFF: HS256 only, signed with \
                         CLIENT_JWT_SECRET; `sub` is the shop domain; `exp` required (30 s \
                         leeway); `aud`/`iss` checked when configured.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "service_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An internal service's key from INTERNAL_JWT_SECRET \
                         (`service:key,…`), compared in constant time. Reads and refreshes \
                         also need the service on ALLOWED_READER_SERVICES.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Error answers shared by several operations, each with examples of its codes.
pub mod responses {
    #![allow(dead_code)]

    use utoipa::ToResponse;

    use super::super::schemas::ErrorEnvelope;

    macro_rules! meta {
        () => {
            serde_json::json!({
                "request_id": "req_4f1c2a9b0d3e",
                "correlation_id": "corr_9a8b7c6d5e4f",
                "timestamp": "2026-12-04T10:15:30.123Z"
            })
        };
    }

    /// The credential is missing, malformed or invalid (UNAUTHORIZED).
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "UNAUTHORIZED", "message": "token has expired"},
        "meta": meta!()
    }))]
    pub struct Unauthorized(ErrorEnvelope);

    /// The client JWT is invalid (UNAUTHORIZED), or the body's `domain` is not its shop
    /// (DOMAIN_MISMATCH).
    #[derive(ToResponse)]
    #[response(examples(
        ("UNAUTHORIZED" = (value = json!({
            "error": {"code": "UNAUTHORIZED", "message": "invalid token"},
            "meta": meta!()
        }))),
        ("DOMAIN_MISMATCH" = (value = json!({
            "error": {
                "code": "DOMAIN_MISMATCH",
                "message": "request domain does not match the authenticated shop",
                "details": {"jwt_domain": "shop-a.myshopify.com", "request_domain": "shop-b.myshopify.com"}
            },
            "meta": meta!()
        }))),
    ))]
    pub struct StoreUnauthorized(ErrorEnvelope);

    /// This merchant's token for the platform belongs to another shop (FORBIDDEN); it was
    /// not touched.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "FORBIDDEN", "message": "this merchant's platform token belongs to another shop"},
        "meta": meta!()
    }))]
    pub struct ShopForbidden(ErrorEnvelope);

    /// The service is not on the reader allow-list (SERVICE_NOT_ALLOWED); the attempt is
    /// audited.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "SERVICE_NOT_ALLOWED", "message": "service is not allowed to perform this operation"},
        "meta": meta!()
    }))]
    pub struct ServiceNotAllowed(ErrorEnvelope);

    /// No such token, or another shop's (TOKEN_NOT_FOUND): the two are not told apart.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "TOKEN_NOT_FOUND", "message": "token not found"},
        "meta": meta!()
    }))]
    pub struct TokenNotFound(ErrorEnvelope);

    /// The token has no refresh token, or its platform has no configured provider
    /// (NOT_REFRESHABLE).
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "NOT_REFRESHABLE", "message": "this token cannot be refreshed (no refresh token, or no provider configured)"},
        "meta": meta!()
    }))]
    pub struct NotRefreshable(ErrorEnvelope);

    /// The platform did not refresh the token (REFRESH_FAILED); `details.reason` says why.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "REFRESH_FAILED", "message": "the platform did not refresh the token",
                  "details": {"reason": "REAUTH_REQUIRED"}},
        "meta": meta!()
    }))]
    pub struct RefreshFailed(ErrorEnvelope);

    /// The body is larger than 64 KiB (PAYLOAD_TOO_LARGE).
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "PAYLOAD_TOO_LARGE", "message": "request body is larger than 64 KiB"},
        "meta": meta!()
    }))]
    pub struct PayloadTooLarge(ErrorEnvelope);

    /// The body is not `application/json` (UNSUPPORTED_MEDIA_TYPE).
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "UNSUPPORTED_MEDIA_TYPE", "message": "request body must be application/json"},
        "meta": meta!()
    }))]
    pub struct UnsupportedMediaType(ErrorEnvelope);

    /// The input breaks a rule (VALIDATION_ERROR); every problem is listed at once.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {
            "code": "VALIDATION_ERROR",
            "message": "request validation failed",
            "details": {"validation_errors": [
                {"field": "platform_name", "message": "must be one of shopify, woocommerce, bigcommerce, magento, squarespace, custom", "type": "enum"},
                {"field": "token_data", "message": "is required", "type": "missing"}
            ]}
        },
        "meta": meta!()
    }))]
    pub struct ValidationFailed(ErrorEnvelope);

    /// Over a rate limit (RATE_LIMITED): per client address, per shop or per service.
    #[derive(ToResponse)]
    #[response(
        headers(("Retry-After" = u64, description = "Seconds until a request would be allowed")),
        example = json!({
            "error": {"code": "RATE_LIMITED", "message": "too many requests",
                      "details": {"retryable": true, "retry_after_seconds": 2, "limit": "shop"}},
            "meta": meta!()
        })
    )]
    pub struct RateLimited(ErrorEnvelope);

    /// The database is unreachable, or the request took longer than the timeout
    /// (SERVICE_UNAVAILABLE); retrying later can succeed.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "SERVICE_UNAVAILABLE", "message": "service temporarily unavailable",
                  "details": {"retryable": true}},
        "meta": meta!()
    }))]
    pub struct Unavailable(ErrorEnvelope);

    /// An unexpected failure (INTERNAL_ERROR); `details.error_id` is logged with its cause.
    #[derive(ToResponse)]
    #[response(example = json!({
        "error": {"code": "INTERNAL_ERROR", "message": "internal error",
                  "details": {"error_id": "err_0a1b2c3d4e5f"}},
        "meta": meta!()
    }))]
    pub struct InternalError(ErrorEnvelope);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::super::error::{body_for_status, ApiError};
    use crate::rate_limit::Refused;

    fn documented_codes() -> Vec<String> {
        let (_, document) = super::super::api(true).split_for_parts();
        let document = serde_json::to_value(document).unwrap();
        document["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_documented_error_codes_are_exactly_those_answered() {
        let documented = documented_codes();
        let errors = [
            ApiError::Unauthorized("x"),
            ApiError::DomainMismatch {
                jwt_domain: "a".into(),
                request_domain: "b".into(),
            },
            ApiError::Forbidden("x"),
            ApiError::ServiceNotAllowed,
            ApiError::TokenNotFound,
            ApiError::NotRefreshable,
            ApiError::RefreshFailed("REFRESH_UNAVAILABLE"),
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::Validation(Vec::new()),
            ApiError::RateLimited(Refused {
                scope: "ip",
                retry_after: Duration::from_millis(1),
            }),
            ApiError::Unavailable,
            ApiError::Timeout,
            ApiError::Internal(anyhow::anyhow!("test")),
        ];
        let mut answered: Vec<&str> = errors.iter().map(ApiError::code).collect();
        for status in 400..600u16 {
            let status = StatusCode::from_u16(status).unwrap();
            if status.is_client_error() || status.is_server_error() {
                answered.push(body_for_status(status).code);
            }
        }
        for code in &answered {
            assert!(
                documented.iter().any(|d| d == code),
                "{code} is not documented"
            );
        }
        for code in &documented {
            assert!(
                answered.contains(&code.as_str()),
                "{code} is never answered"
            );
        }
    }
}
