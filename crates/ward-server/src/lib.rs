//! Ward's control plane: `ward server`. It is the certificate authority of
//! one trust domain, keeps the workload registrations, signs X.509- and
//! JWT-SVIDs, and records every admin action and issuance in the audit
//! chain. All state is in the store, so replicas sharing one PostgreSQL are
//! interchangeable; each replica is unsealed on its own.

mod api;
pub mod auth;
pub mod authority;
pub mod config;
pub mod dev;
pub mod error;
pub mod init;
mod issuance;
pub mod limits;
mod long_poll;
pub mod oauth;
pub mod peer;
mod seal_state;
mod serve;
pub mod state;
pub mod tls;
pub mod vault;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ward_store::Store;
use ward_store::seal::MasterKey;

pub use config::ServerConfig;
pub use state::Server;

/// How often a server checks whether the CAs changed in the store.
const AUTHORITY_REFRESH: Duration = Duration::from_secs(5);

/// A server that is bound and ready to serve.
pub struct ReadyServer {
    /// The address it listens on (with the real port when 0 was asked).
    pub addr: SocketAddr,
    /// The TLS CA clients should trust.
    pub cacert: PathBuf,
    /// The shared state.
    pub state: Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: config::ApiLimits,
}

/// Opens the store, loads the state (sealed), prepares TLS and binds.
pub async fn prepare(config: ServerConfig) -> Result<ReadyServer, String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let store = Store::connect(&config.storage)
        .await
        .map_err(|e| e.to_string())?;
    if !store.is_initialized().await.map_err(|e| e.to_string())? {
        return Err(format!(
            "the store {} is not initialized: run `ward server init --config FILE` first (or use --dev)",
            ward_store::redact_url(&config.storage)
        ));
    }
    prepare_with_store(config, store).await
}

/// As [`prepare`], with a store already open and initialized.
pub async fn prepare_with_store(config: ServerConfig, store: Store) -> Result<ReadyServer, String> {
    let trust = peer::ClientTrust::new(
        config.trust_domain.clone(),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    );
    let tls = tls::server_tls(
        &config.data_dir,
        config.listen,
        &config.tls_names,
        trust.verifier(),
    )?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let cacert = tls::ca_cert_path(&config.data_dir);
    let api = config.api.clone();
    let state = Server::open(config, store, trust).await?;
    Ok(ReadyServer {
        addr,
        cacert,
        state,
        listener,
        tls,
        api,
    })
}

impl ReadyServer {
    /// The URL clients use (`https://127.0.0.1:PORT` for a wildcard bind).
    pub fn url(&self) -> String {
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_owned(),
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("https://{host}:{}", self.addr.port())
    }

    /// Unseals with a master key (dev mode).
    pub async fn unseal(&self, master: MasterKey) -> Result<(), String> {
        self.state
            .unseal_with(master)
            .await
            .map_err(|e| e.to_string())
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let issuer = self
            .state
            .config
            .oauth
            .issuer
            .clone()
            .unwrap_or_else(|| self.url());
        let _ = self.state.oauth.issuer.set(issuer);
        if let Err(e) = self
            .state
            .oauth
            .watch_trusted(&self.state.config.oauth.trusted_issuers)
        {
            tracing::error!(error = %e, "a trusted issuer cannot be used; its tokens are refused");
        }
        let state = self.state.clone();
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(AUTHORITY_REFRESH);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                // About once a minute: telemetry past its retention goes.
                if ticks % 12 == 1 {
                    let before =
                        ward_store::now_secs() - state.config.telemetry.retention.as_secs() as i64;
                    if let Err(e) = state.store.prune_edges(before).await {
                        tracing::warn!(error = %e, "pruning old telemetry failed");
                    }
                    // Expired workload tokens (they are refused anyway).
                    if let Err(e) = state.store.prune_tokens(ward_store::now_secs()).await {
                        tracing::warn!(error = %e, "pruning expired tokens failed");
                    }
                    // Revocations and spent assertions of expired tokens.
                    if let Err(e) = oauth::prune(&state).await {
                        tracing::warn!(error = %e, "pruning expired revocations failed");
                    }
                }
                if let Err(e) = state.refresh_authority_if_stale().await {
                    tracing::warn!(error = %e, "refreshing the CAs from the store failed");
                }
                state.audit_barrier_rejections().await;
                state.limits.tidy();
            }
        });
        let app = api::router(self.state.clone());
        let checkpoints = self.state.config.audit.checkpoint_file.clone().map(|path| {
            tokio::spawn(api::checkpoint_task(
                self.state.clone(),
                path,
                self.state.config.audit.checkpoint_interval,
            ))
        });
        let expiry = tokio::spawn(vault::expiry_task(self.state.clone()));
        let trust = self.state.client_trust().clone();
        serve::serve_tls(self.listener, self.tls, app, trust, &self.api, shutdown).await;
        refresher.abort();
        expiry.abort();
        if let Some(t) = checkpoints {
            t.abort();
        }
        self.state.store.close().await;
    }
}
