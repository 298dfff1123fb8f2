//! The secret-leak sweep over the whole API suite.
//!
//! Every secret the suite configures or mints is registered here: the keys and secrets the
//! services are started with, every JWT `sign()` makes, every long enough token value sent
//! in a `token_data` (and those the fake Shopify issues). Every response the [`TestClient`]
//! receives and every line an in-process service logs is scanned for all of them, and a hit
//! fails a test with what leaked and where, never the secret itself.
//!
//! [`TestClient`]: crate::client::TestClient

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{fake_shopify, helpers};

/// What a registered secret is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ClientJwtSecret,
    EncryptionKey,
    ServiceKey,
    PlatformClientSecret,
    Jwt,
    TokenValue,
}

impl SecretKind {
    fn describe(self) -> &'static str {
        match self {
            SecretKind::ClientJwtSecret => "the client JWT secret",
            SecretKind::EncryptionKey => "a keyring secret",
            SecretKind::ServiceKey => "an internal service key",
            SecretKind::PlatformClientSecret => "a platform client secret",
            SecretKind::Jwt => "a client JWT",
            SecretKind::TokenValue => "a token value",
        }
    }

    /// A 2xx body may carry token values (an internal read returns `token_data`); nothing
    /// else may appear anywhere.
    fn allowed_in_success_body(self) -> bool {
        self == SecretKind::TokenValue
    }
}

/// Shorter values are not registered: they would match ordinary text.
pub const MIN_SECRET_LEN: usize = 12;

/// Registered secrets, indexed by their last [`MIN_SECRET_LEN`] bytes so that a text is
/// scanned in one pass whatever the number of secrets.
#[derive(Default)]
struct Registry {
    secrets: Vec<(Vec<u8>, SecretKind)>,
    index: HashMap<Vec<u8>, usize>,
    by_tail: HashMap<[u8; MIN_SECRET_LEN], Vec<usize>>,
}

impl Registry {
    fn add(&mut self, secret: &[u8], kind: SecretKind) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        if let Some(&i) = self.index.get(secret) {
            // The stricter kind wins (a JWT someone also put into token_data stays a JWT).
            if self.secrets[i].1.allowed_in_success_body() {
                self.secrets[i].1 = kind;
            }
            return;
        }
        let i = self.secrets.len();
        self.secrets.push((secret.to_vec(), kind));
        self.index.insert(secret.to_vec(), i);
        let tail: [u8; MIN_SECRET_LEN] = secret[secret.len() - MIN_SECRET_LEN..]
            .try_into()
            .expect("MIN_SECRET_LEN bytes");
        self.by_tail.entry(tail).or_default().push(i);
    }

    /// The kinds of secret that occur in `text`, each once.
    fn find(&self, text: &[u8]) -> Vec<SecretKind> {
        let mut found = Vec::new();
        for end in MIN_SECRET_LEN..=text.len() {
            let tail: &[u8; MIN_SECRET_LEN] = text[end - MIN_SECRET_LEN..end]
                .try_into()
                .expect("MIN_SECRET_LEN bytes");
            let Some(candidates) = self.by_tail.get(tail) else {
                continue;
            };
            for &i in candidates {
                let (secret, kind) = &self.secrets[i];
                let occurs = text[..end].ends_with(secret);
                if occurs && !found.contains(kind) {
                    found.push(*kind);
                }
            }
        }
        found
    }
}

/// Starts with the secrets every service of the suite is configured with; the rest are
/// registered as they are configured or minted.
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    let mut registry = Registry::default();
    for (secret, kind) in [
        (helpers::CLIENT_SECRET, SecretKind::ClientJwtSecret),
        (helpers::ENCRYPTION_KEY, SecretKind::EncryptionKey),
        (helpers::READER_KEY, SecretKind::ServiceKey),
        (helpers::OTHER_SERVICE_KEY, SecretKind::ServiceKey),
        (
            fake_shopify::CLIENT_SECRET,
            SecretKind::PlatformClientSecret,
        ),
    ] {
        registry.add(secret.as_bytes(), kind);
    }
    Mutex::new(registry)
});
static LOG_LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a secret to the sweep, as written and as it reads inside a JSON string.
pub fn register(kind: SecretKind, secret: &str) {
    let mut registry = lock(&REGISTRY);
    registry.add(secret.as_bytes(), kind);
    let escaped = Value::from(secret).to_string();
    let escaped = &escaped[1..escaped.len() - 1];
    if escaped != secret {
        registry.add(escaped.as_bytes(), kind);
    }
}

/// Registers every string in `token_data` (long enough to be told apart from ordinary text).
pub fn register_token_values(token_data: &Value) {
    match token_data {
        Value::String(s) => register(SecretKind::TokenValue, s),
        Value::Array(items) => items.iter().for_each(register_token_values),
        Value::Object(fields) => fields.values().for_each(register_token_values),
        _ => {}
    }
}

/// Registers the token values of a request body: whatever sits under a `token_data` key.
pub fn register_request_body(body: &[u8]) {
    fn walk(value: &Value) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields {
                    if name == "token_data" {
                        register_token_values(field);
                    } else {
                        walk(field);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(walk),
            _ => {}
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        walk(&value);
    }
}

/// Registers the secrets among the settings a service is started with.
pub fn register_setting(name: &str, value: &str) {
    // `id:secret` or `service:key` pairs, comma-separated; the part after the colon is secret.
    let pairs = |kind| {
        for pair in value.split(',') {
            let secret = pair.split_once(':').map_or(pair, |(_, s)| s);
            register(kind, secret.trim());
        }
    };
    match name {
        "CLIENT_JWT_SECRET" => register(SecretKind::ClientJwtSecret, value),
        "TOKEN_ENCRYPTION_KEY" => register(SecretKind::EncryptionKey, value),
        "TOKEN_ENCRYPTION_OLD_KEYS" => pairs(SecretKind::EncryptionKey),
        "INTERNAL_JWT_SECRET" | "INTERNAL_API_KEYS" => pairs(SecretKind::ServiceKey),
        _ if name.ends_with("_CLIENT_SECRET") => register(SecretKind::PlatformClientSecret, value),
        _ => {}
    }
}

/// What in one response gives a secret away: one description per finding, empty if none.
pub fn response_leaks(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let registry = lock(&REGISTRY);
    let mut leaks = Vec::new();
    for (name, value) in headers {
        for kind in registry.find(value.as_bytes()) {
            leaks.push(format!(
                "{} in the `{name}` header of a {status} response",
                kind.describe()
            ));
        }
    }
    for kind in registry.find(body) {
        if !(status.is_success() && kind.allowed_in_success_body()) {
            leaks.push(format!(
                "{} in the body of a {status} response",
                kind.describe()
            ));
        }
    }
    leaks
}

/// What in one log line gives a secret away, naming the line (its level and message, unless
/// the message holds the secret) and the fields that hold the secret: one description per
/// finding, empty if none.
pub fn log_line_leaks(line: &[u8]) -> Vec<String> {
    let registry = lock(&REGISTRY);
    let kinds = registry.find(line);
    if kinds.is_empty() {
        return Vec::new();
    }
    let parsed: Option<Value> = serde_json::from_slice(line).ok();
    let mut fields = Vec::new();
    if let Some(value) = &parsed {
        fields_holding_secrets(&registry, value, "", &mut fields);
    }
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v[name].as_str())
            .filter(|_| !fields.iter().any(|f| f == name))
            .unwrap_or("?")
            .to_owned()
    };
    let line = format!("{} `{}`", field("level"), field("message"));
    kinds
        .into_iter()
        .map(|kind| {
            format!(
                "{} in the log line {line} (fields: {})",
                kind.describe(),
                if fields.is_empty() {
                    "?".to_owned()
                } else {
                    fields.join(", ")
                }
            )
        })
        .collect()
}

fn fields_holding_secrets(registry: &Registry, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !registry.find(s.as_bytes()).is_empty() => out.push(path.to_owned()),
        Value::Object(fields) => {
            for (name, field) in fields {
                let path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                fields_holding_secrets(registry, field, &path, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                fields_holding_secrets(registry, item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `text` as it may be shown in a report: replaced whole if it holds a registered secret.
pub fn redacted(text: &str) -> &str {
    if lock(&REGISTRY).find(text.as_bytes()).is_empty() {
        text
    } else {
        "[text holding a secret]"
    }
}

/// Called by the log capture for every line: remembers leaks for the next check (a panic
/// inside the service's logging would not fail the right test).
pub fn record_log_line(line: &[u8]) {
    let leaks = log_line_leaks(line);
    if !leaks.is_empty() {
        lock(&LOG_LEAKS).extend(leaks);
    }
}

/// Leaks seen in the logs since the last call. The log capture is shared by every test of
/// the binary, so a leak is reported by the first check after it, which is usually (not
/// always) in the test that caused it.
pub fn take_log_leaks() -> Vec<String> {
    std::mem::take(&mut *lock(&LOG_LEAKS))
}

/// Fails the test if anything leaked into the logs since the last check.
pub fn assert_no_log_leaks() {
    let leaks = take_log_leaks();
    assert!(leaks.is_empty(), "secret-leak sweep: {}", leaks.join("; "));
}

/// Checks the logs once more when a test's service handle goes away.
#[derive(Debug, Default)]
pub struct LogLeakCheck;

impl Drop for LogLeakCheck {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        assert_no_log_leaks();
    }
}

#[cfg(test)]
mod detector {
    //! The sweep can fail: planted secrets are found and reported without being shown.

    use axum::response::IntoResponse;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;
    use crate::client::TestClient;

    fn planted(kind: SecretKind, label: &str) -> String {
        let secret = format!("{label}-{}", uuid::Uuid::new_v4().simple());
        register(kind, &secret);
        secret
    }

    fn assert_hidden(reports: &[String], secrets: &[&str]) {
        for report in reports {
            for secret in secrets {
                assert!(!report.contains(secret), "a report shows the secret");
            }
        }
    }

    #[test]
    fn planted_secrets_are_found_in_headers_bodies_and_log_lines() {
        let key = planted(SecretKind::ServiceKey, "planted-key");
        let token = planted(SecretKind::TokenValue, "planted \"token\"");
        let jwt = crate::helpers::client_jwt("planted-shop.myshopify.com");

        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer error=\"{key}\"")).unwrap();
        headers.insert("www-authenticate", value);
        let leaks = response_leaks(StatusCode::UNAUTHORIZED, &headers, b"{}");
        assert_eq!(
            leaks,
            [
                "an internal service key in the `www-authenticate` header of a 401 Unauthorized \
              response"
            ]
        );

        let body = json!({"error": {"message": format!("bad {token} and {jwt}")}}).to_string();
        let leaks = response_leaks(StatusCode::BAD_REQUEST, &HeaderMap::new(), body.as_bytes());
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert!(leaks
            .iter()
            .any(|l| l.starts_with("a token value in the body of a 400")));
        assert!(leaks
            .iter()
            .any(|l| l.starts_with("a client JWT in the body of a 400")));
        // An internal read answers token values with 200; a JWT is never in any answer.
        let leaks = response_leaks(StatusCode::OK, &HeaderMap::new(), body.as_bytes());
        assert_eq!(leaks, ["a client JWT in the body of a 200 OK response"]);

        // A log line holds the token JSON-escaped, inside a nested field.
        let line = json!({
            "level": "WARN",
            "message": "refused",
            "detail": {"why": format!("near {token}")},
        })
        .to_string();
        assert!(
            !line.contains(&token),
            "the line holds the escaped form only"
        );
        let leaks = log_line_leaks(line.as_bytes());
        assert_eq!(
            leaks,
            ["a token value in the log line WARN `refused` (fields: detail.why)"]
        );
        let line = json!({"level": "INFO", "message": format!("presented {key}")}).to_string();
        let leaks = log_line_leaks(line.as_bytes());
        assert_eq!(
            leaks,
            ["an internal service key in the log line INFO `?` (fields: message)"]
        );
        assert_hidden(&leaks, &[&key, &token, &jwt]);

        // What is not a registered secret is not reported: a prefix, a short value.
        let prefix = &key[..key.len() - 1];
        assert!(log_line_leaks(prefix.as_bytes()).is_empty());
        register(SecretKind::TokenValue, "short");
        assert!(log_line_leaks(b"a short line").is_empty());
        assert_eq!(redacted(&format!("/x/{key}")), "[text holding a secret]");
        assert_eq!(redacted("/api/v1/tokens"), "/api/v1/tokens");
    }

    #[tokio::test]
    async fn the_test_client_fails_the_test_that_receives_a_secret() {
        let key = planted(SecretKind::ServiceKey, "planted-echo");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/", listener.local_addr().unwrap());
        // A stand-in server (not the service) that gives the key away in a header.
        let echoed = key.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move { [("x-debug", echoed)].into_response() }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let outcome = tokio::spawn(async move { TestClient::default().get(address).send().await })
            .await
            .expect_err("the sweep fails the request");
        let message = outcome.into_panic();
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            message.contains("an internal service key in the `x-debug` header of a 200 OK"),
            "{message}"
        );
        assert!(!message.contains(&key), "the report shows the secret");
    }
}
