//! What the maintenance commands (`rewrap`, `import-legacy`) read from the environment:
//! the database, the keyring and logging. They need none of the HTTP settings, so they can
//! run from an operator's shell with only these variables set.

use std::io::IsTerminal;

use anyhow::Context;

use super::CliError;
use crate::config::{ConfigError, KeyringSettings, LogFormat, DEFAULT_DATABASE_URL};
use crate::crypto::Keyring;
use crate::store::{Db, PoolSettings};
use crate::telemetry;

/// The database and keyring a maintenance command works on.
pub struct Maintenance {
    pub db: Db,
    pub keyring: Keyring,
}

/// Reads `.env` and the environment, starts logging to stderr, derives the keyring (once)
/// and connects to `DATABASE_URL`.
pub async fn load() -> Result<Maintenance, CliError> {
    let _ = dotenvy::dotenv();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    // LOGGING_LEVEL and LOG_FORMAT as for `serve`; the format defaults to pretty on a terminal.
    let level = var("LOGGING_LEVEL")
        .unwrap_or_else(|| "info".into())
        .to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(ConfigError {
            var: "LOGGING_LEVEL".into(),
            rule: "must be one of error, warn, info, debug, trace".into(),
        }
        .into());
    }
    let format = match var("LOG_FORMAT").map(|f| f.to_ascii_lowercase()).as_deref() {
        Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        None if std::io::stderr().is_terminal() => LogFormat::Pretty,
        None => LogFormat::Json,
        Some(_) => {
            return Err(ConfigError {
                var: "LOG_FORMAT".into(),
                rule: "must be json or pretty".into(),
            }
            .into())
        }
    };
    telemetry::init(&level, format, std::io::stderr);

    let settings = KeyringSettings::from_lookup(var)?;
    let keyring = settings.build().context("loading the keyring")?;
    let url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    let db = Db::connect(&url, PoolSettings { max_connections: 2 }).await?;
    Ok(Maintenance { db, keyring })
}
