//! Per-caller rate limits: per client address before authentication, then per shop for
//! client calls and per service for internal calls.
//!
//! Limits are kept in memory by each replica: behind a load balancer spreading load over
//! N replicas, a caller gets up to N times the configured rate in total. A refused request
//! costs one hash and one short lock; it never reaches the database.

mod gcra;
pub mod settings;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

pub use gcra::{KeyedLimiter, Quota};
pub use settings::{RateLimitSettings, TrustedProxies};

use crate::metrics::Metrics;

/// Distinct client addresses (and shops) tracked before idle ones must make room.
const MAX_KEYS: usize = 100_000;
/// Services are a configured list; this only bounds a misconfiguration.
const MAX_SERVICES: usize = 1024;

/// A request over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Which limit: `ip`, `shop` or `service`.
    pub scope: &'static str,
    /// How long until the next request would be allowed.
    pub retry_after: Duration,
}

struct Limit<K> {
    scope: &'static str,
    limiter: KeyedLimiter<K>,
    refused: Counter,
}

impl<K: std::hash::Hash + Eq> Limit<K> {
    fn new(scope: &'static str, quota: Quota, max_keys: usize, metrics: &Metrics) -> Self {
        Self {
            scope,
            limiter: KeyedLimiter::new(quota, max_keys),
            refused: metrics.rate_limited(scope),
        }
    }

    fn check<Q>(&self, key: &Q) -> Result<(), Refused>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.limiter.check(key).map_err(|retry_after| {
            self.refused.inc();
            Refused {
                scope: self.scope,
                retry_after,
            }
        })
    }
}

/// The limits of one running service.
pub struct RateLimits {
    ip: Option<Limit<IpAddr>>,
    shop: Option<Limit<String>>,
    service: Option<Limit<String>>,
    trusted_proxies: TrustedProxies,
}

impl RateLimits {
    /// The configured limits, counting refusals into `metrics`.
    pub fn new(settings: &RateLimitSettings, metrics: &Metrics) -> Self {
        Self {
            ip: settings.ip.map(|q| Limit::new("ip", q, MAX_KEYS, metrics)),
            shop: settings
                .shop
                .map(|q| Limit::new("shop", q, MAX_KEYS, metrics)),
            service: settings
                .service
                .map(|q| Limit::new("service", q, MAX_SERVICES, metrics)),
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }

    /// Every request, before authentication: the client address is the TCP peer, or the
    /// forwarded client when the peer is a trusted proxy.
    pub fn check_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Result<(), Refused> {
        match &self.ip {
            Some(limit) => {
                let client = self.trusted_proxies.client_ip(peer, forwarded_for);
                limit.check(&address_key(client))
            }
            None => Ok(()),
        }
    }

    /// A client call, once its JWT names the shop.
    pub fn check_shop(&self, shop: &str) -> Result<(), Refused> {
        self.shop.as_ref().map_or(Ok(()), |limit| limit.check(shop))
    }

    /// An internal call, once its key names the service.
    pub fn check_service(&self, service: &str) -> Result<(), Refused> {
        self.service
            .as_ref()
            .map_or(Ok(()), |limit| limit.check(service))
    }

    /// Keys tracked per limit, for `/metrics`.
    pub fn tracked_keys(&self) -> [(&'static str, usize); 3] {
        fn keys<K: std::hash::Hash + Eq>(limit: &Option<Limit<K>>) -> usize {
            limit.as_ref().map_or(0, |l| l.limiter.tracked_keys())
        }
        [
            ("ip", keys(&self.ip)),
            ("shop", keys(&self.shop)),
            ("service", keys(&self.service)),
        ]
    }
}

/// IPv4 addresses as they are; IPv6 by /64, the block one subscriber usually holds, so
/// that rotating through one's own addresses does not multiply the allowance.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(vars: &[(&str, &str)]) -> RateLimits {
        let vars: std::collections::HashMap<_, _> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let settings = RateLimitSettings::from_lookup(&|n| vars.get(n).cloned()).unwrap();
        RateLimits::new(&settings, &Metrics::new())
    }

    #[test]
    fn each_scope_limits_its_own_callers() {
        let limits = limits(&[
            ("RATE_LIMIT_SHOP_PER_SEC", "0.01"),
            ("RATE_LIMIT_SHOP_BURST", "1"),
            ("RATE_LIMIT_SERVICE_PER_SEC", "0.01"),
            ("RATE_LIMIT_SERVICE_BURST", "2"),
        ]);
        assert!(limits.check_shop("a.myshopify.com").is_ok());
        let refused = limits.check_shop("a.myshopify.com").unwrap_err();
        assert_eq!(refused.scope, "shop");
        assert!(limits.check_shop("b.myshopify.com").is_ok());
        assert!(limits.check_service("platform-connector").is_ok());
        assert!(limits.check_service("platform-connector").is_ok());
        assert_eq!(
            limits
                .check_service("platform-connector")
                .unwrap_err()
                .scope,
            "service"
        );
    }

    #[test]
    fn ipv6_neighbours_share_a_bucket_and_proxies_are_seen_through() {
        let limits = limits(&[
            ("RATE_LIMIT_IP_PER_SEC", "0.01"),
            ("RATE_LIMIT_IP_BURST", "1"),
            ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(limits.check_ip(ip("2001:db8::1"), None).is_ok());
        assert!(limits.check_ip(ip("2001:db8::ffff"), None).is_err());
        assert!(limits.check_ip(ip("2001:db8:0:1::1"), None).is_ok());
        // Two clients behind one load balancer are two callers.
        let lb = ip("10.0.0.2");
        assert!(limits.check_ip(lb, Some("203.0.113.1")).is_ok());
        assert!(limits.check_ip(lb, Some("203.0.113.2")).is_ok());
        assert!(limits.check_ip(lb, Some("203.0.113.1")).is_err());
    }

    #[test]
    fn a_limit_set_to_zero_never_refuses() {
        let limits = limits(&[("RATE_LIMIT_SHOP_PER_SEC", "0")]);
        for _ in 0..1000 {
            assert!(limits.check_shop("a.myshopify.com").is_ok());
        }
        assert_eq!(limits.tracked_keys()[1], ("shop", 0));
    }
}
