//! The database side of refreshing a token: claim it under a lease, then save the outcome.
//!
//! The outbound call to the platform happens between the two, outside any transaction (see
//! `crate::refresh`). The lease makes replicas on one PostgreSQL share one refresh; the
//! compare-and-swap on the ciphertext makes sure a credential stored meanwhile is never
//! overwritten by the refresh's older lineage.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::AuditContext;
use crate::crypto::{Keyring, RowIdentity};
use crate::events::{self, PlatformRef};
use crate::store::refresh::{self as queries, Refreshed};
use crate::store::{self, AccessRecord, AccessType, StoreError, Tx};

/// The code of a token that cannot be returned because it expired and was not refreshed.
pub const REFRESH_FAILED: &str = "REFRESH_FAILED";
/// The code of a token whose refresh token the platform refused (invalid_grant).
pub const REAUTH_REQUIRED: &str = "REAUTH_REQUIRED";

/// How one refresh went; shared by everyone who waited for it.
pub type RefreshResult = Result<(), RefreshFailure>;

/// Why a refresh did not produce a fresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshFailure {
    /// The token was deleted.
    NotFound,
    /// The token has no refresh token, or its platform has no configured provider.
    NotRefreshable,
    /// The attempt failed; the code says how (REAUTH_REQUIRED, REFRESH_UNAVAILABLE, …).
    Failed(&'static str),
}

impl RefreshFailure {
    pub fn code(&self) -> &'static str {
        match self {
            RefreshFailure::NotFound => "TOKEN_NOT_FOUND",
            RefreshFailure::NotRefreshable => "NOT_REFRESHABLE",
            RefreshFailure::Failed(code) => code,
        }
    }
}

/// Why a token is being claimed.
#[derive(Debug, Clone, Copy)]
pub enum RefreshPurpose {
    /// Refresh if it expires before this instant (reads, the background task).
    IfDueBefore(DateTime<Utc>),
    /// Refresh now (the forced-refresh endpoint).
    Force,
    /// Exchange a non-expiring Shopify token for an expiring pair (migration).
    ExchangeToExpiring,
}

impl RefreshPurpose {
    /// Its name in metrics: `due`, `forced` or `exchange`.
    pub fn label(self) -> &'static str {
        match self {
            RefreshPurpose::IfDueBefore(_) => "due",
            RefreshPurpose::Force => "forced",
            RefreshPurpose::ExchangeToExpiring => "exchange",
        }
    }
}

#[derive(Debug)]
pub struct ClaimRefresh {
    pub token_id: Uuid,
    /// This process's lease identity.
    pub owner: String,
    pub lease_until: DateTime<Utc>,
    pub purpose: RefreshPurpose,
}

/// A claimed token, decrypted for the refresher. Debug shows no secret.
pub struct ClaimedToken {
    pub id: Uuid,
    pub merchant_id: String,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
    pub token_data: Map<String, Value>,
    /// The ciphertext the refresh starts from, for the compare-and-swap when saving.
    pub encrypted_token: String,
    /// Failed attempts so far, for backoff.
    pub failures: i32,
}

impl std::fmt::Debug for ClaimedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedToken")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("platform_name", &self.platform_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(ClaimedToken),
    /// Fresh enough (perhaps another replica just refreshed it).
    NotDue,
    /// Another process holds the lease.
    Busy,
    Gone,
    NotRefreshable,
    ReauthRequired,
    /// The stored ciphertext does not open; nothing can be refreshed.
    Undecryptable,
}

#[derive(Debug)]
pub struct FinishRefresh {
    pub token_id: Uuid,
    pub owner: String,
    pub merchant_id: String,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
    /// A token exchange (migration to expiring tokens) rather than a refresh.
    pub exchange: bool,
    pub result: FinishResult,
    pub audit: AuditContext,
}

#[derive(Debug)]
pub enum FinishResult {
    /// Save the new credential (already encrypted for the row).
    Refreshed {
        previous_ciphertext: String,
        encrypted_token: String,
        key_id: String,
        expires_at: Option<DateTime<Utc>>,
    },
    /// Record a failure; `reauth` stops all further attempts.
    Failed {
        code: &'static str,
        reauth: bool,
        next_attempt_at: Option<DateTime<Utc>>,
    },
    /// Give the lease back, changing nothing (the refresh turned out to be impossible).
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Saved,
    /// The row changed (a newer credential was stored, or it was deleted): the refreshed
    /// credential was not saved.
    Superseded,
    Recorded,
}

pub(super) async fn claim(
    tx: &mut Tx,
    keyring: &Keyring,
    claim: &ClaimRefresh,
) -> Result<ClaimOutcome, StoreError> {
    let now = Utc::now();
    // Lease first, then read: the row read under the lease is the latest committed one, so
    // a refresh that another replica committed a moment ago is seen here, and its refresh
    // token is never replayed from a stale read.
    let leased =
        queries::take_lease(tx, claim.token_id, &claim.owner, claim.lease_until, now).await?;
    let Some(row) = queries::find_token_by_id(tx, claim.token_id).await? else {
        return Ok(ClaimOutcome::Gone);
    };
    if !leased {
        return Ok(ClaimOutcome::Busy);
    }
    let exchange = matches!(claim.purpose, RefreshPurpose::ExchangeToExpiring);
    let refusal =
        if row.refresh.refreshable == exchange || (exchange && row.platform_name != "shopify") {
            Some(ClaimOutcome::NotRefreshable)
        } else if !exchange && row.refresh.state.as_deref() == Some("reauth_required") {
            Some(ClaimOutcome::ReauthRequired)
        } else {
            match claim.purpose {
                RefreshPurpose::IfDueBefore(due) if row.expires_at.is_none_or(|at| at > due) => {
                    Some(ClaimOutcome::NotDue)
                }
                _ => None,
            }
        };
    if let Some(refusal) = refusal {
        queries::release_lease(tx, row.id, &claim.owner).await?;
        return Ok(refusal);
    }
    let identity = RowIdentity {
        merchant_id: &row.merchant_id,
        platform_name: &row.platform_name,
    };
    let token_data = keyring
        .open_stored(identity, &row.encryption_key_id, &row.encrypted_token)
        .ok()
        .and_then(|plain| serde_json::from_slice::<Map<String, Value>>(&plain).ok());
    let Some(token_data) = token_data else {
        // Retrying will not help until someone stores the token again; back off for long.
        let next_attempt_at = Some(now + chrono::Duration::hours(1));
        queries::save_refresh_failure(
            tx,
            row.id,
            &claim.owner,
            "DECRYPTION_FAILED",
            false,
            next_attempt_at,
        )
        .await?;
        return Ok(ClaimOutcome::Undecryptable);
    };
    Ok(ClaimOutcome::Claimed(ClaimedToken {
        id: row.id,
        merchant_id: row.merchant_id,
        platform_name: row.platform_name,
        platform_shop_id: row.platform_shop_id,
        domain: row.domain,
        token_data,
        encrypted_token: row.encrypted_token,
        failures: row.refresh.failures,
    }))
}

pub(super) async fn finish(
    tx: &mut Tx,
    finish: &FinishRefresh,
) -> Result<FinishOutcome, StoreError> {
    let now = Utc::now();
    let platform = PlatformRef {
        merchant_id: &finish.merchant_id,
        platform_name: &finish.platform_name,
        platform_shop_id: &finish.platform_shop_id,
        domain: &finish.domain,
    };
    let correlation_id = &finish.audit.correlation_id;
    let (outcome, success, error_code) = match &finish.result {
        FinishResult::Refreshed {
            previous_ciphertext,
            encrypted_token,
            key_id,
            expires_at,
        } => {
            let saved = queries::save_refreshed(
                tx,
                &Refreshed {
                    id: finish.token_id,
                    owner: &finish.owner,
                    previous_ciphertext,
                    encrypted_token,
                    encryption_key_id: key_id,
                    expires_at: *expires_at,
                    now,
                },
            )
            .await?;
            if saved {
                let grant = if finish.exchange {
                    "exchange"
                } else {
                    "refresh"
                };
                let event =
                    events::token_refreshed(platform, *expires_at, grant, correlation_id, now);
                store::insert_event(tx, &event.as_new_event()).await?;
                (FinishOutcome::Saved, true, None)
            } else {
                queries::release_lease(tx, finish.token_id, &finish.owner).await?;
                (FinishOutcome::Superseded, false, Some("REFRESH_SUPERSEDED"))
            }
        }
        FinishResult::Failed {
            code,
            reauth,
            next_attempt_at,
        } => {
            queries::save_refresh_failure(
                tx,
                finish.token_id,
                &finish.owner,
                code,
                *reauth,
                *next_attempt_at,
            )
            .await?;
            if *reauth {
                let event = events::token_reauth_required(platform, code, correlation_id, now);
                store::insert_event(tx, &event.as_new_event()).await?;
            }
            (FinishOutcome::Recorded, false, Some(*code))
        }
        FinishResult::Release => {
            queries::release_lease(tx, finish.token_id, &finish.owner).await?;
            return Ok(FinishOutcome::Recorded);
        }
    };
    let record = AccessRecord {
        token_id: Some(finish.token_id),
        merchant_id: &finish.merchant_id,
        platform_name: Some(&finish.platform_name),
        accessed_by: &finish.audit.actor,
        access_type: AccessType::Refresh,
        success,
        error_code,
        correlation_id: &finish.audit.correlation_id,
        ip_address: finish.audit.ip_address.as_deref(),
        at: now,
    };
    store::record_access(tx, &record).await?;
    Ok(outcome)
}
