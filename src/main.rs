//! Command dispatch only; each command lives in `token_service::cli`.

use std::process::ExitCode;

use clap::Parser;
use token_service::cli::{self, Cli, CliError, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(opts) => cli::serve::run(opts).await,
        Command::Migrate => cli::migrate::run().await,
        Command::Shopify(command) => cli::shopify::run(command).await,
        Command::Keygen => {
            cli::keygen::run();
            Ok(())
        }
        Command::Rewrap(opts) => cli::rewrap::run(opts).await,
        Command::ImportLegacy(opts) => cli::import_legacy::run(opts).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Config(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
