//! Keeping OAuth tokens alive: refresh on read, in the background, and on demand.
//!
//! Refresh tokens rotate, so exactly one party may refresh a given token at a time, or two
//! refreshers invalidate each other. Within a process, concurrent requests for one token
//! share one refresh (single flight); across replicas, a lease on the row does the same.
//! The refresh runs in its own task: a caller that gives up never cancels it half-way,
//! and the new pair is committed before anyone uses it. A lost or timed-out answer is
//! retried with the same refresh token, which the platform keeps valid until its
//! replacement is used.

pub mod oauth;
mod scheduler;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use self::oauth::{Grant, OAuthClient, OAuthError, TokenGrant};
use self::settings::RefreshSettings;
use crate::crypto::RowIdentity;
use crate::domain::Platform;
use crate::vault::{
    AuditContext, ClaimOutcome, ClaimRefresh, ClaimedToken, FinishOutcome, FinishRefresh,
    FinishResult, ReadCommand, ReadOutcome, ReadRefresh, RefreshFailure, RefreshPurpose,
    RefreshResult, Vault, VaultError,
};

pub use scheduler::{scan_once, spawn_background_refresh};

/// Who refreshes tokens, in the audit trail.
pub const REFRESHER_ACTOR: &str = "token-service:refresher";
/// Attempts per refresh when the answer is lost or the platform is briefly unavailable.
const ATTEMPTS: u32 = 3;
/// Longest a caller waits for another replica's refresh of the same token.
const WAIT_FOR_OTHER_REPLICA: Duration = Duration::from_secs(15);
/// Backoff after failed refreshes: 30 s doubling up to an hour.
const BACKOFF_BASE_SECS: i64 = 30;
const BACKOFF_MAX_SECS: i64 = 3600;

/// Refreshes tokens; one per process, shared by handlers, the background task and commands.
pub struct Refresher {
    vault: Vault,
    oauth: OAuthClient,
    settings: Arc<RefreshSettings>,
    /// Names of the platforms with a configured provider.
    platforms: Arc<HashSet<String>>,
    /// This process's lease identity.
    owner: String,
    in_flight: Mutex<HashMap<Uuid, watch::Receiver<Option<RefreshResult>>>>,
}

impl Refresher {
    pub fn new(vault: Vault, settings: Arc<RefreshSettings>) -> Arc<Self> {
        let platforms = settings
            .providers
            .keys()
            .map(|p| p.as_str().to_owned())
            .collect();
        Arc::new(Self {
            vault,
            oauth: OAuthClient::new(settings.http_timeout),
            settings,
            platforms: Arc::new(platforms),
            owner: format!("token-service-{}", Uuid::new_v4().simple()),
            in_flight: Mutex::default(),
        })
    }

    pub fn settings(&self) -> &RefreshSettings {
        &self.settings
    }

    /// Whether any platform can be refreshed at all.
    pub fn is_enabled(&self) -> bool {
        !self.platforms.is_empty()
    }

    /// How reads should treat tokens about to expire.
    pub fn read_policy(&self) -> ReadRefresh {
        if !self.is_enabled() {
            return ReadRefresh::AsStored;
        }
        ReadRefresh::HoldBackDue {
            due: Utc::now() + self.settings.window,
            platforms: self.platforms.clone(),
        }
    }

    /// Reads a merchant's tokens, refreshing first those that are about to expire.
    ///
    /// The first pass returns what needs no refresh and lists what does; those are
    /// refreshed (concurrently, each shared with any refresh of it already running) and
    /// read in a second pass, so every token is decrypted and audited exactly once.
    pub async fn read(
        self: &Arc<Self>,
        mut command: ReadCommand,
    ) -> Result<ReadOutcome, VaultError> {
        command.refresh = self.read_policy();
        let ReadRefresh::HoldBackDue { due, .. } = command.refresh else {
            return self.vault.read(command).await;
        };
        let mut outcome = self.vault.read(command.clone()).await?;
        if outcome.due_for_refresh.is_empty() {
            return Ok(outcome);
        }
        let audit = AuditContext {
            actor: REFRESHER_ACTOR.into(),
            correlation_id: command.audit.correlation_id.clone(),
            ip_address: None,
        };
        let mut refreshing = tokio::task::JoinSet::new();
        for id in std::mem::take(&mut outcome.due_for_refresh) {
            let (this, audit) = (self.clone(), audit.clone());
            refreshing.spawn(async move {
                (
                    id,
                    this.refresh(id, RefreshPurpose::IfDueBefore(due), audit)
                        .await,
                )
            });
        }
        let mut results = HashMap::new();
        while let Some(joined) = refreshing.join_next().await {
            let (id, result) = joined.map_err(|e| VaultError::Internal(e.into()))?;
            results.insert(id, result);
        }
        command.refresh = ReadRefresh::After(results);
        outcome.merge(self.vault.read(command).await?);
        Ok(outcome)
    }

    /// Refreshes one token now (coalesced with a refresh of it in flight) and reads it.
    pub async fn force(
        self: &Arc<Self>,
        mut command: ReadCommand,
        platform: Platform,
    ) -> Result<Result<ReadOutcome, RefreshFailure>, VaultError> {
        let Some(id) = self.vault.token_id(&command.merchant_id, platform).await? else {
            return Ok(Err(RefreshFailure::NotFound));
        };
        let audit = AuditContext {
            actor: REFRESHER_ACTOR.into(),
            correlation_id: command.audit.correlation_id.clone(),
            ip_address: None,
        };
        if let Err(failure) = self.refresh(id, RefreshPurpose::Force, audit).await {
            return Ok(Err(failure));
        }
        command.platform = Some(platform);
        command.refresh = ReadRefresh::After(HashMap::from([(id, Ok(()))]));
        Ok(Ok(self.vault.read(command).await?))
    }

    /// Refreshes one token, joining a refresh of it already in flight in this process.
    pub async fn refresh(
        self: &Arc<Self>,
        token_id: Uuid,
        purpose: RefreshPurpose,
        audit: AuditContext,
    ) -> RefreshResult {
        let mut receiver = {
            let mut in_flight = self.in_flight.lock().expect("in-flight map poisoned");
            match in_flight.get(&token_id) {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(token_id, receiver.clone());
                    let this = self.clone();
                    tokio::spawn(async move {
                        let result = this.run(token_id, purpose, audit).await;
                        let outcome = result.as_ref().map_or_else(|e| e.code(), |()| "success");
                        this.vault.metrics().refresh(purpose.label(), outcome);
                        this.in_flight
                            .lock()
                            .expect("in-flight map poisoned")
                            .remove(&token_id);
                        let _ = sender.send(Some(result));
                    });
                    receiver
                }
            }
        };
        let finished = match receiver.wait_for(Option::is_some).await {
            Ok(result) => result.clone(),
            Err(_) => None,
        };
        finished.unwrap_or(Err(RefreshFailure::Failed("REFRESH_FAILED")))
    }

    /// Claims the token (waiting while another replica holds it), refreshes, saves.
    async fn run(
        &self,
        token_id: Uuid,
        purpose: RefreshPurpose,
        audit: AuditContext,
    ) -> RefreshResult {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER_REPLICA;
        loop {
            let claim = ClaimRefresh {
                token_id,
                owner: self.owner.clone(),
                lease_until: Utc::now() + self.lease_length(),
                purpose,
            };
            match self
                .vault
                .claim_refresh(claim)
                .await
                .map_err(vault_failure)?
            {
                ClaimOutcome::Claimed(token) => {
                    return self.refresh_claimed(token, purpose, audit).await
                }
                ClaimOutcome::NotDue => return Ok(()),
                ClaimOutcome::Gone => return Err(RefreshFailure::NotFound),
                ClaimOutcome::NotRefreshable => return Err(RefreshFailure::NotRefreshable),
                ClaimOutcome::ReauthRequired => {
                    return Err(RefreshFailure::Failed(crate::vault::REAUTH_REQUIRED))
                }
                ClaimOutcome::Undecryptable => {
                    return Err(RefreshFailure::Failed("DECRYPTION_FAILED"))
                }
                ClaimOutcome::Busy if tokio::time::Instant::now() >= deadline => {
                    return Err(RefreshFailure::Failed("REFRESH_IN_PROGRESS"))
                }
                // Another replica is refreshing: once it commits, the next claim sees a
                // fresh token (NotDue) or takes over an expired lease.
                ClaimOutcome::Busy => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A lease outlives every attempt of one refresh, so it never expires mid-refresh.
    fn lease_length(&self) -> chrono::Duration {
        let attempts = self.settings.http_timeout * (ATTEMPTS + 1);
        chrono::Duration::from_std(attempts + Duration::from_secs(10))
            .unwrap_or(chrono::Duration::minutes(5))
    }

    async fn refresh_claimed(
        &self,
        token: ClaimedToken,
        purpose: RefreshPurpose,
        audit: AuditContext,
    ) -> RefreshResult {
        let provider = Platform::parse(&token.platform_name)
            .ok()
            .and_then(|p| self.settings.providers.get(&p));
        let exchange = matches!(purpose, RefreshPurpose::ExchangeToExpiring);
        let field = if exchange {
            "access_token"
        } else {
            "refresh_token"
        };
        let grant_token = token
            .token_data
            .get(field)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let (Some(provider), Some(grant_token)) = (provider, grant_token) else {
            self.finish(&token, FinishResult::Release, exchange, audit)
                .await?;
            return Err(RefreshFailure::NotRefreshable);
        };
        let grant = || match exchange {
            true => Grant::ShopifyExpiringExchange {
                offline_token: grant_token,
            },
            false => Grant::Refresh {
                refresh_token: grant_token,
            },
        };

        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            match self.oauth.request(provider, &token.domain, grant()).await {
                Err(OAuthError::Transient(reason)) if attempt < ATTEMPTS => {
                    tracing::warn!(token_id = %token.id, platform = %token.platform_name, attempt, %reason, "token refresh attempt failed; retrying with the same grant");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                other => break other,
            }
        };

        match answer {
            Ok(grant) => {
                let (plaintext, expires_at) = refreshed_token_data(&token, &grant);
                let row = RowIdentity {
                    merchant_id: &token.merchant_id,
                    platform_name: &token.platform_name,
                };
                let (encrypted_token, key_id) = self.vault.seal(row, plaintext.as_bytes());
                let result = FinishResult::Refreshed {
                    previous_ciphertext: token.encrypted_token.clone(),
                    encrypted_token,
                    key_id,
                    expires_at,
                };
                let outcome = self.finish(&token, result, exchange, audit).await?;
                if outcome == FinishOutcome::Superseded {
                    tracing::warn!(token_id = %token.id, "token changed during its refresh; kept the newer credential");
                }
                tracing::info!(token_id = %token.id, platform = %token.platform_name, exchange, "token refreshed");
                Ok(())
            }
            Err(error) => {
                let reauth = error == OAuthError::InvalidGrant;
                let next_attempt_at = (!reauth).then(|| Utc::now() + backoff(token.failures + 1));
                tracing::warn!(token_id = %token.id, platform = %token.platform_name, %error, reauth, "token refresh failed");
                let result = FinishResult::Failed {
                    code: error.code(),
                    reauth,
                    next_attempt_at,
                };
                self.finish(&token, result, exchange, audit).await?;
                Err(RefreshFailure::Failed(error.code()))
            }
        }
    }

    async fn finish(
        &self,
        token: &ClaimedToken,
        result: FinishResult,
        exchange: bool,
        audit: AuditContext,
    ) -> Result<FinishOutcome, RefreshFailure> {
        let finish = FinishRefresh {
            token_id: token.id,
            owner: self.owner.clone(),
            merchant_id: token.merchant_id.clone(),
            platform_name: token.platform_name.clone(),
            platform_shop_id: token.platform_shop_id.clone(),
            domain: token.domain.clone(),
            exchange,
            result,
            audit,
        };
        self.vault
            .finish_refresh(finish)
            .await
            .map_err(vault_failure)
    }
}

fn vault_failure(error: VaultError) -> RefreshFailure {
    tracing::error!(%error, "token refresh could not reach the database");
    RefreshFailure::Failed("REFRESH_FAILED")
}

/// 30 s, 60 s, 120 s … capped at an hour.
fn backoff(failures: i32) -> chrono::Duration {
    let exponent = failures.clamp(1, 16) as u32 - 1;
    chrono::Duration::seconds((BACKOFF_BASE_SECS << exponent).min(BACKOFF_MAX_SECS))
}

/// The stored payload after a refresh: the old one with the new access token, the new
/// refresh token (the old one kept when the answer has none), scope and expiry times.
fn refreshed_token_data(
    token: &ClaimedToken,
    grant: &TokenGrant,
) -> (zeroize::Zeroizing<String>, Option<DateTime<Utc>>) {
    let now = Utc::now();
    let at = |seconds: u64| {
        i64::try_from(seconds)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| now.checked_add_signed(d))
    };
    let mut data = token.token_data.clone();
    data.insert(
        "access_token".into(),
        Value::String(grant.access_token.to_string()),
    );
    if let Some(refresh_token) = &grant.refresh_token {
        data.insert(
            "refresh_token".into(),
            Value::String(refresh_token.to_string()),
        );
    }
    if let Some(scope) = &grant.scope {
        data.insert("scope".into(), Value::String(scope.clone()));
    }
    let expires_at = grant.expires_in.and_then(at);
    if let Some(seconds) = grant.expires_in {
        data.insert("expires_in".into(), Value::from(seconds));
    }
    if let Some(expires_at) = expires_at {
        data.insert(
            "expires_at".into(),
            Value::String(expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
    }
    if let Some(refresh_expiry) = grant.refresh_token_expires_in.and_then(at) {
        data.insert(
            "refresh_token_expires_at".into(),
            Value::String(refresh_expiry.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
    }
    let text = zeroize::Zeroizing::new(Value::Object(data).to_string());
    (text, expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1).num_seconds(), 30);
        assert_eq!(backoff(2).num_seconds(), 60);
        assert_eq!(backoff(5).num_seconds(), 480);
        assert_eq!(backoff(30).num_seconds(), 3600);
    }

    #[test]
    fn refreshed_payload_keeps_the_old_refresh_token_when_none_is_returned() {
        let token = ClaimedToken {
            id: Uuid::nil(),
            merchant_id: "m".into(),
            platform_name: "shopify".into(),
            platform_shop_id: "1".into(),
            domain: "s.myshopify.com".into(),
            token_data: serde_json::from_str(
                r#"{"access_token":"old","refresh_token":"r1","extra":1}"#,
            )
            .unwrap(),
            encrypted_token: String::new(),
            failures: 0,
        };
        let grant: TokenGrant =
            serde_json::from_str(r#"{"access_token":"new","expires_in":3600}"#).unwrap();
        let (text, expires_at) = refreshed_token_data(&token, &grant);
        let data: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(data["access_token"], "new");
        assert_eq!(data["refresh_token"], "r1");
        assert_eq!(data["extra"], 1);
        let expires_at = expires_at.unwrap();
        assert!((expires_at - Utc::now()).num_seconds() > 3590);
        assert_eq!(
            data["expires_at"],
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
}
