//! One request through the gateway, top to bottom: the client's address
//! (X-Forwarded-For only from trusted proxies) against the allow and deny
//! lists; the data plane's strict HTTP and framing scan; header count and
//! target length; CORS preflight; the canonical path and the route (host,
//! longest prefix on whole segments); the route's methods; its
//! authentication; its Cedar policy; its rate limit; then the request —
//! credentials and identity headers removed — goes on to the upstream.
//! Every refusal says only its status; the reason goes to the log and
//! `/metrics`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use ward_dataplane::body::{Prepared, RequestBody};
use ward_dataplane::forward::{
    ResponseBody, SendError, keep_host, strip_hop_by_hop, strip_identity_headers,
};
use ward_dataplane::framing::Framing;
use ward_dataplane::path::canonical_path;
use ward_dataplane::strict;
use ward_policy::edge::{RouteCall, RoutePolicy, Subject};

use crate::auth::{self, ApiKeys, AuthError, Issuer};
use crate::config::{Auth, CorsConfig, LimitKey, NetworkConfig, RouteConfig};
use crate::limit::{RouteLimit, Verdict};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// One configured route, ready to serve.
pub struct Route {
    pub config: RouteConfig,
    pub label: Arc<str>,
    pub methods: Vec<Method>,
    pub issuers: Vec<Arc<Issuer>>,
    pub policy: Option<RoutePolicy>,
    pub limit: Option<RouteLimit>,
    pub upstream: Upstream,
    /// Whether an internal token goes upstream (see [`crate::exchange`]).
    pub internal_token: bool,
}

/// What every request shares.
pub struct Gateway {
    pub routes: Vec<Route>,
    pub api_keys: ApiKeys,
    pub network: NetworkConfig,
    pub cors: Option<CorsConfig>,
    pub metrics: Arc<Metrics>,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body: u64,
    pub body_timeout: Duration,
    pub exchanger: Option<crate::exchange::Exchanger>,
}

/// A verified bearer token.
pub struct Bearer {
    token: String,
}

/// What the gateway knows of one client connection.
pub struct ClientConn {
    pub peer: IpAddr,
    pub framing: Arc<Framing>,
    /// The identity of a verified client certificate (its SPIFFE ID, or
    /// `sha256:HEX` of the certificate).
    pub certificate: Option<Arc<str>>,
}

const NONE_ROUTE: &str = "none";

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A refusal's body: the status and nothing about why.
fn refusal(status: StatusCode) -> Response<ResponseBody> {
    let body = match status {
        StatusCode::BAD_REQUEST => "bad request\n",
        StatusCode::UNAUTHORIZED => "unauthorized\n",
        StatusCode::FORBIDDEN => "forbidden\n",
        StatusCode::NOT_FOUND => "not found\n",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed\n",
        StatusCode::PAYLOAD_TOO_LARGE => "payload too large\n",
        StatusCode::URI_TOO_LONG => "uri too long\n",
        StatusCode::TOO_MANY_REQUESTS => "too many requests\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request header fields too large\n",
        StatusCode::NOT_IMPLEMENTED => "not implemented\n",
        StatusCode::BAD_GATEWAY => "bad gateway\n",
        StatusCode::GATEWAY_TIMEOUT => "gateway timeout\n",
        StatusCode::REQUEST_TIMEOUT => "request timeout\n",
        _ => "service unavailable\n",
    };
    text(status, body)
}

fn close(mut r: Response<ResponseBody>) -> Response<ResponseBody> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Security headers on every answer (the upstream's own win where it set them).
fn harden(headers: &mut HeaderMap) {
    for (k, v) in [
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        if !headers.contains_key(k) {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
    }
}

/// The client's address: the connection's peer, or — when the peer is a
/// trusted proxy — the right-most address in `X-Forwarded-For` that is
/// not itself a trusted proxy (each proxy appends what it saw, so only
/// that part of the list is vouched for).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, network: &NetworkConfig) -> IpAddr {
    if !network.is_trusted_proxy(peer) {
        return peer;
    }
    // Right to left: each trusted proxy appended the address it saw; the
    // first one that is not a trusted proxy is the client. What lies left
    // of it is the client's own say, never read (garbage there changes
    // nothing).
    let mut hops: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        match v.to_str() {
            Ok(v) => hops.extend(v.split(',').map(str::trim)),
            // Unreadable bytes: nothing from here leftwards is vouched for.
            Err(_) => hops.clear(),
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // A trusted hop wrote what is not an address: the last address
            // a trusted proxy vouched for stands.
            return client;
        };
        client = ip;
        if !network.is_trusted_proxy(ip) {
            return ip;
        }
    }
    client
}

impl Gateway {
    /// The route for `host` and canonical `path`: host-specific routes
    /// first, then the longest prefix on whole segments.
    pub fn route(&self, host: &str, path: &str) -> Option<&Route> {
        let under = |prefix: &str| {
            let prefix = prefix.trim_end_matches('/');
            prefix.is_empty()
                || path == prefix
                || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        };
        self.routes
            .iter()
            .filter(|r| r.config.host.as_deref().is_none_or(|h| h == host))
            .filter(|r| under(&r.config.path_prefix))
            .max_by_key(|r| {
                (
                    r.config.host.is_some(),
                    r.config.path_prefix.trim_end_matches('/').len(),
                )
            })
    }

    fn cors_origin(&self, headers: &HeaderMap) -> Option<(&CorsConfig, HeaderValue)> {
        self.allowed_origin(headers.get(header::ORIGIN)?)
    }

    fn allowed_origin(&self, origin: &HeaderValue) -> Option<(&CorsConfig, HeaderValue)> {
        let cors = self.cors.as_ref()?;
        let o = origin.to_str().ok()?;
        cors.allowed_origins
            .iter()
            .any(|a| a == o || a == "*")
            .then(|| (cors, origin.clone()))
    }

    fn add_cors(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        if let Some((cors, origin)) = origin.and_then(|o| self.allowed_origin(o)) {
            resp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if cors.allow_credentials {
                resp.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        if self.cors.is_some() {
            resp.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// Serves one request of `conn`.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ClientConn>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let client = client_address(conn.peer, &parts.headers, &self.network);
        let origin = self
            .cors
            .as_ref()
            .and_then(|_| parts.headers.get(header::ORIGIN).cloned());
        let (route_label, decision, mut response) = self
            .decide_and_forward(&conn, client, &mut parts, body)
            .await;
        let status = response.status().as_u16();
        self.metrics
            .request(&route_label, decision, status, started.elapsed());
        if self.cors.is_some() {
            self.add_cors(origin.as_ref(), response.headers_mut());
        }
        harden(response.headers_mut());
        Ok(response)
    }

    fn too_many(
        &self,
        route: &Arc<str>,
        client: IpAddr,
        parts: &http::request::Parts,
        v: &Verdict,
    ) -> (Arc<str>, &'static str, Response<ResponseBody>) {
        let (l, d, mut resp) = self.deny(
            route,
            "rate_limited",
            client,
            parts,
            StatusCode::TOO_MANY_REQUESTS,
        );
        rate_headers(resp.headers_mut(), v);
        (l, d, resp)
    }

    fn deny(
        &self,
        route: &Arc<str>,
        reason: &'static str,
        client: IpAddr,
        parts: &http::request::Parts,
        status: StatusCode,
    ) -> (Arc<str>, &'static str, Response<ResponseBody>) {
        tracing::info!(route = %route, reason, %client, method = %parts.method, status = status.as_u16(), "denied");
        self.metrics.denial(route, reason, client);
        (route.clone(), "deny", refusal(status))
    }

    async fn decide_and_forward(
        &self,
        conn: &ClientConn,
        client: IpAddr,
        parts: &mut http::request::Parts,
        body: Incoming,
    ) -> (Arc<str>, &'static str, Response<ResponseBody>) {
        let none: Arc<str> = NONE_ROUTE.into();
        if !self.network.admits(client) {
            return self.deny(
                &none,
                "address_denied",
                client,
                parts,
                StatusCode::FORBIDDEN,
            );
        }
        // In order, for every request, so the framing scan lines up.
        let checked = if conn.framing.next_is_ambiguous() {
            Err(strict::Rejection::LengthAndEncoding)
        } else {
            strict::check_request(parts, self.max_body)
        };
        if let Err(r) = checked {
            let (l, d, resp) = self.deny(&none, r.label(), client, parts, r.status());
            return (l, d, close(resp));
        }
        if parts.headers.len() > self.max_headers {
            let (l, d, resp) = self.deny(
                &none,
                "too_many_headers",
                client,
                parts,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            );
            return (l, d, close(resp));
        }
        let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > self.max_uri_bytes {
            return self.deny(
                &none,
                "uri_too_long",
                client,
                parts,
                StatusCode::URI_TOO_LONG,
            );
        }
        let path = match canonical_path(parts.uri.path()) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(%client, error = %e, "refused a path");
                return self.deny(
                    &none,
                    "invalid_path",
                    client,
                    parts,
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        // After the strict check there is exactly one host.
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| {
                let h = h.to_ascii_lowercase();
                match h.rsplit_once(':') {
                    Some((name, port)) if !name.ends_with(']') || h.starts_with('[') => {
                        if port.bytes().all(|b| b.is_ascii_digit()) {
                            name.to_owned()
                        } else {
                            h
                        }
                    }
                    _ => h,
                }
            })
            .unwrap_or_default();

        // CORS preflight: answered here, before authentication (browsers
        // send no credentials with it).
        if parts.method == Method::OPTIONS
            && parts
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            if let Some((cors, _)) = self.cors_origin(&parts.headers) {
                let mut r = text(StatusCode::NO_CONTENT, "");
                let h = r.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&cors.allowed_methods.join(", ")) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
                }
                if let Ok(v) = HeaderValue::from_str(&cors.allowed_headers.join(", ")) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
                }
                if let Ok(v) = HeaderValue::from_str(&cors.max_age.as_secs().to_string()) {
                    h.insert(header::ACCESS_CONTROL_MAX_AGE, v);
                }
                h.remove(header::CONTENT_TYPE);
                return (none, "allow", r);
            }
            if self.cors.is_some() {
                return self.deny(&none, "cors_origin", client, parts, StatusCode::FORBIDDEN);
            }
        }

        let Some(route) = self.route(&host, &path) else {
            return self.deny(&none, "no_route", client, parts, StatusCode::NOT_FOUND);
        };
        let label = &route.label;
        if !route.methods.contains(&parts.method) {
            let (l, d, mut resp) = self.deny(
                label,
                "method",
                client,
                parts,
                StatusCode::METHOD_NOT_ALLOWED,
            );
            let allow: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return (l, d, resp);
        }

        // A limit on the client's address is checked before anything is
        // verified: a flood of bad tokens is cut off before it costs a
        // signature check each.
        let mut early_limit = None;
        if let Some(limit) = &route.limit
            && limit.key_kind() == LimitKey::Address
        {
            let v = limit
                .check(&format!("a:{}", address_key(client)), &self.metrics)
                .await;
            if !v.allowed {
                return self.too_many(label, client, parts, &v);
            }
            early_limit = Some(v);
        }

        let query = parts.uri.query().map(str::to_owned);
        let (subject, bearer) = match self
            .authenticate(route, conn, &parts.headers, query.as_deref())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let (l, d, mut resp) = self.deny(label, e.label(), client, parts, e.status());
                if e.status() == StatusCode::UNAUTHORIZED {
                    let challenge = match route.config.auth {
                        Auth::Jwt if e == AuthError::Missing => "Bearer",
                        Auth::Jwt => "Bearer error=\"invalid_token\"",
                        Auth::ApiKey => "ApiKey",
                        _ => "Certificate",
                    };
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                }
                return (l, d, resp);
            }
        };

        if let Some(policy) = &route.policy {
            let protocol = if parts.version == Version::HTTP_2 {
                "h2"
            } else {
                "http/1.1"
            };
            let d = policy.decide(
                &subject,
                &RouteCall {
                    route: &route.config.name,
                    path: &path,
                    host: &host,
                    method: parts.method.as_str(),
                    protocol,
                    source: client,
                },
            );
            if !d.allowed {
                let reason = if d.errors.is_empty() {
                    "policy"
                } else {
                    "evaluation_error"
                };
                tracing::info!(route = %label, sub = %subject.sub, policies = ?d.policies, errors = ?d.errors, "the route policy denied");
                return self.deny(label, reason, client, parts, StatusCode::FORBIDDEN);
            }
        }

        let mut limit_headers = early_limit;
        if let Some(limit) = &route.limit
            && limit.key_kind() != LimitKey::Address
        {
            let key = match limit.key_kind() {
                LimitKey::Client if !subject.client_id.is_empty() => {
                    format!("c:{}", subject.client_id)
                }
                _ => format!("s:{}\0{}", subject.issuer, subject.sub),
            };
            let v = limit.check(&key, &self.metrics).await;
            if !v.allowed {
                return self.too_many(label, client, parts, &v);
            }
            limit_headers = Some(v);
        }

        // The user's identity inward: an internal token for the upstream.
        let mut internal = None;
        if route.internal_token
            && let (Some(x), Some(b), Some(aud)) = (
                &self.exchanger,
                &bearer,
                route.config.upstream_spiffe_id.as_deref(),
            )
        {
            match x.internal_token(&b.token, aud).await {
                Ok(t) => internal = HeaderValue::from_str(&t).ok(),
                Err(crate::exchange::ExchangeError::Refused(why)) => {
                    tracing::info!(route = %label, sub = %subject.sub, error = %why, "no internal token");
                    return self.deny(
                        label,
                        "exchange_refused",
                        client,
                        parts,
                        StatusCode::FORBIDDEN,
                    );
                }
                Err(e) => {
                    tracing::warn!(route = %label, error = %e, "no internal token");
                    return self.deny(
                        label,
                        "exchange_unavailable",
                        client,
                        parts,
                        StatusCode::SERVICE_UNAVAILABLE,
                    );
                }
            }
        }

        // Forward: the canonical path (less the prefix, if asked), the
        // query without credentials, no credential or identity headers.
        let failed = Arc::new(AtomicBool::new(false));
        let no_body = hyper::body::Body::is_end_stream(&body);
        let prepare = RequestBody::prepare(body, 64 * 1024, self.body_timeout, failed.clone());
        let prepared = if no_body {
            Ok(prepare.await)
        } else {
            tokio::time::timeout(self.body_timeout, prepare).await
        };
        let body = match prepared {
            Ok(Prepared::Ready(b)) => b,
            Err(_) => {
                let (l, d, r) = self.deny(
                    label,
                    "body_timeout",
                    client,
                    parts,
                    StatusCode::REQUEST_TIMEOUT,
                );
                return (l, d, close(r));
            }
            Ok(Prepared::Malformed(_)) => {
                let (l, d, r) = self.deny(
                    label,
                    "malformed_body",
                    client,
                    parts,
                    StatusCode::BAD_REQUEST,
                );
                return (l, d, close(r));
            }
        };
        let mut forwarded_path = path.clone();
        if route.config.strip_prefix {
            let prefix = route.config.path_prefix.trim_end_matches('/');
            forwarded_path = path[prefix.len()..].to_owned();
            if !forwarded_path.starts_with('/') {
                forwarded_path.insert(0, '/');
            }
        }
        if let Some(q) = &query {
            let q = auth::strip_credential_params(q);
            if !q.is_empty() {
                forwarded_path.push('?');
                forwarded_path.push_str(&q);
            }
        }
        let mut out = std::mem::replace(parts, Request::new(()).into_parts().0);
        keep_host(&mut out);
        strip_hop_by_hop(&mut out.headers);
        strip_identity_headers(&mut out.headers);
        out.headers.remove(header::AUTHORIZATION);
        out.headers.remove("x-api-key");
        strip_rewriting_headers(&mut out.headers);
        strip_token_cookie(&mut out.headers);
        if let Some(t) = internal {
            out.headers
                .insert(ward_dataplane::forward::INTERNAL_TOKEN, t);
        }
        forwarded_for(&mut out.headers, client, &self.network, conn.peer);
        out.headers
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        out.uri = route.upstream.target(&forwarded_path);
        out.version = Version::HTTP_11;
        let request = Request::from_parts(out, body);
        let mut response = match route.upstream.send(request).await {
            Ok(r) => r,
            Err(_) if failed.load(std::sync::atomic::Ordering::SeqCst) => {
                return (
                    label.clone(),
                    "allow",
                    close(refusal(StatusCode::BAD_REQUEST)),
                );
            }
            Err(e @ SendError::Upstream(_)) => {
                tracing::warn!(route = %label, upstream = %route.upstream.addr, error = %e.describe(), "the upstream is unreachable or failed verification");
                refusal(StatusCode::BAD_GATEWAY)
            }
            Err(SendError::Timeout) => refusal(StatusCode::GATEWAY_TIMEOUT),
        };
        if let Some(v) = &limit_headers {
            rate_headers(response.headers_mut(), v);
        }
        (label.clone(), "allow", response)
    }

    async fn authenticate(
        &self,
        route: &Route,
        conn: &ClientConn,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(Subject, Option<Bearer>), AuthError> {
        let anonymous = || Subject {
            sub: "anonymous".into(),
            credential: "none",
            ..Default::default()
        };
        // A public route looks at no credential (and forwards none).
        if route.config.auth == Auth::Public {
            return Ok((anonymous(), None));
        }
        let presented = auth::presented(headers, query)?;
        match route.config.auth {
            Auth::Public => Ok((anonymous(), None)),
            Auth::Jwt => {
                if presented.api_key.is_some() {
                    return Err(AuthError::Conflicting);
                }
                let Some(token) = presented.bearer else {
                    return Err(if presented.other_authorization {
                        AuthError::NotBearer
                    } else {
                        AuthError::Missing
                    });
                };
                let iss = auth::unverified_issuer(&token);
                let issuer = match (&iss, route.issuers.as_slice()) {
                    (Some(iss), list) => list
                        .iter()
                        .find(|i| &i.config.issuer == iss)
                        .ok_or(AuthError::UntrustedIssuer)?,
                    // No readable iss: the only issuer checks it (and refuses it).
                    (None, [only]) => only,
                    (None, _) => return Err(AuthError::UntrustedIssuer),
                };
                let claims = issuer.verify(&token).await?;
                Ok((Subject::from_claims(&claims), Some(Bearer { token })))
            }
            Auth::ApiKey => {
                if presented.bearer.is_some() || presented.other_authorization {
                    return Err(AuthError::Conflicting);
                }
                let key = presented.api_key.ok_or(AuthError::Missing)?;
                Ok((self.api_keys.check(&key)?, None))
            }
            Auth::Mtls => {
                if presented.bearer.is_some() || presented.api_key.is_some() {
                    return Err(AuthError::Conflicting);
                }
                let id = conn
                    .certificate
                    .as_ref()
                    .ok_or(AuthError::NoClientCertificate)?;
                Ok((
                    Subject {
                        sub: id.to_string(),
                        credential: "mtls",
                        ..Default::default()
                    },
                    None,
                ))
            }
        }
    }
}

/// Headers some frameworks read to change the path, the method or the
/// client they see (Symfony's `X-Original-URL`, method overrides, proxy
/// headers the gateway does not vouch for): a client must not be able to
/// reach another route or method than the one decided on.
const REWRITING_HEADERS: [&str; 11] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-proto",
];

fn strip_rewriting_headers(h: &mut HeaderMap) {
    for name in REWRITING_HEADERS {
        h.remove(name);
    }
}

/// An IPv4 address, or the /64 of an IPv6 address (one host usually owns
/// a whole /64: counting per address would let it rotate through them).
fn address_key(ip: IpAddr) -> String {
    match crate::config::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        v4 => v4.to_string(),
    }
}

/// `RateLimit-*` (draft-ietf-httpapi-ratelimit-headers) and `Retry-After`.
fn rate_headers(h: &mut HeaderMap, v: &Verdict) {
    h.insert("ratelimit-limit", HeaderValue::from(v.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(v.retry_after));
    if !v.allowed {
        h.insert(header::RETRY_AFTER, HeaderValue::from(v.retry_after.max(1)));
    }
}

/// The `access_token` cookie stays at the gateway; other cookies travel.
fn strip_token_cookie(h: &mut HeaderMap) {
    let cookies: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            !c.is_empty()
                && c.split_once('=')
                    .is_none_or(|(k, _)| k.trim() != "access_token")
        })
        .map(str::to_owned)
        .collect();
    h.remove(header::COOKIE);
    if !cookies.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
}

/// `X-Forwarded-For`: the vouched-for part of what a trusted proxy sent,
/// then the peer; from anyone else, only the peer.
fn forwarded_for(h: &mut HeaderMap, client: IpAddr, network: &NetworkConfig, peer: IpAddr) {
    let value = if network.is_trusted_proxy(peer) && client != peer {
        format!("{client}, {peer}")
    } else {
        peer.to_string()
    };
    h.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert("x-forwarded-for", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkConfig {
        NetworkConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        }
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_address(untrusted, &xff("1.2.3.4"), &net()),
            untrusted
        );
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        // The client forged the left part; the proxy appended what it saw.
        assert_eq!(
            client_address(proxy, &xff("6.6.6.6, 198.51.100.7"), &net()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(proxy, &xff("198.51.100.7, 10.0.0.9"), &net()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(proxy, &xff("garbage"), &net()), proxy);
        // Garbage the client put left of the address its proxy appended
        // does not make the proxy the client.
        assert_eq!(
            client_address(proxy, &xff("x, 198.51.100.7"), &net()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(proxy, &HeaderMap::new(), &net()), proxy);
    }

    #[test]
    fn token_cookies_stay_at_the_gateway() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; access_token=secret; b=2"),
        );
        strip_token_cookie(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
    }
}
