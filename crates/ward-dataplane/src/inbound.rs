//! The inbound HTTP request path, top to bottom: strict validation of the
//! head, the authorization hook (its [`Permit`](crate::authz::Permit) is
//! what forwarding takes), the checked start of the body, forwarding to
//! the app. Each phase that refuses carries its own answer; the caller
//! never learns more than the status. One [`CallRecord`] per request.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::authz::{Authorizer, CallFacts, Caller, Denial, DenyReason, OwnId};
use crate::body::{Prepared, RequestBody};
use crate::forward::{
    AppClient, Dedicated, ResponseBody, SendError, plain, plain_and_close, xfcc_value,
};
use crate::framing::Framing;
use crate::listener::TrustWatch;
use crate::path::{metric_route, route_segment};
use crate::strict;
use crate::telemetry::{CallRecord, Telemetry, method_label, status_class};

/// Bodies up to this size are read and checked before anything is
/// forwarded (see `body`).
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// What every request of one inbound connection shares.
pub struct Connection {
    /// The verified caller.
    caller: Arc<Caller>,
    /// What the byte-level scan of the connection found.
    framing: Arc<Framing>,
    /// The connection's own connection to the app.
    upstream: Dedicated,
    /// The `x-forwarded-client-cert` value, built once per connection (and
    /// again only if our own ID changes).
    xfcc: std::sync::Mutex<Option<(Arc<str>, HeaderValue)>>,
    /// The last route label, reused while requests keep to one route.
    route: std::sync::Mutex<Option<Arc<str>>>,
}

impl Connection {
    pub fn new(caller: Arc<Caller>, framing: Arc<Framing>) -> Self {
        Self {
            caller,
            framing,
            upstream: Dedicated::default(),
            xfcc: std::sync::Mutex::new(None),
            route: std::sync::Mutex::new(None),
        }
    }

    /// The route label of `path` (see [`metric_route`]), allocated only
    /// when it differs from the previous request's.
    fn route_label(&self, path: &str) -> Arc<str> {
        let segment = route_segment(path);
        let mut last = self.route.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some(r) if r.strip_prefix('/') == Some(segment) => r.clone(),
            _ => {
                let r: Arc<str> = metric_route(path).into();
                *last = Some(r.clone());
                r
            }
        }
    }

    fn xfcc(&self, own_id: &Arc<str>) -> HeaderValue {
        let mut cached = self.xfcc.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((id, v)) if id == own_id => v.clone(),
            _ => {
                let v = xfcc_value(own_id, &self.caller);
                *cached = Some((own_id.clone(), v.clone()));
                v
            }
        }
    }
}

/// One inbound HTTP listener's request path.
pub struct InboundHttp {
    pub listener: Arc<str>,
    /// Our own SPIFFE ID (the called service), following rotations.
    pub own_id: Arc<OwnId>,
    pub authorizer: Authorizer,
    pub trust: TrustWatch,
    pub app: AppClient,
    pub telemetry: Arc<Telemetry>,
    /// A declared Content-Length above this is refused (413) unread.
    pub max_body: u64,
    pub buffer_limit: usize,
    /// How long the checked start of a body may take to arrive, and the
    /// longest pause in the rest (a caller that sends a head, or part of a
    /// body, and then nothing must not hold a request open).
    pub body_timeout: std::time::Duration,
    /// The issuer of internal tokens, when this listener checks them.
    pub tokens: Option<Arc<ward_oidc::Issuer>>,
}

/// The internal token of a request, checked: `Ok(None)` when none came
/// (or this listener does not check them: then it is dropped unread).
async fn internal_token(
    tokens: Option<&ward_oidc::Issuer>,
    headers: &http::HeaderMap,
    caller: &Caller,
) -> Result<Option<(ward_policy::TokenClaims, HeaderValue)>, String> {
    let mut values = headers.get_all(crate::forward::INTERNAL_TOKEN).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let Some(tokens) = tokens else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("two internal tokens".into());
    }
    let text = value
        .to_str()
        .map_err(|_| "not visible ASCII".to_string())?;
    let claims = tokens.verify(text).await.map_err(|e| e.to_string())?;
    // Bound to a certificate (RFC 8705): only the workload it was issued
    // to may present it. An internal token comes from a gateway that
    // exchanged it with its SVID, so it is always bound; an unbound one
    // is a bearer token anyone who saw it could replay.
    let Some(bound) = claims["cnf"]["x5t#S256"].as_str() else {
        return Err("the token is not bound to a certificate (cnf)".into());
    };
    {
        use base64::Engine;
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(bound)
            .map_err(|_| "cnf is not base64url".to_string())?;
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if hex != caller.cert_hash {
            return Err("the token is bound to another certificate than the caller's".into());
        }
    }
    Ok(Some((
        ward_policy::TokenClaims::from_claims(&claims),
        value.clone(),
    )))
}

impl InboundHttp {
    /// Validates, authorizes and forwards one request.
    /// One request of the connection `conn`.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<Connection>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let (caller, framing, upstream) = (&conn.caller, &conn.framing, &conn.upstream);
        let own_id = self.own_id.get();
        let mut record = CallRecord::start(
            self.telemetry.clone(),
            caller.id_text.clone(),
            own_id.clone(),
            method_label(req.method().as_str()),
        );
        let (mut parts, body) = req.into_parts();
        let no_body = hyper::body::Body::is_end_stream(&body);

        // Called for every request, in order, so the scan's index lines up.
        let checked = if framing.next_is_ambiguous() {
            Err(strict::Rejection::LengthAndEncoding)
        } else {
            strict::check_request(&mut parts, self.max_body)
        };
        if let Err(r) = checked {
            tracing::info!(caller = %caller.id_text, listener = %self.listener, reason = %r, "refused a malformed request");
            self.telemetry.record_rejection(r.label());
            record.outcome(status_class(r.status().as_u16()), "deny");
            return Ok(plain_and_close(r.status(), rejection_text(r.status())));
        }

        let protocol = if parts.version == Version::HTTP_2 {
            "h2"
        } else {
            "http/1.1"
        };
        let trust = self.trust.borrow().clone();
        let token = internal_token(self.tokens.as_deref(), &parts.headers, caller).await;
        let decision = match &token {
            Err(why) => Err(Denial::new(DenyReason::InvalidToken(why.clone()))),
            Ok(token) => {
                let headers = strict::context_headers(&parts.headers);
                let facts = CallFacts {
                    method: parts.method.as_str(),
                    raw_path: parts.uri.path(),
                    protocol,
                    headers: &headers,
                    token: token.as_ref().map(|(c, _)| c),
                };
                self.authorizer.authorize(
                    caller,
                    &own_id,
                    trust.as_ref().map(|t| &*t.peers),
                    &facts,
                )
            }
        };
        let token_header = token.ok().flatten().map(|(_, v)| v);
        let permit = match decision {
            Ok(p) => p,
            Err(denial) => {
                if let Some(path) = &denial.path {
                    record.edge.route = conn.route_label(path);
                }
                let policies = denial.policies();
                match &denial.reason {
                    DenyReason::EvaluationError { errors } => {
                        tracing::warn!(caller = %caller.id_text, method = %parts.method, route = %record.edge.route, listener = %self.listener, reason = denial.reason.label(), ?errors, "denied")
                    }
                    DenyReason::InvalidPath(e) => {
                        tracing::info!(caller = %caller.id_text, method = %parts.method, listener = %self.listener, reason = denial.reason.label(), error = %e, "denied")
                    }
                    DenyReason::InvalidToken(e) => {
                        tracing::info!(caller = %caller.id_text, method = %parts.method, listener = %self.listener, reason = denial.reason.label(), error = %e, "denied")
                    }
                    _ => {
                        tracing::info!(caller = %caller.id_text, method = %parts.method, route = %record.edge.route, listener = %self.listener, reason = denial.reason.label(), ?policies, "denied")
                    }
                }
                self.telemetry
                    .record_denial(denial.reason.label(), policies);
                record.outcome(status_class(denial.status().as_u16()), "deny");
                if parts.version == Version::HTTP_2 {
                    // Answering while the caller is still sending makes the
                    // stream end in a reset that some clients report instead
                    // of the 403; a small body is read (and dropped) first.
                    drain_briefly(body, self.buffer_limit).await;
                }
                return Ok(plain(denial.status(), denial.body()));
            }
        };
        record.edge.route = conn.route_label(&permit.path);

        let failed = Arc::new(AtomicBool::new(false));
        let prepare =
            RequestBody::prepare(body, self.buffer_limit, self.body_timeout, failed.clone());
        // A request without a body (most GETs) has nothing to wait for: no
        // timer is armed for it.
        let prepared = if no_body {
            Ok(prepare.await)
        } else {
            tokio::time::timeout(self.body_timeout, prepare).await
        };
        let body = match prepared {
            Ok(Prepared::Ready(b)) => b,
            Err(_) => {
                tracing::info!(caller = %caller.id_text, listener = %self.listener, "the request body did not arrive in time");
                self.telemetry.record_rejection("body_timeout");
                record.outcome("4xx", "allow");
                return Ok(plain_and_close(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timeout: the body did not arrive in time\n",
                ));
            }
            Ok(Prepared::Malformed(e)) => {
                tracing::info!(caller = %caller.id_text, listener = %self.listener, error = %e, "refused a malformed request body");
                self.telemetry.record_rejection("malformed_body");
                record.outcome("4xx", "allow");
                return Ok(plain_and_close(
                    StatusCode::BAD_REQUEST,
                    "bad request: malformed body\n",
                ));
            }
        };

        let response = match self
            .app
            .forward(
                permit,
                conn.xfcc(&own_id),
                token_header,
                parts,
                body,
                upstream,
            )
            .await
        {
            Ok(r) => r,
            // The caller's body broke mid-stream: their fault, not the app's.
            Err(_) if failed.load(Ordering::SeqCst) => {
                tracing::info!(caller = %caller.id_text, listener = %self.listener, "refused a malformed request body (after its first bytes were forwarded)");
                self.telemetry.record_rejection("malformed_body");
                plain_and_close(StatusCode::BAD_REQUEST, "bad request: malformed body\n")
            }
            Err(SendError::Upstream(e)) => {
                tracing::warn!(app = %self.app.app, error = %e, "the app is unreachable");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: the service is unreachable\n",
                )
            }
            Err(SendError::Timeout) => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: the service did not answer in time\n",
            ),
        };
        record.outcome(status_class(response.status().as_u16()), "allow");
        Ok(response)
    }
}

/// Reads and drops up to `limit` bytes of a denied request's body, for at
/// most a second.
async fn drain_briefly(mut body: Incoming, limit: usize) {
    use http_body_util::BodyExt;
    let drain = async {
        let mut seen = 0;
        while seen < limit {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

fn rejection_text(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_IMPLEMENTED => "not implemented: transfer coding\n",
        StatusCode::PAYLOAD_TOO_LARGE => "payload too large\n",
        _ => "bad request\n",
    }
}
