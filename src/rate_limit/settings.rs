//! The rate-limit settings and the proxies whose `X-Forwarded-For` is believed.

use std::net::IpAddr;

use super::gcra::Quota;
use crate::config::ConfigError;

/// The three limits (each `None` when turned off) and the trusted proxies.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// Every request, per client address, before authentication.
    pub ip: Option<Quota>,
    /// Client (JWT) calls, per shop.
    pub shop: Option<Quota>,
    /// Internal calls, per service.
    pub service: Option<Quota>,
    pub trusted_proxies: TrustedProxies,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self::from_lookup(&|_| None).expect("the defaults are valid")
    }
}

impl RateLimitSettings {
    /// Reads the variables below; `var` yields only non-empty values.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            // RATE_LIMIT_IP_PER_SEC / RATE_LIMIT_IP_BURST: every request per client address
            // (before authentication); default 1000/s, burst 2000. A rate of 0 turns it off.
            ip: quota(var, "RATE_LIMIT_IP", 1000.0, 2000)?,
            // RATE_LIMIT_SHOP_PER_SEC / RATE_LIMIT_SHOP_BURST: client calls per shop (JWT
            // `sub`); default 20/s, burst 100.
            shop: quota(var, "RATE_LIMIT_SHOP", 20.0, 100)?,
            // RATE_LIMIT_SERVICE_PER_SEC / RATE_LIMIT_SERVICE_BURST: internal calls per
            // service; default 1000/s, burst 2000.
            service: quota(var, "RATE_LIMIT_SERVICE", 1000.0, 2000)?,
            // TRUSTED_PROXIES: comma list of addresses or CIDR blocks (load balancers) whose
            // X-Forwarded-For names the client for the per-address limit; default none.
            trusted_proxies: match var("TRUSTED_PROXIES") {
                None => TrustedProxies::default(),
                Some(list) => TrustedProxies::parse(&list)
                    .map_err(|rule| ConfigError::new("TRUSTED_PROXIES", rule))?,
            },
        })
    }
}

fn quota(
    var: &dyn Fn(&str) -> Option<String>,
    prefix: &'static str,
    default_rate: f64,
    default_burst: u32,
) -> Result<Option<Quota>, ConfigError> {
    let rate_var = format!("{prefix}_PER_SEC");
    let burst_var = format!("{prefix}_BURST");
    let per_second = match var(&rate_var) {
        None => default_rate,
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && (*r == 0.0 || (0.001..=1e6).contains(r)))
            .ok_or_else(|| {
                ConfigError::new(
                    rate_var.clone(),
                    "must be a number of requests per second from 0.001 to 1000000, or 0 to turn the limit off",
                )
            })?,
    };
    let burst = match var(&burst_var) {
        None => default_burst.max(per_second.ceil() as u32),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|b| (1..=10_000_000).contains(b))
            .ok_or_else(|| {
                ConfigError::new(
                    burst_var.clone(),
                    "must be a whole number from 1 to 10000000",
                )
            })?,
    };
    Ok((per_second > 0.0).then_some(Quota { per_second, burst }))
}

/// Address blocks of trusted reverse proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// `10.0.0.0/8,192.168.1.7,::1` (a bare address is a single host).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (address, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (entry, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("`{entry}` is not an IP address or CIDR block"))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{entry}` has an invalid prefix length"))?,
            };
            blocks.push((address, bits));
        }
        Ok(Self(blocks))
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(block, bits)| match (canonical(*block), ip) {
                (IpAddr::V4(b), IpAddr::V4(a)) => prefix_eq(&b.octets(), &a.octets(), *bits),
                (IpAddr::V6(b), IpAddr::V6(a)) => prefix_eq(&b.octets(), &a.octets(), *bits),
                _ => false,
            })
    }

    /// The client behind `peer`: when `peer` is a trusted proxy, the right-most address
    /// of `X-Forwarded-For` that is not itself a trusted proxy (entries left of it can be
    /// forged by the client); otherwise `peer` itself.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in header.rsplit(',').map(str::trim) {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(block: &[u8], address: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if block[..whole] != address[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        block[whole] & mask == address[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<RateLimitSettings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RateLimitSettings::from_lookup(&|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let defaults = load(&[]).unwrap();
        assert_eq!(
            defaults.shop,
            Some(Quota {
                per_second: 20.0,
                burst: 100
            })
        );
        assert!(defaults.ip.is_some() && defaults.service.is_some());
        let custom = load(&[
            ("RATE_LIMIT_SHOP_PER_SEC", "0.5"),
            ("RATE_LIMIT_SHOP_BURST", "3"),
            ("RATE_LIMIT_IP_PER_SEC", "0"),
        ])
        .unwrap();
        assert_eq!(
            custom.shop,
            Some(Quota {
                per_second: 0.5,
                burst: 3
            })
        );
        assert_eq!(custom.ip, None, "0 turns a limit off");
        // A rate above the default burst raises the burst with it.
        let fast = load(&[("RATE_LIMIT_SERVICE_PER_SEC", "5000")]).unwrap();
        assert_eq!(fast.service.unwrap().burst, 5000);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("RATE_LIMIT_IP_PER_SEC", "-1"),
            ("RATE_LIMIT_SHOP_PER_SEC", "lots"),
            ("RATE_LIMIT_SERVICE_BURST", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.internal"),
        ] {
            assert_eq!(
                load(&[(name, value)]).unwrap_err().var,
                name,
                "{name}={value}"
            );
        }
    }

    #[test]
    fn cidr_blocks_match_their_addresses() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7, fd00::/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(proxies.contains(ip("10.200.3.4")));
        assert!(proxies.contains(ip("::ffff:10.1.1.1")));
        assert!(proxies.contains(ip("192.168.1.7")));
        assert!(!proxies.contains(ip("192.168.1.8")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(!proxies.contains(ip("11.0.0.1")));
        let odd = TrustedProxies::parse("172.16.0.0/12").unwrap();
        assert!(odd.contains(ip("172.31.255.255")));
        assert!(!odd.contains(ip("172.32.0.0")));
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lb = ip("10.0.0.2");
        // The client may forge the left part; the proxy appends what it saw.
        let header = "1.1.1.1, 203.0.113.9, 10.0.0.5";
        assert_eq!(proxies.client_ip(lb, Some(header)), ip("203.0.113.9"));
        assert_eq!(proxies.client_ip(lb, None), lb);
        assert_eq!(proxies.client_ip(lb, Some("garbage")), lb);
        // An untrusted peer's header is ignored.
        let stranger = ip("198.51.100.1");
        assert_eq!(proxies.client_ip(stranger, Some("1.2.3.4")), stranger);
    }
}
