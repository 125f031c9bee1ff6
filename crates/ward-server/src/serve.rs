//! Serving the API over HTTPS: accept under a connection cap, the TLS
//! handshake under its own budget and deadline, HTTP/1.1 or HTTP/2 by
//! ALPN with a header-read deadline, keep-alive pings, a stream cap and an
//! idle timeout, then a graceful drain on shutdown. The connection pieces
//! are the data plane's (`ward_dataplane::listener`): the API faces the
//! same hostile clients as a sidecar does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use ward_dataplane::listener::{Activity, ConnectionLimits, drive, http_builder, refusal_label};

use crate::config::ApiLimits;
use crate::peer::{ClientTrust, PeerId};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (HTTP/1.1) or header list (HTTP/2).
const MAX_HEADER_BYTES: usize = 64 * 1024;

fn connection_limits(api: &ApiLimits) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: api.max_connections,
        max_handshakes: api.max_handshakes,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        header_timeout: api.header_timeout,
        max_header_bytes: MAX_HEADER_BYTES,
        idle_timeout: api.idle_timeout,
        max_concurrent_streams: api.max_concurrent_streams,
        keepalive_interval: api.keepalive_interval,
        drain_timeout: DRAIN_TIMEOUT,
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    trust: Arc<ClientTrust>,
    api: &ApiLimits,
    shutdown: impl Future<Output = ()>,
) {
    let limits = connection_limits(api);
    let acceptor = TlsAcceptor::from(tls);
    let builder = http_builder(&limits);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: the kernel's backlog holds the rest.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let trust = trust.clone();
        let handshakes = handshakes.clone();
        let stopped = stopped.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Read before the handshake: a bundle change during it leaves a
            // stale tag (the client reconnects), never a fresh one on a
            // certificate verified under the old bundle.
            let trust_generation = trust.generation();
            let tls = {
                let Ok(_slot) = handshakes.acquire().await else {
                    return;
                };
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            };
            // The client certificate, if any, was verified against the trust
            // bundle in the handshake; handlers read its SPIFFE ID.
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first());
            // Read once per connection.
            let cert = leaf.and_then(|l| ward_identity::tls::PeerCert::parse(l).ok());
            let peer_id = PeerId {
                serial: cert
                    .as_ref()
                    .map(|c| c.serial_hex.clone())
                    .unwrap_or_default(),
                not_before: cert.as_ref().map_or(0, |c| c.not_before),
                not_after: cert.as_ref().map_or(0, |c| c.not_after),
                id: cert.map(|c| c.id),
                trust_generation,
                x5t_s256: leaf
                    .map(|l| {
                        use base64::Engine;
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, l.as_ref()),
                        )
                    })
                    .unwrap_or_default(),
            };
            let activity = Activity::default();
            let tracked = activity.clone();
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // Before routing: Vault clients list with the LIST method.
                    crate::vault::rewrite_list(&mut req);
                    req.extensions_mut().insert(peer_id.clone());
                    req.extensions_mut()
                        .insert(crate::limits::ClientAddr(peer.ip()));
                    tracked.track(app.clone().oneshot(req))
                },
            );
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            let ended = drive(
                conn,
                std::future::pending(),
                &activity,
                limits.idle_timeout,
                stopped,
                limits.drain_timeout,
            )
            .await;
            if let Some(e) = ended {
                match refusal_label(&*e) {
                    Some(label) => tracing::info!(%peer, reason = label, "closed a connection"),
                    None => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        DRAIN_TIMEOUT + Duration::from_secs(1),
        connections.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!("some connections did not finish within the drain timeout");
    }
}
