//! `token-service serve [--dev] [--no-migrate]`: run the HTTP service.

use anyhow::Context;

use super::{dev, CliError};
use crate::config::Config;
use crate::startup::{shutdown_signal, Application, BuildOptions};
use crate::telemetry;

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Development mode: no settings needed; SQLite and generated secrets under ./data.
    #[arg(long)]
    pub dev: bool,
    /// Do not apply pending migrations at start-up.
    #[arg(long)]
    pub no_migrate: bool,
}

pub async fn run(opts: Opts) -> Result<(), CliError> {
    let _ = dotenvy::dotenv();
    let config = if opts.dev {
        dev::config()?
    } else {
        Config::from_env()?
    };
    telemetry::init(&config.log_level, config.log_format, std::io::stdout);

    let app = Application::build(
        &config,
        BuildOptions {
            migrate: !opts.no_migrate,
        },
    )
    .await
    .context("starting token-service")?;
    tracing::info!(
        port = app.port(),
        env = %config.app_env,
        key_id = config.keyring.primary_id.as_str(),
        "token-service listening"
    );
    if opts.dev {
        dev::print_examples(&config, app.port());
    }
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}
