//! Acting on an app uninstall: the shop's credentials are deleted, audited and announced.

use chrono::Utc;

use super::{UninstallCommand, UninstallOutcome, UninstalledToken};
use crate::events::{self, DeletionReason, PlatformRef};
use crate::store::{self, AccessRecord, AccessType, StoreError, Tx};

/// Deletes the matching tokens written before the uninstall. Matching nothing (already
/// deleted, or a redelivered event) changes nothing and writes nothing.
pub(super) async fn drop_shop_tokens(
    tx: &mut Tx,
    command: &UninstallCommand,
) -> Result<UninstallOutcome, StoreError> {
    let deleted = store::delete_for_shop(
        tx,
        command.platform.as_str(),
        command.platform_shop_id.as_str(),
        command.domain.as_ref().map(|d| d.as_str()),
        command.occurred_at,
    )
    .await?;
    let now = Utc::now();
    let correlation_id = &command.audit.correlation_id;
    let mut outcome = UninstallOutcome::default();
    for row in deleted {
        let record = AccessRecord {
            token_id: Some(row.id),
            merchant_id: &row.merchant_id,
            platform_name: Some(&row.platform_name),
            accessed_by: &command.audit.actor,
            access_type: AccessType::Delete,
            success: true,
            error_code: None,
            correlation_id,
            ip_address: command.audit.ip_address.as_deref(),
            at: now,
        };
        store::record_access(tx, &record).await?;
        let platform = PlatformRef {
            merchant_id: &row.merchant_id,
            platform_name: &row.platform_name,
            platform_shop_id: &row.platform_shop_id,
            domain: &row.domain,
        };
        let event = events::token_deleted(
            platform,
            DeletionReason::AppUninstalled,
            correlation_id,
            now,
        );
        store::insert_event(tx, &event.as_new_event()).await?;
        outcome.deleted.push(UninstalledToken {
            token_id: row.id,
            merchant_id: row.merchant_id,
        });
    }
    Ok(outcome)
}
