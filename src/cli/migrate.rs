//! `token-service migrate`: apply pending migrations to `DATABASE_URL` and exit.

use crate::config::DEFAULT_DATABASE_URL;
use crate::store::{Db, PoolSettings};

use super::CliError;

pub async fn run() -> Result<(), CliError> {
    let _ = dotenvy::dotenv();
    // Only the database is needed here, so only DATABASE_URL is read.
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    let db = Db::connect(&url, PoolSettings { max_connections: 2 }).await?;
    db.migrate().await?;
    db.close().await;
    println!("migrations applied");
    Ok(())
}
