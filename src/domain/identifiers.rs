//! Identifiers and enumerations that appear in requests, paths and rows.

use super::FieldError;

/// The platform's internal merchant identifier: 1–128 characters of `[A-Za-z0-9_.:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MerchantId(String);

impl MerchantId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                "merchant_id",
                "string_length",
                "must be 1 to 128 characters",
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        if !value.chars().all(allowed) {
            return Err(FieldError::new(
                "merchant_id",
                "string_pattern_mismatch",
                "may contain only letters, digits and _ . : -",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The commerce platforms whose credentials the vault keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Shopify,
    WooCommerce,
    BigCommerce,
    Magento,
    Squarespace,
    Custom,
}

impl Platform {
    pub const ALL: [Platform; 6] = [
        Platform::Shopify,
        Platform::WooCommerce,
        Platform::BigCommerce,
        Platform::Magento,
        Platform::Squarespace,
        Platform::Custom,
    ];

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == value)
            .ok_or_else(|| {
                FieldError::new(
                    "platform_name",
                    "enum",
                    "must be one of shopify, woocommerce, bigcommerce, magento, squarespace, custom",
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Shopify => "shopify",
            Platform::WooCommerce => "woocommerce",
            Platform::BigCommerce => "bigcommerce",
            Platform::Magento => "magento",
            Platform::Squarespace => "squarespace",
            Platform::Custom => "custom",
        }
    }
}

/// How the credential is used against the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    OAuth,
    ApiKey,
    BasicAuth,
    Bearer,
}

impl TokenType {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        match value {
            "oauth" => Ok(TokenType::OAuth),
            "api_key" => Ok(TokenType::ApiKey),
            "basic_auth" => Ok(TokenType::BasicAuth),
            "bearer" => Ok(TokenType::Bearer),
            _ => Err(FieldError::new(
                "token_type",
                "enum",
                "must be one of oauth, api_key, basic_auth, bearer",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::OAuth => "oauth",
            TokenType::ApiKey => "api_key",
            TokenType::BasicAuth => "basic_auth",
            TokenType::Bearer => "bearer",
        }
    }
}

/// A shop's host name, which is also its identity as a client (the JWT `sub`).
///
/// Host names are case-insensitive, so the value is kept in lower case; that makes
/// ownership a plain equality between the stored domain and the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShopDomain(String);

impl ShopDomain {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let err = |kind, message| Err(FieldError::new("domain", kind, message));
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return err("string_length", "must be 1 to 255 characters");
        }
        let host = value.strip_suffix('.').unwrap_or(value);
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return err(
                "host_name",
                "must be a host name: dot-separated labels of letters, digits and hyphens",
            );
        }
        Ok(Self(host.to_ascii_lowercase()))
    }

    /// The shop named by a client JWT's `sub`: trimmed and compared case-insensitively.
    pub fn from_subject(sub: &str) -> Result<Self, FieldError> {
        Self::parse(sub.trim())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The shop's identifier on its platform (1–255 characters, no control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformShopId(String);

impl PlatformShopId {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        bounded_text("platform_shop_id", value, 1, 255).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// OAuth scopes as the platform granted them (at most 4096 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(String);

impl Scopes {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        bounded_text("scopes", value, 0, 4096).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn bounded_text(field: &str, value: &str, min: usize, max: usize) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars < min || chars > max {
        return Err(FieldError::new(
            field,
            "string_length",
            format!("must be {min} to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "string_pattern_mismatch",
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_id_accepts_the_documented_alphabet_only() {
        assert!(MerchantId::parse("m_1.a:b-C").is_ok());
        assert!(MerchantId::parse(&"a".repeat(128)).is_ok());
        assert_eq!(MerchantId::parse("").unwrap_err().kind, "string_length");
        assert_eq!(
            MerchantId::parse(&"a".repeat(129)).unwrap_err().kind,
            "string_length"
        );
        for bad in ["a b", "a/b", "ä", "a%2F", "a\n"] {
            assert_eq!(
                MerchantId::parse(bad).unwrap_err().kind,
                "string_pattern_mismatch",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn platform_round_trips_and_rejects_unknown_names() {
        for p in Platform::ALL {
            assert_eq!(Platform::parse(p.as_str()), Ok(p));
        }
        assert!(Platform::parse("Shopify").is_err());
        assert!(Platform::parse("ebay").is_err());
    }

    #[test]
    fn token_type_round_trips() {
        for name in ["oauth", "api_key", "basic_auth", "bearer"] {
            assert_eq!(TokenType::parse(name).unwrap().as_str(), name);
        }
        assert!(TokenType::parse("password").is_err());
    }

    #[test]
    fn shop_domain_is_a_lower_cased_host_name() {
        assert_eq!(
            ShopDomain::parse("Shop-1.MyShopify.com").unwrap().as_str(),
            "shop-1.myshopify.com"
        );
        assert_eq!(
            ShopDomain::parse("shop.example.com.").unwrap().as_str(),
            "shop.example.com"
        );
        for bad in [
            "",
            "shop..com",
            "-shop.com",
            "shop-.com",
            "shop.com/evil",
            "user@shop.com",
            "shop.com:443",
            " shop.com",
        ] {
            assert!(ShopDomain::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ShopDomain::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(ShopDomain::parse(&"a.".repeat(128)).is_err());
    }

    #[test]
    fn subject_is_trimmed_and_case_folded() {
        assert_eq!(
            ShopDomain::from_subject("  A.myshopify.com ").unwrap(),
            ShopDomain::parse("a.myshopify.com").unwrap()
        );
    }

    #[test]
    fn text_fields_enforce_length_and_no_control_characters() {
        assert!(PlatformShopId::parse("").is_err());
        assert!(PlatformShopId::parse(&"é".repeat(255)).is_ok());
        assert!(PlatformShopId::parse(&"x".repeat(256)).is_err());
        assert!(PlatformShopId::parse("a\u{0}b").is_err());
        assert!(Scopes::parse("").is_ok());
        assert!(Scopes::parse(&"s".repeat(4097)).is_err());
    }
}
