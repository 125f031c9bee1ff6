//! Forwarding: the request that was authorised, and only that, goes on to
//! the app (inbound) or the upstream (outbound) over pooled connections.
//! Hop-by-hop headers are removed both ways; identity headers a caller
//! sent are dropped and the verified one is set; the target is rebuilt
//! from the canonical path the [`Permit`] carries.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use hyper::client::conn::http1;

use crate::authz::{Caller, Permit};
use crate::body::{BodyError, RequestBody};
use crate::connect::UpstreamId;

/// What the data plane answers with: the app's body, or one of its own.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// The internal token: set by the gateway (the user behind a call,
/// exchanged for this service), checked by the receiving proxy, and given
/// to the app only by its own proxy, after checking (it is an identity
/// header: anything else a caller sends under it is dropped).
pub const INTERNAL_TOKEN: HeaderName = HeaderName::from_static("x-ward-internal-token");

/// `x-forwarded-client-cert`, in Envoy's format.
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// A short plain-text answer of the data plane's own.
pub fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// [`plain`], and the connection is closed after it (HTTP/1.1): after a
/// malformed request, nothing more on that connection can be trusted to
/// be framed as the caller meant.
pub fn plain_and_close(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = plain(status, text);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `te: trailers` is kept: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
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
        headers.remove(header::CONNECTION);
    }
    for h in [
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

/// Identity headers only the data plane may set: anything a caller sends
/// under these names is dropped.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    headers.remove(&XFCC);
    if headers.keys().any(|k| k.as_str().starts_with("x-ward-")) {
        let ward: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-ward-"))
            .cloned()
            .collect();
        for k in ward {
            headers.remove(k);
        }
    }
}

/// HTTP/2 requests carry the host in `:authority`; an HTTP/1.1 hop needs `Host`.
pub fn keep_host(parts: &mut http::request::Parts) {
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

/// `x-forwarded-client-cert` in Envoy's format: the proxy that verified
/// (By), the caller certificate's hash, the caller's ID. SPIFFE IDs and a
/// hex hash are always valid header text.
pub fn xfcc_value(own_id: &str, caller: &Caller) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "By={own_id};Hash={};URI={}",
        caller.cert_hash, caller.id_text
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Why a forwarded request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The app or upstream failed (connect, TLS, protocol, reset).
    Upstream(BodyError),
    /// No response headers within the timeout.
    Timeout,
}

impl SendError {
    /// The failure and its causes, for the log.
    pub fn describe(&self) -> String {
        match self {
            Self::Timeout => "no response in time".into(),
            Self::Upstream(e) => {
                let mut text = e.to_string();
                let mut cause = e.source();
                while let Some(c) = cause {
                    text.push_str(": ");
                    text.push_str(&c.to_string());
                    cause = c.source();
                }
                text
            }
        }
    }
}

/// One upstream HTTP/1.1 connection per downstream connection. Requests on
/// a downstream HTTP/1.1 connection come one at a time, so they can go out
/// on one upstream connection of their own: no pool to check out from, no
/// task spawned per request to return a connection to it. The connection
/// closes with the downstream one. `generation` names what the connection
/// was made under (the proxy's SVID): a connection of an older one is
/// dropped, not reused.
#[derive(Default)]
pub struct Dedicated {
    slot: std::sync::Mutex<Option<(u64, http1::SendRequest<RequestBody>)>>,
}

impl Dedicated {
    fn take(&self, generation: u64) -> Option<http1::SendRequest<RequestBody>> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some((g, sender)) if g == generation && !sender.is_closed() => Some(sender),
            _ => None,
        }
    }

    fn put(&self, generation: u64, sender: http1::SendRequest<RequestBody>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, sender));
    }

    /// Sends `request` on this connection's upstream connection, opening
    /// one with `dial` when there is none (or it went away: a request that
    /// was not sent on a stale connection is sent once more on a new one).
    pub async fn send<D, F, IO>(
        &self,
        generation: u64,
        dial: D,
        mut request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, SendError>
    where
        D: Fn() -> F,
        F: std::future::Future<Output = std::io::Result<IO>>,
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        // An HTTP/1.1 request to an origin names only the path (RFC 9112
        // §3.2.1); the authority travels in Host.
        if request.headers().get(header::HOST).is_none() {
            if let Some(v) = request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                request.headers_mut().insert(header::HOST, v);
            }
        }
        if request.uri().authority().is_some() || request.uri().scheme().is_some() {
            let origin_form = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse::<Uri>()
                .unwrap_or_default();
            *request.uri_mut() = origin_form;
        }
        // A reused connection the app closed at the same moment fails a
        // request it may never have read. A bodiless GET, HEAD or OPTIONS is
        // safe to send again (RFC 9110 §9.2.2), once, on a fresh connection,
        // as HAProxy and Envoy do; anything else gets the error.
        let mut retry = retry_copy(&request);
        let exchange = async {
            loop {
                let (mut sender, fresh) = match self.take(generation) {
                    Some(s) => (s, false),
                    None => {
                        let io = dial().await.map_err(|e| SendError::Upstream(e.into()))?;
                        let (sender, conn) = http1::handshake(io)
                            .await
                            .map_err(|e| SendError::Upstream(e.into()))?;
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "an upstream connection ended");
                            }
                        });
                        (sender, true)
                    }
                };
                if let Err(e) = sender.ready().await {
                    if fresh {
                        return Err(SendError::Upstream(e.into()));
                    }
                    continue;
                }
                match sender.try_send_request(request).await {
                    Ok(resp) => {
                        self.put(generation, sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if !fresh => request = unsent,
                        _ => {
                            let err = e.into_error();
                            match retry.take() {
                                // No answer came on a connection we reused:
                                // closed, reset, or cut mid-response.
                                Some(again) if !fresh => {
                                    tracing::debug!(
                                        "the app closed a reused connection under a request: sending it again on a new one"
                                    );
                                    request = again;
                                }
                                _ => return Err(SendError::Upstream(err.into())),
                            }
                        }
                    },
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, Either::Left(body)))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::Timeout),
        }
    }
}

/// A copy of a bodiless GET, HEAD or OPTIONS request, to send again.
fn retry_copy(request: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    use hyper::body::Body as _;
    let idempotent = matches!(
        *request.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !idempotent || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(RequestBody::Buffered(None));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Sends one request through a pool and returns the response without its
/// hop-by-hop headers.
pub async fn send<C>(
    client: &Client<C, RequestBody>,
    request: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<ResponseBody>, SendError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.extensions.remove::<UpstreamId>();
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Ok(Err(e)) => Err(SendError::Upstream(e.into())),
        Err(_) => Err(SendError::Timeout),
    }
}

/// Pool settings shared by every client.
pub fn client_builder(pool_idle_timeout: Duration) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(pool_idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    b
}

/// How the inbound side talks to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppProtocol {
    /// gRPC (HTTP/2 with `content-type: application/grpc…`) as h2c,
    /// everything else as HTTP/1.1.
    #[default]
    Auto,
    Http1,
    Http2,
}

/// Plain-text pools to the local app.
pub struct AppClient {
    pub app: SocketAddr,
    /// `http://<app>`, the start of every forwarded target.
    base: String,
    pub protocol: AppProtocol,
    pub response_timeout: Duration,
    connect_timeout: Duration,
    h1: Client<HttpConnector, RequestBody>,
    h2: Client<HttpConnector, RequestBody>,
}

impl AppClient {
    pub fn new(
        app: SocketAddr,
        protocol: AppProtocol,
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        Self {
            app,
            base: format!("http://{app}"),
            protocol,
            response_timeout,
            connect_timeout,
            h1: client_builder(pool_idle_timeout).build(connector.clone()),
            h2: client_builder(pool_idle_timeout)
                .http2_only(true)
                .build(connector),
        }
    }

    /// Forwards an authorised request to the app: the canonical path from
    /// the permit, the query as sent, hop-by-hop and caller-sent identity
    /// headers removed, the verified caller in `x-forwarded-client-cert`
    /// (`xfcc`, see [`xfcc_value`]).
    pub async fn forward(
        &self,
        permit: Permit,
        xfcc: HeaderValue,
        internal_token: Option<HeaderValue>,
        mut parts: http::request::Parts,
        body: RequestBody,
        dedicated: &Dedicated,
    ) -> Result<Response<ResponseBody>, SendError> {
        // A downstream HTTP/1.1 connection sends one request at a time.
        let one_at_a_time = parts.version != Version::HTTP_2;
        strip_hop_by_hop(&mut parts.headers);
        strip_identity_headers(&mut parts.headers);
        parts.headers.insert(XFCC, xfcc);
        if let Some(t) = internal_token {
            parts.headers.insert(INTERNAL_TOKEN, t);
        }
        let mut target = String::with_capacity(self.base.len() + permit.path.len() + 64);
        target.push_str(&self.base);
        target.push_str(&permit.path);
        if let Some(q) = parts.uri.query() {
            target.push('?');
            target.push_str(q);
        }
        // The permit's path was canonicalised from a valid URI: it parses.
        parts.uri = target.parse::<Uri>().unwrap_or_default();
        let use_h2 = match self.protocol {
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
        if use_h2 {
            parts.version = Version::HTTP_2;
            return send(
                &self.h2,
                Request::from_parts(parts, body),
                self.response_timeout,
            )
            .await;
        }
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        if !one_at_a_time {
            return send(&self.h1, request, self.response_timeout).await;
        }
        let (app, connect_timeout) = (self.app, self.connect_timeout);
        let dial = || async move {
            let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(app))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting to the app timed out",
                    )
                })??;
            tcp.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(tcp))
        };
        dedicated
            .send(0, dial, request, self.response_timeout)
            .await
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
