//! Listeners: accept, handshake, hand connections to HTTP or TCP
//! forwarding, and drain gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use ward_identity::ca::not_after_of_cert;
use ward_identity::spiffe_id_of_cert;

use crate::connect::MtlsConnector;
use crate::http::{Caller, Inbound, Outbound, authorize};
use crate::identity::IdentityWatch;
use crate::policy::PolicyState;
use crate::telemetry::{Edge, Telemetry};

/// What every listener shares.
#[derive(Clone)]
pub struct Shared {
    pub identity: IdentityWatch,
    pub policy: Arc<PolicyState>,
    pub telemetry: Arc<Telemetry>,
    pub limits: crate::config::Limits,
    pub shutdown: watch::Receiver<bool>,
    pub open: Arc<AtomicUsize>,
}

/// Counts an open connection while alive.
struct OpenGuard(Arc<AtomicUsize>, Arc<Telemetry>);

impl OpenGuard {
    fn new(s: &Shared) -> Self {
        s.open.fetch_add(1, Ordering::SeqCst);
        s.telemetry.connections.inc();
        Self(s.open.clone(), s.telemetry.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.connections.dec();
    }
}

fn http_builder(limits: &crate::config::Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    b
}

/// Accepts until shutdown, running `serve` for each connection under the
/// listener's connection limit.
async fn accept_loop<F, Fut>(listener: TcpListener, s: Shared, serve: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(s.limits.max_connections));
    let mut shutdown = s.shutdown.clone();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let fut = serve(tcp, peer);
                tokio::spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Completes the server side of the handshake and reads the caller.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Arc<Caller>)> {
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => return None,
    };
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.clone();
    let id = spiffe_id_of_cert(&leaf)?;
    let caller = Caller {
        id: id.to_string().into(),
        cert_hash: hex_sha256(&leaf),
        not_after: not_after_of_cert(&leaf).unwrap_or(0),
        source: peer.ip(),
    };
    Some((tls, Arc::new(caller)))
}

fn hex_sha256(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An inbound HTTP listener.
pub async fn inbound_http(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inbound: Arc<Inbound>,
    s: Shared,
) {
    let builder = Arc::new(http_builder(&s.limits));
    let shared = s.clone();
    accept_loop(listener, s, move |tcp, peer| {
        let (acceptor, inbound, builder, s) = (
            acceptor.clone(),
            inbound.clone(),
            builder.clone(),
            shared.clone(),
        );
        async move {
            let _open = OpenGuard::new(&s);
            let Some((tls, caller)) =
                handshake(&acceptor, tcp, peer, s.limits.handshake_timeout).await
            else {
                return;
            };
            let svc = service_fn(move |req: Request<Incoming>| {
                inbound.clone().handle(caller.clone(), req)
            });
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            drive(conn, s.shutdown.clone(), s.limits.drain_timeout).await;
        }
    })
    .await
}

/// Resolves once shutdown has been asked for.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Runs a connection; on shutdown asks it to finish gracefully, within `drain`.
async fn drive<C>(conn: C, mut shutdown: watch::Receiver<bool>, drain: Duration)
where
    C: std::future::Future + hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(drain, conn).await;
        }
    }
}

/// An inbound opaque-TCP listener: one decision per connection.
pub async fn inbound_tcp(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    name: String,
    app: SocketAddr,
    own_id: Arc<std::sync::RwLock<Arc<str>>>,
    s: Shared,
) {
    let route: Arc<str> = format!("tcp:{name}").into();
    let shared = s.clone();
    accept_loop(listener, s, move |tcp, peer| {
        let (acceptor, own_id, route, s) = (
            acceptor.clone(),
            own_id.clone(),
            route.clone(),
            shared.clone(),
        );
        async move {
            let _open = OpenGuard::new(&s);
            let started = Instant::now();
            let Some((mut tls, caller)) =
                handshake(&acceptor, tcp, peer, s.limits.handshake_timeout).await
            else {
                return;
            };
            let own = own_id.read().unwrap_or_else(|p| p.into_inner()).clone();
            let allowed = authorize(
                &s.policy,
                &caller,
                &own,
                "connect",
                &route,
                "tcp",
                &Default::default(),
            );
            let edge = |status: &str, decision: &str| Edge {
                source: caller.id.to_string(),
                destination: own.to_string(),
                method: "connect".into(),
                route: route.to_string(),
                status_class: status.into(),
                decision: decision.into(),
            };
            if !allowed {
                tracing::info!(caller = %caller.id, route = %route, "denied");
                s.telemetry.record(edge("none", "deny"), started.elapsed());
                return;
            }
            let app_conn =
                tokio::time::timeout(s.limits.connect_timeout, TcpStream::connect(app)).await;
            let Ok(Ok(mut app_conn)) = app_conn else {
                tracing::warn!(%app, "the app is unreachable");
                s.telemetry
                    .record(edge("error", "allow"), started.elapsed());
                return;
            };
            s.telemetry.record(edge("ok", "allow"), started.elapsed());
            pipe(
                &mut tls,
                &mut app_conn,
                s.shutdown.clone(),
                s.limits.drain_timeout,
            )
            .await;
        }
    })
    .await
}

/// Copies both ways until either side closes (or the drain ends on shutdown).
async fn pipe<A, B>(a: &mut A, b: &mut B, mut shutdown: watch::Receiver<bool>, drain: Duration)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(a, b);
    tokio::pin!(copy);
    tokio::select! {
        _ = copy.as_mut() => {}
        _ = stopped(&mut shutdown) => {
            let _ = tokio::time::timeout(drain, copy).await;
        }
    }
}

/// An outbound HTTP listener (plain, on loopback, for the app).
pub async fn outbound_http(listener: TcpListener, outbound: Arc<Outbound>, s: Shared) {
    let builder = Arc::new(http_builder(&s.limits));
    let shared = s.clone();
    accept_loop(listener, s, move |tcp, _peer| {
        let (outbound, builder, s) = (outbound.clone(), builder.clone(), shared.clone());
        async move {
            let _open = OpenGuard::new(&s);
            let svc = service_fn(move |req: Request<Incoming>| outbound.clone().handle(req));
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            drive(conn, s.shutdown.clone(), s.limits.drain_timeout).await;
        }
    })
    .await
}

/// An outbound opaque-TCP listener.
pub async fn outbound_tcp(
    listener: TcpListener,
    connector: MtlsConnector,
    name: String,
    s: Shared,
) {
    let shared = s.clone();
    accept_loop(listener, s, move |mut tcp, _peer| {
        let (connector, name, s) = (connector.clone(), name.clone(), shared.clone());
        async move {
            let _open = OpenGuard::new(&s);
            let started = Instant::now();
            match connector.connect().await {
                Ok((mut tls, _id)) => {
                    s.telemetry.record_upstream(&name, "ok", started.elapsed());
                    pipe(&mut tcp, &mut tls, s.shutdown.clone(), s.limits.drain_timeout).await;
                }
                Err(e) => {
                    tracing::warn!(upstream = %connector.upstream, error = %e, "upstream unavailable");
                    s.telemetry.record_upstream(&name, "error", started.elapsed());
                }
            }
        }
    })
    .await
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`.
pub async fn admin(listener: TcpListener, s: Shared, needs_policy: bool) {
    let shared = s.clone();
    accept_loop(listener, s, move |tcp, _peer| {
        let s = shared.clone();
        async move {
            let stop = s.shutdown.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let s = s.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
                        "/readyz" => {
                            if s.identity.borrow().is_none() {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "not ready: no SVID yet\n".into(),
                                )
                            } else if needs_policy && s.policy.current().is_none() {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "not ready: no policy yet (every call is denied)\n".into(),
                                )
                            } else {
                                (StatusCode::OK, "ready\n".into())
                            }
                        }
                        "/metrics" => (StatusCode::OK, s.telemetry.encode()),
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
            drive(conn, stop, Duration::from_secs(1)).await;
        }
    })
    .await
}
