//! Refresh settings: which platforms can be refreshed, with which app credentials, and when.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;

use crate::config::ConfigError;
use crate::domain::Platform;

/// Where and how to refresh one platform's OAuth tokens.
#[derive(Debug)]
pub struct ProviderSettings {
    /// Token endpoint; `{shop}` is replaced by the row's shop domain.
    pub token_url_template: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Required suffix of the shop domain whenever the URL depends on it, so a stored
    /// domain can never aim the service at an arbitrary host.
    pub shop_domain_suffix: Option<String>,
}

/// Everything about keeping OAuth tokens alive.
#[derive(Debug)]
pub struct RefreshSettings {
    pub providers: HashMap<Platform, ProviderSettings>,
    /// Reads never hand out a refreshable token expiring within this window.
    pub window: Duration,
    /// The background task refreshes tokens this long before they enter the window.
    pub lead: Duration,
    /// How often the background task looks for tokens to refresh.
    pub interval: Duration,
    /// Timeout of one call to a token endpoint.
    pub http_timeout: Duration,
}

const SHOPIFY_TEMPLATE: &str = "https://{shop}/admin/oauth/access_token";

impl RefreshSettings {
    /// Reads the refresh variables.
    ///
    /// - `SHOPIFY_CLIENT_ID` / `SHOPIFY_CLIENT_SECRET`: the app's credentials; both or neither.
    /// - `SHOPIFY_TOKEN_URL_TEMPLATE`: default `https://{shop}/admin/oauth/access_token`.
    /// - `SHOPIFY_SHOP_DOMAIN_SUFFIX`: default `.myshopify.com`.
    /// - `<PLATFORM>_TOKEN_URL`, `<PLATFORM>_CLIENT_ID`, `<PLATFORM>_CLIENT_SECRET`,
    ///   `<PLATFORM>_SHOP_DOMAIN_SUFFIX` for any other OAuth 2.0 platform (RFC 6749 §6), e.g.
    ///   `SQUARESPACE_TOKEN_URL`.
    /// - `TOKEN_REFRESH_WINDOW` (default 5m), `TOKEN_REFRESH_LEAD` (default 10m),
    ///   `TOKEN_REFRESH_INTERVAL` (default 30s), `OAUTH_HTTP_TIMEOUT` (default 10s):
    ///   durations as `90`, `90s`, `5m` or `1h`.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut providers = HashMap::new();
        for platform in Platform::ALL {
            let prefix = platform.as_str().to_ascii_uppercase();
            let names = VarNames::new(&prefix);
            let default_template = (platform == Platform::Shopify).then_some(SHOPIFY_TEMPLATE);
            let default_suffix = (platform == Platform::Shopify).then_some(".myshopify.com");
            if let Some(provider) = provider(var, &names, default_template, default_suffix)? {
                providers.insert(platform, provider);
            }
        }
        Ok(Self {
            providers,
            window: duration(var, "TOKEN_REFRESH_WINDOW", Duration::from_secs(300))?,
            lead: duration(var, "TOKEN_REFRESH_LEAD", Duration::from_secs(600))?,
            interval: duration(var, "TOKEN_REFRESH_INTERVAL", Duration::from_secs(30))?,
            http_timeout: duration(var, "OAUTH_HTTP_TIMEOUT", Duration::from_secs(10))?,
        })
    }
}

/// The variable names of one platform.
struct VarNames {
    url: String,
    id: String,
    secret: String,
    suffix: String,
}

impl VarNames {
    fn new(prefix: &str) -> Self {
        let url = if prefix == "SHOPIFY" {
            "SHOPIFY_TOKEN_URL_TEMPLATE".to_owned()
        } else {
            format!("{prefix}_TOKEN_URL")
        };
        Self {
            url,
            id: format!("{prefix}_CLIENT_ID"),
            secret: format!("{prefix}_CLIENT_SECRET"),
            suffix: format!("{prefix}_SHOP_DOMAIN_SUFFIX"),
        }
    }
}

fn provider(
    var: &dyn Fn(&str) -> Option<String>,
    names: &VarNames,
    default_template: Option<&str>,
    default_suffix: Option<&str>,
) -> Result<Option<ProviderSettings>, ConfigError> {
    let (id, secret) = (var(&names.id), var(&names.secret));
    let (client_id, client_secret) = match (id, secret) {
        (None, None) => return Ok(None),
        (Some(id), Some(secret)) => (id, secret),
        (None, Some(_)) => return Err(err(&names.id, "is required when the client secret is set")),
        (Some(_), None) => return Err(err(&names.secret, "is required when the client id is set")),
    };
    let token_url_template = var(&names.url)
        .or(default_template.map(str::to_owned))
        .ok_or_else(|| err(&names.url, "is required when client credentials are set"))?;
    if !(token_url_template.starts_with("https://") || token_url_template.starts_with("http://")) {
        return Err(err(&names.url, "must be an http(s) URL"));
    }
    let shop_domain_suffix = var(&names.suffix)
        .or(default_suffix.map(str::to_owned))
        .map(|s| s.to_ascii_lowercase());
    if token_url_template.contains("{shop}") && shop_domain_suffix.is_none() {
        return Err(err(
            &names.suffix,
            "is required when the token URL contains {shop}",
        ));
    }
    if shop_domain_suffix
        .as_deref()
        .is_some_and(|s| !s.starts_with('.') || s.len() < 3)
    {
        return Err(err(
            &names.suffix,
            "must start with '.' and name a domain, like .myshopify.com",
        ));
    }
    Ok(Some(ProviderSettings {
        token_url_template,
        client_id,
        client_secret: SecretString::from(client_secret),
        shop_domain_suffix,
    }))
}

fn err(var: &str, rule: &str) -> ConfigError {
    ConfigError::new(var.to_owned(), rule)
}

fn duration(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(value) = var(name) else {
        return Ok(default);
    };
    parse_duration(&value)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            err(
                name,
                "must be a positive duration such as 90, 90s, 5m or 1h",
            )
        })
}

fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<RefreshSettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RefreshSettings::from_lookup(&|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_configured_means_no_providers_and_default_timings() {
        let settings = load(&[]).unwrap();
        assert!(settings.providers.is_empty());
        assert_eq!(settings.window, Duration::from_secs(300));
    }

    #[test]
    fn shopify_defaults_to_the_admin_endpoint_and_myshopify_domains() {
        let settings =
            load(&[("SHOPIFY_CLIENT_ID", "id"), ("SHOPIFY_CLIENT_SECRET", "s")]).unwrap();
        let shopify = &settings.providers[&Platform::Shopify];
        assert_eq!(shopify.token_url_template, SHOPIFY_TEMPLATE);
        assert_eq!(
            shopify.shop_domain_suffix.as_deref(),
            Some(".myshopify.com")
        );
        assert!(!format!("{shopify:?}").contains("\"s\""));
    }

    #[test]
    fn other_platforms_need_their_own_endpoint() {
        let err = load(&[
            ("SQUARESPACE_CLIENT_ID", "id"),
            ("SQUARESPACE_CLIENT_SECRET", "s"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "SQUARESPACE_TOKEN_URL");
        let ok = load(&[
            ("SQUARESPACE_CLIENT_ID", "id"),
            ("SQUARESPACE_CLIENT_SECRET", "s"),
            ("SQUARESPACE_TOKEN_URL", "https://login.example.com/tokens"),
        ])
        .unwrap();
        assert!(ok.providers.contains_key(&Platform::Squarespace));
        let templated = load(&[
            ("MAGENTO_CLIENT_ID", "id"),
            ("MAGENTO_CLIENT_SECRET", "s"),
            ("MAGENTO_TOKEN_URL", "https://{shop}/oauth/token"),
        ]);
        assert_eq!(templated.unwrap_err().var, "MAGENTO_SHOP_DOMAIN_SUFFIX");
    }

    #[test]
    fn half_configured_credentials_are_refused() {
        assert_eq!(
            load(&[("SHOPIFY_CLIENT_ID", "id")]).unwrap_err().var,
            "SHOPIFY_CLIENT_SECRET"
        );
        assert_eq!(
            load(&[("SHOPIFY_CLIENT_SECRET", "s")]).unwrap_err().var,
            "SHOPIFY_CLIENT_ID"
        );
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(
            load(&[("TOKEN_REFRESH_WINDOW", "0")]).unwrap_err().var,
            "TOKEN_REFRESH_WINDOW"
        );
    }
}
