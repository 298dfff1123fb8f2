//! Schemas of the OpenAPI document for what the handlers build by hand: the envelope,
//! its errors and the store request (which the domain parses field by field).
//!
//! These types are never serialized; tests validate real responses against the document,
//! so a schema that drifts from the wire fails the suite.

#![allow(dead_code)]

use serde::Deserialize;
use utoipa::ToSchema;

use super::health::{Health, Readiness};
use super::token_views::{Deleted, Stored, TokenData, TokenList};

/// Every answer's request identity.
#[derive(ToSchema)]
#[schema(example = json!({
    "request_id": "req_4f1c2a9b0d3e",
    "correlation_id": "corr_9a8b7c6d5e4f",
    "timestamp": "2026-12-04T10:15:30.123Z"
}))]
pub struct Meta {
    /// `req_` and 12 hex digits; also the `X-Request-ID` header.
    #[schema(pattern = "^req_[0-9a-f]{12}$")]
    request_id: String,
    /// The caller's `X-Correlation-ID`, or `corr_` and 12 hex digits when none was sent.
    correlation_id: String,
    /// When the answer was made (RFC 3339, UTC).
    #[schema(format = DateTime)]
    timestamp: String,
}

/// Declares `{data: $data, meta: Meta}` under the name `$name`.
macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident($data:ty)) => {
        $(#[$doc])*
        #[derive(ToSchema)]
        pub struct $name {
            data: $data,
            meta: Meta,
        }
    };
}

envelope!(
    /// A stored token's id.
    StoredEnvelope(Stored)
);
envelope!(
    /// A merchant's tokens, and those that could not be returned.
    TokenListEnvelope(TokenList)
);
envelope!(
    /// One freshly refreshed token.
    TokenDataEnvelope(TokenData)
);
envelope!(
    /// A deleted token.
    DeletedEnvelope(Deleted)
);
envelope!(
    /// Liveness.
    HealthEnvelope(Health)
);
envelope!(
    /// Readiness.
    ReadinessEnvelope(Readiness)
);

/// Every error answer: a stable code, a human message, sometimes details.
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    error: ErrorObject,
    meta: Meta,
}

/// What went wrong.
#[derive(ToSchema)]
pub struct ErrorObject {
    code: ErrorCode,
    /// For humans; may change between versions. Match on `code`.
    message: String,
    /// Present for the codes that say more (see each key).
    #[schema(nullable = false)]
    details: Option<ErrorDetails>,
}

/// The stable error codes, one per cause.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 401: missing, malformed or invalid credential.
    Unauthorized,
    /// 401: the body's `domain` is not the shop of the client JWT.
    DomainMismatch,
    /// 403: the token belongs to another shop.
    Forbidden,
    /// 403: the service is not on the reader allow-list.
    ServiceNotAllowed,
    /// 404: no such token (or it is another shop's).
    TokenNotFound,
    /// 409: no refresh token, or no provider configured for its platform.
    NotRefreshable,
    /// 502: the platform did not refresh the token (`details.reason`).
    RefreshFailed,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not answer this method.
    MethodNotAllowed,
    /// 413: body over 64 KiB.
    PayloadTooLarge,
    /// 415: body is not `application/json`.
    UnsupportedMediaType,
    /// 422: `details.validation_errors` lists every problem.
    ValidationError,
    /// 429: over a rate limit; retry after `Retry-After` seconds.
    RateLimited,
    /// 503: database unreachable or the request timed out; retryable.
    ServiceUnavailable,
    /// 500: `details.error_id` is in the service's log with the cause.
    InternalError,
    /// 4xx: a request the HTTP layer could not understand.
    BadRequest,
}

/// What some errors add; each key belongs to the codes named.
#[derive(ToSchema)]
pub struct ErrorDetails {
    /// VALIDATION_ERROR.
    #[schema(nullable = false)]
    validation_errors: Option<Vec<ValidationErrorItem>>,
    /// SERVICE_UNAVAILABLE and RATE_LIMITED: trying again later can succeed.
    #[schema(nullable = false)]
    retryable: Option<bool>,
    /// RATE_LIMITED: seconds until a request would be allowed (as `Retry-After`).
    #[schema(nullable = false, minimum = 1)]
    retry_after_seconds: Option<u64>,
    /// RATE_LIMITED: the limit hit (`ip`, `shop` or `service`).
    #[schema(nullable = false)]
    limit: Option<String>,
    /// INTERNAL_ERROR: quote it to the operators.
    #[schema(nullable = false, pattern = "^err_[0-9a-f]{12}$")]
    error_id: Option<String>,
    /// REFRESH_FAILED: REFRESH_UNAVAILABLE, REFRESH_REJECTED, REAUTH_REQUIRED, …
    #[schema(nullable = false)]
    reason: Option<String>,
    /// DOMAIN_MISMATCH: the JWT's shop.
    #[schema(nullable = false)]
    jwt_domain: Option<String>,
    /// DOMAIN_MISMATCH: the body's `domain`.
    #[schema(nullable = false)]
    request_domain: Option<String>,
}

/// One broken rule.
#[derive(ToSchema)]
pub struct ValidationErrorItem {
    /// The field (or path / query parameter) at fault.
    field: String,
    message: String,
    /// What kind of rule: string_length, enum, extra_forbidden, missing, …
    #[schema(rename = "type")]
    kind: String,
}

/// The files of the API page.
#[derive(ToSchema)]
pub enum DocsAsset {
    #[schema(rename = "swagger-ui-bundle.js")]
    SwaggerUiBundle,
    #[schema(rename = "swagger-ui.css")]
    SwaggerUiCss,
    #[schema(rename = "init.js")]
    Init,
}

/// The platforms whose credentials the vault keeps.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformName {
    Shopify,
    Woocommerce,
    Bigcommerce,
    Magento,
    Squarespace,
    Custom,
}

/// How a credential is used against its platform.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenTypeName {
    Oauth,
    ApiKey,
    BasicAuth,
    Bearer,
}

/// A credential to store, or to replace the same shop's earlier one for
/// (merchant_id, platform_name). Unknown and duplicate fields are refused.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = StoreTokenRequest, example = json!({
    "merchant_id": "merchant-1",
    "platform_name": "shopify",
    "platform_shop_id": "1001",
    "domain": "dev-shop.myshopify.com",
    "token_data": {"access_token": "shpat_…", "refresh_token": "shprt_…", "expires_in": 3600},
    "token_type": "oauth",
    "expires_at": "2027-01-01T00:00:00Z",
    "scopes": "read_products,write_orders"
}))]
pub struct StoreTokenBody {
    /// The platform's merchant id.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    merchant_id: String,
    platform_name: PlatformName,
    /// The shop's id on its platform; no control characters.
    #[schema(min_length = 1, max_length = 255)]
    platform_shop_id: String,
    /// The shop's host name; must be the client JWT's `sub` (case-insensitive), else 401
    /// DOMAIN_MISMATCH. Stored in lower case.
    #[schema(min_length = 1, max_length = 255)]
    domain: String,
    /// The credential itself, any JSON object of at most 16 KiB and nesting depth 16;
    /// readers get it back byte for byte. A `refresh_token` makes it refreshable.
    #[schema(value_type = Object)]
    token_data: serde_json::Value,
    token_type: TokenTypeName,
    /// When the access token expires (RFC 3339; a time without offset is UTC).
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// As the platform granted them.
    #[schema(max_length = 4096)]
    scopes: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Platform, StoreTokenRequest, TokenType};

    #[test]
    fn the_documented_enumerations_are_the_domains() {
        for platform in Platform::ALL {
            let name = serde_json::json!(platform.as_str());
            assert!(
                serde_json::from_value::<PlatformName>(name).is_ok(),
                "{platform:?}"
            );
        }
        assert!(serde_json::from_value::<PlatformName>(serde_json::json!("ebay")).is_err());
        for token_type in ["oauth", "api_key", "basic_auth", "bearer"] {
            assert!(TokenType::parse(token_type).is_ok());
            let name = serde_json::json!(token_type);
            assert!(
                serde_json::from_value::<TokenTypeName>(name).is_ok(),
                "{token_type}"
            );
        }
    }

    #[test]
    fn what_the_domain_accepts_fits_the_documented_shape() {
        let bodies = [
            r#"{"merchant_id":"m-1","platform_name":"shopify","platform_shop_id":"1",
                "domain":"a.myshopify.com","token_data":{"access_token":"x"},"token_type":"oauth"}"#,
            r#"{"merchant_id":"m.2:x_y-z","platform_name":"custom","platform_shop_id":"s",
                "domain":"shop.example","token_data":{},"token_type":"basic_auth",
                "expires_at":null,"scopes":null}"#,
            r#"{"merchant_id":"m-3","platform_name":"magento","platform_shop_id":"1",
                "domain":"a.example","token_data":{"k":[1,2]},"token_type":"api_key",
                "expires_at":"2027-01-01T00:00:00","scopes":"read"}"#,
        ];
        for body in bodies {
            assert!(StoreTokenRequest::parse(body.as_bytes()).is_ok(), "{body}");
            serde_json::from_str::<StoreTokenBody>(body).unwrap();
        }
        let unknown = r#"{"merchant_id":"m","platform_name":"shopify","platform_shop_id":"1",
            "domain":"a.example","token_data":{},"token_type":"oauth","extra":1}"#;
        assert!(StoreTokenRequest::parse(unknown.as_bytes()).is_err());
        assert!(serde_json::from_str::<StoreTokenBody>(unknown).is_err());
    }
}
