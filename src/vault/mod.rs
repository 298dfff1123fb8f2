//! The vault's operations: the rules of storing, reading and deleting credentials.
//!
//! Each operation runs inside one database transaction together with its audit rows, so
//! an operation and its audit commit together or not at all. Operations are queued to
//! the [`committer`], which runs many of them in one transaction and one commit.

mod committer;
mod ops;
mod refresh_ops;
mod uninstall;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::crypto::{Keyring, RowIdentity};
use crate::domain::{
    MerchantId, Platform, PlatformShopId, ShopDomain, StoreTokenRequest, TokenDataJson,
};
use crate::metrics::Metrics;
use crate::store::{Db, StoreError};

pub use committer::{CommitSettings, Committer};
pub use refresh_ops::{
    ClaimOutcome, ClaimRefresh, ClaimedToken, FinishOutcome, FinishRefresh, FinishResult,
    RefreshFailure, RefreshPurpose, RefreshResult, REAUTH_REQUIRED, REFRESH_FAILED,
};

/// Who is acting, for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditContext {
    /// The calling service's name, or the shop's domain for client calls.
    pub actor: String,
    pub correlation_id: String,
    pub ip_address: Option<String>,
}

/// A store request with its payload already encrypted for its row.
#[derive(Debug)]
pub struct StoreCommand {
    pub request: StoreTokenRequest,
    pub encrypted_token: String,
    pub key_id: String,
    /// `token_data` holds a refresh token.
    pub refreshable: bool,
    /// When the request gave no `expires_at`, the one `token_data` implies, if any.
    pub implied_expires_at: Option<DateTime<Utc>>,
    pub audit: AuditContext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored {
        token_id: Uuid,
        created: bool,
    },
    /// The (merchant, platform) row belongs to another shop; it was not touched.
    OwnedByAnotherShop,
}

#[derive(Debug, Clone)]
pub struct ReadCommand {
    pub merchant_id: MerchantId,
    pub platform: Option<Platform>,
    pub refresh: ReadRefresh,
    pub audit: AuditContext,
}

/// How a read treats refreshable tokens that are about to expire.
#[derive(Debug, Clone, Default)]
pub enum ReadRefresh {
    /// Return every row as stored.
    #[default]
    AsStored,
    /// Hold back refreshable rows of `platforms` expiring before `due`: they are neither
    /// decrypted nor audited but listed in [`ReadOutcome::due_for_refresh`], for the caller
    /// to refresh and read again with [`ReadRefresh::After`].
    HoldBackDue {
        due: DateTime<Utc>,
        platforms: Arc<HashSet<String>>,
    },
    /// The second pass: only these rows, each with how its refresh went.
    After(HashMap<Uuid, RefreshResult>),
}

/// A decrypted credential, ready to hand to an internal caller.
#[derive(Debug)]
pub struct TokenView {
    pub token_id: Uuid,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
    pub token_data: TokenDataJson,
    pub token_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<String>,
    /// Set when the token is due for refresh but the refresh failed; the token is still valid.
    pub refresh_error: Option<String>,
}

/// The code of a row that exists but cannot be decrypted (tampered, or an unknown key id).
pub const DECRYPTION_FAILED: &str = "DECRYPTION_FAILED";

/// A row that exists but could not be returned, and why (a stable code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedToken {
    pub platform_name: String,
    pub code: &'static str,
}

#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub tokens: Vec<TokenView>,
    pub failed: Vec<FailedToken>,
    /// Rows held back by [`ReadRefresh::HoldBackDue`].
    pub due_for_refresh: Vec<Uuid>,
}

impl ReadOutcome {
    /// Adds a second pass's rows, keeping the answer ordered by platform.
    pub fn merge(&mut self, other: ReadOutcome) {
        self.tokens.extend(other.tokens);
        self.failed.extend(other.failed);
        self.tokens
            .sort_by(|a, b| a.platform_name.cmp(&b.platform_name));
        self.failed
            .sort_by(|a, b| a.platform_name.cmp(&b.platform_name));
    }
}

#[derive(Debug)]
pub struct DeleteCommand {
    pub merchant_id: MerchantId,
    pub platform: Platform,
    pub owner: ShopDomain,
    pub audit: AuditContext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// Missing, or owned by another shop: callers cannot tell which.
    NotFound,
}

/// A refused read, recorded so that probing shows up in the audit trail.
#[derive(Debug)]
pub struct DeniedRead {
    /// As the caller sent it (cut to the column's width); it may not be a valid id.
    pub merchant_id: String,
    pub platform: Option<String>,
    pub reason: &'static str,
    pub audit: AuditContext,
}

/// A shop uninstalled the app (`evt.webhook.app.uninstalled.v1`): its credentials go.
#[derive(Debug)]
pub struct UninstallCommand {
    pub platform: Platform,
    pub platform_shop_id: PlatformShopId,
    /// When given, only the shop's tokens stored under this domain match.
    pub domain: Option<ShopDomain>,
    /// When the uninstall happened: a token written after it belongs to a new installation
    /// and is kept, so a late or redelivered event cannot delete it.
    pub occurred_at: DateTime<Utc>,
    pub audit: AuditContext,
}

/// One credential an uninstall removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstalledToken {
    pub token_id: Uuid,
    pub merchant_id: String,
}

#[derive(Debug, Default)]
pub struct UninstallOutcome {
    pub deleted: Vec<UninstalledToken>,
}

/// Why an operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StoreError> for VaultError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(e) => VaultError::Unavailable(e.into()),
            other => VaultError::Internal(other.into()),
        }
    }
}

/// One queued operation and where its answer goes.
pub(crate) enum Job {
    Store(
        StoreCommand,
        oneshot::Sender<Result<StoreOutcome, VaultError>>,
    ),
    Read(
        ReadCommand,
        oneshot::Sender<Result<ReadOutcome, VaultError>>,
    ),
    Delete(
        DeleteCommand,
        oneshot::Sender<Result<DeleteOutcome, VaultError>>,
    ),
    Deny(DeniedRead, oneshot::Sender<Result<(), VaultError>>),
    Claim(
        ClaimRefresh,
        oneshot::Sender<Result<ClaimOutcome, VaultError>>,
    ),
    Finish(
        FinishRefresh,
        oneshot::Sender<Result<FinishOutcome, VaultError>>,
    ),
    Uninstall(
        UninstallCommand,
        oneshot::Sender<Result<UninstallOutcome, VaultError>>,
    ),
}

/// The handle the HTTP layer uses. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    queue: mpsc::Sender<Job>,
    keyring: Arc<Keyring>,
    db: Db,
    metrics: Metrics,
}

impl Vault {
    /// Starts the group-commit writers and returns the handle plus the committer, which
    /// finishes the queued work once every handle is dropped. The vault, its writers and
    /// whoever uses the handle count into `metrics`.
    pub fn start(
        db: Db,
        keyring: Arc<Keyring>,
        settings: CommitSettings,
        metrics: Metrics,
    ) -> (Self, Committer) {
        let (queue, committer) = Committer::start(db.clone(), keyring.clone(), settings, &metrics);
        let vault = Self {
            queue,
            keyring,
            db,
            metrics,
        };
        (vault, committer)
    }

    /// The metrics this vault counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Encrypts the payload for its row (outside the writer, so that work runs in
    /// parallel) and stores it, replacing the same shop's earlier token.
    pub async fn store(
        &self,
        request: StoreTokenRequest,
        audit: AuditContext,
    ) -> Result<StoreOutcome, VaultError> {
        let row = RowIdentity {
            merchant_id: request.merchant_id.as_str(),
            platform_name: request.platform.as_str(),
        };
        let (encrypted_token, key_id) = self
            .keyring
            .seal(row, request.token_data.as_str().as_bytes());
        let key_id = key_id.to_owned();
        let hints = request.token_data.hints();
        let implied_expires_at = hints.expires_at.or_else(|| {
            let seconds = i64::try_from(hints.expires_in?).ok()?;
            Utc::now().checked_add_signed(chrono::Duration::try_seconds(seconds)?)
        });
        let command = StoreCommand {
            request,
            encrypted_token,
            key_id,
            refreshable: hints.has_refresh_token,
            implied_expires_at,
            audit,
        };
        self.submit(|tx| Job::Store(command, tx)).await
    }

    /// Decrypts and returns the merchant's tokens, counting and auditing each read.
    pub async fn read(&self, command: ReadCommand) -> Result<ReadOutcome, VaultError> {
        let outcome = self.submit(|tx| Job::Read(command, tx)).await?;
        let undecryptable = outcome
            .failed
            .iter()
            .filter(|f| f.code == DECRYPTION_FAILED)
            .count();
        self.metrics.decryption_failures(undecryptable as u64);
        Ok(outcome)
    }

    /// Deletes a token owned by `command.owner`.
    pub async fn delete(&self, command: DeleteCommand) -> Result<DeleteOutcome, VaultError> {
        self.submit(|tx| Job::Delete(command, tx)).await
    }

    /// Audits a read that was refused before reaching the data.
    pub async fn record_denied(&self, denied: DeniedRead) -> Result<(), VaultError> {
        self.submit(|tx| Job::Deny(denied, tx)).await
    }

    /// Takes the refresh lease of a token and returns it decrypted (see `crate::refresh`).
    pub async fn claim_refresh(&self, claim: ClaimRefresh) -> Result<ClaimOutcome, VaultError> {
        let outcome = self.submit(|tx| Job::Claim(claim, tx)).await?;
        if matches!(outcome, ClaimOutcome::Undecryptable) {
            self.metrics.decryption_failures(1);
        }
        Ok(outcome)
    }

    /// Saves a refresh's result, audits it and releases the lease.
    pub async fn finish_refresh(&self, finish: FinishRefresh) -> Result<FinishOutcome, VaultError> {
        self.submit(|tx| Job::Finish(finish, tx)).await
    }

    /// Encrypts a payload for a row under the primary key: (ciphertext, key id).
    pub fn seal(&self, row: RowIdentity<'_>, plaintext: &[u8]) -> (String, String) {
        let (ciphertext, key_id) = self.keyring.seal(row, plaintext);
        (ciphertext, key_id.to_owned())
    }

    /// The id of (merchant, platform), if stored. Reads no secret, so it skips the writers.
    pub async fn token_id(
        &self,
        merchant_id: &MerchantId,
        platform: Platform,
    ) -> Result<Option<Uuid>, VaultError> {
        let mut tx = self.db.begin_read().await?;
        let found =
            crate::store::find_owner(&mut tx, merchant_id.as_str(), platform.as_str()).await?;
        tx.rollback().await?;
        Ok(found.map(|(id, _)| id))
    }

    /// Refreshable tokens expiring before `due` that nobody is refreshing or backing off.
    pub async fn refresh_candidates(
        &self,
        platforms: &[&str],
        due: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Uuid>, VaultError> {
        let mut tx = self.db.begin_read().await?;
        let ids =
            crate::store::refresh::refresh_candidates(&mut tx, platforms, due, Utc::now(), limit)
                .await?;
        tx.rollback().await?;
        Ok(ids)
    }

    /// Stored Shopify tokens without a refresh token, in id order after `after`.
    pub async fn non_expiring_shopify_tokens(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Uuid>, VaultError> {
        let mut tx = self.db.begin_read().await?;
        let ids = crate::store::refresh::non_expiring_shopify_tokens(&mut tx, after, limit).await?;
        tx.rollback().await?;
        Ok(ids)
    }

    /// Connections the pool holds (open, idle, most allowed) and jobs waiting for a writer,
    /// for `/metrics`.
    pub fn usage(&self) -> (crate::store::PoolUsage, usize) {
        let waiting = committer::QUEUE_DEPTH.saturating_sub(self.queue.capacity());
        (self.db.pool_usage(), waiting)
    }

    /// Events in the outbox not yet published (the relay's backlog), for `/metrics`.
    pub async fn outbox_backlog(&self) -> Result<i64, VaultError> {
        let mut tx = self.db.begin_read().await?;
        let backlog = crate::store::backlog(&mut tx).await?;
        tx.rollback().await?;
        Ok(backlog.pending)
    }

    /// Deletes every token of a shop that uninstalled the app, each deletion audited and
    /// announced, all in one transaction.
    pub async fn uninstall(
        &self,
        command: UninstallCommand,
    ) -> Result<UninstallOutcome, VaultError> {
        self.submit(|tx| Job::Uninstall(command, tx)).await
    }

    /// Whether the database can serve (readiness, see [`Db::check_ready`]). The keyring is
    /// loaded before a Vault exists.
    pub async fn is_ready(&self) -> bool {
        self.db.check_ready().await.is_ok()
    }

    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, VaultError>>) -> Job,
    ) -> Result<T, VaultError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(job(tx))
            .await
            .map_err(|_| VaultError::ShuttingDown)?;
        rx.await.map_err(|_| VaultError::ShuttingDown)?
    }
}
