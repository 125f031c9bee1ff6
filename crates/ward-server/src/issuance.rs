//! Issuance shared by the operator API (`/v1/svid/*`) and the agent API
//! (`/v1/agent/*`): signing with the active CA, the answer for an X.509-SVID,
//! and minting and auditing a JWT-SVID. Each caller does its own
//! authorization first.

use std::time::Duration;

use time::OffsetDateTime;
use ward_api::{JwtSvidResponse, X509SvidResponse};
use ward_identity::{SpiffeId, ValidatedCsr, X509Svid};
use ward_store::AuditEvent;

use crate::authority::Authority;
use crate::error::{ApiError, jwt_error};
use crate::state::Server;

/// Signs an X.509-SVID for `csr` with the active CA, valid for `ttl` from now.
pub(crate) fn sign_x509(
    authority: &Authority,
    csr: &ValidatedCsr,
    ttl: Duration,
) -> Result<X509Svid, ApiError> {
    authority
        .signer()
        .sign_x509_svid(csr, ttl, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The answer carrying a signed X.509-SVID and the current bundle.
pub(crate) fn x509_response(authority: &Authority, svid: X509Svid) -> X509SvidResponse {
    X509SvidResponse {
        spiffe_id: svid.spiffe_id.to_string(),
        cert_chain_pem: svid.chain_pem(),
        bundle_pem: authority.bundle_pem().to_owned(),
        expires_at: svid.not_after.unix_timestamp(),
        serial: svid.serial_hex,
    }
}

/// Mints a JWT-SVID for `id`, appends its audit record (acknowledged only
/// once durable) and returns the answer.
pub(crate) async fn issue_jwt(
    s: &Server,
    authority: &Authority,
    id: &SpiffeId,
    audience: &[String],
    ttl: Duration,
    actor: String,
    entry_id: Option<&str>,
) -> Result<JwtSvidResponse, ApiError> {
    let now = OffsetDateTime::now_utc();
    let token = authority
        .signer_jwt()
        .mint(id, audience, ttl, now)
        .map_err(jwt_error)?;
    let expires_at = now.unix_timestamp() + ttl.as_secs() as i64;
    s.audit
        .append(AuditEvent::new(
            actor,
            "svid.jwt",
            id.to_string(),
            serde_json::json!({
                "audience": audience,
                "expires_at": expires_at,
                "kid": authority.signer_jwt().kid(),
                "entry_id": entry_id,
            }),
        ))
        .await?;
    Ok(JwtSvidResponse {
        token,
        spiffe_id: id.to_string(),
        expires_at,
    })
}
