//! The authorization hook: one call per request (or TCP connection) that
//! yields either a [`Permit`], which forwarding requires and only this
//! module can make, or a [`Denial`] that carries exactly why — the Cedar
//! policies that decided, or no policy, an invalid path, an unknown method,
//! an expired caller, a caller of a trust domain no longer accepted. The
//! caller is only ever told `403 forbidden` (or 400/501 for a request that
//! is not valid HTTP for us); the reason goes to the log and `/metrics`.
//!
//! The policy in force lives in a [`PolicySlot`]: sources (a file, the
//! server, a cache) install versions into it; every install bumps a
//! generation that long-lived TCP connections watch to re-authorize.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http::StatusCode;
use tokio::sync::watch;
use ward_identity::tls::PeerPolicy;
use ward_policy::Engine;

use crate::path::{PathError, canonical_path};

/// A validated policy version.
pub struct Loaded {
    pub engine: Engine,
    pub version: i64,
    pub revision: i64,
    pub sha256: String,
    /// The identity the server chose the policies for (a subset that can
    /// apply to it); `None` for a whole set (a local file).
    pub scoped_for: Option<String>,
}

/// The policy in force, shared by every listener of a process.
pub struct PolicySlot {
    current: RwLock<Option<Arc<Loaded>>>,
    generation: watch::Sender<u64>,
}

impl Default for PolicySlot {
    fn default() -> Self {
        Self {
            current: RwLock::new(None),
            generation: watch::Sender::new(0),
        }
    }
}

impl PolicySlot {
    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a validated version in force.
    pub fn install(&self, loaded: Loaded) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(loaded));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes whenever a version is installed.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The methods an HTTP listener accepts: RFC 9110's (but CONNECT, which
/// names no path and so never reaches a route) and the extension methods
/// named in configuration. Methods are case-sensitive (RFC 9110 §9.1):
/// `get` is not `GET`, and `connect` is never the TCP action.
#[derive(Debug, Clone, Default)]
pub struct Methods {
    extensions: Vec<String>,
}

/// The standard methods, as Cedar actions of the same name.
pub const STANDARD_METHODS: [&str; 8] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE",
];

impl Methods {
    /// Standard methods plus `extensions` (each an uppercase token).
    pub fn new(extensions: Vec<String>) -> Result<Self, String> {
        for m in &extensions {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
                return Err(format!(
                    "extension method {m:?}: use uppercase letters and '-' only"
                ));
            }
            if STANDARD_METHODS.contains(&m.as_str()) || m == "CONNECT" {
                return Err(format!("extension method {m:?} is a standard method"));
            }
        }
        Ok(Self { extensions })
    }

    /// The Cedar action for `method`: its own name when standard,
    /// `EXTENSION` (with the method in `context.method`) when configured.
    pub fn action(&self, method: &str) -> Option<&'static str> {
        if let Some(m) = STANDARD_METHODS.iter().find(|m| **m == method) {
            return Some(m);
        }
        self.extensions
            .iter()
            .any(|m| m == method)
            .then_some("EXTENSION")
    }
}

/// Why a call was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The policy decided: the forbids that matched, or none (no permit).
    Policy { policies: Vec<String> },
    /// A policy could not be evaluated (a failing forbid denies).
    EvaluationError { errors: Vec<String> },
    /// No policy is in force yet.
    NoPolicy,
    /// The path is not in canonical form.
    InvalidPath(PathError),
    /// The method is not one this listener accepts.
    UnknownMethod,
    /// The caller's certificate expired while the connection was open.
    ExpiredCaller,
    /// The caller's trust domain is not (or no longer) accepted.
    WrongTrustDomain,
    /// An internal token came and was refused (why, for the log).
    InvalidToken(String),
}

impl DenyReason {
    /// The bounded label for `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Policy { .. } => "policy",
            Self::EvaluationError { .. } => "evaluation_error",
            Self::NoPolicy => "no_policy",
            Self::InvalidPath(_) => "invalid_path",
            Self::UnknownMethod => "unknown_method",
            Self::ExpiredCaller => "expired_caller",
            Self::WrongTrustDomain => "wrong_trust_domain",
            Self::InvalidToken(_) => "invalid_token",
        }
    }
}

/// A denied call. Its status is what the caller sees; the reason is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    /// The canonical path, when the request had one (for the route label).
    pub path: Option<String>,
}

impl Denial {
    /// 400 for a path that is not canonical, 501 for a method we do not
    /// implement (RFC 9110 §15.6.2), 403 for everything authorization refused.
    pub fn status(&self) -> StatusCode {
        match self.reason {
            DenyReason::InvalidPath(_) => StatusCode::BAD_REQUEST,
            DenyReason::UnknownMethod => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The answer's body: no policy detail, ever.
    pub fn body(&self) -> &'static str {
        match self.reason {
            DenyReason::InvalidPath(_) => "bad request: the path is not in canonical form\n",
            DenyReason::UnknownMethod => "not implemented: unknown method\n",
            _ => "forbidden\n",
        }
    }

    /// The deciding policy IDs, when the policy decided.
    pub fn policies(&self) -> &[String] {
        match &self.reason {
            DenyReason::Policy { policies } => policies,
            _ => &[],
        }
    }

    pub fn new(reason: DenyReason) -> Self {
        Self { reason, path: None }
    }
}

/// Proof that a call was authorized. Only [`Authorizer::authorize`] makes
/// one (`non_exhaustive`: no other crate can build it); forwarding takes it
/// by value, so no code path can forward a call that skipped the decision.
#[derive(Debug)]
#[non_exhaustive]
pub struct Permit {
    /// The canonical path that was authorized (the app gets exactly this).
    pub path: String,
    /// The permits that allowed it (shared with the policy engine's cache).
    pub policies: Arc<[String]>,
}

/// What one decision reads from a request, already normalised (see
/// `strict`): the app later gets exactly the request these describe.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    pub method: &'a str,
    /// The path as received (canonicalised here).
    pub raw_path: &'a str,
    /// "http/1.1", "h2" or "tcp".
    pub protocol: &'a str,
    /// The headers the Cedar context reads, at most one value each.
    pub headers: &'a [(&'a str, &'a str)],
    /// The verified internal token's claims, if one came.
    pub token: Option<&'a ward_policy::TokenClaims>,
}

/// The verified caller of one connection.
#[derive(Debug)]
pub struct Caller {
    pub id: ward_identity::SpiffeId,
    /// `id` as text (used on every request).
    pub id_text: Arc<str>,
    /// Hex SHA-256 of the caller's leaf certificate.
    pub cert_hash: String,
    /// When the first certificate of the caller's chain expires, Unix seconds.
    pub not_after: i64,
    pub source: IpAddr,
}

/// The SPIFFE ID of the service a listener guards (the called side of
/// every decision), following SVID rotations; empty until the first SVID.
#[derive(Debug, Default)]
pub struct OwnId(RwLock<Arc<str>>);

impl OwnId {
    /// The ID now.
    pub fn get(&self) -> Arc<str> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Follows a new SVID.
    pub fn set(&self, id: &str) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(id);
    }
}

/// Decides calls on the policy in force.
#[derive(Clone)]
pub struct Authorizer {
    pub policy: Arc<PolicySlot>,
    pub methods: Methods,
}

impl Authorizer {
    pub fn new(policy: Arc<PolicySlot>, methods: Methods) -> Self {
        Self { policy, methods }
    }

    /// Decides one HTTP request. `peers` is the trust in force now: a
    /// connection verified under an older one may have lost its domain.
    pub fn authorize(
        &self,
        caller: &Caller,
        own_id: &str,
        peers: Option<&PeerPolicy>,
        facts: &CallFacts<'_>,
    ) -> Result<Permit, Denial> {
        let path = canonical_path(facts.raw_path);
        let Some(action) = self.methods.action(facts.method) else {
            return Err(Denial {
                reason: DenyReason::UnknownMethod,
                path: path.ok(),
            });
        };
        let path = path.map_err(|e| Denial::new(DenyReason::InvalidPath(e)))?;
        match self.decide(caller, own_id, peers, action, facts.method, &path, facts) {
            Ok(policies) => Ok(Permit { path, policies }),
            Err(mut denial) => {
                denial.path = Some(path);
                Err(denial)
            }
        }
    }

    /// Decides one opaque TCP connection (action `connect`, route `tcp:<listener>`).
    pub fn authorize_tcp(
        &self,
        caller: &Caller,
        own_id: &str,
        peers: Option<&PeerPolicy>,
        route: &str,
    ) -> Result<Permit, Denial> {
        let facts = CallFacts {
            method: "connect",
            raw_path: route,
            protocol: "tcp",
            token: None,
            headers: &[],
        };
        let policies = self.decide(caller, own_id, peers, "connect", "connect", route, &facts)?;
        Ok(Permit {
            path: route.to_string(),
            policies,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        caller: &Caller,
        own_id: &str,
        peers: Option<&PeerPolicy>,
        action: &str,
        method: &str,
        route: &str,
        facts: &CallFacts<'_>,
    ) -> Result<Arc<[String]>, Denial> {
        let Some(policy) = self.policy.current() else {
            return Err(Denial::new(DenyReason::NoPolicy));
        };
        // A subset chosen for another identity (ours changed since) may
        // lack the forbids that apply to us: nothing is allowed on it.
        if policy.scoped_for.as_deref().is_some_and(|s| s != own_id) {
            return Err(Denial::new(DenyReason::NoPolicy));
        }
        if peers.is_none_or(|p| p.admit(&caller.id).is_err()) {
            return Err(Denial::new(DenyReason::WrongTrustDomain));
        }
        let now = SystemTime::now();
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if caller.not_after <= now_secs {
            return Err(Denial::new(DenyReason::ExpiredCaller));
        }
        let call = ward_policy::Call {
            caller: &caller.id_text,
            destination: own_id,
            action,
            method,
            route,
            source: caller.source,
            time: now,
            protocol: facts.protocol,
            headers: facts.headers,
            token: facts.token,
        };
        let d = policy.engine.decide(&call);
        if d.allowed {
            Ok(d.policies)
        } else if !d.errors.is_empty() && d.policies.is_empty() {
            Err(Denial::new(DenyReason::EvaluationError {
                errors: d.errors,
            }))
        } else {
            Err(Denial::new(DenyReason::Policy {
                policies: d.policies.to_vec(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_identity::{SpiffeId, TrustDomain};

    const ORDERS: &str = "spiffe://td/ns/demo/sa/orders";

    fn caller(id: &str, not_after: i64) -> Caller {
        Caller {
            id: SpiffeId::parse(id).unwrap(),
            id_text: id.into(),
            cert_hash: String::new(),
            not_after,
            source: "127.0.0.1".parse().unwrap(),
        }
    }

    fn authorizer(text: &str) -> Authorizer {
        let slot = Arc::new(PolicySlot::default());
        slot.install(Loaded {
            engine: Engine::new(text, Default::default()).unwrap(),
            version: 1,
            revision: 1,
            sha256: String::new(),
            scoped_for: None,
        });
        Authorizer::new(slot, Methods::new(vec!["PROPFIND".into()]).unwrap())
    }

    fn facts<'a>(method: &'a str, path: &'a str) -> CallFacts<'a> {
        CallFacts {
            method,
            raw_path: path,
            protocol: "http/1.1",
            headers: &[],
            token: None,
        }
    }

    fn peers() -> PeerPolicy {
        PeerPolicy::own_domain(TrustDomain::parse("td").unwrap())
    }

    #[test]
    fn a_policy_chosen_for_another_identity_allows_nothing() {
        let slot = Arc::new(PolicySlot::default());
        let install = |scoped_for: Option<&str>| {
            slot.install(Loaded {
                engine: Engine::new("permit(principal, action, resource);", Default::default())
                    .unwrap(),
                version: 1,
                revision: 1,
                sha256: String::new(),
                scoped_for: scoped_for.map(str::to_owned),
            })
        };
        let a = Authorizer::new(slot.clone(), Methods::default());
        let fe = caller("spiffe://td/ns/demo/sa/fe", i64::MAX);
        let p = peers();
        install(Some("spiffe://td/ns/demo/sa/old-name"));
        let d = a
            .authorize(&fe, ORDERS, Some(&p), &facts("GET", "/x"))
            .unwrap_err();
        assert_eq!(d.reason, DenyReason::NoPolicy);
        install(Some(ORDERS));
        assert!(
            a.authorize(&fe, ORDERS, Some(&p), &facts("GET", "/x"))
                .is_ok()
        );
        install(None);
        assert!(
            a.authorize(&fe, ORDERS, Some(&p), &facts("GET", "/x"))
                .is_ok()
        );
    }

    #[test]
    fn every_denial_names_its_reason() {
        let a = authorizer(
            r#"@id("all") permit(principal, action, resource);
               @id("no-admin") forbid(principal, action, resource) when { resource.path like "/admin*" };"#,
        );
        let fe = caller("spiffe://td/ns/demo/sa/fe", i64::MAX);
        let p = peers();
        let ok = a
            .authorize(&fe, ORDERS, Some(&p), &facts("GET", "/x"))
            .unwrap();
        assert_eq!(
            (ok.path.as_str(), &*ok.policies),
            ("/x", &["all".to_string()][..])
        );
        let d = a
            .authorize(&fe, ORDERS, Some(&p), &facts("GET", "/admin/x"))
            .unwrap_err();
        assert_eq!(d.policies(), ["no-admin".to_string()]);
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        let d = a
            .authorize(&fe, ORDERS, Some(&p), &facts("connect", "/x"))
            .unwrap_err();
        assert_eq!(
            (d.reason.clone(), d.status()),
            (DenyReason::UnknownMethod, StatusCode::NOT_IMPLEMENTED)
        );
        let d = a
            .authorize(&fe, ORDERS, Some(&p), &facts("GET", "/a/../admin"))
            .unwrap_err();
        assert_eq!(d.status(), StatusCode::BAD_REQUEST);
        let old = caller("spiffe://td/ns/demo/sa/fe", 1);
        let d = a
            .authorize(&old, ORDERS, Some(&p), &facts("GET", "/x"))
            .unwrap_err();
        assert_eq!(d.reason, DenyReason::ExpiredCaller);
        let foreign = caller("spiffe://other/ns/demo/sa/fe", i64::MAX);
        let d = a
            .authorize(&foreign, ORDERS, Some(&p), &facts("GET", "/x"))
            .unwrap_err();
        assert_eq!(d.reason, DenyReason::WrongTrustDomain);
        // An extension method named in config reaches Cedar as EXTENSION.
        assert!(
            a.authorize(&fe, ORDERS, Some(&p), &facts("PROPFIND", "/x"))
                .is_ok()
        );
        let empty = Authorizer::new(Arc::new(PolicySlot::default()), Methods::default());
        let d = empty
            .authorize(&fe, ORDERS, Some(&p), &facts("GET", "/x"))
            .unwrap_err();
        assert_eq!(d.reason, DenyReason::NoPolicy);
    }

    #[test]
    fn no_permit_is_a_policy_denial_without_ids() {
        let a = authorizer(
            r#"@id("only-get") permit(principal, action == Ward::Action::"GET", resource);"#,
        );
        let fe = caller("spiffe://td/ns/demo/sa/fe", i64::MAX);
        let d = a
            .authorize(&fe, ORDERS, Some(&peers()), &facts("POST", "/x"))
            .unwrap_err();
        assert_eq!(d.reason, DenyReason::Policy { policies: vec![] });
    }

    #[test]
    fn extension_methods_must_be_uppercase_tokens() {
        assert!(Methods::new(vec!["propfind".into()]).is_err());
        assert!(Methods::new(vec!["GET".into()]).is_err());
        assert_eq!(Methods::default().action("PROPFIND"), None);
        assert_eq!(Methods::default().action("GET"), Some("GET"));
    }
}
