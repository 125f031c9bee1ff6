//! `/v1/svid/...`: SVIDs minted for an administrator (the workload path is
//! the agent's, in `agent`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use ward_api::*;
use ward_identity::{SpiffeId, validate_csr};
use ward_store::AuditEvent;

use super::{ApiResult, S, ok, ttl_within};
use crate::error::{ApiError, parse_json};
use crate::issuance;
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/svid/x509", post(sign_x509))
        .route("/v1/svid/jwt", post(sign_jwt))
}

async fn sign_x509(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    let authority = s.authority()?;
    let req: X509SvidRequest = parse_json(&body)?;
    let csr = validate_csr(req.csr.as_bytes(), &s.config.trust_domain)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut default_ttl = s.config.ca.svid_default_ttl;
    if let Some(entry_id) = &req.entry_id {
        let entry = s.store.entry(entry_id).await?;
        if entry.spiffe_id != csr.spiffe_id().to_string() {
            return Err(ApiError::BadRequest(format!(
                "the CSR's SPIFFE ID {} differs from entry {entry_id}'s {}",
                csr.spiffe_id(),
                entry.spiffe_id
            )));
        }
        default_ttl = Duration::from_secs(entry.x509_ttl as u64);
    }
    let ttl = ttl_within(req.ttl, default_ttl, s.config.ca.svid_max_ttl, "ttl")?;
    let svid = issuance::sign_x509(&authority, &csr, ttl)?;
    s.audit
        .append(AuditEvent::new(
            caller.actor(),
            "svid.x509",
            svid.spiffe_id.to_string(),
            serde_json::json!({"serial": svid.serial_hex, "expires_at": svid.not_after.unix_timestamp(), "entry_id": req.entry_id}),
        ))
        .await?;
    ok(&issuance::x509_response(&authority, svid))
}

pub(super) fn workload_id(s: &Server, field: &str, value: &str) -> Result<SpiffeId, ApiError> {
    let id = SpiffeId::parse(value)
        .map_err(|e| ApiError::BadRequest(format!("{field} {value:?}: {e}")))?;
    if id.trust_domain() != &s.config.trust_domain {
        return Err(ApiError::BadRequest(format!(
            "{field} {value:?} is not in trust domain {}",
            s.config.trust_domain
        )));
    }
    if !id.is_workload() {
        return Err(ApiError::BadRequest(format!(
            "{field} {value:?} has no path"
        )));
    }
    Ok(id)
}

async fn sign_jwt(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    let authority = s.authority()?;
    let req: JwtSvidRequest = parse_json(&body)?;
    let id = workload_id(&s, "spiffe_id", &req.spiffe_id)?;
    let ttl = ttl_within(
        req.ttl,
        s.config.ca.jwt_default_ttl,
        s.config.ca.jwt_max_ttl,
        "ttl",
    )?;
    ok(&issuance::issue_jwt(
        &s,
        &authority,
        &id,
        &req.audience,
        ttl,
        caller.actor(),
        None,
    )
    .await?)
}
