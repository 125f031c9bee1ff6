//! `ward policy explain`: one request decided offline exactly as an
//! inbound listener decides it — the same strict checks of the head, the
//! same authorization hook, the same policy engine — so that what it says
//! is what the proxy does.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, Request, Uri, Version};
use serde::Serialize;
use ward_identity::tls::PeerPolicy;
use ward_identity::{SpiffeId, TrustDomain};
use ward_policy::Engine;

use crate::authz::{Authorizer, CallFacts, Caller, DenyReason, Loaded, Methods, PolicySlot};
use crate::strict;

/// One request to explain.
#[derive(Debug, Clone)]
pub struct Question {
    /// The caller's SPIFFE ID.
    pub principal: String,
    /// The called service's SPIFFE ID (the proxy's own).
    pub service: Option<String>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub source: IpAddr,
    /// "http/1.1" or "h2".
    pub protocol: String,
    /// Federated trust domains the listener accepts.
    pub federated: Vec<TrustDomain>,
    pub extension_methods: Vec<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Explanation {
    pub allowed: bool,
    /// "allow", or the denial's reason label (`policy`, `no_policy`, …,
    /// or `malformed_request` for a head the strict checks refuse).
    pub reason: String,
    /// The status a caller would get.
    pub status: u16,
    /// The policies that determined the decision.
    pub policies: Vec<String>,
    /// Evaluation errors, and what was wrong with the request.
    pub errors: Vec<String>,
}

/// Why a question cannot be asked.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("--principal {0:?}: {1}")]
    Principal(String, String),
    #[error("--service {0:?}: {1}")]
    Service(String, String),
    #[error("--header {0:?}: {1}")]
    Header(String, String),
    #[error("{0}")]
    Methods(String),
}

/// Decides `q` on `engine` as an inbound listener would.
pub fn explain(engine: Engine, q: &Question) -> Result<Explanation, ExplainError> {
    let principal = SpiffeId::parse(&q.principal)
        .map_err(|e| ExplainError::Principal(q.principal.clone(), e.to_string()))?;
    let service = match &q.service {
        Some(s) => {
            Some(SpiffeId::parse(s).map_err(|e| ExplainError::Service(s.clone(), e.to_string()))?)
        }
        None => None,
    };
    // The listener's own domain is the service's (or, unnamed, the caller's).
    let own = service
        .as_ref()
        .map_or(principal.trust_domain(), |s| s.trust_domain())
        .clone();
    let peers = PeerPolicy::own_domain(own).with_federated(q.federated.iter().cloned());
    let slot = Arc::new(PolicySlot::default());
    slot.install(Loaded {
        engine,
        version: 0,
        revision: 0,
        sha256: String::new(),
        scoped_for: None,
    });
    let authorizer = Authorizer::new(
        slot,
        Methods::new(q.extension_methods.clone()).map_err(ExplainError::Methods)?,
    );
    let malformed = |e: String| Explanation {
        allowed: false,
        reason: "malformed_request".into(),
        status: 400,
        policies: Vec::new(),
        errors: vec![e],
    };
    let Ok(method) = Method::from_bytes(q.method.as_bytes()) else {
        return Ok(malformed(format!(
            "{:?} is not an HTTP method token",
            q.method
        )));
    };
    let Ok(uri) = q.path.parse::<Uri>() else {
        return Ok(malformed(format!("{:?} is not a request target", q.path)));
    };
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .version(if q.protocol == "h2" {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        });
    if !q
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        && q.protocol != "h2"
    {
        b = b.header("host", "service");
    }
    for (k, v) in &q.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let mut parts = b
        .body(())
        .map_err(|e| ExplainError::Header(String::new(), e.to_string()))?
        .into_parts()
        .0;
    if let Err(r) = strict::check_request(&mut parts, u64::MAX) {
        let mut e = malformed(r.to_string());
        e.status = r.status().as_u16();
        return Ok(e);
    }
    let caller = Caller {
        id_text: principal.to_string().into(),
        id: principal,
        cert_hash: String::new(),
        not_after: i64::MAX,
        source: q.source,
    };
    let headers = strict::context_headers(&parts.headers);
    let facts = CallFacts {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        protocol: if q.protocol == "h2" { "h2" } else { "http/1.1" },
        headers: &headers,
        token: None,
    };
    let own_id = service.map(|s| s.to_string()).unwrap_or_default();
    Ok(
        match authorizer.authorize(&caller, &own_id, Some(&peers), &facts) {
            Ok(permit) => Explanation {
                allowed: true,
                reason: "allow".into(),
                status: 200,
                policies: permit.policies.to_vec(),
                errors: Vec::new(),
            },
            Err(denial) => {
                let errors = match &denial.reason {
                    DenyReason::EvaluationError { errors } => errors.clone(),
                    DenyReason::InvalidPath(e) => vec![e.to_string()],
                    _ => Vec::new(),
                };
                Explanation {
                    allowed: false,
                    reason: denial.reason.label().into(),
                    status: denial.status().as_u16(),
                    policies: denial.policies().to_vec(),
                    errors,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(method: &str, path: &str) -> Question {
        Question {
            principal: "spiffe://td/ns/demo/sa/fe".into(),
            service: Some("spiffe://td/ns/demo/sa/orders".into()),
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            source: "127.0.0.1".parse().unwrap(),
            protocol: "http/1.1".into(),
            federated: Vec::new(),
            extension_methods: Vec::new(),
        }
    }

    fn engine() -> Engine {
        Engine::new(
            r#"@id("all") permit(principal, action, resource);
               @id("no-admin") forbid(principal, action, resource) when { resource.path like "/admin*" };
               @id("no-evil") forbid(principal, action, resource) when { context.headers has "host" && context.headers["host"] == "evil" };"#,
            Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn explains_allow_and_deny_with_the_deciding_policy() {
        let e = explain(engine(), &q("GET", "/x")).unwrap();
        assert_eq!(
            (e.allowed, e.policies.as_slice()),
            (true, &["all".to_string()][..])
        );
        let e = explain(engine(), &q("GET", "/admin/x")).unwrap();
        assert_eq!(
            (e.allowed, e.status, e.policies.as_slice()),
            (false, 403, &["no-admin".to_string()][..])
        );
        let mut evil = q("GET", "/x");
        evil.headers.push(("Host".into(), "evil".into()));
        assert_eq!(
            explain(engine(), &evil).unwrap().policies,
            ["no-evil".to_string()]
        );
    }

    #[test]
    fn requests_the_proxy_refuses_are_refused_here_too() {
        let e = explain(engine(), &q("connect", "/x")).unwrap();
        assert_eq!((e.reason.as_str(), e.status), ("unknown_method", 501));
        let e = explain(engine(), &q("GET", "/a/../admin")).unwrap();
        assert_eq!((e.reason.as_str(), e.status), ("invalid_path", 400));
        let mut two = q("GET", "/x");
        two.headers = vec![("host".into(), "a".into()), ("host".into(), "b".into())];
        assert_eq!(explain(engine(), &two).unwrap().reason, "malformed_request");
        let mut foreign = q("GET", "/x");
        foreign.principal = "spiffe://other/ns/demo/sa/fe".into();
        assert_eq!(
            explain(engine(), &foreign).unwrap().reason,
            "wrong_trust_domain"
        );
        foreign.federated = vec![TrustDomain::parse("other").unwrap()];
        assert!(explain(engine(), &foreign).unwrap().allowed);
    }
}
