//! The outbound side of an HTTP listener: the app's plain requests on
//! loopback go to the upstream over mutual TLS, HTTP/1.1 or HTTP/2 as the
//! app spoke — HTTP/1.1 on one upstream connection per app connection,
//! HTTP/2 over a pool. When the proxy's own SVID rotates, both start over:
//! an open connection keeps presenting the certificate it was opened with,
//! and the upstream must see the current one.

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
    Dedicated, ResponseBody, SendError, client_builder, keep_host, plain, send, strip_hop_by_hop,
};
use ward_dataplane::telemetry::{Telemetry, status_class};

/// One outbound HTTP listener.
pub struct Outbound {
    pub listener: Arc<str>,
    pub upstream: SocketAddr,
    /// `upstream` as a URI authority (the target of HTTP/1.1 requests).
    upstream_authority: String,
    pub telemetry: Arc<Telemetry>,
    pub response_timeout: Duration,
    /// Opens the dedicated HTTP/1.1 connections (ALPN http/1.1).
    h1: MtlsConnector,
    /// Opens the pooled HTTP/2 connections (ALPN h2).
    h2: MtlsConnector,
    pool_idle_timeout: Duration,
    /// Bumped whenever the proxy's SVID changes.
    identity_generation: Arc<AtomicU64>,
    /// HTTP/2 requests from the app share pooled upstream connections,
    /// made under the SVID generation they are kept with.
    h2_pool: RwLock<(u64, Client<MtlsConnector, RequestBody>)>,
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
        let pool = Self::pool(&h2, limits.pool_idle_timeout);
        Self {
            listener: listener.into(),
            upstream,
            upstream_authority: upstream.to_string(),
            telemetry,
            response_timeout: limits.response_timeout,
            h1,
            h2,
            pool_idle_timeout: limits.pool_idle_timeout,
            identity_generation,
            h2_pool: RwLock::new((generation, pool)),
        }
    }

    fn pool(h2: &MtlsConnector, idle: Duration) -> Client<MtlsConnector, RequestBody> {
        client_builder(idle).http2_only(true).build(h2.clone())
    }

    /// The HTTP/2 pool for the current SVID (a new one after a rotation).
    fn current_h2_pool(&self) -> Client<MtlsConnector, RequestBody> {
        let generation = self.identity_generation.load(Ordering::SeqCst);
        {
            let p = self.h2_pool.read().unwrap_or_else(|p| p.into_inner());
            if p.0 == generation {
                return p.1.clone();
            }
        }
        let mut p = self.h2_pool.write().unwrap_or_else(|p| p.into_inner());
        if p.0 != generation {
            tracing::info!(listener = %self.listener, "the proxy's SVID changed: new upstream connections");
            *p = (generation, Self::pool(&self.h2, self.pool_idle_timeout));
        }
        p.1.clone()
    }

    /// One request of a downstream connection whose own upstream
    /// connection is `upstream` (used for HTTP/1.1).
    pub async fn handle(
        self: Arc<Self>,
        upstream: Arc<Dedicated>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        keep_host(&mut parts);
        // The connector ignores the target's authority (every request goes
        // to the one upstream). Over HTTP/1.1 the app's Host travels as is
        // (the upstream's when there is none) and the target is sent in
        // origin form; over HTTP/2 the Host becomes the :authority and the
        // header goes, so the upstream's strict check sees one authority,
        // not two.
        if parts.version == Version::HTTP_2 {
            let mut target = String::from("https://");
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.parse::<http::uri::Authority>().is_ok())
                .map(str::to_owned);
            match &host {
                Some(h) => {
                    target.push_str(h);
                    parts.headers.remove(http::header::HOST);
                }
                None => target.push_str(&self.upstream_authority),
            }
            target.push_str(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            let Ok(uri) = target.parse::<Uri>() else {
                return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
            };
            parts.uri = uri;
        } else {
            if parts.uri.authority().is_some() || parts.uri.scheme().is_some() {
                let Ok(uri) = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .parse::<Uri>()
                else {
                    return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
                };
                parts.uri = uri;
            }
            if parts.headers.get(http::header::HOST).is_none() {
                let Ok(v) = http::HeaderValue::from_str(&self.upstream_authority) else {
                    return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
                };
                parts.headers.insert(http::header::HOST, v);
            }
        }
        let h2 = parts.version == Version::HTTP_2;
        let request = Request::from_parts(parts, RequestBody::Incoming(body));
        let sent = if h2 {
            // Streams of one HTTP/2 connection run at once: pooled.
            send(&self.current_h2_pool(), request, self.response_timeout).await
        } else {
            let connector = &self.h1;
            let dial = || async move {
                let (tls, _id) = connector.connect().await?;
                Ok(hyper_util::rt::TokioIo::new(tls))
            };
            let generation = self.identity_generation.load(Ordering::SeqCst);
            upstream
                .send(generation, dial, request, self.response_timeout)
                .await
        };
        let response = match sent {
            Ok(resp) => resp,
            Err(e @ SendError::Upstream(_)) => {
                // Includes an upstream that presented the wrong SPIFFE ID.
                tracing::warn!(upstream = %self.upstream, listener = %self.listener, error = %e.describe(), "upstream unavailable");
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
