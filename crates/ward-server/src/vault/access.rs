//! Who is calling the vault, and whether they may. Two kinds of caller: the
//! admin token (everything, like Vault's root token) and workload tokens,
//! which `auth/cert/login` and `auth/jwt/login` hand out bound to the
//! SPIFFE ID that logged in; a workload may do only what a vault policy
//! grants its SPIFFE ID. Every denial is audited with the policies that
//! decided.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ward_policy::vault::VaultAccess;
use ward_store::seal::MasterKey;
use ward_store::{AuditEvent, now_secs};

use crate::auth::{VAULT_TOKEN, token_hash};
use crate::error::ApiError;
use crate::state::{Labels, Server};

/// The role of a workload token: this prefix and the SPIFFE ID (both
/// authenticated by the barrier with the rest of the token's row).
pub(crate) const WORKLOAD_ROLE: &str = "workload:";

/// How long the policies and labels in force are reused before they are
/// read again (another replica's policy change applies within this).
const ACCESS_TTL: Duration = Duration::from_secs(2);

/// A verified vault caller.
#[derive(Debug, Clone)]
pub(crate) enum VaultCaller {
    /// The admin token.
    Admin { token_id: String },
    /// A workload token.
    Workload {
        token_id: String,
        spiffe_id: String,
        expires_at: i64,
        created_at: i64,
    },
}

impl VaultCaller {
    /// How the caller appears in audit records.
    pub(crate) fn actor(&self) -> String {
        match self {
            Self::Admin { token_id } => format!("token:{token_id}"),
            Self::Workload { spiffe_id, .. } => format!("workload:{spiffe_id}"),
        }
    }

    pub(crate) fn token_id(&self) -> &str {
        match self {
            Self::Admin { token_id } | Self::Workload { token_id, .. } => token_id,
        }
    }
}

/// A caller allowed to do one thing, with the master key to do it.
#[derive(Clone)]
pub(crate) struct Access {
    pub caller: VaultCaller,
    pub master: MasterKey,
    /// The policies that allowed it (empty for the admin).
    pub policies: Vec<String>,
}

impl Access {
    /// An audit event of this caller.
    pub(crate) fn event(
        &self,
        action: &str,
        target: &str,
        mut detail: serde_json::Value,
    ) -> AuditEvent {
        if let Some(d) = detail.as_object_mut() {
            d.insert("token".into(), self.caller.token_id().into());
            if !self.policies.is_empty() {
                d.insert("policies".into(), self.policies.clone().into());
            }
        }
        AuditEvent::new(self.caller.actor(), action, target, detail)
    }
}

/// The vault policies and workload labels in force, reused for [`ACCESS_TTL`].
#[derive(Default)]
pub struct AccessCache(RwLock<Option<Cached>>);

/// When it was read, the policies, the labels.
type Cached = (Instant, Arc<VaultAccess>, Arc<Labels>);

impl AccessCache {
    /// Forgets what is cached (after a policy write on this replica).
    pub(crate) fn invalidate(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The token of the request (`X-Vault-Token` or `Authorization: Bearer`).
pub(crate) fn request_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let vault = headers.get(VAULT_TOKEN).and_then(|v| v.to_str().ok());
    let token = match (bearer, vault) {
        (Some(a), Some(b)) if a.trim() != b.trim() => {
            return Err(ApiError::BadRequest(
                "two different tokens in one request (Authorization and X-Vault-Token); send one"
                    .into(),
            ));
        }
        (Some(t), _) | (None, Some(t)) => t.trim(),
        (None, None) => {
            return Err(ApiError::Unauthorized(
                "missing client token: send X-Vault-Token (log in first with auth/cert/login or auth/jwt/login)".into(),
            ));
        }
    };
    if token.is_empty() {
        return Err(ApiError::Unauthorized(
            "missing client token: the token is empty".into(),
        ));
    }
    Ok(token)
}

/// Who is calling: the admin token or a live workload token.
pub(crate) async fn caller(s: &Server, headers: &HeaderMap) -> Result<VaultCaller, ApiError> {
    let token = request_token(headers)?;
    let record = s.lookup_token(&token_hash(token)).await?;
    let Some(r) = record else {
        return Err(ApiError::Forbidden(
            "permission denied: the token is not valid".into(),
        ));
    };
    if r.expires_at.is_some_and(|t| t <= now_secs()) {
        return Err(ApiError::Forbidden(
            "permission denied: the token has expired; log in again".into(),
        ));
    }
    if r.role == "admin" {
        return Ok(VaultCaller::Admin { token_id: r.id });
    }
    match r.role.strip_prefix(WORKLOAD_ROLE) {
        Some(id) => Ok(VaultCaller::Workload {
            token_id: r.id.clone(),
            spiffe_id: id.to_owned(),
            expires_at: r.expires_at.unwrap_or(0),
            created_at: r.created_at,
        }),
        None => Err(ApiError::Forbidden(
            "permission denied: the token is not valid".into(),
        )),
    }
}

/// Authenticates the request and decides `capability` on `path` (the
/// canonical API path after `/v1/`). A denial is audited and answered 403.
pub(crate) async fn authorize(
    s: &Server,
    headers: &HeaderMap,
    capability: &str,
    path: &str,
) -> Result<Access, ApiError> {
    let caller = caller(s, headers).await?;
    let master = s.master()?;
    authorize_caller(s, caller, master, capability, path).await
}

/// As [`authorize`], for a caller already known.
pub(crate) async fn authorize_caller(
    s: &Server,
    caller: VaultCaller,
    master: MasterKey,
    capability: &str,
    path: &str,
) -> Result<Access, ApiError> {
    let spiffe_id = match &caller {
        VaultCaller::Admin { .. } => {
            return Ok(Access {
                caller,
                master,
                policies: Vec::new(),
            });
        }
        VaultCaller::Workload { spiffe_id, .. } => spiffe_id.clone(),
    };
    let (access, labels) = current(s).await?;
    let no_labels = Default::default();
    let d = access.decide(
        &spiffe_id,
        labels.get(&spiffe_id).unwrap_or(&no_labels),
        capability,
        path,
    );
    if d.allowed {
        return Ok(Access {
            caller,
            master,
            policies: d.policies,
        });
    }
    let reason = if !d.errors.is_empty() {
        "a policy could not be evaluated"
    } else if d.policies.is_empty() {
        "no policy grants it"
    } else {
        "forbidden by policy"
    };
    let event = AuditEvent::new(
        caller.actor(),
        "vault.denied",
        path,
        serde_json::json!({
            "capability": capability,
            "outcome": "denied",
            "reason": reason,
            "policies": d.policies,
            "token": caller.token_id(),
        }),
    );
    if let Err(e) = s.audit.append(event).await {
        tracing::warn!(error = %e, "cannot audit a vault denial");
    }
    Err(ApiError::Forbidden(format!(
        "permission denied: {spiffe_id} may not {capability} {path} ({reason})"
    )))
}

/// The policies and labels in force (read again every [`ACCESS_TTL`]).
async fn current(s: &Server) -> Result<(Arc<VaultAccess>, Arc<Labels>), ApiError> {
    if let Some((at, a, l)) = &*s.vault.access.0.read().unwrap_or_else(|p| p.into_inner())
        && at.elapsed() < ACCESS_TTL
    {
        return Ok((a.clone(), l.clone()));
    }
    let master = s.master()?;
    let texts = super::policies::load_all(s, &master).await?;
    let access = match VaultAccess::new(texts.iter().map(|(n, t)| (n.as_str(), t.as_str()))) {
        Ok(a) => a,
        Err(e) => {
            // Each was valid when written; fail closed if the set is not.
            tracing::error!(error = %e, "the stored vault policies do not validate together; denying every workload");
            VaultAccess::new([]).map_err(|e| ApiError::Internal(e.to_string()))?
        }
    };
    let revision = s.store.revision().await?;
    let labels = crate::api::policy::labels_at(s, revision).await?;
    let access = Arc::new(access);
    *s.vault.access.0.write().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), access.clone(), labels.clone()));
    Ok((access, labels))
}
