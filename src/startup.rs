//! Building and running the service: database, keyring, writers, HTTP listener, shutdown.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::events::EventTasks;
use crate::http::server::ServerLimits;
use crate::http::{self, auth::Authenticator, AppState, RouterSettings};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::refresh::{spawn_background_refresh, Refresher};
use crate::store::{Db, PoolSettings};
use crate::vault::{Committer, Vault};

/// A built service, listening but not yet serving.
pub struct Application {
    listener: TcpListener,
    limits: ServerLimits,
    port: u16,
    router: Router,
    /// `/metrics` on a port of its own (`METRICS_PORT`).
    metrics: Option<(TcpListener, Router)>,
    committer: Committer,
    events: EventTasks,
    db: Db,
    stop_background: watch::Sender<bool>,
    background: Option<JoinHandle<()>>,
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
        let metrics = Metrics::new();
        let (vault, committer) = Vault::start(
            db.clone(),
            keyring,
            config.commit_settings(),
            metrics.clone(),
        );
        let events = EventTasks::start(&db, &vault, &config.events).await?;
        let auth = Arc::new(Authenticator::new(
            &config.client_jwt,
            &config.internal_keys,
            config.allowed_readers.clone(),
        ));
        let refresher = Refresher::new(vault.clone(), config.refresh.clone());
        let (stop_background, stopped) = watch::channel(false);
        let background = refresher
            .is_enabled()
            .then(|| spawn_background_refresh(refresher.clone(), stopped));
        let state = AppState {
            vault,
            auth,
            refresher,
            limits: Arc::new(RateLimits::new(&config.rate_limits, &metrics)),
        };
        let settings = RouterSettings {
            request_timeout: config.request_timeout,
            serve_metrics: config.metrics_port.is_none(),
        };
        let metrics = match config.metrics_port {
            Some(port) => Some((
                bind(&config.host, port).await?,
                http::metrics_only(state.clone()),
            )),
            None => None,
        };
        let router = http::router(state, settings);

        let listener = bind(&config.host, config.port).await?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            limits: config.server_limits,
            port,
            router,
            metrics,
            committer,
            events,
            db,
            stop_background,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on when it has its own (`METRICS_PORT`).
    pub fn metrics_port(&self) -> Option<u16> {
        let (listener, _) = self.metrics.as_ref()?;
        listener.local_addr().ok().map(|a| a.port())
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, stops consuming
    /// events, answers every queued database job, publishes the events they wrote (for a
    /// bounded time) and closes the pool.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(http::server::serve(
                listener,
                router,
                self.limits,
                until_stopped(stopped.clone()),
            ))
        });
        http::server::serve(
            self.listener,
            self.router,
            self.limits,
            until_stopped(stopped),
        )
        .await;
        if let Some(metrics) = metrics {
            metrics.await.context("serving metrics")?;
        }
        let _ = self.stop_background.send(true);
        if let Some(background) = self.background.take() {
            let _ = background.await;
        }
        self.events.stop_listener().await;
        self.committer.finish().await;
        self.events.stop_relay().await;
        self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    let address = format!("{host}:{port}");
    TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))
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
