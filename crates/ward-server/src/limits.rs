//! Per-address limits on what an unauthenticated caller can try: requests
//! to the endpoints that take no token (unseal, attest), and failed
//! authentications anywhere (401, 403, a wrong share or join token). An
//! address over either limit gets `429` with `Retry-After` until its quota
//! refills, so shares and join tokens cannot be guessed at speed and a
//! flood of bad attempts costs the server little; everyone else is served
//! as before. Addresses are counted per IPv4 address and per IPv6 /64 (one
//! host usually owns a whole /64, so counting per address would let it
//! rotate through 2^64 of them).
//!
//! A block must not become a way to lock others out: many users share an
//! address (a NAT, a bastion), and anyone there can fail on purpose. So a
//! caller with a verified SVID (an agent, a proxy) is never turned away
//! from the endpoints that authenticate it (the open ones count it as
//! anyone),
//! and a blocked address may still present an API token on the
//! token-taking endpoints: a valid one is served; a wrong one is still
//! counted and refused with 401, and guessing a 256-bit token at any rate
//! is hopeless. What a block stops is the open endpoints and tokenless
//! requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The endpoints that take no token.
const OPEN_PATHS: [&str; 2] = ["/v1/sys/unseal", "/v1/agent/attest"];
/// Most addresses remembered as blocked (beyond it, the oldest go first).
const MAX_BLOCKED: usize = 10_000;

/// The client's address, set by the listener on every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// What a limit counts: an IPv4 address (also when it arrives mapped into
/// IPv6), or the /64 an IPv6 address belongs to.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// True when the request presents an API token (either header the server
/// reads tokens from).
fn presents_token(req: &axum::extract::Request) -> bool {
    let h = req.headers();
    h.contains_key(header::AUTHORIZATION) || h.contains_key(crate::auth::VAULT_TOKEN)
}

pub struct Limits {
    open: DefaultKeyedRateLimiter<IpAddr>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl Limits {
    /// `open_per_minute` requests to the open endpoints, and
    /// `failures_per_minute` failed authentications, per address.
    pub fn new(open_per_minute: u32, failures_per_minute: u32) -> Self {
        let quota =
            |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            open: RateLimiter::keyed(quota(open_per_minute)),
            failures: RateLimiter::keyed(quota(failures_per_minute)),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// How long `ip` must wait, if it is over a limit now.
    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Some(*until - Instant::now()),
            Some(_) => {
                blocked.remove(&ip);
                None
            }
            None => None,
        }
    }

    fn block(&self, ip: IpAddr, wait: Duration) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= MAX_BLOCKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= MAX_BLOCKED {
                blocked.clear();
            }
        }
        blocked.insert(ip, Instant::now() + wait);
    }

    /// Forgets addresses whose quotas are full again (called periodically).
    pub fn tidy(&self) {
        self.open.retain_recent();
        self.failures.retain_recent();
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut resp = crate::error::json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &ward_api::ErrorBody {
            errors: vec![format!(
                "too many attempts from this address: retry in {secs} s"
            )],
        },
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Answers 429 after reading (and dropping) a small body, so that the
/// client reads the answer instead of a reset of a request it was still
/// sending.
async fn refuse(req: axum::extract::Request, wait: Duration) -> Response {
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024);
    let _ = tokio::time::timeout(Duration::from_secs(1), body).await;
    too_many(wait)
}

/// The middleware: refuses blocked addresses, counts open-endpoint
/// requests and failed authentications.
pub async fn limit(
    axum::extract::State(limits): axum::extract::State<std::sync::Arc<Limits>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>().copied() else {
        return next.run(req).await;
    };
    let ip = client_key(addr);
    let open = OPEN_PATHS.contains(&req.uri().path());
    // The token service's endpoints authenticate clients by what the
    // request carries (HTTP Basic, a form secret, an assertion): holding an
    // Authorization header proves nothing there, and every failure is an
    // audit event, so a blocked address is refused whatever it sends.
    let oauth = req.uri().path().starts_with("/oauth/");
    // A caller with a verified SVID (an agent, a proxy) is who it says it
    // is: never turned away from what it authenticates for, so a neighbour
    // failing on purpose from the same address cannot cut agents off from
    // the server. The open endpoints (unseal, attest) take no SVID, so
    // holding one earns no exemption there.
    if !open
        && req
            .extensions()
            .get::<crate::peer::PeerId>()
            .is_some_and(|p| p.id.is_some() && p.not_after > ward_store::now_secs())
    {
        return next.run(req).await;
    }
    if let Some(wait) = limits.blocked_for(ip)
        && (open || oauth || !presents_token(&req))
    {
        return refuse(req, wait).await;
    }
    if open && let Err(not_until) = limits.open.check_key(&ip) {
        let wait = not_until.wait_time_from(limits.clock.now());
        limits.block(ip, wait);
        tracing::warn!(client = %ip, path = req.uri().path(), "too many unauthenticated requests from one address");
        return refuse(req, wait).await;
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let failed = status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || ((open || oauth) && status == StatusCode::BAD_REQUEST)
        || (open && status.is_client_error());
    if failed && let Err(not_until) = limits.failures.check_key(&ip) {
        let wait = not_until.wait_time_from(limits.clock.now());
        limits.block(ip, wait);
        tracing::warn!(client = %ip, "too many failed authentications from one address: blocked for a while");
    }
    resp.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(client_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }
}
