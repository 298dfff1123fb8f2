//! Building and running the service: database, keyring, writers, HTTP listener, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::events::EventTasks;
use crate::http::{self, auth::Authenticator, AppState};
use crate::store::{Db, PoolSettings};
use crate::vault::{Committer, Vault};

/// A built service, listening but not yet serving.
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    committer: Committer,
    events: EventTasks,
    db: Db,
}

/// Start-up choices that are not configuration.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Apply pending migrations before serving (`serve --no-migrate` turns this off).
    pub migrate: bool,
}

impl Application {
    /// Connects, migrates, loads the keyring and binds the port (port 0 picks a free one).
    pub async fn build(config: &Config, options: BuildOptions) -> anyhow::Result<Self> {
        let keyring = Arc::new(config.keyring.build().context("loading the keyring")?);
        let db = Db::connect(
            &config.database_url,
            PoolSettings {
                max_connections: config.db_max_connections,
            },
        )
        .await?;
        if options.migrate {
            db.migrate().await?;
        }
        let (vault, committer) = Vault::start(db.clone(), keyring, config.db_writers);
        let events = EventTasks::start(&db, &vault, &config.events).await?;
        let auth = Arc::new(Authenticator::new(
            &config.client_jwt,
            &config.internal_keys,
            config.allowed_readers.clone(),
        ));
        let router = http::router(AppState { vault, auth }, config.request_timeout);

        let address = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            router,
            committer,
            events,
            db,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, stops consuming
    /// events, answers every queued database job, publishes the events they wrote (for a
    /// bounded time) and closes the pool.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        self.events.stop_listener().await;
        self.committer.finish().await;
        self.events.stop_relay().await;
        self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
