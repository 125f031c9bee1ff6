//! The outbound side of an HTTP listener: the app's plain requests on
//! loopback go to the upstream over pooled mutual TLS, HTTP/1.1 or HTTP/2
//! as the app spoke. When the proxy's own SVID rotates, the pools start
//! over: a pooled connection keeps presenting the certificate it was
//! opened with, and the upstream must see the current one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use ward_dataplane::body::RequestBody;
use ward_dataplane::connect::MtlsConnector;
use ward_dataplane::forward::{
    ResponseBody, SendError, client_builder, keep_host, plain, send, strip_hop_by_hop,
};
use ward_dataplane::telemetry::{Telemetry, status_class};

struct Pools {
    h1: Client<MtlsConnector, RequestBody>,
    h2: Client<MtlsConnector, RequestBody>,
}

/// One outbound HTTP listener.
pub struct Outbound {
    pub listener: Arc<str>,
    pub upstream: SocketAddr,
    /// `upstream` as a URI authority (the target of HTTP/1.1 requests).
    upstream_authority: String,
    pub telemetry: Arc<Telemetry>,
    pub response_timeout: Duration,
    connectors: (MtlsConnector, MtlsConnector),
    pool_idle_timeout: Duration,
    /// Bumped whenever the proxy's SVID changes.
    identity_generation: Arc<AtomicU64>,
    pools: RwLock<(u64, Arc<Pools>)>,
}

impl Outbound {
    pub fn new(
        listener: &str,
        h1: MtlsConnector,
        h2: MtlsConnector,
        telemetry: Arc<Telemetry>,
        limits: &crate::config::Limits,
        identity_generation: Arc<AtomicU64>,
    ) -> Self {
        let upstream = h1.upstream;
        let generation = identity_generation.load(Ordering::SeqCst);
        let pools = Self::pools(&h1, &h2, limits.pool_idle_timeout);
        Self {
            listener: listener.into(),
            upstream,
            upstream_authority: upstream.to_string(),
            telemetry,
            response_timeout: limits.response_timeout,
            connectors: (h1, h2),
            pool_idle_timeout: limits.pool_idle_timeout,
            identity_generation,
            pools: RwLock::new((generation, Arc::new(pools))),
        }
    }

    fn pools(h1: &MtlsConnector, h2: &MtlsConnector, idle: Duration) -> Pools {
        Pools {
            h1: client_builder(idle).build(h1.clone()),
            h2: client_builder(idle).http2_only(true).build(h2.clone()),
        }
    }

    /// The pools for the current SVID (new ones after a rotation).
    fn current_pools(&self) -> Arc<Pools> {
        let generation = self.identity_generation.load(Ordering::SeqCst);
        {
            let p = self.pools.read().unwrap_or_else(|p| p.into_inner());
            if p.0 == generation {
                return p.1.clone();
            }
        }
        let mut p = self.pools.write().unwrap_or_else(|p| p.into_inner());
        if p.0 != generation {
            tracing::info!(listener = %self.listener, "the proxy's SVID changed: new upstream connections");
            *p = (
                generation,
                Arc::new(Self::pools(
                    &self.connectors.0,
                    &self.connectors.1,
                    self.pool_idle_timeout,
                )),
            );
        }
        p.1.clone()
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        keep_host(&mut parts);
        // The connector ignores the target's authority (every request goes
        // to the one upstream). Over HTTP/1.1 the app's Host travels as is;
        // over HTTP/2 it becomes the :authority and the Host header goes,
        // so the upstream's strict check sees one authority, not two.
        let mut target = String::from("https://");
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.parse::<http::uri::Authority>().is_ok())
            .map(str::to_owned);
        match (&host, parts.version == Version::HTTP_2) {
            (Some(h), true) => {
                target.push_str(h);
                parts.headers.remove(http::header::HOST);
            }
            _ => target.push_str(&self.upstream_authority),
        }
        target.push_str(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        let Ok(uri) = target.parse::<Uri>() else {
            return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
        };
        parts.uri = uri;
        let pools = self.current_pools();
        let client = if parts.version == Version::HTTP_2 {
            &pools.h2
        } else {
            &pools.h1
        };
        let request = Request::from_parts(parts, RequestBody::Incoming(body));
        let response = match send(client, request, self.response_timeout).await {
            Ok(resp) => resp,
            Err(SendError::Upstream(e)) => {
                // Includes an upstream that presented the wrong SPIFFE ID.
                let reason = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                tracing::warn!(upstream = %self.upstream, listener = %self.listener, error = %reason, "upstream unavailable");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: the upstream is unreachable or failed verification\n",
                )
            }
            Err(SendError::Timeout) => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: the upstream did not answer in time\n",
            ),
        };
        self.telemetry.record_upstream(
            &self.listener,
            status_class(response.status().as_u16()),
            started.elapsed(),
        );
        Ok(response)
    }
}
