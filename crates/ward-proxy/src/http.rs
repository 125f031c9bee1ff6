//! HTTP forwarding. Inbound: every request on a verified mTLS connection is
//! authorized on the caller's SPIFFE ID and the canonical path, then
//! forwarded to the app with a verified `x-forwarded-client-cert` header
//! (and no client-supplied identity header). Outbound: requests from the
//! app go to the upstream over pooled mTLS connections. Bodies stream in
//! both directions; HTTP/1.1 and HTTP/2 (so gRPC) pass through.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{AppProtocol, Limits};
use crate::connect::{MtlsConnector, UpstreamId};
use crate::path::{canonical_path, metric_route};
use crate::policy::PolicyState;
use crate::telemetry::{Edge, Telemetry, method_label, status_class};

pub type ProxyBody = Either<Incoming, Full<Bytes>>;

const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// What the handshake established about the caller, for every request on
/// the connection.
#[derive(Debug)]
pub struct Caller {
    pub id: Arc<str>,
    /// Hex SHA-256 of the caller's leaf certificate.
    pub cert_hash: String,
    /// The caller certificate's notAfter, Unix seconds.
    pub not_after: i64,
    pub source: IpAddr,
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `te: trailers` is kept: gRPC needs it.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
}

/// Identity headers only the proxy may set: anything a caller sends under
/// these names is dropped.
fn strip_identity_headers(headers: &mut HeaderMap) {
    headers.remove(&XFCC);
    let ward: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-ward-"))
        .cloned()
        .collect();
    for k in ward {
        headers.remove(k);
    }
}

/// HTTP/2 requests carry the host in `:authority`; an HTTP/1.1 hop needs `Host`.
fn keep_host(parts: &mut http::request::Parts) {
    if parts.headers.get(header::HOST).is_none() {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
    }
}

/// Sends one request through a pool and returns the response without its
/// hop-by-hop headers; `Err(None)` when no response headers came in time.
async fn send<C>(
    client: &Client<C, ProxyBody>,
    request: Request<ProxyBody>,
    timeout: Duration,
) -> Result<Response<ProxyBody>, Option<hyper_util::client::legacy::Error>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.extensions.remove::<UpstreamId>();
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

fn client_builder(limits: &Limits) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(limits.pool_idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    b
}

/// The inbound side of one HTTP listener.
pub struct Inbound {
    pub listener: String,
    pub app: SocketAddr,
    pub app_protocol: AppProtocol,
    pub own_id: Arc<std::sync::RwLock<Arc<str>>>,
    pub policy: Arc<PolicyState>,
    pub telemetry: Arc<Telemetry>,
    pub response_timeout: Duration,
    h1: Client<HttpConnector, ProxyBody>,
    h2: Client<HttpConnector, ProxyBody>,
}

impl Inbound {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listener: String,
        app: SocketAddr,
        app_protocol: AppProtocol,
        own_id: Arc<std::sync::RwLock<Arc<str>>>,
        policy: Arc<PolicyState>,
        telemetry: Arc<Telemetry>,
        limits: &Limits,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(limits.connect_timeout));
        let h1 = client_builder(limits).build(connector.clone());
        let h2 = client_builder(limits).http2_only(true).build(connector);
        Self {
            listener,
            app,
            app_protocol,
            own_id,
            policy,
            telemetry,
            response_timeout: limits.response_timeout,
            h1,
            h2,
        }
    }

    /// Authorizes and forwards one request.
    pub async fn handle(
        self: Arc<Self>,
        caller: Arc<Caller>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let own_id = self
            .own_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let method = req.method().as_str().to_owned();
        let path = match canonical_path(req.uri().path()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(caller = %caller.id, error = %e, "refused a non-canonical path");
                self.count(&caller, &own_id, &method, "invalid", "4xx", "deny", started);
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    "bad request: the path is not in canonical form\n",
                ));
            }
        };
        let protocol = if req.version() == Version::HTTP_2 {
            "h2"
        } else {
            "http/1.1"
        };
        let allowed = self.decide(&caller, &own_id, &method, &path, protocol, req.headers());
        let route = metric_route(&path);
        if !allowed {
            self.count(&caller, &own_id, &method, &route, "4xx", "deny", started);
            return Ok(plain(StatusCode::FORBIDDEN, "forbidden\n"));
        }
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        strip_identity_headers(&mut parts.headers);
        // Envoy's format: the proxy that verified (By), the certificate's hash, the caller's ID.
        let xfcc = format!("By={own_id};Hash={};URI={}", caller.cert_hash, caller.id);
        if let Ok(v) = HeaderValue::from_str(&xfcc) {
            parts.headers.insert(XFCC, v);
        }
        keep_host(&mut parts);
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let Ok(uri) = format!("http://{}{path}{query}", self.app).parse::<Uri>() else {
            return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
        };
        parts.uri = uri;
        let use_h2 = match self.app_protocol {
            // gRPC needs HTTP/2 end to end; everything else goes as HTTP/1.1,
            // which every app speaks, whatever the caller negotiated.
            AppProtocol::Auto => {
                parts.version == Version::HTTP_2
                    && parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
            }
            AppProtocol::Http1 => false,
            AppProtocol::Http2 => true,
        };
        let client = if use_h2 {
            parts.version = Version::HTTP_2;
            &self.h2
        } else {
            parts.version = Version::HTTP_11;
            &self.h1
        };
        let request = Request::from_parts(parts, Either::Left(body));
        let response = match send(client, request, self.response_timeout).await {
            Ok(resp) => resp,
            Err(Some(e)) => {
                tracing::warn!(app = %self.app, error = %e, "the app is unreachable");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: the service is unreachable\n",
                )
            }
            Err(None) => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: the service did not answer in time\n",
            ),
        };
        self.count(
            &caller,
            &own_id,
            &method,
            &route,
            status_class(response.status().as_u16()),
            "allow",
            started,
        );
        Ok(response)
    }

    fn decide(
        &self,
        caller: &Caller,
        own_id: &str,
        method: &str,
        path: &str,
        protocol: &str,
        headers: &HeaderMap,
    ) -> bool {
        let allowed = authorize(
            &self.policy,
            caller,
            own_id,
            method,
            path,
            protocol,
            headers,
        );
        if !allowed {
            tracing::info!(caller = %caller.id, method, path, listener = %self.listener, "denied");
        }
        allowed
    }

    #[allow(clippy::too_many_arguments)]
    fn count(
        &self,
        caller: &Caller,
        own_id: &str,
        method: &str,
        route: &str,
        status: &str,
        decision: &str,
        started: Instant,
    ) {
        self.telemetry.record(
            Edge {
                source: caller.id.to_string(),
                destination: own_id.to_string(),
                method: method_label(method).to_string(),
                route: route.to_string(),
                status_class: status.to_string(),
                decision: decision.to_string(),
            },
            started.elapsed(),
        );
    }
}

/// Decides one call on the policy in force. No policy, an expired caller
/// certificate or anything Cedar cannot evaluate: deny.
pub(crate) fn authorize(
    policy: &PolicyState,
    caller: &Caller,
    own_id: &str,
    action: &str,
    route: &str,
    protocol: &str,
    headers: &HeaderMap,
) -> bool {
    let Some(policy) = policy.current() else {
        return false;
    };
    let now = SystemTime::now();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if caller.not_after <= now_secs {
        // The connection outlived the caller's certificate.
        return false;
    }
    let selected: Vec<(&str, &str)> = [
        "host",
        "content-type",
        "user-agent",
        "accept",
        "x-request-id",
    ]
    .iter()
    .filter_map(|h| Some((*h, headers.get(*h)?.to_str().ok()?)))
    .collect();
    let call = ward_policy::Call {
        caller: &caller.id,
        destination: own_id,
        action,
        route,
        source: caller.source,
        time: now,
        protocol,
        headers: &selected,
    };
    policy.engine.decide(&call).allowed
}

/// The outbound side of one HTTP listener: the app's requests go to the
/// upstream over mTLS, HTTP/1.1 or HTTP/2 as the app spoke.
pub struct Outbound {
    pub listener: String,
    pub upstream: SocketAddr,
    pub telemetry: Arc<Telemetry>,
    pub response_timeout: Duration,
    h1: Client<MtlsConnector, ProxyBody>,
    h2: Client<MtlsConnector, ProxyBody>,
}

impl Outbound {
    pub fn new(
        listener: String,
        h1: MtlsConnector,
        h2: MtlsConnector,
        telemetry: Arc<Telemetry>,
        limits: &Limits,
    ) -> Self {
        let upstream = h1.upstream;
        Self {
            listener,
            upstream,
            telemetry,
            response_timeout: limits.response_timeout,
            h1: client_builder(limits).build(h1),
            h2: client_builder(limits).http2_only(true).build(h2),
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        keep_host(&mut parts);
        let Ok(uri) = format!("https://{}{path_and_query}", self.upstream).parse::<Uri>() else {
            return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
        };
        parts.uri = uri;
        let client = if parts.version == Version::HTTP_2 {
            &self.h2
        } else {
            &self.h1
        };
        let request = Request::from_parts(parts, Either::Left(body));
        let response = match send(client, request, self.response_timeout).await {
            Ok(resp) => resp,
            Err(Some(e)) => {
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
            Err(None) => plain(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_identity_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-custom"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(XFCC, HeaderValue::from_static("URI=spiffe://td/evil"));
        h.insert(
            "x-ward-caller",
            HeaderValue::from_static("spiffe://td/evil"),
        );
        h.insert("x-other", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        strip_identity_headers(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(h.contains_key(header::TE) && h.contains_key("x-other"));
    }
}
