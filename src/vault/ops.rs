//! The operations themselves, each run inside a transaction the committer owns.

use chrono::Utc;
use uuid::Uuid;

use super::refresh_ops::{self, REAUTH_REQUIRED, REFRESH_FAILED};
use super::uninstall;
use super::{
    ClaimOutcome, DeleteCommand, DeleteOutcome, DeniedRead, FailedToken, FinishOutcome, Job,
    ReadCommand, ReadOutcome, ReadRefresh, StoreCommand, StoreOutcome, TokenView, UninstallOutcome,
    VaultError, DECRYPTION_FAILED,
};
use crate::crypto::{Keyring, RowIdentity};
use crate::domain::TokenDataJson;
use crate::events::{self, DeletionReason, PlatformRef, StoredDetails};
use crate::store::{
    self, AccessRecord, AccessType, CountedRead, NewToken, StoreError, StoredToken, Tx,
};

/// What an operation produced, before its transaction commits.
pub(super) enum Outcome {
    Store(StoreOutcome),
    Read(ReadOutcome),
    Delete(DeleteOutcome),
    Deny,
    Claim(ClaimOutcome),
    Finish(FinishOutcome),
    Uninstall(UninstallOutcome),
}

/// Applies one queued job inside `tx`. An `Err` means the transaction must not commit.
pub(super) async fn apply(
    tx: &mut Tx,
    keyring: &Keyring,
    job: &Job,
) -> Result<Outcome, StoreError> {
    match job {
        Job::Store(command, _) => store_token(tx, command).await.map(Outcome::Store),
        Job::Read(command, _) => read_tokens(tx, keyring, &[command])
            .await
            .map(|mut outcomes| Outcome::Read(outcomes.pop().expect("one outcome per read"))),
        Job::Delete(command, _) => delete_token(tx, command).await.map(Outcome::Delete),
        Job::Deny(denied, _) => record_denied(tx, denied).await.map(|()| Outcome::Deny),
        Job::Claim(claim, _) => refresh_ops::claim(tx, keyring, claim)
            .await
            .map(Outcome::Claim),
        Job::Finish(finish, _) => refresh_ops::finish(tx, finish).await.map(Outcome::Finish),
        Job::Uninstall(command, _) => uninstall::drop_shop_tokens(tx, command)
            .await
            .map(Outcome::Uninstall),
    }
}

impl Job {
    /// Sends the answer to whoever queued the job (if they are still waiting).
    pub(super) fn reply(self, result: Result<Outcome, VaultError>) {
        fn send<T>(
            tx: tokio::sync::oneshot::Sender<Result<T, VaultError>>,
            result: Result<Outcome, VaultError>,
            pick: impl FnOnce(Outcome) -> Option<T>,
        ) {
            let answer = result.and_then(|outcome| {
                pick(outcome).ok_or_else(|| {
                    VaultError::Internal(anyhow::anyhow!("operation answered with another kind"))
                })
            });
            let _ = tx.send(answer);
        }
        match self {
            Job::Store(_, tx) => send(tx, result, |o| match o {
                Outcome::Store(s) => Some(s),
                _ => None,
            }),
            Job::Read(_, tx) => send(tx, result, |o| match o {
                Outcome::Read(r) => Some(r),
                _ => None,
            }),
            Job::Delete(_, tx) => send(tx, result, |o| match o {
                Outcome::Delete(d) => Some(d),
                _ => None,
            }),
            Job::Deny(_, tx) => send(tx, result, |o| match o {
                Outcome::Deny => Some(()),
                _ => None,
            }),
            Job::Claim(_, tx) => send(tx, result, |o| match o {
                Outcome::Claim(c) => Some(c),
                _ => None,
            }),
            Job::Finish(_, tx) => send(tx, result, |o| match o {
                Outcome::Finish(f) => Some(f),
                _ => None,
            }),
            Job::Uninstall(_, tx) => send(tx, result, |o| match o {
                Outcome::Uninstall(u) => Some(u),
                _ => None,
            }),
        }
    }
}

/// Upsert on (merchant, platform), refused when another shop owns the row.
///
/// Written as update-then-insert-then-look so that it is race-free on PostgreSQL without
/// explicit locks: the update only matches the owner's row, the insert only creates a
/// missing one, and what is left is a row someone else owns.
async fn store_token(tx: &mut Tx, command: &StoreCommand) -> Result<StoreOutcome, StoreError> {
    let request = &command.request;
    let now = Utc::now();
    let token = NewToken {
        merchant_id: request.merchant_id.as_str(),
        platform_name: request.platform.as_str(),
        platform_shop_id: request.platform_shop_id.as_str(),
        domain: request.domain.as_str(),
        encrypted_token: &command.encrypted_token,
        encryption_key_id: &command.key_id,
        token_type: request.token_type.as_str(),
        expires_at: request.expires_at.or(command.implied_expires_at),
        scopes: request.scopes.as_ref().map(|s| s.as_str()),
        refreshable: command.refreshable,
        now,
    };
    let audit = |token_id, success, error_code| AccessRecord {
        token_id: Some(token_id),
        merchant_id: token.merchant_id,
        platform_name: Some(token.platform_name),
        accessed_by: &command.audit.actor,
        access_type: AccessType::Write,
        success,
        error_code,
        correlation_id: &command.audit.correlation_id,
        ip_address: command.audit.ip_address.as_deref(),
        at: now,
    };

    // A concurrent insert or delete between the steps below sends us round once more.
    for _ in 0..3 {
        let (id, created) = if let Some(id) = store::update_owned(tx, &token).await? {
            (id, false)
        } else if let Some(id) = store::insert_new(tx, Uuid::now_v7(), &token).await? {
            (id, true)
        } else {
            match store::find_owner(tx, token.merchant_id, token.platform_name).await? {
                Some((id, owner)) if owner != token.domain => {
                    store::record_access(tx, &audit(id, false, Some("FORBIDDEN"))).await?;
                    return Ok(StoreOutcome::OwnedByAnotherShop);
                }
                // Ours after all (inserted concurrently), or deleted meanwhile: try again.
                _ => continue,
            }
        };
        store::record_access(tx, &audit(id, true, None)).await?;
        let platform = PlatformRef {
            merchant_id: token.merchant_id,
            platform_name: token.platform_name,
            platform_shop_id: token.platform_shop_id,
            domain: token.domain,
        };
        let details = StoredDetails {
            token_type: token.token_type,
            expires_at: token.expires_at,
            scopes: token.scopes,
            created,
        };
        let event = events::token_stored(platform, details, &command.audit.correlation_id, now);
        store::insert_event(tx, &event.as_new_event()).await?;
        return Ok(StoreOutcome::Stored {
            token_id: id,
            created,
        });
    }
    Err(StoreError::Conflict(sqlx::Error::Protocol(
        "token row kept changing during an upsert".into(),
    )))
}

/// Runs many reads against one snapshot: one query for all their rows, one statement for
/// their counters and one for their audit rows, whatever the number of reads.
pub(super) async fn read_tokens(
    tx: &mut Tx,
    keyring: &Keyring,
    commands: &[&ReadCommand],
) -> Result<Vec<ReadOutcome>, StoreError> {
    let mut merchants: Vec<&str> = commands.iter().map(|c| c.merchant_id.as_str()).collect();
    merchants.sort_unstable();
    merchants.dedup();
    let rows = store::find_tokens(tx, &merchants).await?;
    let mut writes = ReadWrites::default();
    let outcomes = commands
        .iter()
        .map(|command| {
            let merchant_id = command.merchant_id.as_str();
            let first = rows.partition_point(|row| row.merchant_id.as_str() < merchant_id);
            let merchants_rows = rows[first..]
                .iter()
                .take_while(|row| row.merchant_id == merchant_id);
            read_rows(keyring, command, merchants_rows, &mut writes)
        })
        .collect();
    store::record_reads(tx, &writes.reads).await?;
    store::record_accesses(tx, &writes.audit).await?;
    Ok(outcomes)
}

/// What reads write: counters of the tokens returned, and an audit row per access.
#[derive(Default)]
struct ReadWrites<'a> {
    reads: Vec<CountedRead<'a>>,
    audit: Vec<AccessRecord<'a>>,
}

/// Decrypts each of the merchant's `rows` the command asks for; rows that do not decrypt are
/// reported, not hidden. Refreshable rows about to expire are handled as [`ReadRefresh`] says.
fn read_rows<'a>(
    keyring: &Keyring,
    command: &'a ReadCommand,
    rows: impl Iterator<Item = &'a StoredToken>,
    writes: &mut ReadWrites<'a>,
) -> ReadOutcome {
    let merchant_id = command.merchant_id.as_str();
    let platform = command.platform.map(|p| p.as_str());
    let now = Utc::now();
    let audit = |token_id, platform_name, success, error_code| AccessRecord {
        token_id,
        merchant_id,
        platform_name,
        accessed_by: &command.audit.actor,
        access_type: AccessType::Read,
        success,
        error_code,
        correlation_id: &command.audit.correlation_id,
        ip_address: command.audit.ip_address.as_deref(),
        at: now,
    };

    let mut outcome = ReadOutcome::default();
    let mut found = false;
    for row in rows.filter(|row| platform.is_none_or(|p| row.platform_name == p)) {
        found = true;
        let platform_name = row.platform_name.as_str();
        let refresh_error = match refresh_disposition(&command.refresh, row, now) {
            Disposition::Skip => continue,
            Disposition::HoldBack => {
                outcome.due_for_refresh.push(row.id);
                continue;
            }
            Disposition::Refused => {
                // Expired and not refreshable now: no stale credential leaves.
                let record = audit(
                    Some(row.id),
                    Some(platform_name),
                    false,
                    Some(REFRESH_FAILED),
                );
                writes.audit.push(record);
                outcome.failed.push(FailedToken {
                    platform_name: platform_name.to_owned(),
                    code: REFRESH_FAILED,
                });
                continue;
            }
            Disposition::Return(refresh_error) => refresh_error,
        };
        let identity = RowIdentity {
            merchant_id,
            platform_name,
        };
        let decrypted = keyring
            .open_stored(identity, &row.encryption_key_id, &row.encrypted_token)
            .map_err(|e| e.to_string())
            .and_then(|plain| String::from_utf8(plain.to_vec()).map_err(|_| "not UTF-8".into()))
            .and_then(|text| TokenDataJson::from_stored(text).map_err(|_| "not JSON".into()));
        match decrypted {
            Ok(token_data) => {
                writes.reads.push(CountedRead {
                    token_id: row.id,
                    service: &command.audit.actor,
                    at: now,
                });
                writes
                    .audit
                    .push(audit(Some(row.id), Some(platform_name), true, None));
                outcome.tokens.push(TokenView {
                    token_id: row.id,
                    platform_name: platform_name.to_owned(),
                    platform_shop_id: row.platform_shop_id.clone(),
                    domain: row.domain.clone(),
                    token_data,
                    token_type: row.token_type.clone(),
                    expires_at: row.expires_at,
                    scopes: row.scopes.clone(),
                    refresh_error,
                });
            }
            Err(reason) => {
                tracing::warn!(token_id = %row.id, merchant_id, platform = platform_name, %reason, "token could not be decrypted");
                let record = audit(
                    Some(row.id),
                    Some(platform_name),
                    false,
                    Some(DECRYPTION_FAILED),
                );
                writes.audit.push(record);
                outcome.failed.push(FailedToken {
                    platform_name: platform_name.to_owned(),
                    code: DECRYPTION_FAILED,
                });
            }
        }
    }
    if !found {
        // Looking up a merchant with nothing stored is still an access worth recording.
        writes.audit.push(audit(None, platform, true, None));
    }
    outcome
}

/// What a read does with one row.
enum Disposition {
    /// Not part of this read (second pass, another row).
    Skip,
    /// Due for refresh: leave it to the caller to refresh first.
    HoldBack,
    /// Expired, and refreshing failed or is impossible: list it as failed.
    Refused,
    /// Return it, with the refresh error to report if any.
    Return(Option<String>),
}

fn refresh_disposition(
    policy: &ReadRefresh,
    row: &StoredToken,
    now: chrono::DateTime<Utc>,
) -> Disposition {
    let expired = row.expires_at.is_some_and(|at| at <= now);
    let failed = |code: String| {
        if expired {
            Disposition::Refused
        } else {
            Disposition::Return(Some(code))
        }
    };
    match policy {
        ReadRefresh::AsStored => Disposition::Return(None),
        ReadRefresh::After(results) => match results.get(&row.id) {
            None => Disposition::Skip,
            Some(Ok(())) => Disposition::Return(None),
            Some(Err(failure)) => failed(failure.code().to_owned()),
        },
        ReadRefresh::HoldBackDue { due, platforms } => {
            let refresh = &row.refresh;
            let is_due = refresh.refreshable
                && platforms.contains(&row.platform_name)
                && row.expires_at.is_some_and(|at| at <= *due);
            if !is_due {
                Disposition::Return(None)
            } else if refresh.state.as_deref() == Some("reauth_required") {
                failed(REAUTH_REQUIRED.to_owned())
            } else if refresh.next_attempt_at.is_some_and(|at| at > now) {
                // Backing off after a failure: report it rather than hammer the platform.
                failed(
                    refresh
                        .last_error
                        .clone()
                        .unwrap_or_else(|| REFRESH_FAILED.into()),
                )
            } else {
                Disposition::HoldBack
            }
        }
    }
}

/// Deletes the owner's token. A missing row and another shop's row answer alike.
async fn delete_token(tx: &mut Tx, command: &DeleteCommand) -> Result<DeleteOutcome, StoreError> {
    let merchant_id = command.merchant_id.as_str();
    let platform = command.platform.as_str();
    let owner = command.owner.as_str();
    let deleted = store::delete_owned(tx, merchant_id, platform, owner).await?;
    let (token_id, outcome) = match &deleted {
        Some((id, _)) => (Some(*id), DeleteOutcome::Deleted),
        None => (
            store::find_owner(tx, merchant_id, platform)
                .await?
                .map(|(id, _)| id),
            DeleteOutcome::NotFound,
        ),
    };
    let success = outcome == DeleteOutcome::Deleted;
    let now = Utc::now();
    let record = AccessRecord {
        token_id,
        merchant_id,
        platform_name: Some(platform),
        accessed_by: &command.audit.actor,
        access_type: AccessType::Delete,
        success,
        error_code: (!success).then_some("TOKEN_NOT_FOUND"),
        correlation_id: &command.audit.correlation_id,
        ip_address: command.audit.ip_address.as_deref(),
        at: now,
    };
    store::record_access(tx, &record).await?;
    if let Some((_, platform_shop_id)) = &deleted {
        let platform = PlatformRef {
            merchant_id,
            platform_name: platform,
            platform_shop_id,
            domain: owner,
        };
        let reason = DeletionReason::DeletedByOwner;
        let event = events::token_deleted(platform, reason, &command.audit.correlation_id, now);
        store::insert_event(tx, &event.as_new_event()).await?;
    }
    Ok(outcome)
}

async fn record_denied(tx: &mut Tx, denied: &DeniedRead) -> Result<(), StoreError> {
    let record = AccessRecord {
        token_id: None,
        merchant_id: &denied.merchant_id,
        platform_name: denied.platform.as_deref(),
        accessed_by: &denied.audit.actor,
        access_type: AccessType::Denied,
        success: false,
        error_code: Some(denied.reason),
        correlation_id: &denied.audit.correlation_id,
        ip_address: denied.audit.ip_address.as_deref(),
        at: Utc::now(),
    };
    store::record_access(tx, &record).await
}
