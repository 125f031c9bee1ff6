//! `ward gateway`: the edge. North-south traffic enters through one
//! hardened door: HTTPS (HTTP/1.1 and HTTP/2) for clients, the data
//! plane's strict HTTP and path canonicalisation, then per route:
//! authentication (JWTs from trusted issuers, API keys, client
//! certificates, or public when marked so), a Cedar policy on the
//! credential's claims, a GCRA rate limit (local or shared in Redis), and
//! the request goes on to the upstream over mutual TLS with the gateway's
//! SVID. Every decision is counted on `/metrics`.

pub mod auth;
pub mod config;
pub mod exchange;
pub mod limit;
pub mod metrics;
pub mod serve;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use ward_dataplane::connect::MtlsConnector;
use ward_dataplane::framing::FramingScan;
use ward_dataplane::listener::{
    Activity, ConnectionLimits, accept_loop, drive, http_builder, refusal_label,
};
use ward_identity::SpiffeId;
use ward_policy::edge::RoutePolicy;

use crate::auth::{ApiKeys, Issuer};
use crate::config::GatewayConfig;
use crate::limit::{Global, RouteLimit};
use crate::metrics::Metrics;
use crate::serve::{ClientConn, Gateway, Route};
use crate::upstream::Upstream;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("{0}")]
    Setup(String),
    #[error("cannot write {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The addresses bound, written to the ready file.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { name, addr, source })
}

fn read_certs(p: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(p)
        .map_err(|e| GatewayError::Tls(format!("{}: {e}", p.display())))?
        .collect();
    let certs = certs.map_err(|e| GatewayError::Tls(format!("{}: {e}", p.display())))?;
    if certs.is_empty() {
        return Err(GatewayError::Tls(format!(
            "{}: no certificate in it",
            p.display()
        )));
    }
    Ok(certs)
}

/// The gateway's certificate, read from its files and read again when
/// they change (checked at most every few seconds, on handshakes): a
/// renewed certificate is served without a restart; a bad or half-written
/// pair keeps the last good one.
#[derive(Debug)]
struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<(Option<Stamps>, Arc<rustls::sign::CertifiedKey>)>,
    checked: std::sync::Mutex<std::time::Instant>,
}

/// The certificate's and the key's modification times.
type Stamps = (std::time::SystemTime, std::time::SystemTime);

/// How often the certificate files are looked at.
const CERT_CHECK: Duration = Duration::from_secs(5);

impl FileCert {
    fn stamps(&self) -> Option<Stamps> {
        let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }

    fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, GatewayError> {
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| GatewayError::Tls(format!("{}: {e}", key.display())))?;
        let ck = rustls::sign::CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| GatewayError::Tls(format!("{}: {e}", cert.display())))?;
        Ok(Arc::new(ck))
    }

    fn new(
        cert: &std::path::Path,
        key: &std::path::Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, GatewayError> {
        let ck = Self::load(cert, key, &provider)?;
        let me = Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: std::sync::RwLock::new((None, ck)),
            checked: std::sync::Mutex::new(std::time::Instant::now()),
        };
        let stamps = me.stamps();
        me.current.write().unwrap_or_else(|p| p.into_inner()).0 = stamps;
        Ok(me)
    }

    fn refresh(&self) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < CERT_CHECK {
                return;
            }
            *checked = std::time::Instant::now();
        }
        let stamps = self.stamps();
        if stamps.is_none() || stamps == self.current.read().unwrap_or_else(|p| p.into_inner()).0 {
            return;
        }
        match Self::load(&self.cert, &self.key, &self.provider) {
            Ok(ck) => {
                tracing::info!(cert = %self.cert.display(), "serving the renewed certificate");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (stamps, ck);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the changed certificate files; keeping the last good certificate")
            }
        }
    }
}

impl rustls::server::ResolvesServerCert for FileCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.refresh();
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone(),
        )
    }
}

/// The client-facing TLS configuration: the configured certificate
/// (re-read when its files change), and client certificates (optional per
/// connection, required by `mtls` routes) when `client_ca` is set.
fn server_tls(
    config: &config::TlsConfig,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let resolver = FileCert::new(&config.cert, &config.key, provider.clone())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| GatewayError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| GatewayError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The identity a client certificate proves: its SPIFFE ID, or the
/// certificate's SHA-256.
fn certificate_identity(cert: &CertificateDer<'_>) -> Arc<str> {
    if let Some(id) = ward_identity::spiffe_id_of_cert(cert) {
        return id.to_string().into();
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}").into()
}

/// Runs the gateway until `shutdown` resolves, then drains.
pub async fn run(
    config: GatewayConfig,
    ready_file: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let metrics = Arc::new(Metrics::new());
    let tls = server_tls(&config.tls, &provider)?;
    let listener = bind("listen", config.listen).await?;
    let admin = match &config.admin {
        Some(a) => Some(bind("admin", a.listen).await?),
        None => None,
    };

    // The gateway's own SVID, for upstream mutual TLS.
    let (id_tx, identity) = watch::channel(None);
    let generation = Arc::new(AtomicU64::new(0));
    if let Some(id) = &config.identity {
        ward_proxy::identity::spawn_watch(id, provider.clone(), id_tx)
            .map_err(GatewayError::Setup)?;
        let (mut identity, generation, metrics) =
            (identity.clone(), generation.clone(), metrics.clone());
        tokio::spawn(async move {
            loop {
                if let Some(i) = identity.borrow_and_update().clone() {
                    metrics.svid_expiry.set(i.not_after);
                    generation.fetch_add(1, Ordering::SeqCst);
                }
                if identity.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    let mut issuers = Vec::new();
    for i in &config.issuers {
        let issuer = Arc::new(Issuer::new(i.clone()).map_err(GatewayError::Setup)?);
        tokio::spawn(issuer.clone().watch());
        issuers.push(issuer);
    }
    let global = match &config.redis {
        Some(r) => Some(Arc::new(Global::new(r).map_err(GatewayError::Setup)?)),
        None => None,
    };
    let l = &config.limits;
    let mut routes = Vec::new();
    for r in &config.routes {
        let methods = r
            .methods
            .clone()
            .unwrap_or_else(|| ward_policy::edge::METHODS.map(String::from).to_vec())
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let route_issuers = issuers
            .iter()
            .filter(|i| {
                r.issuers
                    .as_ref()
                    .is_none_or(|names| names.contains(&i.config.name))
            })
            .cloned()
            .collect();
        let policy = match &r.policy {
            Some(text) => Some(
                RoutePolicy::new(text)
                    .map_err(|e| GatewayError::Setup(format!("route {}: {e}", r.name)))?,
            ),
            None => None,
        };
        let upstream = match &r.upstream_spiffe_id {
            Some(id) => {
                let expected = vec![SpiffeId::parse(id).map_err(|e| {
                    GatewayError::Setup(format!("route {}: upstream_spiffe_id: {e}", r.name))
                })?];
                let cfg = ward_proxy::tls::outbound_config(
                    identity.clone(),
                    provider.clone(),
                    expected,
                    &[b"http/1.1"],
                )
                .map_err(|e| GatewayError::Tls(e.to_string()))?;
                Upstream::mtls(
                    MtlsConnector {
                        upstream: r.upstream,
                        config: cfg,
                        connect_timeout: l.connect_timeout,
                    },
                    generation.clone(),
                    l.response_timeout,
                )
            }
            None => Upstream::plain(r.upstream, l.connect_timeout, l.response_timeout),
        };
        routes.push(Route {
            label: r.name.as_str().into(),
            config: r.clone(),
            methods,
            issuers: route_issuers,
            policy,
            limit: r
                .rate_limit
                .as_ref()
                .map(|c| RouteLimit::new(&r.name, c, global.clone())),
            upstream,
            internal_token: r.sends_internal_token(config.exchange.is_some()),
        });
    }
    if let Some(r) = &config.report {
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&r.ca)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| GatewayError::Setup(format!("[report] ca {}: {e}", r.ca.display())))?;
        let tls = ward_proxy::tls::server_api_config(identity.clone(), provider.clone(), ca)
            .map_err(|e| GatewayError::Tls(e.to_string()))?;
        let client = ward_client::Client::with_tls(&r.server, tls)
            .map_err(|e| GatewayError::Setup(format!("[report]: {e}")))?;
        tokio::spawn(report_denials(metrics.clone(), client, r.interval));
    }
    let exchanger = match &config.exchange {
        Some(x) => Some(
            crate::exchange::Exchanger::new(
                x,
                identity.clone(),
                provider.clone(),
                generation.clone(),
            )
            .map_err(GatewayError::Setup)?,
        ),
        None => None,
    };
    let gateway = Arc::new(Gateway {
        routes,
        api_keys: ApiKeys::new(&config.api_keys),
        network: config.network.clone(),
        cors: config.cors.clone(),
        metrics: metrics.clone(),
        max_headers: l.max_headers,
        max_uri_bytes: l.max_uri_bytes,
        max_body: l.max_body_bytes,
        body_timeout: l.header_timeout,
        exchanger,
    });
    {
        let g = gateway.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                for r in &g.routes {
                    if let Some(l) = &r.limit {
                        l.sweep();
                    }
                }
            }
        });
    }

    let limits = ConnectionLimits {
        max_connections: l.max_connections,
        max_handshakes: l.max_handshakes,
        handshake_timeout: l.handshake_timeout,
        header_timeout: l.header_timeout,
        max_header_bytes: l.max_header_bytes,
        idle_timeout: l.idle_timeout,
        max_concurrent_streams: l.max_concurrent_streams,
        keepalive_interval: Duration::from_secs(20),
        drain_timeout: l.drain_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let bound = Bound {
        listen: listener.local_addr().unwrap_or(config.listen),
        admin: admin.as_ref().and_then(|a| a.local_addr().ok()),
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(serve_clients(
        listener,
        TlsAcceptor::from(tls),
        gateway.clone(),
        limits.clone(),
        config.limits.max_headers,
        stop_rx.clone(),
    )));
    if let Some(a) = admin {
        tasks.push(tokio::spawn(serve_admin(
            a,
            metrics.clone(),
            issuers.clone(),
            config.identity.is_some().then_some(identity.clone()),
            stop_rx.clone(),
        )));
    }
    tracing::info!(listen = %bound.listen, admin = ?bound.admin, routes = config.routes.len(), "gateway listening");
    if let Some(path) = &ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&bound).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| GatewayError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }
    shutdown.await;
    tracing::info!("draining connections");
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + l.drain_timeout;
    while metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Sends the denials counted to the server's audit chain every
/// `interval` (with the gateway's SVID); what cannot be sent is kept for
/// the next attempt, up to a bound.
async fn report_denials(metrics: Arc<Metrics>, client: ward_client::Client, interval: Duration) {
    let mut unsent: Vec<ward_api::DenialReport> = Vec::new();
    loop {
        tokio::time::sleep(interval).await;
        unsent.extend(metrics.drain_denials());
        if unsent.is_empty() {
            continue;
        }
        while !unsent.is_empty() {
            let n = unsent.len().min(500);
            let batch = ward_api::DenialBatch {
                denials: unsent[..n].to_vec(),
            };
            match client.report_denials(&batch).await {
                Ok(_) => {
                    unsent.drain(..n);
                }
                Err(ward_client::ClientError::Api { status, message })
                    if (400..500).contains(&status) && status != 401 && status != 429 =>
                {
                    tracing::error!(status, error = %message, "the server refused a denial report; dropping it");
                    unsent.drain(..n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot report denials to the audit chain; will retry");
                    // Bounded: the oldest go first.
                    let over = unsent.len().saturating_sub(10_000);
                    unsent.drain(..over);
                    break;
                }
            }
        }
    }
}

/// Decrements the open-connection gauge when dropped.
struct Open(Arc<Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

async fn serve_clients(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    limits: ConnectionLimits,
    max_headers: usize,
    shutdown: watch::Receiver<bool>,
) {
    let budget = Arc::new(Semaphore::new(limits.max_handshakes));
    let mut builder = http_builder(&limits);
    builder.http1().max_headers(max_headers);
    let builder = Arc::new(builder);
    let stop = shutdown.clone();
    accept_loop(
        listener,
        limits.max_connections,
        shutdown,
        move |tcp, peer| {
            let (acceptor, budget, gateway, builder, limits, stop) = (
                acceptor.clone(),
                budget.clone(),
                gateway.clone(),
                builder.clone(),
                limits.clone(),
                stop.clone(),
            );
            async move {
                // A denied address is dropped before any TLS work (a trusted
                // proxy's clients are checked per request instead).
                if !gateway.network.is_trusted_proxy(peer.ip())
                    && !gateway.network.admits(peer.ip())
                {
                    gateway
                        .metrics
                        .denial(&Arc::from("none"), "address_denied", peer.ip());
                    return;
                }
                gateway.metrics.connections.inc();
                let _open = Open(gateway.metrics.clone());
                let tls = {
                    let Ok(_slot) = budget.acquire().await else {
                        return;
                    };
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                };
                let certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(certificate_identity);
                let (io, framing) = FramingScan::new(tls, limits.max_header_bytes);
                let conn = Arc::new(ClientConn {
                    peer: peer.ip(),
                    framing,
                    certificate,
                });
                let activity = Activity::default();
                let svc = {
                    let activity = activity.clone();
                    service_fn(move |req: Request<Incoming>| {
                        activity.track(gateway.clone().handle(conn.clone(), req))
                    })
                };
                let served = builder.serve_connection(TokioIo::new(io), svc);
                let ended = drive(
                    served,
                    std::future::pending(),
                    &activity,
                    limits.idle_timeout,
                    stop,
                    limits.drain_timeout,
                )
                .await;
                if let Some(label) = ended.as_deref().and_then(|e| refusal_label(e)) {
                    tracing::info!(%peer, reason = label, "refused by the HTTP layer");
                }
            }
        },
    )
    .await
}

/// `/healthz`, `/readyz` (every issuer's keys read, the SVID loaded),
/// `/metrics`.
async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    issuers: Vec<Arc<Issuer>>,
    identity: Option<ward_proxy::identity::IdentityWatch>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = shutdown.clone();
    accept_loop(listener, 64, shutdown, move |tcp, _peer| {
        let (metrics, issuers, identity, stop) = (
            metrics.clone(),
            issuers.clone(),
            identity.clone(),
            stop.clone(),
        );
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (metrics, issuers, identity) =
                    (metrics.clone(), issuers.clone(), identity.clone());
                async move {
                    let (status, body) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
                        "/readyz" => {
                            if identity.as_ref().is_some_and(|i| i.borrow().is_none()) {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "not ready: no SVID yet\n".into(),
                                )
                            } else if let Some(i) = issuers.iter().find(|i| !i.has_keys()) {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!(
                                        "not ready: no keys from issuer {} yet\n",
                                        i.config.name
                                    ),
                                )
                            } else {
                                (StatusCode::OK, "ready\n".into())
                            }
                        }
                        "/metrics" => (StatusCode::OK, metrics.encode()),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "not found: try /healthz, /readyz or /metrics\n".into(),
                        ),
                    };
                    let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc);
            drive(
                conn,
                std::future::pending(),
                &Activity::default(),
                Duration::from_secs(60),
                stop,
                Duration::from_secs(1),
            )
            .await;
        }
    })
    .await
}
