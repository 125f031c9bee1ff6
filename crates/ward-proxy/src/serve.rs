//! The sidecar's listeners, wired from the data plane's pieces: inbound
//! HTTP and TCP (mTLS, authorized), outbound HTTP and TCP (plain from the
//! app, mTLS to the upstream), and the admin listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use ward_dataplane::connect::MtlsConnector;
use ward_dataplane::forward::Dedicated;
use ward_dataplane::framing::FramingScan;
use ward_dataplane::inbound::{Connection, InboundHttp};
use ward_dataplane::listener::{
    Activity, ConnectionLimits, OpenConnections, TrustWatch, Verified, accept_loop, caller_lapses,
    drive, handshake, http_builder, refusal_label,
};
use ward_dataplane::tcp::{InboundTcp, pipe};
use ward_dataplane::telemetry::Telemetry;

use crate::identity::IdentityWatch;
use crate::outbound::Outbound;
use crate::policy::PolicyState;

/// What every listener shares.
#[derive(Clone)]
pub struct Shared {
    pub identity: IdentityWatch,
    pub trust: TrustWatch,
    pub policy: Arc<PolicyState>,
    pub telemetry: Arc<Telemetry>,
    pub limits: ConnectionLimits,
    pub shutdown: watch::Receiver<bool>,
    pub open: OpenConnections,
}

/// Accepts mutual-TLS connections on an inbound listener: the connection
/// cap, the handshake budget and the open-connection count, then `serve`
/// for each verified caller.
async fn accept_verified<F, Fut>(listener: TcpListener, acceptor: TlsAcceptor, s: Shared, serve: F)
where
    F: Fn(Verified, Shared) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let budget = Arc::new(Semaphore::new(s.limits.max_handshakes));
    let shared = s.clone();
    accept_loop(
        listener,
        s.limits.max_connections,
        s.shutdown.clone(),
        move |tcp, peer| {
            let (acceptor, budget, s, serve) = (
                acceptor.clone(),
                budget.clone(),
                shared.clone(),
                serve.clone(),
            );
            async move {
                let _open = s.open.guard();
                if let Some(conn) =
                    handshake(&acceptor, &budget, tcp, peer, s.limits.handshake_timeout).await
                {
                    serve(conn, s).await;
                }
            }
        },
    )
    .await
}

/// An inbound HTTP listener.
pub async fn inbound_http(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inbound: Arc<InboundHttp>,
    s: Shared,
) {
    let builder = Arc::new(http_builder(&s.limits));
    accept_verified(listener, acceptor, s, move |conn, s| {
        let (inbound, builder) = (inbound.clone(), builder.clone());
        async move {
            let caller = conn.caller.clone();
            let activity = Activity::default();
            let (io, framing) = FramingScan::new(conn.tls, s.limits.max_header_bytes);
            let state = Arc::new(Connection::new(caller.clone(), framing));
            let svc = {
                let activity = activity.clone();
                service_fn(move |req: Request<Incoming>| {
                    activity.track(inbound.clone().handle(state.clone(), req))
                })
            };
            let lapse = caller_lapses(&caller, &conn.chain, s.trust.clone());
            let served = builder.serve_connection(TokioIo::new(io), svc);
            let ended = drive(
                served,
                lapse,
                &activity,
                s.limits.idle_timeout,
                s.shutdown.clone(),
                s.limits.drain_timeout,
            )
            .await;
            // Refusals hyper makes itself never reach the request path.
            if let Some(label) = ended.as_deref().and_then(|e| refusal_label(e)) {
                tracing::info!(caller = %caller.id_text, reason = label, "refused by the HTTP layer");
                s.telemetry.record_rejection(label);
            }
        }
    })
    .await
}

/// An inbound opaque-TCP listener: one decision per connection, re-taken on policy change.
pub async fn inbound_tcp(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tcp: Arc<InboundTcp>,
    s: Shared,
) {
    accept_verified(listener, acceptor, s, move |conn, s| {
        let tcp = tcp.clone();
        async move { tcp.serve(conn, s.shutdown.clone()).await }
    })
    .await
}

/// An outbound HTTP listener (plain, on loopback, for the app).
pub async fn outbound_http(listener: TcpListener, outbound: Arc<Outbound>, s: Shared) {
    let builder = Arc::new(http_builder(&s.limits));
    let shared = s.clone();
    accept_loop(
        listener,
        s.limits.max_connections,
        s.shutdown.clone(),
        move |tcp, _peer| {
            let (outbound, builder, s) = (outbound.clone(), builder.clone(), shared.clone());
            async move {
                let _open = s.open.guard();
                let activity = Activity::default();
                let upstream = Arc::new(Dedicated::default());
                let svc = {
                    let activity = activity.clone();
                    service_fn(move |req: Request<Incoming>| {
                        activity.track(outbound.clone().handle(upstream.clone(), req))
                    })
                };
                let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                drive(
                    conn,
                    std::future::pending(),
                    &activity,
                    s.limits.idle_timeout,
                    s.shutdown.clone(),
                    s.limits.drain_timeout,
                )
                .await;
            }
        },
    )
    .await
}

/// An outbound opaque-TCP listener.
pub async fn outbound_tcp(
    listener: TcpListener,
    connector: MtlsConnector,
    name: Arc<str>,
    s: Shared,
) {
    let shared = s.clone();
    accept_loop(
        listener,
        s.limits.max_connections,
        s.shutdown.clone(),
        move |mut tcp, _peer| {
            let (connector, name, s) = (connector.clone(), name.clone(), shared.clone());
            async move {
                let _open = s.open.guard();
                let started = Instant::now();
                match connector.connect().await {
                    Ok((mut tls, _id)) => {
                        s.telemetry.record_upstream(&name, "ok", started.elapsed());
                        pipe(
                            &mut tcp,
                            &mut tls,
                            s.shutdown.clone(),
                            s.limits.drain_timeout,
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::warn!(upstream = %connector.upstream, error = %e, "upstream unavailable");
                        s.telemetry
                            .record_upstream(&name, "error", started.elapsed());
                    }
                }
            }
        },
    )
    .await
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`.
pub async fn admin(listener: TcpListener, s: Shared, needs_policy: bool) {
    let shared = s.clone();
    accept_loop(listener, 64, s.shutdown.clone(), move |tcp, _peer| {
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
