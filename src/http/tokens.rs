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
    AuditContext, DeleteCommand, DeleteOutcome, DeniedRead, FailedToken, ReadCommand, ReadOutcome,
    ReadRefresh, RefreshFailure, StoreOutcome, TokenView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", post(store_token))
        .route("/api/v1/tokens/{merchant_id}", get(read_tokens))
        .route(
            "/api/v1/tokens/{merchant_id}/{platform}",
            delete(delete_token),
        )
        .route(
            "/api/v1/tokens/{merchant_id}/{platform}/refresh",
            post(refresh_token),
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
pub(super) struct TokenList {
    tokens: Vec<TokenData>,
    failed: Vec<Failed>,
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
#[derive(Serialize)]
pub(super) struct TokenData {
    platform_name: String,
    platform_shop_id: String,
    domain: String,
    token_data: TokenDataJson,
    token_type: String,
    expires_at: Option<String>,
    is_expired: bool,
    scopes: Option<String>,
    /// Present only when a due refresh failed and the still-valid old token is returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_error: Option<String>,
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
            refresh_error: view.refresh_error,
        }
    }
}

/// Returns a merchant's credentials decrypted, to allow-listed internal services only.
/// Tokens about to expire are refreshed first.
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
    let command = authorize_read(&state, &auth, &ctx, peer, &merchant_id, platform).await?;
    let outcome = state.refresher.read(command).await?;
    Ok(envelope(&ctx, StatusCode::OK, &TokenList::new(outcome)))
}

/// The reader allow-list and input checks of reads; refusals are audited before answering.
pub(super) async fn authorize_read(
    state: &AppState,
    auth: &InternalAuth,
    ctx: &RequestContext,
    peer: SocketAddr,
    merchant_id: &str,
    platform: Option<String>,
) -> Result<ReadCommand, ApiError> {
    let (parsed_merchant, parsed_platform) = parse_target(merchant_id, platform.as_deref());
    let audit = audit(&auth.service, ctx, peer);
    let denial = match (&parsed_merchant, &parsed_platform) {
        _ if !state.auth.may_read(&auth.service) => {
            Some((ApiError::ServiceNotAllowed, "SERVICE_NOT_ALLOWED"))
        }
        (Ok(_), Ok(_)) => None,
        (m, p) => {
            let errors = validation_errors(m.clone(), p.clone());
            Some((ApiError::Validation(errors), "VALIDATION_ERROR"))
        }
    };
    if let Some((error, reason)) = denial {
        let denied = DeniedRead {
            merchant_id: truncate(merchant_id, MerchantId::MAX_LEN),
            platform: platform.map(|p| truncate(&p, 32)),
            reason,
            audit,
        };
        state.vault.record_denied(denied).await?;
        return Err(error);
    }
    Ok(ReadCommand {
        merchant_id: parsed_merchant.expect("checked above"),
        platform: parsed_platform.expect("checked above"),
        refresh: ReadRefresh::AsStored,
        audit,
    })
}

/// Refreshes one token now and returns it (internal, allow-listed services).
async fn refresh_token(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: InternalAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((merchant_id, platform)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let command = authorize_read(&state, &auth, &ctx, peer, &merchant_id, Some(platform)).await?;
    let platform = command.platform.expect("the path names a platform");
    let outcome = match state.refresher.force(command, platform).await? {
        Ok(outcome) => outcome,
        Err(RefreshFailure::NotFound) => return Err(ApiError::TokenNotFound),
        Err(RefreshFailure::NotRefreshable) => return Err(ApiError::NotRefreshable),
        Err(RefreshFailure::Failed(code)) => return Err(ApiError::RefreshFailed(code)),
    };
    let mut list = TokenList::new(outcome);
    match (list.tokens.pop(), list.failed.pop()) {
        (Some(token), _) => Ok(envelope(&ctx, StatusCode::OK, &token)),
        (None, Some(failed)) => Err(ApiError::RefreshFailed(failed.code)),
        // Deleted between the refresh and the read.
        (None, None) => Err(ApiError::TokenNotFound),
    }
}

type Parsed<T> = Result<T, FieldError>;

/// The merchant and platform named by a path or query.
fn parse_target(
    merchant_id: &str,
    platform: Option<&str>,
) -> (Parsed<MerchantId>, Parsed<Option<Platform>>) {
    let platform = platform
        .map(|p| Platform::parse(p).map_err(|e| e.for_field("platform")))
        .transpose();
    (MerchantId::parse(merchant_id), platform)
}

fn validation_errors<A, B>(merchant: Parsed<A>, platform: Parsed<B>) -> Vec<FieldError> {
    [merchant.err(), platform.err()]
        .into_iter()
        .flatten()
        .collect()
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
    let (merchant_id, platform) = match parse_target(&merchant_id, Some(&platform)) {
        (Ok(m), Ok(Some(p))) => (m, p),
        (m, p) => return Err(ApiError::Validation(validation_errors(m, p))),
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
