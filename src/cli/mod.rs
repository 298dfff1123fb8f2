//! The command line: one module per subcommand, each with its options and `run`.

pub mod dev;
pub mod import_legacy;
pub mod keygen;
mod maintenance;
pub mod migrate;
mod progress;
pub mod rewrap;
pub mod serve;
pub mod shopify;

use clap::{Parser, Subcommand};

/// token-service: keeps merchants' platform credentials encrypted, audited and alive.
#[derive(Debug, Parser)]
#[command(name = "token-service", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(serve::Opts),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a new random secret for TOKEN_ENCRYPTION_KEY (or any other secret).
    Keygen,
    /// Shopify-specific maintenance.
    #[command(subcommand)]
    Shopify(shopify::Command),
    /// Re-encrypt every row not in the current format under the primary key.
    Rewrap(rewrap::Opts),
    /// Copy tokens and access logs from the original service's PostgreSQL database.
    ImportLegacy(import_legacy::Opts),
}

/// How a command failed, which decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad or missing configuration: exit code 2.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Anything else: exit code 1.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}
