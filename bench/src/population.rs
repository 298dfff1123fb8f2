//! The seeded data set: who the merchants are, which platforms each has, and the requests
//! that touch them. Seeding and every scenario derive the same names from a merchant's index.

use std::fmt::Write;

use anyhow::Context;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

/// The platforms a merchant gets, in order: merchant `i` has the first `1 + i % 6`.
pub const PLATFORMS: [&str; 6] = [
    "shopify",
    "woocommerce",
    "bigcommerce",
    "magento",
    "squarespace",
    "custom",
];

/// The platform every merchant has (the "read one token" target).
pub const FIRST_PLATFORM: &str = PLATFORMS[0];

pub fn merchant_id(i: usize) -> String {
    format!("bench-m{i}")
}

pub fn domain(i: usize) -> String {
    format!("shop-{i}.myshopify.com")
}

/// How many platforms merchant `i` has: one to six.
pub fn platform_count(i: usize) -> usize {
    1 + i % 6
}

/// Merchants `i < merchants` that have all six platforms.
pub fn six_platform_merchants(merchants: usize) -> Vec<usize> {
    (0..merchants).filter(|&i| platform_count(i) == 6).collect()
}

/// Every (merchant, platform) row the seed stores.
pub fn all_rows(merchants: usize) -> Vec<(usize, &'static str)> {
    (0..merchants)
        .flat_map(|i| PLATFORMS[..platform_count(i)].iter().map(move |&p| (i, p)))
        .collect()
}

/// The JSON body of a store request. `version` varies the secret so upserts really change it.
pub fn store_body(i: usize, platform: &str, version: u64) -> String {
    let mut secret = String::with_capacity(32);
    for part in [i as u64, version] {
        let _ = write!(secret, "{:016x}", mix(part ^ 0x5eed));
    }
    format!(
        concat!(
            r#"{{"merchant_id":"{m}","platform_name":"{p}","platform_shop_id":"{i}","#,
            r#""domain":"{d}","token_data":{{"access_token":"shpat_{s}","refresh_token":"shprt_{s}","#,
            r#""scope":"read_products,write_products,read_orders"}},"token_type":"oauth","#,
            r#""expires_at":"2030-01-01T00:00:00Z","scopes":"read_products,write_products,read_orders"}}"#
        ),
        m = merchant_id(i),
        p = platform,
        i = 1000 + i,
        d = domain(i),
        s = secret,
    )
}

/// Client JWTs (HS256) for every merchant's shop, signed once up front.
pub fn client_jwts(secret: &str, merchants: usize) -> anyhow::Result<Vec<String>> {
    #[derive(Serialize)]
    struct Claims {
        sub: String,
        exp: i64,
        scope: &'static str,
    }
    let key = EncodingKey::from_secret(secret.as_bytes());
    let exp = chrono::Utc::now().timestamp() + 7 * 24 * 3600;
    (0..merchants)
        .map(|i| {
            let claims = Claims {
                sub: domain(i),
                exp,
                scope: "tokens:write",
            };
            encode(&Header::default(), &claims, &key).context("signing a client JWT")
        })
        .collect()
}

/// A splitmix64 step: a fast, good-enough mixer for picking merchants.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A tiny per-worker random source (no shared state, no extra dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform-ish in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(1);
        (mix(self.0) % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_merchant_has_the_first_platform_and_one_to_six() {
        let rows = all_rows(12);
        assert_eq!(rows.len(), 2 * (1 + 2 + 3 + 4 + 5 + 6));
        for i in 0..12 {
            assert!(rows.contains(&(i, FIRST_PLATFORM)));
        }
        assert_eq!(six_platform_merchants(12), vec![5, 11]);
    }

    #[test]
    fn store_body_is_json_for_the_right_row() {
        let body: serde_json::Value = serde_json::from_str(&store_body(7, "magento", 3)).unwrap();
        assert_eq!(body["merchant_id"], "bench-m7");
        assert_eq!(body["platform_name"], "magento");
        assert_eq!(body["domain"], "shop-7.myshopify.com");
        assert!(body["token_data"]["access_token"]
            .as_str()
            .unwrap()
            .starts_with("shpat_"));
        assert_ne!(store_body(7, "magento", 3), store_body(7, "magento", 4));
    }

    #[test]
    fn rng_stays_in_range_and_spreads() {
        let mut rng = Rng::new(1);
        let mut seen = [0usize; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
