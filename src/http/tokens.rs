//! `/api/v1/tokens`: store, read and delete credentials.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{ClientAuth, InternalAuth};
use super::body::JsonBody;
use super::context::{envelope, RequestContext};
use super::error::ApiError;
use super::AppState;
use crate::domain::{FieldError, MerchantId, Platform, StoreTokenRequest, TokenDataJson};
use crate::vault::{
    AuditContext, DeleteCommand, DeleteOutcome, DeniedRead, FailedToken, ReadCommand, StoreOutcome,
    TokenView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", post(store_token))
        .route("/api/v1/tokens/{merchant_id}", get(read_tokens))
        .route(
            "/api/v1/tokens/{merchant_id}/{platform}",
            delete(delete_token),
        )
}

fn audit(actor: &str, ctx: &RequestContext, peer: SocketAddr) -> AuditContext {
    AuditContext {
        actor: actor.to_owned(),
        correlation_id: ctx.correlation_id.clone(),
        ip_address: Some(peer.ip().to_string()),
    }
}

#[derive(Serialize)]
struct Stored {
    token_id: String,
    status: &'static str,
}

/// Stores or replaces a shop's credential (the BFF calls this after an OAuth callback).
async fn store_token(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: ClientAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = StoreTokenRequest::parse(&body).map_err(ApiError::Validation)?;
    if request.domain != auth.shop {
        return Err(ApiError::DomainMismatch {
            jwt_domain: auth.shop.as_str().to_owned(),
            request_domain: request.domain.as_str().to_owned(),
        });
    }
    let actor = auth.shop.as_str();
    match state.vault.store(request, audit(actor, &ctx, peer)).await? {
        StoreOutcome::Stored { token_id, .. } => Ok(envelope(
            &ctx,
            StatusCode::CREATED,
            &Stored {
                token_id: token_id.to_string(),
                status: "stored",
            },
        )),
        StoreOutcome::OwnedByAnotherShop => Err(ApiError::Forbidden(
            "this merchant's platform token belongs to another shop",
        )),
    }
}

#[derive(Deserialize)]
struct ReadQuery {
    platform: Option<String>,
}

#[derive(Serialize)]
struct TokenList {
    tokens: Vec<TokenData>,
    failed: Vec<Failed>,
}

/// One credential as internal callers receive it (the original service's `TokenData`).
#[derive(Serialize)]
struct TokenData {
    platform_name: String,
    platform_shop_id: String,
    domain: String,
    token_data: TokenDataJson,
    token_type: String,
    expires_at: Option<String>,
    is_expired: bool,
    scopes: Option<String>,
}

#[derive(Serialize)]
struct Failed {
    platform_name: String,
    code: &'static str,
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
        }
    }
}

/// Returns a merchant's credentials decrypted, to allow-listed internal services only.
async fn read_tokens(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: InternalAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(merchant_id): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    // An empty `platform=` means no filter, as in the original service.
    let platform = query.platform.filter(|p| !p.is_empty());
    let denial = if !state.auth.may_read(&auth.service) {
        Some((ApiError::ServiceNotAllowed, "SERVICE_NOT_ALLOWED"))
    } else {
        let mut errors: Vec<FieldError> = Vec::new();
        if let Err(e) = MerchantId::parse(&merchant_id) {
            errors.push(e);
        }
        if let Some(Err(e)) = platform.as_deref().map(Platform::parse) {
            errors.push(e.for_field("platform"));
        }
        (!errors.is_empty()).then(|| (ApiError::Validation(errors), "VALIDATION_ERROR"))
    };
    let audit = audit(&auth.service, &ctx, peer);
    if let Some((error, reason)) = denial {
        state
            .vault
            .record_denied(DeniedRead {
                merchant_id: truncate(&merchant_id, MerchantId::MAX_LEN),
                platform: platform.map(|p| truncate(&p, 32)),
                reason,
                audit,
            })
            .await?;
        return Err(error);
    }

    let command = ReadCommand {
        merchant_id: MerchantId::parse(&merchant_id).map_err(|e| ApiError::Validation(vec![e]))?,
        platform: platform
            .as_deref()
            .map(Platform::parse)
            .transpose()
            .map_err(|e| ApiError::Validation(vec![e]))?,
        audit,
    };
    let outcome = state.vault.read(command).await?;
    let now = Utc::now();
    let list = TokenList {
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
    };
    Ok(envelope(&ctx, StatusCode::OK, &list))
}

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}

#[derive(Serialize)]
struct Deleted {
    status: &'static str,
}

/// Deletes a credential; only the shop that owns it may.
async fn delete_token(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: ClientAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((merchant_id, platform)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let merchant_id = MerchantId::parse(&merchant_id);
    let platform = Platform::parse(&platform).map_err(|e| e.for_field("platform"));
    let (merchant_id, platform) = match (merchant_id, platform) {
        (Ok(m), Ok(p)) => (m, p),
        (m, p) => {
            let errors = [m.err(), p.err()].into_iter().flatten().collect();
            return Err(ApiError::Validation(errors));
        }
    };
    let command = DeleteCommand {
        merchant_id,
        platform,
        audit: audit(auth.shop.as_str(), &ctx, peer),
        owner: auth.shop,
    };
    match state.vault.delete(command).await? {
        DeleteOutcome::Deleted => Ok(envelope(
            &ctx,
            StatusCode::OK,
            &Deleted { status: "deleted" },
        )),
        DeleteOutcome::NotFound => Err(ApiError::TokenNotFound),
    }
}
