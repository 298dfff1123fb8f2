//! The events token-service publishes, in the platform's envelope (SPEC §5).
//!
//! Built inside the vault's transaction and stored in the outbox as the exact bytes the
//! relay will publish. They name the credential (merchant, platform, shop) and describe it
//! (type, expiry, scopes), never its secret material.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::store::NewEvent;

/// A credential was stored or replaced.
pub const TOKEN_STORED: &str = "evt.token.stored.v1";
/// A credential was deleted.
pub const TOKEN_DELETED: &str = "evt.token.deleted.v1";
/// A credential was refreshed (or exchanged for an expiring one); no secret in it.
pub const TOKEN_REFRESHED: &str = "evt.token.refreshed.v1";
/// The platform refused the refresh token: the merchant must re-authorize the app.
pub const TOKEN_REAUTH_REQUIRED: &str = "evt.token.reauth_required.v1";
/// `source_service` of every event this service publishes.
pub const SOURCE_SERVICE: &str = "token-service";

/// The credential an event is about.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PlatformRef<'a> {
    pub merchant_id: &'a str,
    pub platform_name: &'a str,
    pub platform_shop_id: &'a str,
    pub domain: &'a str,
}

/// Why a credential was deleted (`data.reason` of `evt.token.deleted.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// The owning shop deleted it through the API.
    DeletedByOwner,
    /// The shop uninstalled the app (`evt.webhook.app.uninstalled.v1`).
    AppUninstalled,
}

/// What `evt.token.stored.v1` says about the stored credential.
#[derive(Debug, Clone, Copy)]
pub struct StoredDetails<'a> {
    pub token_type: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<&'a str>,
    /// A new row, rather than a replacement of the shop's earlier token.
    pub created: bool,
}

/// An event ready for the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: Uuid,
    pub subject: &'static str,
    pub payload: String,
    pub at: DateTime<Utc>,
}

impl OutboxEvent {
    /// The row the vault inserts next to the change.
    pub fn as_new_event(&self) -> NewEvent<'_> {
        NewEvent {
            event_id: self.event_id,
            subject: self.subject,
            payload: &self.payload,
            created_at: self.at,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
    event_id: String,
    event_type: &'a str,
    correlation_id: &'a str,
    source_service: &'a str,
    timestamp: String,
    data: D,
}

#[derive(Serialize)]
struct StoredData<'a> {
    platform: PlatformRef<'a>,
    token_type: &'a str,
    expires_at: Option<String>,
    scopes: Option<&'a str>,
    created: bool,
}

#[derive(Serialize)]
struct DeletedData<'a> {
    platform: PlatformRef<'a>,
    reason: DeletionReason,
}

/// `evt.token.stored.v1`.
pub fn token_stored(
    platform: PlatformRef<'_>,
    details: StoredDetails<'_>,
    correlation_id: &str,
    at: DateTime<Utc>,
) -> OutboxEvent {
    let data = StoredData {
        platform,
        token_type: details.token_type,
        expires_at: details
            .expires_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        scopes: details.scopes,
        created: details.created,
    };
    build(TOKEN_STORED, data, correlation_id, at)
}

#[derive(Serialize)]
struct RefreshedData<'a> {
    platform: PlatformRef<'a>,
    expires_at: Option<String>,
    /// `refresh` for a refresh, `exchange` for the migration to expiring tokens.
    grant: &'a str,
}

#[derive(Serialize)]
struct ReauthData<'a> {
    platform: PlatformRef<'a>,
    error_code: &'a str,
}

/// `evt.token.refreshed.v1`.
pub fn token_refreshed(
    platform: PlatformRef<'_>,
    expires_at: Option<DateTime<Utc>>,
    grant: &str,
    correlation_id: &str,
    at: DateTime<Utc>,
) -> OutboxEvent {
    let expires_at = expires_at.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    let data = RefreshedData {
        platform,
        expires_at,
        grant,
    };
    build(TOKEN_REFRESHED, data, correlation_id, at)
}

/// `evt.token.reauth_required.v1`.
pub fn token_reauth_required(
    platform: PlatformRef<'_>,
    error_code: &str,
    correlation_id: &str,
    at: DateTime<Utc>,
) -> OutboxEvent {
    build(
        TOKEN_REAUTH_REQUIRED,
        ReauthData {
            platform,
            error_code,
        },
        correlation_id,
        at,
    )
}

/// `evt.token.deleted.v1`.
pub fn token_deleted(
    platform: PlatformRef<'_>,
    reason: DeletionReason,
    correlation_id: &str,
    at: DateTime<Utc>,
) -> OutboxEvent {
    build(
        TOKEN_DELETED,
        DeletedData { platform, reason },
        correlation_id,
        at,
    )
}

fn build<D: Serialize>(
    subject: &'static str,
    data: D,
    correlation_id: &str,
    at: DateTime<Utc>,
) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let envelope = Envelope {
        event_id: event_id.to_string(),
        event_type: subject,
        correlation_id,
        source_service: SOURCE_SERVICE,
        timestamp: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        data,
    };
    let payload = serde_json::to_string(&envelope).expect("an envelope of strings serializes");
    OutboxEvent {
        event_id,
        subject,
        payload,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const SHOP: PlatformRef<'static> = PlatformRef {
        merchant_id: "m-1",
        platform_name: "shopify",
        platform_shop_id: "1001",
        domain: "a.myshopify.com",
    };

    fn at() -> DateTime<Utc> {
        "2026-12-04T10:00:00.5Z".parse().unwrap()
    }

    #[test]
    fn stored_event_has_the_envelope_and_no_secret_fields() {
        let details = StoredDetails {
            token_type: "oauth",
            expires_at: Some("2027-01-01T00:00:00Z".parse().unwrap()),
            scopes: Some("read_products"),
            created: true,
        };
        let event = token_stored(SHOP, details, "corr-1", at());
        let body: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(
            body,
            json!({
                "event_id": event.event_id.to_string(),
                "event_type": "evt.token.stored.v1",
                "correlation_id": "corr-1",
                "source_service": "token-service",
                "timestamp": "2026-12-04T10:00:00.500Z",
                "data": {
                    "platform": {"merchant_id": "m-1", "platform_name": "shopify",
                                 "platform_shop_id": "1001", "domain": "a.myshopify.com"},
                    "token_type": "oauth",
                    "expires_at": "2027-01-01T00:00:00Z",
                    "scopes": "read_products",
                    "created": true,
                }
            })
        );
        assert_eq!(event.subject, TOKEN_STORED);
    }

    #[test]
    fn deleted_event_names_its_reason() {
        let event = token_deleted(SHOP, DeletionReason::AppUninstalled, "c", at());
        let body: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(body["event_type"], "evt.token.deleted.v1");
        assert_eq!(body["data"]["reason"], "app_uninstalled");
        assert_eq!(body["data"]["platform"]["platform_shop_id"], "1001");
        let owner = token_deleted(SHOP, DeletionReason::DeletedByOwner, "c", at());
        assert!(owner.payload.contains(r#""reason":"deleted_by_owner""#));
    }

    #[test]
    fn every_event_has_its_own_id() {
        let a = token_deleted(SHOP, DeletionReason::DeletedByOwner, "c", at());
        let b = token_deleted(SHOP, DeletionReason::DeletedByOwner, "c", at());
        assert_ne!(a.event_id, b.event_id);
    }
}
