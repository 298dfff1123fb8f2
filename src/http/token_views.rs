//! The JSON bodies the token routes answer (inside the envelope), with their schemas.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::schemas::{PlatformName, TokenTypeName};
use crate::domain::TokenDataJson;
use crate::vault::{FailedToken, ReadOutcome, TokenView};

/// What a store answers.
#[derive(Serialize, ToSchema)]
pub(super) struct Stored {
    /// The token's id (a UUID), the same when an earlier token is replaced.
    #[schema(format = "uuid", example = "01938a4e-7b7c-7d2e-9f10-3c5d7e9a1b2c")]
    pub token_id: String,
    /// Always `stored`.
    #[schema(value_type = String, example = "stored")]
    pub status: &'static str,
}

/// A merchant's tokens: those returned, and those that exist but could not be.
#[derive(Serialize, ToSchema)]
pub(super) struct TokenList {
    /// Ordered by platform.
    pub tokens: Vec<TokenData>,
    /// Tokens that exist but are not returned, with the reason.
    pub failed: Vec<Failed>,
}

impl TokenList {
    pub(super) fn new(outcome: ReadOutcome) -> Self {
        let now = Utc::now();
        Self {
            tokens: outcome
                .tokens
                .into_iter()
                .map(|v| TokenData::new(v, now))
                .collect(),
            failed: outcome
                .failed
                .into_iter()
                .map(
                    |FailedToken {
                         platform_name,
                         code,
                     }| Failed {
                        platform_name,
                        code,
                    },
                )
                .collect(),
        }
    }
}

/// One credential as internal callers receive it (the original service's `TokenData`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "platform_name": "shopify",
    "platform_shop_id": "1001",
    "domain": "dev-shop.myshopify.com",
    "token_data": {"access_token": "shpat_…", "refresh_token": "shprt_…", "expires_in": 3600},
    "token_type": "oauth",
    "expires_at": "2027-01-01T00:00:00Z",
    "is_expired": false,
    "scopes": "read_products"
}))]
pub(super) struct TokenData {
    #[schema(value_type = PlatformName)]
    platform_name: String,
    platform_shop_id: String,
    domain: String,
    /// The stored JSON object, exactly as the BFF sent it (after refreshes, with the new
    /// access and refresh tokens).
    #[schema(value_type = Object)]
    token_data: TokenDataJson,
    #[schema(value_type = TokenTypeName)]
    token_type: String,
    /// When the access token expires (RFC 3339), if known.
    #[schema(format = DateTime, required = true)]
    expires_at: Option<String>,
    is_expired: bool,
    #[schema(required = true)]
    scopes: Option<String>,
    /// Present only when a due refresh failed and the still-valid old token is returned:
    /// REFRESH_UNAVAILABLE, REFRESH_REJECTED, REFRESH_DOMAIN_NOT_ALLOWED or REAUTH_REQUIRED.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_error: Option<String>,
}

/// A token that exists but is not returned.
#[derive(Serialize, ToSchema)]
pub(super) struct Failed {
    #[schema(value_type = PlatformName)]
    platform_name: String,
    /// DECRYPTION_FAILED (tampered, or an unknown key id) or REFRESH_FAILED (expired and not
    /// refreshed).
    #[schema(value_type = String, example = "DECRYPTION_FAILED")]
    pub code: &'static str,
}

impl TokenData {
    fn new(view: TokenView, now: DateTime<Utc>) -> Self {
        Self {
            is_expired: view.expires_at.is_some_and(|at| at < now),
            expires_at: view
                .expires_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            platform_name: view.platform_name,
            platform_shop_id: view.platform_shop_id,
            domain: view.domain,
            token_data: view.token_data,
            token_type: view.token_type,
            scopes: view.scopes,
            refresh_error: view.refresh_error,
        }
    }
}

/// What a delete answers.
#[derive(Serialize, ToSchema)]
pub(super) struct Deleted {
    /// Always `deleted`.
    #[schema(value_type = String, example = "deleted")]
    pub status: &'static str,
}
