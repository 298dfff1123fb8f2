//! `POST /api/v1/tokens`: the body, checked field by field so a client sees every problem at once.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    FieldError, MerchantId, Platform, PlatformShopId, Scopes, ShopDomain, TokenDataJson, TokenType,
};

/// A validated request to store (or replace) one platform credential.
#[derive(Debug)]
pub struct StoreTokenRequest {
    pub merchant_id: MerchantId,
    pub platform: Platform,
    pub platform_shop_id: PlatformShopId,
    pub domain: ShopDomain,
    pub token_data: TokenDataJson,
    pub token_type: TokenType,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<Scopes>,
}

const FIELDS: [&str; 8] = [
    "merchant_id",
    "platform_name",
    "platform_shop_id",
    "domain",
    "token_data",
    "token_type",
    "expires_at",
    "scopes",
];

impl StoreTokenRequest {
    /// Parses a JSON body; unknown, duplicate, missing and malformed fields are all reported.
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        let entries = parse_object(body)?;
        let mut errors = Vec::new();
        let mut slots: [Option<Box<RawValue>>; 8] = Default::default();
        for (name, value) in entries {
            match FIELDS.iter().position(|f| *f == name) {
                Some(i) if slots[i].is_some() => errors.push(FieldError::new(
                    name,
                    "duplicate_key",
                    "appears more than once",
                )),
                Some(i) => slots[i] = Some(value),
                None => errors.push(FieldError::new(
                    name,
                    "extra_forbidden",
                    "is not a known field",
                )),
            }
        }
        let [merchant_id, platform, shop_id, domain, token_data, token_type, expires_at, scopes] =
            slots;

        let merchant_id = required(&mut errors, "merchant_id", merchant_id, |s| {
            MerchantId::parse(&s)
        });
        let platform = required(&mut errors, "platform_name", platform, |s| {
            Platform::parse(&s)
        });
        let platform_shop_id = required(&mut errors, "platform_shop_id", shop_id, |s| {
            PlatformShopId::parse(&s)
        });
        let domain = required(&mut errors, "domain", domain, |s| ShopDomain::parse(&s));
        let token_type = required(&mut errors, "token_type", token_type, |s| {
            TokenType::parse(&s)
        });
        let token_data = match token_data {
            None => missing(&mut errors, "token_data"),
            Some(raw) => TokenDataJson::parse(raw).map_err(|e| errors.push(e)).ok(),
        };
        let expires_at = optional(&mut errors, "expires_at", expires_at, parse_timestamp);
        let scopes = optional(&mut errors, "scopes", scopes, |s| Scopes::parse(&s));

        match (
            merchant_id,
            platform,
            platform_shop_id,
            domain,
            token_data,
            token_type,
        ) {
            (Some(m), Some(p), Some(s), Some(d), Some(t), Some(tt)) if errors.is_empty() => {
                Ok(Self {
                    merchant_id: m,
                    platform: p,
                    platform_shop_id: s,
                    domain: d,
                    token_data: t,
                    token_type: tt,
                    expires_at: expires_at.flatten(),
                    scopes: scopes.flatten(),
                })
            }
            _ => Err(errors),
        }
    }
}

/// RFC 3339 with an offset; a time without one is taken as UTC, as the original service did.
fn parse_timestamp(value: String) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(&value, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|_| {
            FieldError::new(
                "expires_at",
                "datetime_parsing",
                "must be an RFC 3339 date-time",
            )
        })
}

fn missing<T>(errors: &mut Vec<FieldError>, field: &str) -> Option<T> {
    errors.push(FieldError::new(field, "missing", "is required"));
    None
}

fn as_string(field: &str, raw: &RawValue) -> Result<String, FieldError> {
    serde_json::from_str::<String>(raw.get())
        .map_err(|_| FieldError::new(field, "string_type", "must be a string"))
}

fn required<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    raw: Option<Box<RawValue>>,
    parse: impl FnOnce(String) -> Result<T, FieldError>,
) -> Option<T> {
    let Some(raw) = raw else {
        return missing(errors, field);
    };
    as_string(field, &raw)
        .and_then(parse)
        .map_err(|e| errors.push(e.for_field(field)))
        .ok()
}

/// `Some(None)` when the field is absent or null, `None` when it is invalid.
fn optional<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    raw: Option<Box<RawValue>>,
    parse: impl FnOnce(String) -> Result<T, FieldError>,
) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) if raw.get() == "null" => Some(None),
        Some(raw) => as_string(field, &raw)
            .and_then(parse)
            .map(Some)
            .map_err(|e| errors.push(e.for_field(field)))
            .ok(),
    }
}

/// The top-level object as (name, raw value) pairs, duplicates kept so they can be refused.
fn parse_object(body: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, Vec<FieldError>> {
    struct Entries(Vec<(String, Box<RawValue>)>);
    impl<'de> serde::Deserialize<'de> for Entries {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entries;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                        entries.push(entry);
                    }
                    Ok(Entries(entries))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Entries>(body)
        .map(|e| e.0)
        .map_err(|e| {
            // The error's own text can quote the input, which may hold a secret: report only
            // where it went wrong.
            let message = match e.classify() {
                serde_json::error::Category::Data => "body must be a JSON object".to_owned(),
                _ => format!(
                    "body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            };
            vec![FieldError::new("body", "json_invalid", message)]
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "merchant_id": "m-1",
            "platform_name": "shopify",
            "platform_shop_id": "123",
            "domain": "Shop.myshopify.com",
            "token_data": {"access_token": "shpat_x"},
            "token_type": "oauth",
            "expires_at": "2030-01-01T00:00:00+02:00",
            "scopes": "read_products"
        })
    }

    fn errors_of(body: serde_json::Value) -> Vec<(String, &'static str)> {
        StoreTokenRequest::parse(body.to_string().as_bytes())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect()
    }

    #[test]
    fn parses_a_valid_request() {
        let req = StoreTokenRequest::parse(valid().to_string().as_bytes()).unwrap();
        assert_eq!(req.domain.as_str(), "shop.myshopify.com");
        assert_eq!(req.platform, Platform::Shopify);
        assert_eq!(
            req.expires_at.unwrap().to_rfc3339(),
            "2029-12-31T22:00:00+00:00"
        );
        assert_eq!(req.token_data.as_str(), r#"{"access_token":"shpat_x"}"#);
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let mut body = valid();
        body["expires_at"] = json!(null);
        body.as_object_mut().unwrap().remove("scopes");
        let req = StoreTokenRequest::parse(body.to_string().as_bytes()).unwrap();
        assert!(req.expires_at.is_none() && req.scopes.is_none());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let body = json!({"platform_name": "ebay", "token_data": [], "extra": 1, "merchant_id": 5});
        let errors = errors_of(body);
        for expected in [
            ("extra".to_owned(), "extra_forbidden"),
            ("merchant_id".to_owned(), "string_type"),
            ("platform_name".to_owned(), "enum"),
            ("platform_shop_id".to_owned(), "missing"),
            ("domain".to_owned(), "missing"),
            ("token_type".to_owned(), "missing"),
            ("token_data".to_owned(), "dict_type"),
        ] {
            assert!(errors.contains(&expected), "{expected:?} in {errors:?}");
        }
    }

    #[test]
    fn rejects_duplicate_keys_bad_json_and_bad_dates() {
        let dup = br#"{"merchant_id":"a","merchant_id":"b"}"#;
        let errors = StoreTokenRequest::parse(dup).unwrap_err();
        assert!(errors.iter().any(|e| e.kind == "duplicate_key"));

        let errors = StoreTokenRequest::parse(b"{\"token_data\": {\"secret\": ").unwrap_err();
        assert_eq!(errors[0].kind, "json_invalid");
        assert!(!errors[0].message.contains("secret"));
        let errors = StoreTokenRequest::parse(b"\"shpat_canary\"").unwrap_err();
        assert!(!errors[0].message.contains("shpat_canary"));

        let mut body = valid();
        body["expires_at"] = json!("next tuesday");
        assert_eq!(
            errors_of(body),
            vec![("expires_at".to_owned(), "datetime_parsing")]
        );
    }

    #[test]
    fn naive_timestamps_are_utc() {
        assert_eq!(
            parse_timestamp("2030-01-01T00:00:00".into())
                .unwrap()
                .to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
    }
}
