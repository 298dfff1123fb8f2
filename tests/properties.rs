//! Property tests: the domain types and the envelope encryption hold their rules for any input.

use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::Value;
use token_service::crypto::{KeyId, Keyring, RowIdentity};
use token_service::domain::{MerchantId, ShopDomain, StoreTokenRequest, TokenDataJson};

/// Built once: key derivation is deliberately slow, and the cases only need one keyring.
fn keyring() -> &'static Keyring {
    static KEYRING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    KEYRING.get_or_init(|| {
        let secret = SecretString::from("property-test-secret-0123456789abcdef".to_owned());
        Keyring::new((KeyId::parse("k1").unwrap(), &secret), &[]).unwrap()
    })
}

/// Arbitrary JSON values, nested up to `depth` levels.
fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #[test]
    fn merchant_ids_follow_the_documented_pattern(s in ".{0,140}") {
        let valid = !s.is_empty() && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        prop_assert_eq!(MerchantId::parse(&s).is_ok(), valid);
    }

    #[test]
    fn generated_host_names_parse_and_normalise(labels in prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..5)) {
        let host = labels.join(".");
        let parsed = ShopDomain::parse(&host).unwrap();
        prop_assert_eq!(parsed.as_str(), host.to_ascii_lowercase());
        prop_assert_eq!(ShopDomain::parse(parsed.as_str()).unwrap(), parsed.clone());
        prop_assert_eq!(ShopDomain::from_subject(&format!(" {} ", host.to_uppercase())).unwrap(), parsed);
    }

    #[test]
    fn shop_domains_never_contain_url_syntax(s in ".{0,64}") {
        if let Ok(domain) = ShopDomain::parse(&s) {
            prop_assert!(domain.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        }
    }

    #[test]
    fn token_data_depth_limit_matches_the_json(value in json_value(20)) {
        let object = match value {
            Value::Object(_) => value,
            other => serde_json::json!({ "v": other }),
        };
        let text = object.to_string();
        let raw = serde_json::value::RawValue::from_string(text.clone()).unwrap();
        let accepted = TokenDataJson::parse(raw).is_ok();
        prop_assert_eq!(accepted, depth(&object) <= 16 && text.len() <= 16 * 1024);
    }

    #[test]
    fn store_request_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = StoreTokenRequest::parse(&bytes);
    }

    #[test]
    fn envelope_round_trips_and_is_bound_to_its_row(
        plaintext in prop::collection::vec(any::<u8>(), 0..2048),
        merchant in "[A-Za-z0-9_.:-]{1,32}",
        other_merchant in "[A-Za-z0-9_.:-]{1,32}",
        platform in prop::sample::select(vec!["shopify", "magento", "custom"]),
    ) {
        let ring = keyring();
        let row = RowIdentity { merchant_id: &merchant, platform_name: platform };
        let (stored, _) = ring.seal(row, &plaintext);
        let opened = ring.open(row, &stored).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        if other_merchant != merchant {
            let other = RowIdentity { merchant_id: &other_merchant, platform_name: platform };
            prop_assert!(ring.open(other, &stored).is_err());
        }
    }

    #[test]
    fn ciphertext_decoding_never_panics(stored in ".{0,200}") {
        let ring = keyring();
        let row = RowIdentity { merchant_id: "m", platform_name: "shopify" };
        let _ = ring.open(row, &stored);
        let _ = ring.open(row, &format!("tse1.k1.{stored}"));
    }
}
