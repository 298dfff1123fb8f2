//! `/api/v1/tokens`: store, read and delete credentials.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ClientAuth, InternalAuth};
use super::body::JsonBody;
use super::context::{envelope, RequestContext};
use super::error::ApiError;
use super::openapi::responses::{
    InternalError, NotRefreshable, PayloadTooLarge, RateLimited, RefreshFailed, ServiceNotAllowed,
    ShopForbidden, StoreUnauthorized, TokenNotFound, Unauthorized, Unavailable,
    UnsupportedMediaType, ValidationFailed,
};
use super::schemas::{
    DeletedEnvelope, PlatformName, StoreTokenBody, StoredEnvelope, TokenDataEnvelope,
    TokenListEnvelope,
};
use super::token_views::{Deleted, Stored, TokenList};
use super::AppState;
use crate::domain::{FieldError, MerchantId, Platform, StoreTokenRequest};
use crate::vault::{
    AuditContext, DeleteCommand, DeleteOutcome, DeniedRead, ReadCommand, ReadRefresh,
    RefreshFailure, StoreOutcome,
};

/// The token routes, each with its OpenAPI description.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(store_token))
        .routes(routes!(read_tokens))
        .routes(routes!(delete_token))
        .routes(routes!(refresh_token))
}

/// Counts an authenticated operation by caller and outcome (`success` or the error code).
fn count(
    state: &AppState,
    operation: &'static str,
    caller: &str,
    result: &Result<Response, ApiError>,
) {
    let outcome = result.as_ref().map_or_else(ApiError::code, |_| "success");
    state
        .vault
        .metrics()
        .token_operation(operation, caller, outcome);
}

/// The metrics caller of client calls: one label for every shop, so that a shop domain
/// never becomes a label value.
const SHOP_CALLER: &str = "shop";

fn audit(actor: &str, ctx: &RequestContext, peer: SocketAddr) -> AuditContext {
    AuditContext {
        actor: actor.to_owned(),
        correlation_id: ctx.correlation_id.clone(),
        ip_address: Some(peer.ip().to_string()),
    }
}

/// Store a credential
///
/// Stores or replaces a shop's credential; the BFF calls this after an OAuth callback. The
/// body's `domain` must be the shop of the client JWT, and a (merchant_id, platform_name)
/// stored by another shop cannot be replaced (403, row untouched). A 201 means the token and
/// its audit row are committed and durable.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("client_jwt" = [])),
    request_body(content = StoreTokenBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (created or replaced)", body = StoredEnvelope),
        (status = 401, response = StoreUnauthorized),
        (status = 403, response = ShopForbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
        (status = 429, response = RateLimited),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    )
)]
async fn store_token(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: ClientAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let result = store(&state, &ctx, auth, peer, &body).await;
    count(&state, "store", SHOP_CALLER, &result);
    result
}

async fn store(
    state: &AppState,
    ctx: &RequestContext,
    auth: ClientAuth,
    peer: SocketAddr,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request = StoreTokenRequest::parse(body).map_err(ApiError::Validation)?;
    if request.domain != auth.shop {
        return Err(ApiError::DomainMismatch {
            jwt_domain: auth.shop.as_str().to_owned(),
            request_domain: request.domain.as_str().to_owned(),
        });
    }
    let actor = auth.shop.as_str();
    match state.vault.store(request, audit(actor, ctx, peer)).await? {
        StoreOutcome::Stored { token_id, .. } => Ok(envelope(
            ctx,
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

/// Read a merchant's credentials
///
/// Returns a merchant's credentials decrypted, to allow-listed internal services only.
/// Refreshable tokens about to expire are refreshed first. A token that cannot be returned
/// is listed under `failed`; an unknown merchant has empty lists. Every read is audited in
/// the same transaction.
#[utoipa::path(
    get,
    path = "/api/v1/tokens/{merchant_id}",
    tag = "tokens",
    security(("service_key" = [])),
    params(
        ("merchant_id" = String, Path, description = "The merchant (1–128 characters of `[A-Za-z0-9_.:-]`)"),
        ("platform" = Option<PlatformName>, Query, description = "Only this platform's token; empty means all"),
    ),
    responses(
        (status = 200, description = "The merchant's tokens", body = TokenListEnvelope),
        (status = 401, response = Unauthorized),
        (status = 403, response = ServiceNotAllowed),
        (status = 422, response = ValidationFailed),
        (status = 429, response = RateLimited),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    )
)]
async fn read_tokens(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: InternalAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(merchant_id): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    let result = async {
        // An empty `platform=` means no filter, as in the original service.
        let platform = query.platform.filter(|p| !p.is_empty());
        let command = authorize_read(&state, &auth, &ctx, peer, &merchant_id, platform).await?;
        let outcome = state.refresher.read(command).await?;
        Ok(envelope(&ctx, StatusCode::OK, &TokenList::new(outcome)))
    }
    .await;
    count(&state, "read", &auth.service, &result);
    result
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

/// Refresh a credential now
///
/// Refreshes one refreshable token now (coalesced with any refresh of it in flight) and
/// returns it, to allow-listed internal services only. The new access and refresh tokens
/// are committed before the answer.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{merchant_id}/{platform}/refresh",
    tag = "tokens",
    security(("service_key" = [])),
    params(
        ("merchant_id" = String, Path, description = "The merchant"),
        ("platform" = PlatformName, Path, description = "The token's platform"),
    ),
    responses(
        (status = 200, description = "The refreshed token", body = TokenDataEnvelope),
        (status = 401, response = Unauthorized),
        (status = 403, response = ServiceNotAllowed),
        (status = 404, response = TokenNotFound),
        (status = 409, response = NotRefreshable),
        (status = 422, response = ValidationFailed),
        (status = 429, response = RateLimited),
        (status = 500, response = InternalError),
        (status = 502, response = RefreshFailed),
        (status = 503, response = Unavailable),
    )
)]
async fn refresh_token(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: InternalAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((merchant_id, platform)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let result = refresh(&state, &ctx, &auth, peer, &merchant_id, platform).await;
    count(&state, "refresh", &auth.service, &result);
    result
}

async fn refresh(
    state: &AppState,
    ctx: &RequestContext,
    auth: &InternalAuth,
    peer: SocketAddr,
    merchant_id: &str,
    platform: String,
) -> Result<Response, ApiError> {
    let command = authorize_read(state, auth, ctx, peer, merchant_id, Some(platform)).await?;
    let platform = command.platform.expect("the path names a platform");
    let outcome = match state.refresher.force(command, platform).await? {
        Ok(outcome) => outcome,
        Err(RefreshFailure::NotFound) => return Err(ApiError::TokenNotFound),
        Err(RefreshFailure::NotRefreshable) => return Err(ApiError::NotRefreshable),
        Err(RefreshFailure::Failed(code)) => return Err(ApiError::RefreshFailed(code)),
    };
    let mut list = TokenList::new(outcome);
    match (list.tokens.pop(), list.failed.pop()) {
        (Some(token), _) => Ok(envelope(ctx, StatusCode::OK, &token)),
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

/// Delete a credential
///
/// Deletes a credential; only the shop that owns it may. A missing token and another
/// shop's token both answer 404, so that nobody learns what others store.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{merchant_id}/{platform}",
    tag = "tokens",
    security(("client_jwt" = [])),
    params(
        ("merchant_id" = String, Path, description = "The merchant"),
        ("platform" = PlatformName, Path, description = "The token's platform"),
    ),
    responses(
        (status = 200, description = "Deleted", body = DeletedEnvelope),
        (status = 401, response = Unauthorized),
        (status = 404, response = TokenNotFound),
        (status = 422, response = ValidationFailed),
        (status = 429, response = RateLimited),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    )
)]
async fn delete_token(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: ClientAuth,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((merchant_id, platform)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let result = delete(&state, &ctx, auth, peer, &merchant_id, &platform).await;
    count(&state, "delete", SHOP_CALLER, &result);
    result
}

async fn delete(
    state: &AppState,
    ctx: &RequestContext,
    auth: ClientAuth,
    peer: SocketAddr,
    merchant_id: &str,
    platform: &str,
) -> Result<Response, ApiError> {
    let (merchant_id, platform) = match parse_target(merchant_id, Some(platform)) {
        (Ok(m), Ok(Some(p))) => (m, p),
        (m, p) => return Err(ApiError::Validation(validation_errors(m, p))),
    };
    let command = DeleteCommand {
        merchant_id,
        platform,
        audit: audit(auth.shop.as_str(), ctx, peer),
        owner: auth.shop,
    };
    match state.vault.delete(command).await? {
        DeleteOutcome::Deleted => Ok(envelope(
            ctx,
            StatusCode::OK,
            &Deleted { status: "deleted" },
        )),
        DeleteOutcome::NotFound => Err(ApiError::TokenNotFound),
    }
}
