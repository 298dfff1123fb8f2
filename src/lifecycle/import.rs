//! Import: copy the original service's tokens and access logs into this service's store,
//! re-encrypted in the current format, with their ids, counters and timestamps.
//!
//! Idempotent. A token counts as imported when its import audit entry (by [`ACTOR`]) exists;
//! the entry is written in the same transaction as the row, so a second run skips it, and a
//! token deleted since it was imported is not brought back. Rows never overwrite what is
//! already in the store. Access logs keep their ids, so they are inserted at most once.

use chrono::Utc;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{decrypt_error_code, row_failure, RowFailure};
use crate::crypto::{Keyring, RowIdentity};
use crate::domain::{MerchantId, Platform, PlatformShopId, Scopes, ShopDomain, TokenType};
use crate::store::{
    self, AccessRecord, AccessType, Db, ImportedAccessLog, ImportedToken, LegacyAccessLog,
    LegacySource, LegacyToken, Tx,
};

/// The `accessed_by` of the audit entry written for each imported token.
pub const ACTOR: &str = "cli:import-legacy";
/// The `merchant_id` of an imported access log whose token no longer exists in the source
/// (the original did not record merchants in its logs). It cannot collide with a real
/// merchant id: parentheses are not allowed in one.
pub const UNKNOWN_MERCHANT: &str = "(unknown)";

/// What importing `platform_tokens` did.
#[derive(Debug, Default)]
pub struct TokenReport {
    /// The correlation id of this run's audit entries.
    pub run_id: String,
    pub imported: u64,
    /// Imported by an earlier run (and possibly changed or deleted here since).
    pub already_imported: u64,
    /// The store already holds another token with this id or for this merchant and platform;
    /// it was kept.
    pub kept_existing: Vec<RowFailure>,
    pub failed: Vec<RowFailure>,
}

/// What importing `token_access_logs` did.
#[derive(Debug, Default)]
pub struct AccessLogReport {
    pub imported: u64,
    pub already_present: u64,
    pub failed: Vec<RowFailure>,
}

/// Copies every token, `batch_size` per transaction, calling `progress` after each batch.
pub async fn import_tokens(
    source: &LegacySource,
    db: &Db,
    keyring: &Keyring,
    batch_size: u32,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<TokenReport> {
    let mut report = TokenReport {
        run_id: format!("import_{}", &Uuid::new_v4().simple().to_string()[..12]),
        ..TokenReport::default()
    };
    let run_id = report.run_id.clone();
    let mut cursor: Option<String> = None;
    loop {
        let rows = source
            .tokens_after(cursor.as_deref(), batch_size.max(1))
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        cursor = Some(last.id.clone());
        let mut tx = db.begin().await?;
        for row in &rows {
            if let Err(e) = import_token(&mut tx, keyring, row, &run_id, &mut report).await {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        }
        tx.commit().await?;
        progress(rows.len() as u64);
    }
    Ok(report)
}

async fn import_token(
    tx: &mut Tx,
    keyring: &Keyring,
    row: &LegacyToken,
    run_id: &str,
    report: &mut TokenReport,
) -> Result<(), store::StoreError> {
    let fail = |code| row_failure(&row.id, &row.merchant_id, &row.platform_name, code);
    let valid = match validate(row) {
        Ok(valid) => valid,
        Err(code) => {
            report.failed.push(fail(code));
            return Ok(());
        }
    };
    if store::has_audit_entry_by(tx, valid.id, ACTOR).await? {
        report.already_imported += 1;
        return Ok(());
    }
    let identity = RowIdentity {
        merchant_id: valid.merchant_id.as_str(),
        platform_name: valid.platform.as_str(),
    };
    let plaintext =
        match keyring.open_stored(identity, &row.encryption_key_id, &row.encrypted_token) {
            Ok(plaintext) => plaintext,
            Err(e) => {
                report.failed.push(fail(decrypt_error_code(&e)));
                return Ok(());
            }
        };
    if !is_json_object(&plaintext) {
        report.failed.push(fail("INVALID_TOKEN_DATA"));
        return Ok(());
    }
    let (sealed, key_id) = keyring.seal(identity, &plaintext);
    let token = ImportedToken {
        id: valid.id,
        merchant_id: identity.merchant_id,
        platform_name: identity.platform_name,
        platform_shop_id: &row.platform_shop_id,
        domain: valid.domain.as_str(),
        encrypted_token: &sealed,
        encryption_key_id: key_id,
        token_type: &row.token_type,
        expires_at: row.expires_at,
        scopes: row.scopes.as_deref(),
        last_accessed_by: row.last_accessed_by.as_deref(),
        last_accessed_at: row.last_accessed_at,
        access_count: row.access_count,
        created_at: row.created_at,
        updated_at: row.updated_at,
    };
    if !store::insert_imported_token(tx, &token).await? {
        tracing::warn!(
            legacy_id = %row.id,
            merchant_id = identity.merchant_id,
            platform = identity.platform_name,
            "the store already holds a token with this id or for this merchant and platform; kept it"
        );
        report.kept_existing.push(fail("EXISTS"));
        return Ok(());
    }
    let audit = AccessRecord {
        token_id: Some(valid.id),
        merchant_id: identity.merchant_id,
        platform_name: Some(identity.platform_name),
        accessed_by: ACTOR,
        access_type: AccessType::Write,
        success: true,
        error_code: None,
        correlation_id: run_id,
        ip_address: None,
        at: Utc::now(),
    };
    store::record_access(tx, &audit).await?;
    report.imported += 1;
    Ok(())
}

/// The parts of a legacy row that must satisfy this service's rules to be served.
struct ValidToken {
    id: Uuid,
    merchant_id: MerchantId,
    platform: Platform,
    domain: ShopDomain,
}

/// Checks a legacy row against this service's rules; the code names the first broken one.
/// The domain comes out in lower case, as this service stores it.
fn validate(row: &LegacyToken) -> Result<ValidToken, &'static str> {
    let id = Uuid::parse_str(&row.id).map_err(|_| "INVALID_ID")?;
    let merchant_id = MerchantId::parse(&row.merchant_id).map_err(|_| "INVALID_MERCHANT_ID")?;
    let platform = Platform::parse(&row.platform_name).map_err(|_| "INVALID_PLATFORM")?;
    let domain = ShopDomain::parse(row.domain.trim()).map_err(|_| "INVALID_DOMAIN")?;
    TokenType::parse(&row.token_type).map_err(|_| "INVALID_TOKEN_TYPE")?;
    PlatformShopId::parse(&row.platform_shop_id).map_err(|_| "INVALID_PLATFORM_SHOP_ID")?;
    if let Some(scopes) = &row.scopes {
        Scopes::parse(scopes).map_err(|_| "INVALID_SCOPES")?;
    }
    Ok(ValidToken {
        id,
        merchant_id,
        platform,
        domain,
    })
}

/// Whether the plaintext is a JSON object, as every read expects (checked without copying).
fn is_json_object(plaintext: &[u8]) -> bool {
    std::str::from_utf8(plaintext)
        .ok()
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
        .is_some_and(|raw| raw.get().starts_with('{'))
}

/// Copies every access log, `batch_size` per transaction, calling `progress` after each batch.
pub async fn import_access_logs(
    source: &LegacySource,
    db: &Db,
    batch_size: u32,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<AccessLogReport> {
    let mut report = AccessLogReport::default();
    let mut cursor: Option<String> = None;
    loop {
        let rows = source
            .access_logs_after(cursor.as_deref(), batch_size.max(1))
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        cursor = Some(last.id.clone());
        let logs: Vec<_> = rows
            .iter()
            .filter_map(|row| match access_log(row) {
                Ok(log) => Some(log),
                Err(failure) => {
                    report.failed.push(failure);
                    None
                }
            })
            .collect();
        let mut tx = db.begin().await?;
        let inserted = match store::insert_imported_access_logs(&mut tx, &logs).await {
            Ok(inserted) => inserted,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        };
        tx.commit().await?;
        report.imported += inserted;
        report.already_present += logs.len() as u64 - inserted;
        progress(rows.len() as u64);
    }
    Ok(report)
}

/// Maps one legacy log to this service's audit row, or says why it cannot be.
fn access_log(row: &LegacyAccessLog) -> Result<ImportedAccessLog<'_>, RowFailure> {
    let merchant_id = row.merchant_id.as_deref().unwrap_or(UNKNOWN_MERCHANT);
    let platform_name = row.platform_name.as_deref();
    let fail = |code| row_failure(&row.id, merchant_id, platform_name.unwrap_or(""), code);
    let id = Uuid::parse_str(&row.id).map_err(|_| fail("INVALID_ID"))?;
    let token_id = Uuid::parse_str(&row.token_id).map_err(|_| fail("INVALID_TOKEN_ID"))?;
    let access_type = access_type(&row.access_type).map_err(fail)?;
    Ok(ImportedAccessLog {
        id,
        token_id,
        merchant_id,
        platform_name,
        accessed_by: &row.accessed_by,
        access_type,
        success: row.success,
        error_code: row.error_code.as_deref(),
        correlation_id: row.correlation_id.as_deref(),
        ip_address: row.ip_address.as_deref(),
        accessed_at: row.accessed_at,
    })
}

/// The original wrote `read`, `write` and `delete`; they mean the same here.
fn access_type(value: &str) -> Result<AccessType, &'static str> {
    match value {
        "read" => Ok(AccessType::Read),
        "write" => Ok(AccessType::Write),
        "delete" => Ok(AccessType::Delete),
        "denied" => Ok(AccessType::Denied),
        "refresh" => Ok(AccessType::Refresh),
        _ => Err("INVALID_ACCESS_TYPE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_data_must_be_a_json_object() {
        assert!(is_json_object(br#"{"access_token": "x"}"#));
        assert!(is_json_object(b"{}"));
        for bad in [&b"[1]"[..], b"\"s\"", b"{", b"\xff{}", b""] {
            assert!(!is_json_object(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_the_audit_trails_access_types_are_accepted() {
        assert_eq!(access_type("read"), Ok(AccessType::Read));
        assert_eq!(access_type("delete"), Ok(AccessType::Delete));
        assert_eq!(access_type("READ"), Err("INVALID_ACCESS_TYPE"));
        assert_eq!(access_type("update"), Err("INVALID_ACCESS_TYPE"));
    }
}
