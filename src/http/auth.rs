//! Who is calling: shops with a client JWT, internal services with a service key.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::context::RequestContext;
use super::error::ApiError;
use crate::config::{ClientJwtSettings, ServiceKey};
use crate::domain::ShopDomain;
use crate::rate_limit::RateLimits;

/// Leeway for `exp` and `nbf`, for clocks that disagree a little.
const CLOCK_LEEWAY_SECS: u64 = 30;

/// Checks credentials; built once from the configuration.
pub struct Authenticator {
    client_key: DecodingKey,
    validation: Validation,
    /// (service, SHA-256 of its key). Hashing first makes the comparison length-independent.
    service_keys: Vec<(String, Zeroizing<[u8; 32]>)>,
    allowed_readers: HashSet<String>,
}

impl Authenticator {
    pub fn new(
        client: &ClientJwtSettings,
        service_keys: &[ServiceKey],
        allowed_readers: HashSet<String>,
    ) -> Self {
        // Pinned to HS256: a token whose header names any other algorithm is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["sub"];
        if client.require_exp {
            required.push("exp");
        }
        match &client.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &client.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);

        Self {
            client_key: DecodingKey::from_secret(client.secret.expose_secret().as_bytes()),
            validation,
            service_keys: service_keys
                .iter()
                .map(|k| (k.service.clone(), digest(k.key.expose_secret().as_bytes())))
                .collect(),
            allowed_readers,
        }
    }

    /// The shop a client JWT speaks for.
    pub fn authenticate_client(&self, token: &str) -> Result<ClientAuth, ApiError> {
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
            scope: Option<String>,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.client_key, &self.validation)
            .map_err(|e| {
                ApiError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token has expired",
                    ErrorKind::ImmatureSignature => "token is not valid yet",
                    ErrorKind::InvalidAudience => "token audience is not accepted",
                    ErrorKind::InvalidIssuer => "token issuer is not accepted",
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                    _ => "invalid token",
                })
            })?;
        let shop = ShopDomain::from_subject(&data.claims.sub)
            .map_err(|_| ApiError::Unauthorized("token subject is not a shop domain"))?;
        Ok(ClientAuth {
            shop,
            scope: data.claims.scope,
        })
    }

    /// The service a key belongs to. Every configured key is compared, in constant time.
    pub fn authenticate_service(&self, presented: &str) -> Result<InternalAuth, ApiError> {
        let presented = digest(presented.as_bytes());
        let mut found: Option<&str> = None;
        for (service, key) in &self.service_keys {
            if bool::from(key.ct_eq(presented.as_ref())) {
                found = Some(service);
            }
        }
        found
            .map(|service| InternalAuth {
                service: service.to_owned(),
            })
            .ok_or(ApiError::Unauthorized("invalid service key"))
    }

    pub fn may_read(&self, service: &str) -> bool {
        self.allowed_readers.contains(service)
    }
}

fn digest(bytes: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(Sha256::digest(bytes).into())
}

/// The bearer credential of a request.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing Authorization header"))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(ApiError::Unauthorized(
            "Authorization must be a Bearer credential",
        ));
    }
    Ok(credential)
}

fn record_caller(parts: &Parts, caller: &str) {
    if let Some(ctx) = parts.extensions.get::<RequestContext>() {
        ctx.set_caller(caller);
    }
}

/// A request made by a shop (through the BFF) with a valid client JWT, within its shop's
/// rate limit.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub shop: ShopDomain,
    pub scope: Option<String>,
}

impl<S> FromRequestParts<S> for ClientAuth
where
    Arc<Authenticator>: FromRef<S>,
    Arc<RateLimits>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state).authenticate_client(bearer(parts)?)?;
        record_caller(parts, &format!("shop:{}", auth.shop.as_str()));
        Arc::<RateLimits>::from_ref(state)
            .check_shop(auth.shop.as_str())
            .map_err(ApiError::RateLimited)?;
        Ok(auth)
    }
}

/// A request made by an internal service with a valid service key, within its service's
/// rate limit.
#[derive(Debug, Clone)]
pub struct InternalAuth {
    pub service: String,
}

impl<S> FromRequestParts<S> for InternalAuth
where
    Arc<Authenticator>: FromRef<S>,
    Arc<RateLimits>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state).authenticate_service(bearer(parts)?)?;
        record_caller(parts, &format!("service:{}", auth.service));
        Arc::<RateLimits>::from_ref(state)
            .check_service(&auth.service)
            .map_err(ApiError::RateLimited)?;
        Ok(auth)
    }
}
