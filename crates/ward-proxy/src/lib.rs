//! `ward proxy`: the sidecar. Inbound, it terminates mutual TLS with the
//! service's SVID, reads the caller's SPIFFE ID from its verified
//! certificate, authorizes every request (or TCP connection) with Cedar,
//! and forwards to the local app with a verified identity header.
//! Outbound, it takes the app's plain requests on loopback and carries
//! them over mutual TLS to the upstream, whose SPIFFE ID it checks.
//! SVIDs, bundle and policy are local (memory and disk): the control plane
//! is never on the request path.

pub mod config;
pub mod demo;
pub mod identity;
mod outbound;
pub mod policy;
mod serve;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use ward_dataplane::authz::{Authorizer, Methods, OwnId};
use ward_dataplane::connect::MtlsConnector;
use ward_dataplane::forward::AppClient;
use ward_dataplane::inbound::{DEFAULT_BUFFER_LIMIT, InboundHttp};
use ward_dataplane::listener::{ConnectionLimits, OpenConnections, Trust};
use ward_dataplane::tcp::InboundTcp;
use ward_dataplane::telemetry::Telemetry;
use ward_identity::SpiffeId;

use crate::config::{Protocol, ProxyConfig};
use crate::outbound::Outbound;
use crate::policy::PolicyState;
use crate::serve::Shared;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the server CA certificate {path}: {reason}")]
    ServerCa { path: PathBuf, reason: String },
    #[error("{0}")]
    Identity(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the server API client: {0}")]
    Client(String),
    #[error("cannot write {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The addresses actually bound (port 0 becomes a real port), written to
/// the ready file for scripts and tests.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    pub inbound: BTreeMap<String, SocketAddr>,
    pub outbound: BTreeMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind {
            name: name.to_owned(),
            addr,
            source,
        })
}

/// Runs the proxy until `shutdown` resolves, then drains open connections
/// (up to `limits.drain_timeout`).
pub async fn run(
    config: ProxyConfig,
    ready_file: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (id_tx, identity) = watch::channel(None);
    let (trust_tx, trust) = watch::channel::<Option<Arc<Trust>>>(None);
    let telemetry = Arc::new(Telemetry::new("ward_proxy", config.telemetry.max_edges));
    let policy = Arc::new(PolicyState::new(
        config.policy.cache.clone(),
        telemetry.clone(),
    ));
    policy.load_cache();
    let methods = Methods::new(config.http.extension_methods.clone()).map_err(|e| {
        ProxyError::Config(config::ConfigError::Invalid {
            path: PathBuf::from("[http]"),
            message: e,
        })
    })?;
    let authorizer = Authorizer::new(policy.slot.clone(), methods);
    let (stop_tx, stop_rx) = watch::channel(false);
    let l = &config.limits;
    let shared = Shared {
        identity: identity.clone(),
        trust: trust.clone(),
        policy: policy.clone(),
        telemetry: telemetry.clone(),
        limits: ConnectionLimits {
            max_connections: l.max_connections,
            max_handshakes: l.max_handshakes,
            handshake_timeout: l.handshake_timeout,
            header_timeout: l.header_timeout,
            max_header_bytes: l.max_header_bytes,
            idle_timeout: l.idle_timeout,
            max_concurrent_streams: l.max_concurrent_streams,
            keepalive_interval: l.keepalive_interval,
            drain_timeout: l.drain_timeout,
        },
        shutdown: stop_rx,
        open: OpenConnections::new(telemetry.clone()),
    };

    // Bind everything first: a taken port is an error at start, not later.
    let mut listeners = Vec::new();
    for l in &config.inbound {
        listeners.push(bind(&l.name, l.listen).await?);
    }
    let mut out_listeners = Vec::new();
    for l in &config.outbound {
        out_listeners.push(bind(&l.name, l.listen).await?);
    }
    let admin = match &config.admin {
        Some(a) => Some(bind("admin", a.listen).await?),
        None => None,
    };

    // Identity source.
    identity::spawn_watch(&config.identity, provider.clone(), id_tx)
        .map_err(ProxyError::Identity)?;
    let own_id = Arc::new(OwnId::default());
    // Bumped at each new SVID: outbound pools start over with it.
    let identity_generation = Arc::new(AtomicU64::new(0));
    {
        let (own_id, mut identity, telemetry, generation) = (
            own_id.clone(),
            identity.clone(),
            telemetry.clone(),
            identity_generation.clone(),
        );
        tokio::spawn(async move {
            loop {
                if let Some(i) = identity.borrow_and_update().clone() {
                    own_id.set(&i.id);
                    telemetry.svid_expiry.set(i.not_after);
                    generation.fetch_add(1, Ordering::SeqCst);
                    trust_tx.send_replace(Some(i.trust.clone()));
                }
                if identity.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    // Policy source, and reports to the server.
    if let Some(server) = &config.policy.server {
        let ca_path = config.policy.server_ca.clone().unwrap_or_default();
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ProxyError::ServerCa {
                path: ca_path.clone(),
                reason: e.to_string(),
            })?;
        if ca.is_empty() {
            return Err(ProxyError::ServerCa {
                path: ca_path,
                reason: "no certificate in it".into(),
            });
        }
        let tls = tls::server_api_config(identity.clone(), provider.clone(), ca)?;
        // A fresh handshake per request presents the current SVID.
        let client = ward_client::Client::with_tls(server, tls)
            .map_err(|e| ProxyError::Client(e.to_string()))?;
        tokio::spawn(policy::watch_server(
            policy.clone(),
            client.clone(),
            identity.clone(),
        ));
        tokio::spawn(report(
            telemetry.clone(),
            client,
            config.telemetry.report_interval,
        ));
    } else if let Some(file) = &config.policy.file {
        tokio::spawn(policy::watch_file(policy.clone(), file.clone()));
    }

    let tokens = match &config.token {
        Some(t) => {
            let issuer = Arc::new(ward_oidc::Issuer::new(t.clone()).map_err(ProxyError::Identity)?);
            tokio::spawn(issuer.clone().watch());
            Some(issuer)
        }
        None => None,
    };
    let mut bound = Bound {
        inbound: BTreeMap::new(),
        outbound: BTreeMap::new(),
        admin: None,
    };
    let mut tasks = Vec::new();
    for (l, listener) in config.inbound.iter().zip(listeners) {
        bound
            .inbound
            .insert(l.name.clone(), listener.local_addr().unwrap_or(l.listen));
        match l.protocol {
            Protocol::Http => {
                let tls =
                    tls::inbound_config(identity.clone(), provider.clone(), &[b"h2", b"http/1.1"])?;
                let inbound = Arc::new(InboundHttp {
                    listener: l.name.as_str().into(),
                    own_id: own_id.clone(),
                    authorizer: authorizer.clone(),
                    trust: trust.clone(),
                    app: AppClient::new(
                        l.app,
                        l.app_protocol.into(),
                        config.limits.connect_timeout,
                        config.limits.pool_idle_timeout,
                        config.limits.response_timeout,
                    ),
                    telemetry: telemetry.clone(),
                    max_body: config.limits.max_body_bytes,
                    buffer_limit: DEFAULT_BUFFER_LIMIT,
                    body_timeout: config.limits.header_timeout,
                    tokens: tokens.clone(),
                });
                tasks.push(tokio::spawn(serve::inbound_http(
                    listener,
                    TlsAcceptor::from(tls),
                    inbound,
                    shared.clone(),
                )));
            }
            Protocol::Tcp => {
                let tls = tls::inbound_config(identity.clone(), provider.clone(), &[])?;
                let tcp = Arc::new(InboundTcp {
                    route: format!("tcp:{}", l.name).into(),
                    app: l.app,
                    own_id: own_id.clone(),
                    authorizer: authorizer.clone(),
                    trust: trust.clone(),
                    telemetry: telemetry.clone(),
                    connect_timeout: config.limits.connect_timeout,
                    drain_timeout: config.limits.drain_timeout,
                });
                tasks.push(tokio::spawn(serve::inbound_tcp(
                    listener,
                    TlsAcceptor::from(tls),
                    tcp,
                    shared.clone(),
                )));
            }
        }
    }
    for (l, listener) in config.outbound.iter().zip(out_listeners) {
        bound
            .outbound
            .insert(l.name.clone(), listener.local_addr().unwrap_or(l.listen));
        let expected: Vec<SpiffeId> = l
            .spiffe_ids
            .iter()
            .filter_map(|s| SpiffeId::parse(s).ok())
            .collect();
        let connector = |alpn: &[&[u8]]| -> Result<MtlsConnector, ProxyError> {
            Ok(MtlsConnector {
                upstream: l.upstream,
                config: tls::outbound_config(
                    identity.clone(),
                    provider.clone(),
                    expected.clone(),
                    alpn,
                )?,
                connect_timeout: config.limits.connect_timeout,
            })
        };
        match l.protocol {
            Protocol::Http => {
                let outbound = Arc::new(Outbound::new(
                    &l.name,
                    connector(&[b"http/1.1"])?,
                    connector(&[b"h2"])?,
                    telemetry.clone(),
                    &config.limits,
                    identity_generation.clone(),
                ));
                tasks.push(tokio::spawn(serve::outbound_http(
                    listener,
                    outbound,
                    shared.clone(),
                )));
            }
            Protocol::Tcp => {
                tasks.push(tokio::spawn(serve::outbound_tcp(
                    listener,
                    connector(&[])?,
                    l.name.as_str().into(),
                    shared.clone(),
                )));
            }
        }
    }
    if let Some(listener) = admin {
        bound.admin = listener.local_addr().ok();
        tasks.push(tokio::spawn(serve::admin(
            listener,
            shared.clone(),
            !config.inbound.is_empty(),
        )));
    }
    tracing::info!(inbound = ?bound.inbound, outbound = ?bound.outbound, admin = ?bound.admin, "proxy listening");
    if let Some(path) = &ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&bound).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| ProxyError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }

    shutdown.await;
    tracing::info!(open = shared.open.count(), "draining connections");
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + config.limits.drain_timeout;
    while shared.open.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Sends edge counts to the server every `interval`; what cannot be sent
/// is kept (bounded) for the next attempt.
async fn report(telemetry: Arc<Telemetry>, client: ward_client::Client, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let edges = telemetry.drain();
        if edges.is_empty() {
            continue;
        }
        // Batches of 200 edges stay well under the server's body limit.
        let mut unsent = Vec::new();
        let mut chunks = edges.chunks(200);
        for chunk in chunks.by_ref() {
            let batch = ward_api::TelemetryBatch {
                edges: chunk.to_vec(),
            };
            match client.report_telemetry(&batch).await {
                Ok(_) => {}
                // Refused as invalid: sending it again cannot help.
                Err(ward_client::ClientError::Api { status, message })
                    if (400..500).contains(&status) && status != 401 && status != 429 =>
                {
                    tracing::error!(status, error = %message, "the server refused a telemetry batch; dropping it");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot report telemetry; will retry");
                    unsent.extend(batch.edges);
                    break;
                }
            }
        }
        unsent.extend(chunks.flatten().cloned());
        if !unsent.is_empty() {
            telemetry.restore(unsent);
        }
    }
}
