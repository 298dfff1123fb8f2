//! Calls to platforms' OAuth 2.0 token endpoints: refresh (RFC 6749 §6) and Shopify's token
//! exchange to expiring offline tokens.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::settings::ProviderSettings;
use crate::domain::ShopDomain;

/// What to ask the token endpoint for.
pub enum Grant<'a> {
    /// Exchange a refresh token for a new access token (and usually a new refresh token).
    Refresh { refresh_token: &'a str },
    /// Exchange a non-expiring Shopify offline token for an expiring pair.
    ShopifyExpiringExchange { offline_token: &'a str },
}

/// A successful answer. Debug shows no token.
#[derive(Deserialize)]
pub struct TokenGrant {
    pub access_token: Zeroizing<String>,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<Zeroizing<String>>,
    pub refresh_token_expires_in: Option<u64>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a token request failed, sorted by what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The platform refuses the grant for good: the merchant must re-authorize the app.
    #[error("the platform answered invalid_grant")]
    InvalidGrant,
    /// Worth retrying with the same grant: timeout, connection, 429 or 5xx, lost answer.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Any other refusal or a malformed answer; retried later with backoff.
    #[error("token endpoint refused the request: {0}")]
    Rejected(String),
    /// The shop domain is not one this provider may be called for.
    #[error("shop domain is not allowed for this platform's token endpoint")]
    DomainNotAllowed,
}

impl OAuthError {
    /// The stable code recorded in audit rows and answers.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidGrant => "REAUTH_REQUIRED",
            OAuthError::Transient(_) => "REFRESH_UNAVAILABLE",
            OAuthError::Rejected(_) => "REFRESH_REJECTED",
            OAuthError::DomainNotAllowed => "REFRESH_DOMAIN_NOT_ALLOWED",
        }
    }
}

/// An HTTP client for token endpoints: bounded time, no redirects.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
}

impl OAuthClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect could carry the client secret to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("token-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS-capable HTTP client can be built");
        Self { http }
    }

    /// Sends one token request for the shop `domain`.
    pub async fn request(
        &self,
        provider: &ProviderSettings,
        domain: &str,
        grant: Grant<'_>,
    ) -> Result<TokenGrant, OAuthError> {
        let url = token_url(provider, domain)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", &provider.client_id),
            ("client_secret", provider.client_secret.expose_secret()),
        ];
        match grant {
            Grant::Refresh { refresh_token } => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh_token));
            }
            Grant::ShopifyExpiringExchange { offline_token } => {
                const OFFLINE: &str = "urn:shopify:params:oauth:token-type:offline-access-token";
                form.push((
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ));
                form.push(("subject_token", offline_token));
                form.push(("subject_token_type", OFFLINE));
                form.push(("requested_token_type", OFFLINE));
                form.push(("expiring", "1"));
            }
        }
        let body = Zeroizing::new(encode_form(&form));
        let response = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            // reqwest errors name the URL, never the body; keep only the kind.
            .map_err(|e| OAuthError::Transient(error_kind(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| OAuthError::Transient(error_kind(&e)))?;
        if status.is_success() {
            return serde_json::from_slice::<TokenGrant>(&bytes)
                .ok()
                .filter(|g| !g.access_token.is_empty())
                .ok_or_else(|| OAuthError::Rejected("malformed token response".into()));
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            error: Option<String>,
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .and_then(|b| b.error);
        match (status.as_u16(), error.as_deref()) {
            (_, Some("invalid_grant")) => Err(OAuthError::InvalidGrant),
            (429, _) | (500..=599, _) => Err(OAuthError::Transient(format!("HTTP {status}"))),
            (_, Some(code)) => Err(OAuthError::Rejected(format!(
                "HTTP {status}, error {}",
                sanitize(code)
            ))),
            _ => Err(OAuthError::Rejected(format!("HTTP {status}"))),
        }
    }
}

/// The endpoint for `domain`, refusing domains outside the provider's suffix.
pub fn token_url(provider: &ProviderSettings, domain: &str) -> Result<String, OAuthError> {
    if !provider.token_url_template.contains("{shop}") {
        return Ok(provider.token_url_template.clone());
    }
    let shop = ShopDomain::parse(domain).map_err(|_| OAuthError::DomainNotAllowed)?;
    let suffix = provider
        .shop_domain_suffix
        .as_deref()
        .ok_or(OAuthError::DomainNotAllowed)?;
    let label = shop
        .as_str()
        .strip_suffix(suffix)
        .ok_or(OAuthError::DomainNotAllowed)?;
    if label.is_empty() {
        return Err(OAuthError::DomainNotAllowed);
    }
    Ok(provider.token_url_template.replace("{shop}", shop.as_str()))
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    fn escape(out: &mut String, value: &str) {
        for byte in value.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(byte as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        escape(&mut out, name);
        out.push('=');
        escape(&mut out, value);
    }
    out
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "connection lost before the answer".into()
    }
}

/// Error codes from a remote server are short identifiers; anything else is dropped.
fn sanitize(code: &str) -> String {
    code.chars()
        .take(64)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn provider(template: &str, suffix: Option<&str>) -> ProviderSettings {
        ProviderSettings {
            token_url_template: template.into(),
            client_id: "id".into(),
            client_secret: SecretString::from("secret".to_owned()),
            shop_domain_suffix: suffix.map(str::to_owned),
        }
    }

    #[test]
    fn only_shops_under_the_suffix_get_a_url() {
        let shopify = provider(
            "https://{shop}/admin/oauth/access_token",
            Some(".myshopify.com"),
        );
        assert_eq!(
            token_url(&shopify, "Cool-Shop.myshopify.com").unwrap(),
            "https://cool-shop.myshopify.com/admin/oauth/access_token"
        );
        for evil in [
            "evil.com",
            "myshopify.com",
            ".myshopify.com",
            "evil.com/.myshopify.com",
            "evil.com?.myshopify.com",
            "evil.com#.myshopify.com",
            "user@x.myshopify.com",
            "x.myshopify.com:8443",
            "x.myshopify.com.evil.com",
        ] {
            assert_eq!(
                token_url(&shopify, evil),
                Err(OAuthError::DomainNotAllowed),
                "{evil}"
            );
        }
        let fixed = provider("https://login.example.com/token", None);
        assert_eq!(
            token_url(&fixed, "anything").unwrap(),
            "https://login.example.com/token"
        );
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(
            encode_form(&[("a b", "x&y=z/é"), ("k", "v")]),
            "a+b=x%26y%3Dz%2F%C3%A9&k=v"
        );
    }

    #[test]
    fn debug_of_a_grant_shows_no_token() {
        let grant: TokenGrant = serde_json::from_str(
            r#"{"access_token":"shpat_secret","refresh_token":"shprt_secret","expires_in":3600}"#,
        )
        .unwrap();
        let shown = format!("{grant:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
