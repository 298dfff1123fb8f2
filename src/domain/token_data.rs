//! The credential payload itself: an opaque JSON object kept byte for byte.

use serde_json::value::RawValue;

use super::FieldError;

/// The `token_data` object exactly as the client sent it.
///
/// It is kept as raw JSON text so that what a reader gets back is what was stored (key
/// order, number spelling) and so that neither storing nor reading re-parses it.
pub struct TokenDataJson(Box<RawValue>);

impl TokenDataJson {
    pub const MAX_BYTES: usize = 16 * 1024;
    pub const MAX_DEPTH: usize = 16;

    pub fn parse(raw: Box<RawValue>) -> Result<Self, FieldError> {
        let text = raw.get();
        if !text.starts_with('{') {
            return Err(FieldError::new(
                "token_data",
                "dict_type",
                "must be a JSON object",
            ));
        }
        if text.len() > Self::MAX_BYTES {
            return Err(FieldError::new(
                "token_data",
                "too_long",
                "must be at most 16 KiB when serialized",
            ));
        }
        if nesting_depth(text) > Self::MAX_DEPTH {
            return Err(FieldError::new(
                "token_data",
                "too_deep",
                "must nest objects and arrays at most 16 levels deep",
            ));
        }
        Ok(Self(raw))
    }

    /// Wraps decrypted bytes that were validated when they were stored.
    pub fn from_stored(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The few fields the vault itself looks at (a refresh token, a lifetime).
    pub fn hints(&self) -> TokenDataHints {
        #[derive(serde::Deserialize)]
        struct Probe<'a> {
            #[serde(borrow, default)]
            refresh_token: Option<&'a RawValue>,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
            #[serde(default)]
            expires_at: Option<serde_json::Value>,
        }
        let probe = serde_json::from_str::<Probe>(self.as_str()).ok();
        TokenDataHints {
            has_refresh_token: probe
                .as_ref()
                .and_then(|p| p.refresh_token)
                .is_some_and(|t| t.get().starts_with('"') && t.get() != "\"\""),
            expires_in: probe
                .as_ref()
                .and_then(|p| p.expires_in.as_ref())
                .and_then(|v| v.as_u64()),
            expires_at: probe
                .as_ref()
                .and_then(|p| p.expires_at.as_ref())
                .and_then(|v| v.as_str())
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl std::fmt::Debug for TokenDataJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDataJson([REDACTED])")
    }
}

impl serde::Serialize for TokenDataJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// What the vault reads from a credential's payload without keeping it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenDataHints {
    /// A non-empty string `refresh_token` is present: the token can be refreshed.
    pub has_refresh_token: bool,
    /// `expires_in` seconds, as an OAuth token response carries it.
    pub expires_in: Option<u64>,
    /// `expires_at` as an RFC 3339 string, as this service writes it after a refresh.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Deepest nesting of objects and arrays in already-valid JSON text.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn depth_ignores_brackets_inside_strings() {
        assert_eq!(nesting_depth(r#"{"a":"{[{[\"{"}"#), 1);
        assert_eq!(nesting_depth(r#"{"a":[{"b":[]}]}"#), 4);
    }

    #[test]
    fn accepts_objects_up_to_the_limits_and_keeps_the_text() {
        let nested = format!("{}{}", "{\"a\":".repeat(15) + "{}", "}".repeat(15));
        assert!(TokenDataJson::parse(raw(&nested)).is_ok());
        let text = r#"{"z":1,"a":1.50,"u":"café ✓"}"#;
        assert_eq!(TokenDataJson::parse(raw(text)).unwrap().as_str(), text);
    }

    #[test]
    fn rejects_non_objects_oversize_and_deep_nesting() {
        for text in ["[]", "\"s\"", "1", "null"] {
            assert_eq!(
                TokenDataJson::parse(raw(text)).unwrap_err().kind,
                "dict_type"
            );
        }
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(16 * 1024));
        assert_eq!(
            TokenDataJson::parse(raw(&big)).unwrap_err().kind,
            "too_long"
        );
        let deep = format!("{}{}", "{\"a\":".repeat(16) + "{}", "}".repeat(16));
        assert_eq!(
            TokenDataJson::parse(raw(&deep)).unwrap_err().kind,
            "too_deep"
        );
    }

    #[test]
    fn hints_find_a_refresh_token_and_lifetime() {
        let data = TokenDataJson::parse(raw(
            r#"{"access_token":"a","refresh_token":"r","expires_in":3600}"#,
        ))
        .unwrap();
        assert_eq!(
            data.hints(),
            TokenDataHints {
                has_refresh_token: true,
                expires_in: Some(3600),
                expires_at: None
            }
        );
        for text in [
            r#"{"access_token":"a"}"#,
            r#"{"refresh_token":""}"#,
            r#"{"refresh_token":null}"#,
            r#"{"refresh_token":{"x":1}}"#,
        ] {
            assert!(
                !TokenDataJson::parse(raw(text))
                    .unwrap()
                    .hints()
                    .has_refresh_token,
                "{text}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let data = TokenDataJson::parse(raw(r#"{"access_token":"shpat_secret"}"#)).unwrap();
        assert!(!format!("{data:?}").contains("shpat_secret"));
    }
}
