//! `evt.webhook.app.uninstalled.v1` as webhook-service publishes it, checked before acting.
//!
//! The envelope is the platform's (`event_id`, `correlation_id`, `timestamp`, `data`); `data`
//! holds `platform_name`, `platform_shop_id`, an optional `domain` and, from the platform's
//! shared schema, an optional `occurred_at`. Unknown fields are ignored: producers may add
//! some. Anything that would make the deletion ambiguous is malformed.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{Platform, PlatformShopId, ShopDomain};

/// A valid uninstall event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUninstalled {
    pub event_id: Option<String>,
    pub correlation_id: Option<String>,
    pub platform: Platform,
    pub platform_shop_id: PlatformShopId,
    pub domain: Option<ShopDomain>,
    /// `data.occurred_at`, else the envelope's `timestamp`, else `None` (unknown).
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Envelope {
    event_id: Option<Value>,
    correlation_id: Option<Value>,
    timestamp: Option<Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct Data {
    platform_name: Option<Value>,
    platform_shop_id: Option<Value>,
    domain: Option<Value>,
    occurred_at: Option<Value>,
}

/// Why a message cannot be acted on; it is said in the dead-letter message.
pub type Malformed = String;

/// Parses and validates a message body.
pub fn parse(payload: &[u8]) -> Result<AppUninstalled, Malformed> {
    let envelope: Envelope =
        serde_json::from_slice(payload).map_err(|e| format!("not a JSON object: {e}"))?;
    let data = match envelope.data {
        Some(data @ Value::Object(_)) => data,
        Some(_) => return Err("data must be an object".into()),
        None => return Err("data is missing".into()),
    };
    let data: Data = serde_json::from_value(data).map_err(|e| format!("data: {e}"))?;

    let platform_name = required_text(data.platform_name, "data.platform_name")?;
    let platform = Platform::parse(&platform_name)
        .map_err(|e| format!("data.platform_name: {}", e.message))?;
    let shop_id = required_text(data.platform_shop_id, "data.platform_shop_id")?;
    let platform_shop_id = PlatformShopId::parse(&shop_id)
        .map_err(|e| format!("data.platform_shop_id: {}", e.message))?;
    let domain = optional_text(data.domain, "data.domain")?
        .map(|d| ShopDomain::from_subject(&d))
        .transpose()
        .map_err(|e| format!("data.domain: {}", e.message))?;
    let occurred_at = match optional_time(data.occurred_at, "data.occurred_at")? {
        Some(at) => Some(at),
        None => optional_time(envelope.timestamp, "timestamp")?,
    };
    Ok(AppUninstalled {
        event_id: optional_text(envelope.event_id, "event_id")?,
        correlation_id: optional_text(envelope.correlation_id, "correlation_id")?
            .filter(|c| c.len() <= 128 && c.bytes().all(|b| b.is_ascii_graphic())),
        platform,
        platform_shop_id,
        domain,
        occurred_at,
    })
}

fn required_text(value: Option<Value>, field: &str) -> Result<String, Malformed> {
    optional_text(value, field)?.ok_or_else(|| format!("{field} is missing"))
}

/// A string field; `null` and absent are the same; a blank string counts as absent.
fn optional_text(value: Option<Value>, field: &str) -> Result<Option<String>, Malformed> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// RFC 3339, or an ISO date-time without offset (Python's naive UTC) taken as UTC.
fn optional_time(value: Option<Value>, field: &str) -> Result<Option<DateTime<Utc>>, Malformed> {
    let Some(text) = optional_text(value, field)? else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|naive| Some(naive.and_utc()))
        .map_err(|_| format!("{field} must be an RFC 3339 date-time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_envelope_is_read() {
        let body = br#"{"event_id": "e-1", "event_type": "evt.webhook.app.uninstalled.v1",
            "correlation_id": "corr-9", "source_service": "webhook-service",
            "timestamp": "2026-12-04T10:00:00Z",
            "data": {"platform_name": "shopify", "platform_shop_id": "gid://shopify/Shop/1",
                     "domain": "A.myshopify.com", "occurred_at": "2026-12-04T09:59:58.250000",
                     "extra": 1}}"#;
        let event = parse(body).unwrap();
        assert_eq!(event.event_id.as_deref(), Some("e-1"));
        assert_eq!(event.correlation_id.as_deref(), Some("corr-9"));
        assert_eq!(event.platform, Platform::Shopify);
        assert_eq!(event.platform_shop_id.as_str(), "gid://shopify/Shop/1");
        assert_eq!(event.domain.unwrap().as_str(), "a.myshopify.com");
        assert_eq!(
            event.occurred_at.unwrap(),
            "2026-12-04T09:59:58.25Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn the_minimal_event_needs_only_platform_and_shop() {
        let event = parse(
            br#"{"data": {"platform_name": "woocommerce",
            "platform_shop_id": "77", "domain": null}}"#,
        )
        .unwrap();
        assert_eq!(event.domain, None);
        assert_eq!(event.occurred_at, None);
        assert_eq!(event.correlation_id, None);
        let timestamped = parse(
            br#"{"timestamp": "2026-12-04T10:00:00+01:00",
            "data": {"platform_name": "shopify", "platform_shop_id": "1"}}"#,
        )
        .unwrap();
        assert_eq!(
            timestamped.occurred_at.unwrap().to_rfc3339(),
            "2026-12-04T09:00:00+00:00"
        );
    }

    #[test]
    fn ambiguous_events_are_malformed() {
        let cases: [(&[u8], &str); 10] = [
            (b"not json", "not a JSON object"),
            (b"[1]", "not a JSON object"),
            (br#"{"event_id": "x"}"#, "data is missing"),
            (br#"{"data": "shop"}"#, "data must be an object"),
            (br#"{"data": {"platform_shop_id": "1"}}"#, "platform_name is missing"),
            (br#"{"data": {"platform_name": "ebay", "platform_shop_id": "1"}}"#, "platform_name"),
            (br#"{"data": {"platform_name": "shopify"}}"#, "platform_shop_id is missing"),
            (br#"{"data": {"platform_name": "shopify", "platform_shop_id": 5}}"#, "must be a string"),
            (br#"{"data": {"platform_name": "shopify", "platform_shop_id": "1", "domain": "a b"}}"#, "data.domain"),
            (br#"{"timestamp": "yesterday", "data": {"platform_name": "shopify", "platform_shop_id": "1"}}"#, "timestamp"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
