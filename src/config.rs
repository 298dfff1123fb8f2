//! Configuration, read once from the environment (and a `.env` file) at start-up.
//!
//! Every variable is documented where it is read. A missing or invalid one is a
//! [`ConfigError`] naming the variable and its rule; the binary prints it and exits 2.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{KeyId, Keyring, KeyringError};
use crate::events::EventSettings;
use crate::http::server::ServerLimits;
use crate::rate_limit::RateLimitSettings;
use crate::refresh::settings::RefreshSettings;

/// A setting that is missing or breaks its rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {var}: {rule}")]
pub struct ConfigError {
    pub var: Cow<'static, str>,
    pub rule: String,
}

impl ConfigError {
    pub fn new(var: impl Into<Cow<'static, str>>, rule: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            rule: rule.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// How client JWTs (issued to shops by the BFF) are checked.
#[derive(Debug)]
pub struct ClientJwtSettings {
    pub secret: SecretString,
    pub require_exp: bool,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

/// One internal caller and its key.
#[derive(Debug)]
pub struct ServiceKey {
    pub service: String,
    pub key: SecretString,
}

/// The keyring as configured: the primary key and older keys kept for reading.
#[derive(Debug)]
pub struct KeyringSettings {
    pub primary_id: KeyId,
    pub primary_secret: SecretString,
    pub old: Vec<(KeyId, SecretString)>,
}

impl KeyringSettings {
    /// Derives every key (slow: the legacy Fernet keys take 100,000 PBKDF2 rounds each).
    pub fn build(&self) -> Result<Keyring, KeyringError> {
        Keyring::new((self.primary_id.clone(), &self.primary_secret), &self.old)
    }

    /// Reads the keyring's variables alone (all that `rewrap` and `import-legacy` need besides
    /// `DATABASE_URL`) and applies the keyring's rules.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        // TOKEN_ENCRYPTION_KEY: primary keyring secret, at least 32 characters (required).
        // TOKEN_ENCRYPTION_KEY_ID: its id; default key_v1.
        // TOKEN_ENCRYPTION_OLD_KEYS: `id:secret,id:secret` kept for decryption only.
        let keyring = KeyringSettings {
            primary_id: KeyId::parse(
                &var("TOKEN_ENCRYPTION_KEY_ID").unwrap_or_else(|| "key_v1".into()),
            )
            .map_err(|e| ConfigError::new("TOKEN_ENCRYPTION_KEY_ID", e.to_string()))?,
            primary_secret: SecretString::from(var("TOKEN_ENCRYPTION_KEY").ok_or_else(|| {
                ConfigError::new("TOKEN_ENCRYPTION_KEY", "is required and must not be empty")
            })?),
            old: parse_old_keys(var("TOKEN_ENCRYPTION_OLD_KEYS").as_deref())?,
        };
        keyring.check().map_err(|e| match &e {
            KeyringError::ShortSecret(id) => ConfigError::new(
                if *id == keyring.primary_id.as_str() {
                    "TOKEN_ENCRYPTION_KEY"
                } else {
                    "TOKEN_ENCRYPTION_OLD_KEYS"
                },
                format!("{e} (`token-service keygen` prints a strong secret)"),
            ),
            KeyringError::DuplicateId(_) => ConfigError::new(
                "TOKEN_ENCRYPTION_OLD_KEYS",
                format!(
                    "{e}: TOKEN_ENCRYPTION_KEY_ID and each id in TOKEN_ENCRYPTION_OLD_KEYS \
                     must differ"
                ),
            ),
            KeyringError::BadId(_) => ConfigError::new("TOKEN_ENCRYPTION_OLD_KEYS", e.to_string()),
        })?;
        Ok(keyring)
    }

    /// Applies the keyring's rules without deriving anything.
    pub fn check(&self) -> Result<(), KeyringError> {
        Keyring::check((&self.primary_id, &self.primary_secret), &self.old)
    }
}

/// The whole configuration of the service.
#[derive(Debug)]
pub struct Config {
    pub app_env: String,
    pub debug: bool,
    pub host: String,
    pub port: u16,
    pub database_url: String,
    pub client_jwt: ClientJwtSettings,
    pub internal_keys: Vec<ServiceKey>,
    pub keyring: KeyringSettings,
    pub allowed_readers: HashSet<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    /// NATS_URL and the other event bus settings (`crate::events`).
    pub events: EventSettings,
    pub request_timeout: Duration,
    pub db_max_connections: u32,
    pub db_writers: usize,
    pub db_max_batch: usize,
    pub refresh: Arc<RefreshSettings>,
    pub server_limits: ServerLimits,
    pub rate_limits: RateLimitSettings,
    /// A separate port for `/metrics` (then not served on the API port).
    pub metrics_port: Option<u16>,
}

/// The embedded default store.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/token-service.db";
const DEFAULT_READERS: &str =
    "platform-connector,webhook-service,merchant-service,catalog-service,analytics-service";

impl Config {
    /// Reads `.env` (without overriding the real environment), then the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any source of variables (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| {
            var(name).ok_or_else(|| ConfigError::new(name, "is required and must not be empty"))
        };

        // APP_ENV: deployment name (development, staging, production…); default development.
        let app_env = var("APP_ENV")
            .unwrap_or_else(|| "development".into())
            .to_ascii_lowercase();
        // DEBUG: more verbose logs when true; default false.
        let debug = parse_bool("DEBUG", var("DEBUG"), false)?;
        // API_HOST: address to listen on; default 0.0.0.0.
        let host = var("API_HOST").unwrap_or_else(|| "0.0.0.0".into());
        // TOKEN_API_EXTERNAL_PORT: TCP port; default 8007 (0 picks a free port).
        let port = parse_num(
            "TOKEN_API_EXTERNAL_PORT",
            var("TOKEN_API_EXTERNAL_PORT"),
            8007,
        )?;
        // DATABASE_URL: postgres://… or sqlite://…; default the embedded SQLite file.
        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }

        // CLIENT_JWT_SECRET: HS256 secret of the shops' JWTs (required).
        // CLIENT_JWT_REQUIRE_EXP: refuse JWTs without `exp`; default true.
        // CLIENT_JWT_AUDIENCE / CLIENT_JWT_ISSUER: when set, `aud` / `iss` must match.
        let client_jwt = ClientJwtSettings {
            secret: SecretString::from(required("CLIENT_JWT_SECRET")?),
            require_exp: parse_bool(
                "CLIENT_JWT_REQUIRE_EXP",
                var("CLIENT_JWT_REQUIRE_EXP"),
                true,
            )?,
            audience: var("CLIENT_JWT_AUDIENCE"),
            issuer: var("CLIENT_JWT_ISSUER"),
        };

        // INTERNAL_JWT_SECRET (alias INTERNAL_API_KEYS): `service:key,service:key`; a key
        // without `service:` belongs to service `unknown` (required).
        let (keys_var, keys) = match var("INTERNAL_JWT_SECRET") {
            Some(v) => ("INTERNAL_JWT_SECRET", v),
            None => match var("INTERNAL_API_KEYS") {
                Some(v) => ("INTERNAL_API_KEYS", v),
                None => return Err(ConfigError::new(
                    "INTERNAL_JWT_SECRET",
                    "is required (or its alias INTERNAL_API_KEYS): a comma-separated list of service:key",
                )),
            },
        };
        let internal_keys = parse_service_keys(keys_var, &keys)?;

        let keyring = KeyringSettings::from_lookup(&get)?;

        // ALLOWED_READER_SERVICES: services that may read tokens (comma list).
        let allowed_readers = var("ALLOWED_READER_SERVICES")
            .unwrap_or_else(|| DEFAULT_READERS.into())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();

        // LOGGING_LEVEL: error, warn, info, debug or trace; default info.
        let log_level = var("LOGGING_LEVEL")
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if !["error", "warn", "warning", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(ConfigError::new(
                "LOGGING_LEVEL",
                "must be one of error, warn, info, debug, trace",
            ));
        }
        let log_level = if log_level == "warning" {
            "warn".into()
        } else {
            log_level
        };
        // LOG_FORMAT: json (default) or pretty.
        let log_format = match var("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase) {
            None => LogFormat::Json,
            Some(f) if f == "json" => LogFormat::Json,
            Some(f) if f == "pretty" => LogFormat::Pretty,
            Some(_) => return Err(ConfigError::new("LOG_FORMAT", "must be json or pretty")),
        };
        // NATS_URL, NATS_STREAM, NATS_SUBJECT_PREFIX, OUTBOX_RETENTION_HOURS: see EventSettings.
        let events = EventSettings::from_vars(var)?;
        // REQUEST_TIMEOUT_SECS: longest a request may take before a 503; default 30.
        let request_timeout = Duration::from_secs(parse_num::<u64>(
            "REQUEST_TIMEOUT_SECS",
            var("REQUEST_TIMEOUT_SECS"),
            30,
        )?);
        if request_timeout.is_zero() {
            return Err(ConfigError::new(
                "REQUEST_TIMEOUT_SECS",
                "must be at least 1",
            ));
        }
        // DATABASE_MAX_CONNECTIONS: pool size; default 10.
        let db_max_connections = parse_num(
            "DATABASE_MAX_CONNECTIONS",
            var("DATABASE_MAX_CONNECTIONS"),
            10,
        )?;
        // DATABASE_WRITERS: concurrent group-commit writers on PostgreSQL (SQLite has one); default 4.
        let db_writers = parse_num("DATABASE_WRITERS", var("DATABASE_WRITERS"), 4)?;
        // DATABASE_MAX_BATCH: most operations one group commit takes (1..=4096); default 256.
        let db_max_batch = parse_num("DATABASE_MAX_BATCH", var("DATABASE_MAX_BATCH"), 256)?;
        if !(1..=4096).contains(&db_max_batch) {
            return Err(ConfigError::new(
                "DATABASE_MAX_BATCH",
                "must be between 1 and 4096",
            ));
        }
        if db_max_connections < 2 || db_writers == 0 || db_writers as u32 >= db_max_connections {
            return Err(ConfigError::new(
                "DATABASE_WRITERS",
                "must be at least 1 and less than DATABASE_MAX_CONNECTIONS (at least 2)",
            ));
        }

        // HTTP_HEADER_READ_TIMEOUT_SECS: time a client has to send a request head; default 10.
        // HTTP_MAX_HEADER_BYTES: largest request head (at least 8192); default 32768.
        // HTTP_MAX_CONNECTIONS: connections served at once; default 1024.
        // SHUTDOWN_GRACE_SECS: longest a graceful stop waits for open requests; default 30.
        let server_limits = ServerLimits {
            header_read_timeout: Duration::from_secs(parse_num(
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                var("HTTP_HEADER_READ_TIMEOUT_SECS"),
                10,
            )?),
            max_header_bytes: parse_num(
                "HTTP_MAX_HEADER_BYTES",
                var("HTTP_MAX_HEADER_BYTES"),
                32768,
            )?,
            max_connections: parse_num("HTTP_MAX_CONNECTIONS", var("HTTP_MAX_CONNECTIONS"), 1024)?,
            shutdown_grace: Duration::from_secs(parse_num(
                "SHUTDOWN_GRACE_SECS",
                var("SHUTDOWN_GRACE_SECS"),
                30,
            )?),
        };
        if server_limits.header_read_timeout.is_zero() || server_limits.max_connections == 0 {
            return Err(ConfigError::new(
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                "HTTP_HEADER_READ_TIMEOUT_SECS and HTTP_MAX_CONNECTIONS must be at least 1",
            ));
        }
        if server_limits.max_header_bytes < 8192 {
            return Err(ConfigError::new(
                "HTTP_MAX_HEADER_BYTES",
                "must be at least 8192",
            ));
        }

        // Token refresh: see `RefreshSettings::from_lookup` for its variables.
        let refresh = Arc::new(RefreshSettings::from_lookup(&var)?);
        // RATE_LIMIT_* and TRUSTED_PROXIES: see `RateLimitSettings::from_lookup`.
        let rate_limits = RateLimitSettings::from_lookup(&var)?;
        // METRICS_PORT: serve `/metrics` on this port of API_HOST instead of the API port,
        // so that it need not be exposed with the API; default unset (0 picks a free port).
        let metrics_port = match var("METRICS_PORT") {
            None => None,
            Some(v) => Some(parse_num::<u16>("METRICS_PORT", Some(v), 0)?),
        };
        if metrics_port.is_some_and(|p| p != 0 && p == port) {
            return Err(ConfigError::new(
                "METRICS_PORT",
                "must differ from TOKEN_API_EXTERNAL_PORT",
            ));
        }

        Ok(Self {
            app_env,
            debug,
            host,
            port,
            database_url,
            client_jwt,
            internal_keys,
            keyring,
            allowed_readers,
            log_level,
            log_format,
            events,
            request_timeout,
            db_max_connections,
            db_writers,
            db_max_batch,
            refresh,
            server_limits,
            rate_limits,
            metrics_port,
        })
    }

    /// How the group-commit writers run.
    pub fn commit_settings(&self) -> crate::vault::CommitSettings {
        crate::vault::CommitSettings {
            writers: self.db_writers,
            max_batch: self.db_max_batch,
        }
    }

    pub fn is_production(&self) -> bool {
        self.app_env == "production"
    }
}

fn parse_bool(
    name: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
        Some(_) => Err(ConfigError::new(name, "must be true or false")),
    }
}

fn parse_num<T: std::str::FromStr>(
    name: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, "must be a non-negative whole number in range")),
    }
}

fn parse_service_keys(name: &'static str, value: &str) -> Result<Vec<ServiceKey>, ConfigError> {
    let mut keys = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (service, key) = match entry.split_once(':') {
            Some((service, key)) => (service.trim(), key.trim()),
            None => ("unknown", entry),
        };
        if service.is_empty() || key.is_empty() {
            return Err(ConfigError::new(
                name,
                "each entry must be service:key with a non-empty service and key",
            ));
        }
        keys.push(ServiceKey {
            service: service.to_owned(),
            key: SecretString::from(key.to_owned()),
        });
    }
    if keys.is_empty() {
        return Err(ConfigError::new(name, "must hold at least one service:key"));
    }
    let mut seen = HashSet::new();
    if keys
        .iter()
        .any(|k| !seen.insert(k.key.expose_secret().to_owned()))
    {
        return Err(ConfigError::new(
            name,
            "the same key is given to more than one entry",
        ));
    }
    Ok(keys)
}

fn parse_old_keys(value: Option<&str>) -> Result<Vec<(KeyId, SecretString)>, ConfigError> {
    const VAR: &str = "TOKEN_ENCRYPTION_OLD_KEYS";
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (id, secret) = entry
                .split_once(':')
                .ok_or_else(|| ConfigError::new(VAR, "each entry must be id:secret"))?;
            let id = KeyId::parse(id.trim()).map_err(|e| ConfigError::new(VAR, e.to_string()))?;
            Ok((id, SecretString::from(secret.trim().to_owned())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            (
                "CLIENT_JWT_SECRET",
                "client-secret-0123456789abcdef0123456789".to_owned(),
            ),
            (
                "INTERNAL_JWT_SECRET",
                "platform-connector:pc-key-123,bare-key-456".to_owned(),
            ),
            ("TOKEN_ENCRYPTION_KEY", "k".repeat(32)),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = load(&base()).unwrap();
        assert_eq!(config.port, 8007);
        assert_eq!(config.host, "0.0.0.0");
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.keyring.primary_id.as_str(), "key_v1");
        assert!(config.client_jwt.require_exp);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.allowed_readers.contains("platform-connector"));
        assert_eq!(config.allowed_readers.len(), 5);
        let services: Vec<_> = config
            .internal_keys
            .iter()
            .map(|k| k.service.as_str())
            .collect();
        assert_eq!(services, ["platform-connector", "unknown"]);
    }

    #[test]
    fn each_required_variable_is_named_when_missing() {
        for name in [
            "CLIENT_JWT_SECRET",
            "INTERNAL_JWT_SECRET",
            "TOKEN_ENCRYPTION_KEY",
        ] {
            let mut vars = base();
            vars.remove(name);
            assert_eq!(load(&vars).unwrap_err().var, name);
        }
    }

    #[test]
    fn internal_api_keys_is_an_alias() {
        let mut vars = base();
        let keys = vars.remove("INTERNAL_JWT_SECRET").unwrap();
        vars.insert("INTERNAL_API_KEYS", keys);
        assert_eq!(load(&vars).unwrap().internal_keys.len(), 2);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases = [
            ("TOKEN_ENCRYPTION_KEY", "short".to_owned()),
            ("TOKEN_API_EXTERNAL_PORT", "99999".to_owned()),
            ("LOG_FORMAT", "xml".to_owned()),
            ("LOGGING_LEVEL", "loud".to_owned()),
            ("DATABASE_URL", "mysql://x".to_owned()),
            ("CLIENT_JWT_REQUIRE_EXP", "maybe".to_owned()),
            ("TOKEN_ENCRYPTION_KEY_ID", "bad id".to_owned()),
            ("TOKEN_ENCRYPTION_OLD_KEYS", "nocolon".to_owned()),
            ("INTERNAL_JWT_SECRET", "svc:".to_owned()),
            ("METRICS_PORT", "8007".to_owned()),
            ("METRICS_PORT", "http".to_owned()),
            ("RATE_LIMIT_SHOP_BURST", "none".to_owned()),
        ];
        for (name, value) in cases {
            let mut vars = base();
            vars.insert(name, value);
            assert_eq!(load(&vars).unwrap_err().var, name, "{name}");
        }
    }

    #[test]
    fn keyring_problems_are_refused() {
        let mut vars = base();
        vars.insert(
            "TOKEN_ENCRYPTION_OLD_KEYS",
            format!("key_v1:{}", "o".repeat(40)),
        );
        let err = load(&vars).unwrap_err();
        assert_eq!(err.var, "TOKEN_ENCRYPTION_OLD_KEYS");
        assert!(err.rule.contains("more than once"));
        vars.insert("TOKEN_ENCRYPTION_OLD_KEYS", "old:short".into());
        assert!(load(&vars).unwrap_err().rule.contains("shorter than 32"));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let shown = format!("{:?}", load(&base()).unwrap());
        for secret in ["client-secret-0123", "pc-key-123", "kkkkkkkk"] {
            assert!(!shown.contains(secret), "{secret}");
        }
    }
}
