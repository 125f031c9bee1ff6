//! Workload logins, as Vault's `cert` and `jwt` auth methods answer them
//! (hvac's `auth.cert.login` and `auth.jwt.jwt_login`), and the token
//! self-service endpoints (`auth/token/lookup-self`, `renew-self`,
//! `revoke-self`).
//!
//! A workload proves who it is with its X.509-SVID over mutual TLS or a
//! JWT-SVID for the vault's audience, and gets a short-lived, renewable
//! token bound to that SPIFFE ID; what the token may do follows the ID
//! through the vault's Cedar policies. The `role` Vault clients send is
//! accepted under any name: grants follow the SPIFFE ID, never a role.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use ward_store::{AuditEvent, now_secs};

use super::access::{VaultCaller, WORKLOAD_ROLE, caller, request_token};
use super::{parse_body, random_hex, vault_json};
use crate::auth::token_hash;
use crate::error::{ApiError, parse_json};
use crate::peer::PeerId;
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/auth/jwt/login", post(jwt_login).put(jwt_login))
        .route("/v1/auth/cert/login", post(cert_login).put(cert_login))
        .route(
            "/v1/auth/token/lookup-self",
            get(lookup_self).post(lookup_self),
        )
        .route(
            "/v1/auth/token/renew-self",
            post(renew_self).put(renew_self),
        )
        .route(
            "/v1/auth/token/revoke-self",
            post(revoke_self).put(revoke_self),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtLogin {
    #[serde(default)]
    role: Option<String>,
    jwt: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertLogin {
    #[serde(default)]
    name: Option<String>,
}

/// The lifetime a renewal may ask for (`increment`), Vault-style.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    #[serde(default)]
    increment: Option<serde_json::Value>,
}

/// Issues a workload token for `spiffe_id` and answers it in Vault's `auth` shape.
async fn issue(
    s: &Server,
    spiffe_id: &str,
    method: &str,
    role: Option<&str>,
) -> Result<Response, ApiError> {
    let _ = s.master()?;
    // One identity cannot fill the token table by logging in in a loop.
    let token_role = format!("{WORKLOAD_ROLE}{spiffe_id}");
    if s.store.live_tokens(&token_role, now_secs()).await? >= MAX_LIVE_TOKENS {
        return Err(ApiError::TooMany(format!(
            "{spiffe_id} already holds {MAX_LIVE_TOKENS} live vault tokens: reuse one (renew it) or revoke some (auth/token/revoke-self)"
        )));
    }
    let id = wid()?;
    let token = format!("hvs.{}", random_hex(32)?);
    let ttl = s.config.vault.token_ttl.as_secs() as i64;
    let expires_at = now_secs() + ttl;
    let event = AuditEvent::new(
        format!("workload:{spiffe_id}"),
        "vault.login",
        spiffe_id,
        json!({
            "method": method,
            "role": role.unwrap_or(""),
            "token": id,
            "token_hmac": s.store.audit_hmac(token.as_bytes())?,
            "ttl": ttl,
            "outcome": "ok",
        }),
    );
    s.store
        .create_token(
            &id,
            &token_hash(&token),
            &token_role,
            Some(expires_at),
            &[event],
        )
        .await?;
    Ok(vault_json(
        StatusCode::OK,
        &json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": null,
            "warnings": null,
            "auth": {
                "client_token": token,
                "accessor": id,
                "policies": ["default"],
                "token_policies": ["default"],
                "metadata": {"spiffe_id": spiffe_id, "role": role.unwrap_or("")},
                "lease_duration": ttl,
                "renewable": true,
                "entity_id": "",
                "token_type": "service",
                "orphan": true,
            },
        }),
    ))
}

/// `aud` is exactly `audience` (a string, or a one-element list).
fn only_audience(aud: &serde_json::Value, audience: &str) -> bool {
    match aud {
        serde_json::Value::String(a) => a == audience,
        serde_json::Value::Array(a) => a.len() == 1 && a[0] == audience,
        _ => false,
    }
}

/// The most live tokens one SPIFFE ID may hold.
const MAX_LIVE_TOKENS: i64 = 100;

fn wid() -> Result<String, ApiError> {
    Ok(format!("vt-{}", random_hex(12)?))
}

/// Audits a refused login (who tried, never what they sent).
async fn refused(s: &Server, method: &str, why: &str) -> ApiError {
    let event = AuditEvent::new(
        "anonymous",
        "vault.login",
        method,
        json!({"method": method, "outcome": "denied", "reason": why}),
    );
    if let Err(e) = s.audit.append(event).await {
        tracing::warn!(error = %e, "cannot audit a refused login");
    }
    ApiError::Forbidden(format!("permission denied: {why}"))
}

async fn jwt_login(State(s): State<Arc<Server>>, body: Bytes) -> Result<Response, ApiError> {
    let req: JwtLogin = parse_json(&body)?;
    let authority = s.authority()?;
    let td = s.config.trust_domain.as_str();
    let audience = &s.config.vault.jwt_audience;
    let id = match ward_identity::jwt::validate_jwt_svid(
        req.jwt.trim(),
        audience,
        &authority.spiffe_bundle(),
        td,
    ) {
        // The vault must be the token's only audience: a JWT-SVID made for
        // another service too could be replayed here by that service
        // (a confused deputy) to log in as its sender.
        Ok((id, claims)) if !only_audience(&claims["aud"], audience) => {
            return Err(refused(
                &s,
                "jwt",
                &format!("{id}'s JWT-SVID names other audiences besides {audience:?}; fetch one for {audience:?} alone"),
            )
            .await);
        }
        Ok((id, _)) => id,
        Err(e) => {
            return Err(refused(
                &s,
                "jwt",
                &format!("the JWT-SVID is not valid for audience {audience:?}: {e}"),
            )
            .await);
        }
    };
    if id.path().starts_with("/ward/") {
        return Err(refused(&s, "jwt", &format!("{id} is not a workload identity")).await);
    }
    issue(&s, &id.to_string(), "jwt", req.role.as_deref()).await
}

async fn cert_login(
    State(s): State<Arc<Server>>,
    Extension(peer): Extension<PeerId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CertLogin = parse_body(&body)?;
    let id = match crate::auth::workload(&s, &peer) {
        Ok(id) => id,
        Err(e) => return Err(refused(&s, "cert", &e.to_string()).await),
    };
    issue(&s, &id.to_string(), "cert", req.name.as_deref()).await
}

fn token_data(c: &VaultCaller) -> serde_json::Value {
    let now = now_secs();
    match c {
        VaultCaller::Admin { token_id } => json!({
            "accessor": token_id,
            "policies": ["root"],
            "ttl": 0,
            "expire_time": null,
            "renewable": false,
            "display_name": "admin",
            "meta": null,
            "path": "auth/token/root",
            "type": "service",
        }),
        VaultCaller::Workload {
            token_id,
            spiffe_id,
            expires_at,
            created_at,
        } => json!({
            "accessor": token_id,
            "policies": ["default"],
            "ttl": (expires_at - now).max(0),
            "creation_time": created_at,
            "expire_time": super::rfc3339(expires_at * 1000),
            "renewable": true,
            "display_name": spiffe_id,
            "meta": {"spiffe_id": spiffe_id},
            "path": "auth/login",
            "type": "service",
        }),
    }
}

async fn lookup_self(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = caller(&s, &headers).await?;
    super::data(token_data(&c))
}

async fn renew_self(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = caller(&s, &headers).await?;
    let req: RenewBody = parse_body(&body)?;
    let VaultCaller::Workload {
        token_id,
        spiffe_id,
        created_at,
        expires_at: current_expiry,
    } = &c
    else {
        return Err(ApiError::BadRequest(
            "the admin token does not expire and cannot be renewed".into(),
        ));
    };
    let vc = &s.config.vault;
    let wanted = match &req.increment {
        Some(v) => super::parse_duration("increment", v)?,
        None => 0,
    };
    let ttl = if wanted == 0 {
        vc.token_ttl.as_secs()
    } else {
        wanted.min(vc.token_ttl.as_secs())
    };
    let limit = created_at + vc.token_max_ttl.as_secs() as i64;
    let expires_at = (now_secs() + ttl as i64).min(limit);
    let token = request_token(&headers)?;
    let event = AuditEvent::new(
        c.actor(),
        "vault.token.renew",
        spiffe_id,
        json!({"token": token_id, "expires_at": expires_at, "outcome": "ok"}),
    );
    let hash = token_hash(token);
    let verified = ward_store::TokenRecord {
        id: token_id.clone(),
        role: format!("{WORKLOAD_ROLE}{spiffe_id}"),
        expires_at: Some(*current_expiry),
        created_at: *created_at,
    };
    s.store
        .renew_token(&hash, &verified, expires_at, &[event])
        .await
        .map_err(|_| ApiError::Forbidden("permission denied: the token is not valid".into()))?;
    s.forget_token(&hash);
    let left = (expires_at - now_secs()).max(0);
    Ok(vault_json(
        StatusCode::OK,
        &json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": null,
            "warnings": if expires_at == limit { json!(["the token reached its maximum lifetime; log in again before it expires"]) } else { json!(null) },
            "auth": {
                "client_token": token,
                "accessor": token_id,
                "policies": ["default"],
                "token_policies": ["default"],
                "metadata": {"spiffe_id": spiffe_id},
                "lease_duration": left,
                "renewable": expires_at < limit,
            },
        }),
    ))
}

async fn revoke_self(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = caller(&s, &headers).await?;
    if matches!(c, VaultCaller::Admin { .. }) {
        return Err(ApiError::BadRequest(
            "the admin token is not revoked through the vault API".into(),
        ));
    }
    let token = request_token(&headers)?;
    let hash = token_hash(token);
    let event = AuditEvent::new(
        c.actor(),
        "vault.token.revoke",
        c.token_id(),
        json!({"token": c.token_id(), "outcome": "ok"}),
    );
    s.store.revoke_token(&hash, &[event]).await?;
    s.forget_token(&hash);
    super::no_content()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_token_for_the_vault_alone_logs_in() {
        use serde_json::json;
        assert!(super::only_audience(&json!("vault"), "vault"));
        assert!(super::only_audience(&json!(["vault"]), "vault"));
        assert!(!super::only_audience(&json!(["orders", "vault"]), "vault"));
        assert!(!super::only_audience(&json!("orders"), "vault"));
        assert!(!super::only_audience(&json!(null), "vault"));
    }
}
