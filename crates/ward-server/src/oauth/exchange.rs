//! Token exchange (RFC 8693). A client — the actor — presents a subject
//! token (one of Ward's own, or a user's token from an OIDC issuer the
//! server is configured to trust) and gets a down-scoped, audience-bound,
//! short-lived token for the same subject whose `act` claim records the
//! delegation (the actor outermost, earlier actors nested). Which actor
//! may exchange what for which audience is the exchange policy, in Cedar
//! (`ward token policy write`); without one, nothing is exchanged.
//!
//! Queued work: asking for `requested_token_type` =
//! `urn:ward:params:oauth:token-type:event` with the queue's `max_delay`
//! gives an *event token* (`token_use: event`), living `max_delay` (at
//! most `oauth.event_max_ttl`, and as the policy allows), which the
//! consumer verifies offline long after the user's own token expired.
//! Gateways and sidecars never accept an event token as an access token.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ward_policy::edge::Subject;
use ward_policy::exchange::{Exchange, ExchangePolicy};
use ward_store::{AuditEvent, now_secs};

use super::token::{Authed, Form, OAuthError, default_claims, verify_own};
use super::{keys, public_json};
use crate::error::ApiError;
use crate::state::Server;

pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub(crate) const EVENT_TOKEN: &str = "urn:ward:params:oauth:token-type:event";
const POLICY_KEY: &str = "oauth/exchange-policy";
/// How long the parsed policy is used before the store is read again.
const POLICY_TTL: Duration = Duration::from_secs(2);
/// The longest `act` chain kept (older actors beyond it are dropped from
/// the claim, never added).
const MAX_ACT_DEPTH: usize = 8;

/// The stored exchange policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPolicy {
    text: String,
    version: i64,
    updated_at: i64,
}

/// The parsed policy in force, cached.
#[derive(Default)]
pub(crate) struct PolicyCache(RwLock<Option<(Instant, Option<Arc<ExchangePolicy>>)>>);

impl PolicyCache {
    fn invalidate(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

async fn policy(s: &Server) -> Result<Option<Arc<ExchangePolicy>>, ApiError> {
    if let Some((at, p)) = s
        .oauth
        .exchange_policy
        .0
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        && at.elapsed() < POLICY_TTL
    {
        return Ok(p.clone());
    }
    let master = s.master()?;
    let stored: Option<StoredPolicy> = crate::vault::load_record(s, &master, POLICY_KEY).await?;
    let parsed = match stored {
        // Validated when written; a row that does not parse now was not
        // written by us: refuse every exchange rather than guess.
        Some(p) => Some(Arc::new(
            ExchangePolicy::new(&p.text).map_err(|_| crate::vault::integrity(POLICY_KEY))?,
        )),
        None => None,
    };
    *s.oauth
        .exchange_policy
        .0
        .write()
        .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), parsed.clone()));
    Ok(parsed)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyWrite {
    policy: String,
}

/// `PUT /v1/oauth/exchange-policy` (admin): validated, then in force.
pub(crate) async fn write_policy(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = s.authenticate(&headers).await?;
    let master = s.master()?;
    let req: PolicyWrite = crate::error::parse_json(&body)?;
    let set = ward_policy::exchange::validate(&req.policy)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let previous: Option<StoredPolicy> = crate::vault::load_record(&s, &master, POLICY_KEY).await?;
    let stored = StoredPolicy {
        version: previous.map_or(1, |p| p.version + 1),
        text: req.policy,
        updated_at: now_secs(),
    };
    let sha = hex_sha256(stored.text.as_bytes());
    let event = AuditEvent::new(
        caller.actor(),
        "oauth.exchange-policy.write",
        POLICY_KEY,
        json!({"version": stored.version, "sha256": sha, "policies": set.policies().count()}),
    );
    let mut tx = s.store.vault_begin(POLICY_KEY).await?;
    tx.put(
        POLICY_KEY,
        &crate::vault::seal_json(&master, POLICY_KEY, &stored)?,
    )
    .await?;
    tx.commit(&[event]).await?;
    s.oauth.exchange_policy.invalidate();
    Ok(Json(json!({"version": stored.version, "sha256": sha})).into_response())
}

/// `GET /v1/oauth/exchange-policy` (admin).
pub(crate) async fn read_policy(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authenticate(&headers).await?;
    let master = s.master()?;
    let stored: Option<StoredPolicy> = crate::vault::load_record(&s, &master, POLICY_KEY).await?;
    Ok(Json(match stored {
        Some(p) => json!({"version": p.version, "updated_at": p.updated_at, "sha256": hex_sha256(p.text.as_bytes()), "policy": p.text}),
        None => json!({"version": 0, "policy": ""}),
    })
    .into_response())
}

fn hex_sha256(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn grant_error(code: &'static str, d: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, code, d)
}

/// The subject token's claims: Ward's own, or a trusted issuer's.
async fn subject_claims(s: &Server, token: &str) -> Result<Value, OAuthError> {
    let invalid = || grant_error("invalid_grant", "the subject token is not valid");
    let iss = ward_oidc::unverified_issuer(token).ok_or_else(invalid)?;
    if iss == s.issuer() {
        return verify_own(s, token).await?.ok_or_else(invalid);
    }
    let issuer = s
        .oauth
        .trusted()
        .into_iter()
        .find(|i| i.config.issuer == iss)
        .ok_or_else(|| {
            grant_error(
                "invalid_grant",
                "the subject token's issuer is not trusted (oauth.trusted_issuer)",
            )
        })?;
    issuer.verify(token).await.map_err(|e| {
        tracing::info!(issuer = %issuer.config.name, error = %e, "refused a subject token");
        invalid()
    })
}

/// The `act` claim of the new token: the actor, then whoever acted before.
fn act_claim(actor: &str, client_id: &str, previous: &Value) -> Value {
    let mut chain = Vec::new();
    let mut cur = previous;
    while let Some(a) = cur.as_object() {
        if chain.len() >= MAX_ACT_DEPTH - 1 {
            break;
        }
        chain.push(a.get("sub").cloned().unwrap_or(Value::Null));
        cur = a.get("act").unwrap_or(&Value::Null);
    }
    let mut nested = Value::Null;
    for sub in chain.into_iter().rev() {
        let mut o = serde_json::Map::new();
        o.insert("sub".into(), sub);
        if !nested.is_null() {
            o.insert("act".into(), nested);
        }
        nested = Value::Object(o);
    }
    let mut o = serde_json::Map::new();
    o.insert("sub".into(), actor.into());
    o.insert("client_id".into(), client_id.into());
    if !nested.is_null() {
        o.insert("act".into(), nested);
    }
    Value::Object(o)
}

/// Parses `max_delay`: seconds, or a duration such as `2h`.
fn parse_delay(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return (n > 0).then_some(n);
    }
    humantime::parse_duration(v)
        .ok()
        .map(|d| d.as_secs() as i64)
        .filter(|n| *n > 0)
}

/// The token-exchange grant, for the authenticated client `authed`.
pub(crate) async fn exchange(
    s: &Server,
    authed: &Authed,
    form: &Form,
) -> Result<Response, OAuthError> {
    let token = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::request("subject_token is missing"))?;
    match form.get("subject_token_type").map(String::as_str) {
        Some(ACCESS_TOKEN | JWT) => {}
        Some(t) => {
            return Err(grant_error(
                "invalid_request",
                format!("subject_token_type {t:?} is not supported (access_token or jwt)"),
            ));
        }
        None => return Err(OAuthError::request("subject_token_type is missing")),
    }
    if form.contains_key("actor_token") {
        return Err(OAuthError::request(
            "actor_token is not supported: the authenticated client is the actor",
        ));
    }
    let audience = match (form.get("audience"), form.get("resource")) {
        (Some(a), Some(r)) if a != r => {
            return Err(OAuthError::request(
                "audience and resource differ; send one",
            ));
        }
        (Some(a), _) | (None, Some(a)) => a.clone(),
        (None, None) => {
            return Err(grant_error(
                "invalid_target",
                "audience is missing: name the service the new token is for",
            ));
        }
    };
    if audience.is_empty() || audience.len() > 512 || audience.contains(' ') {
        return Err(grant_error(
            "invalid_target",
            "the audience is not one name",
        ));
    }
    let event = match form.get("requested_token_type").map(String::as_str) {
        None | Some(ACCESS_TOKEN) => false,
        Some(EVENT_TOKEN) => true,
        Some(t) => {
            return Err(grant_error(
                "invalid_request",
                format!(
                    "requested_token_type {t:?} is not supported (access_token, or {EVENT_TOKEN})"
                ),
            ));
        }
    };
    let claims = subject_claims(s, token).await?;
    // An event token is for its consumer to verify, not to trade: taken as
    // a subject it would renew its own lifetime or turn into access
    // tokens for as long as it lives.
    if claims["token_use"].as_str() == Some("event") {
        return Err(grant_error(
            "invalid_grant",
            "an event token cannot be exchanged",
        ));
    }
    let mut subject = Subject::from_claims(&claims);
    // Who the user really is: the issuer that authenticated them, also
    // after Ward's own exchanges.
    if let Some(original) = claims["subject_issuer"].as_str() {
        subject.issuer = original.to_owned();
    }
    if subject.sub.is_empty() {
        return Err(grant_error("invalid_grant", "the subject token has no sub"));
    }
    // Down-scoped: never more than the subject token carries.
    let scopes = match form.get("scope") {
        None => subject.scopes.clone(),
        Some(asked) => {
            let mut out: Vec<String> = Vec::new();
            for sc in asked.split(' ').filter(|x| !x.is_empty()) {
                if !subject.scopes.iter().any(|h| h == sc) {
                    return Err(grant_error(
                        "invalid_scope",
                        format!("the subject token does not carry scope {sc:?}"),
                    ));
                }
                if !out.iter().any(|o| o == sc) {
                    out.push(sc.to_owned());
                }
            }
            out
        }
    };
    let now = now_secs();
    let lifetime = if event {
        let delay = form
            .get("max_delay")
            .and_then(|d| parse_delay(d))
            .ok_or_else(|| {
                OAuthError::request(
                    "an event token needs max_delay: the queue's longest delay (seconds, or 2h)",
                )
            })?;
        let max = s.config.oauth.event_max_ttl.as_secs() as i64;
        if delay > max {
            return Err(OAuthError::request(format!(
                "max_delay is over oauth.event_max_ttl ({max} s)"
            )));
        }
        delay
    } else {
        // Never outlives the subject token.
        let subject_exp = claims["exp"].as_i64().unwrap_or(now);
        let l = (s.config.oauth.token_ttl.as_secs() as i64).min(subject_exp - now);
        if l <= 0 {
            return Err(grant_error(
                "invalid_grant",
                "the subject token has expired",
            ));
        }
        l
    };
    let c = &authed.client;
    let Some(policy) = policy(s).await? else {
        return Err(grant_error(
            "unauthorized_client",
            "no exchange policy is in force: write one with `ward token policy write`",
        ));
    };
    let kind = if event { "event" } else { "access" };
    let decision = policy.decide(&Exchange {
        client_id: &c.client_id,
        client_spiffe_id: c.spiffe_id.as_deref().unwrap_or(""),
        audience: &audience,
        subject: &subject,
        scopes: &scopes,
        lifetime,
        kind,
    });
    if !decision.allowed {
        let event = AuditEvent::new(
            format!("client:{}", c.client_id),
            "oauth.token.exchange-denied",
            &audience,
            json!({"sub": subject.sub, "issuer": subject.issuer, "kind": kind, "policies": decision.policies, "errors": decision.errors}),
        );
        s.audit.append(event).await.map_err(ApiError::from)?;
        return Err(grant_error(
            "unauthorized_client",
            format!(
                "the exchange policy does not allow this client a {kind} token for {audience:?}"
            ),
        ));
    }
    let mut out = default_claims(
        s,
        &subject.sub,
        &c.client_id,
        std::slice::from_ref(&audience),
        &scopes,
        now,
        lifetime,
    )?;
    let actor = c.spiffe_id.clone().unwrap_or_else(|| c.client_id.clone());
    out.insert(
        "act".into(),
        act_claim(&actor, &c.client_id, &claims["act"]),
    );
    for k in ["tenant", "roles"] {
        if let Some(v) = claims.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if subject.issuer != s.issuer() {
        out.insert("subject_issuer".into(), subject.issuer.clone().into());
    }
    // The subject token's own binding travels to the policy's view only
    // through the actor's authentication: an exchanged token is bound to
    // the actor (below), never to whoever held the subject token.
    if event {
        out.insert("token_use".into(), "event".into());
    }
    if let Some(x5t) = &authed.x5t
        && !event
    {
        out.insert("cnf".into(), json!({"x5t#S256": x5t}));
    }
    let master = s.master()?;
    let ring = keys::ring(s, &master).await?;
    let key = ring
        .signer(now)
        .ok_or_else(|| ApiError::Internal("no signing key is active".into()))?;
    let jti = out["jti"].as_str().unwrap_or_default().to_owned();
    let signed = key.sign("at+jwt", &Value::Object(out))?;
    let audit = AuditEvent::new(
        format!("client:{}", c.client_id),
        "oauth.token.exchange",
        &audience,
        json!({"jti": jti, "sub": subject.sub, "issuer": subject.issuer, "subject_jti": claims["jti"], "kind": kind, "scope": scopes.join(" "), "lifetime": lifetime, "policies": decision.policies, "kid": key.kid}),
    );
    s.audit.append(audit).await.map_err(ApiError::from)?;
    Ok(public_json(
        StatusCode::OK,
        json!({
            "access_token": signed,
            "issued_token_type": if event { EVENT_TOKEN } else { ACCESS_TOKEN },
            "token_type": if event { "N_A" } else { "Bearer" },
            "expires_in": lifetime,
            "scope": scopes.join(" "),
        }),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_act_chain_puts_the_actor_outermost() {
        let prev = json!({"sub": "spiffe://td/gw", "act": {"sub": "first"}});
        let a = act_claim("spiffe://td/orders", "orders", &prev);
        assert_eq!(a["sub"], "spiffe://td/orders");
        assert_eq!(a["act"]["sub"], "spiffe://td/gw");
        assert_eq!(a["act"]["act"]["sub"], "first");
        let deep = (0..20).fold(Value::Null, |acc, i| {
            let mut o = serde_json::Map::new();
            o.insert("sub".into(), format!("a{i}").into());
            if !acc.is_null() {
                o.insert("act".into(), acc);
            }
            Value::Object(o)
        });
        let mut depth = 0;
        let mut cur = &act_claim("x", "x", &deep);
        while let Some(o) = cur.as_object() {
            depth += 1;
            cur = o.get("act").unwrap_or(&Value::Null);
        }
        assert_eq!(depth, MAX_ACT_DEPTH);
        assert_eq!(parse_delay("2h"), Some(7200));
        assert_eq!(parse_delay("90"), Some(90));
        assert_eq!(parse_delay("-5"), None);
    }
}
