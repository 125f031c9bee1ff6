//! Request authentication, all of it: API tokens (`Authorization: Bearer`
//! or Vault's `X-Vault-Token`, through a short-lived cache of known
//! tokens), and callers identified by the X.509-SVID they presented over
//! mutual TLS (node agents and workloads). Handlers ask here and nowhere
//! else who is calling.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ward_identity::SpiffeId;
use ward_store::{TokenRecord, now_secs};

use crate::error::ApiError;
use crate::peer::PeerId;
use crate::state::Server;

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's public ID.
    pub token_id: String,
}

impl Caller {
    /// How the caller appears in audit records.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

/// How long a token lookup is trusted without asking the store again. A
/// token removed from the store (on any replica) stops working within this.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on cached tokens, so that a flood of requests cannot grow it.
const TOKEN_CACHE_MAX: usize = 10_000;

/// The hash under which a token is stored: tokens are 256-bit random
/// values, so a fast hash is enough (no dictionary to attack).
pub fn token_hash(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Vault's token header, which the API reads as well as `Authorization`.
pub(crate) const VAULT_TOKEN: &str = "x-vault-token";

/// Known tokens by hash, each trusted for [`TOKEN_CACHE_TTL`].
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<String, (TokenRecord, Instant)>>);

impl Server {
    /// Finds a token by hash, through a short-lived cache of known tokens
    /// (unknown ones always go to the store, so nothing can fill the cache
    /// but real tokens).
    pub(crate) async fn lookup_token(&self, hash: &str) -> Result<Option<TokenRecord>, ApiError> {
        {
            let cache = self.tokens.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((record, at)) = cache.get(hash)
                && at.elapsed() < TOKEN_CACHE_TTL
            {
                return Ok(Some(record.clone()));
            }
        }
        let record = self.store.token_by_hash(hash).await?;
        if let Some(r) = &record {
            let mut cache = self.tokens.0.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash.to_owned(), (r.clone(), Instant::now()));
        }
        Ok(record)
    }

    /// Drops a token from the cache (after a renewal or revocation here,
    /// so this replica sees the change at once).
    pub(crate) fn forget_token(&self, hash: &str) {
        self.tokens
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// Checks the request's token (`Authorization: Bearer …` or Vault's
    /// `X-Vault-Token`). Missing: 401; unknown or expired: 403.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let vault = headers.get(VAULT_TOKEN).and_then(|v| v.to_str().ok());
        let token = match (bearer, vault) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::BadRequest(
                    "two different tokens in one request (Authorization and X-Vault-Token); send one".into(),
                ));
            }
            (Some(t), _) | (None, Some(t)) => t.trim(),
            (None, None) => {
                return Err(ApiError::Unauthorized(
                    "missing token: set WARD_TOKEN or pass --token (header Authorization: Bearer TOKEN)".into(),
                ));
            }
        };
        if token.is_empty() {
            return Err(ApiError::Unauthorized(
                "missing token: the token is empty".into(),
            ));
        }
        let record = self.lookup_token(&token_hash(token)).await?;
        match record {
            Some(r) if r.expires_at.is_none_or(|t| t > now_secs()) && r.role == "admin" => {
                Ok(Caller { token_id: r.id })
            }
            Some(r) if r.expires_at.is_some_and(|t| t <= now_secs()) => Err(ApiError::Forbidden(
                "permission denied: the token has expired".into(),
            )),
            _ => Err(ApiError::Forbidden(
                "permission denied: the token is not valid".into(),
            )),
        }
    }
}

/// True for `spiffe://<td>/ward/agent/<node-name>`.
pub(crate) fn is_agent_id(s: &Server, id: &SpiffeId) -> bool {
    id.trust_domain() == &s.config.trust_domain
        && id
            .path()
            .strip_prefix("/ward/agent/")
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The SPIFFE ID of the verified client certificate, if it is still
/// valid and was verified under the current trust bundle.
pub(crate) fn verified_peer(s: &Server, peer: &PeerId) -> Result<SpiffeId, ApiError> {
    if peer.id.is_some() {
        if peer.not_after <= now_secs() {
            return Err(ApiError::Unauthorized(
                "the client certificate has expired since this connection was made; reconnect with the current SVID".into(),
            ));
        }
        if peer.trust_generation != s.client_trust().generation() {
            return Err(ApiError::Unauthorized(
                "the trust bundle changed since this connection was verified; reconnect".into(),
            ));
        }
    }
    peer.id.clone().ok_or_else(|| {
        ApiError::Unauthorized(
            "this endpoint needs an SVID of this trust domain as the TLS client certificate".into(),
        )
    })
}

/// The calling node, from its verified client certificate.
pub(crate) fn node(s: &Server, peer: &PeerId) -> Result<SpiffeId, ApiError> {
    let id = verified_peer(s, peer)?;
    if is_agent_id(s, &id) {
        Ok(id)
    } else {
        Err(ApiError::Forbidden(format!(
            "{id} is not a node agent identity"
        )))
    }
}

/// The calling node, refused if its SVID was superseded: after the node
/// was attested again (a rebuilt machine, a new key) only the SVIDs of that
/// attestation and their renewals are the node's. A node with no SVID on
/// record (issued before records were kept, or minted by an administrator)
/// is served as before.
pub(crate) async fn current_node(s: &Server, peer: &PeerId) -> Result<SpiffeId, ApiError> {
    let id = node(s, peer)?;
    match s.store.node_svids(&id.to_string()).await? {
        Some(own) if !own.contains(&peer.serial) => Err(superseded(&id)),
        _ => Ok(id),
    }
}

/// The calling node, for a renewal: its SVID must be one on record, or (with
/// none on record) younger than the node's last attestation. A renewal
/// keeps an identity alive, so it is held to more than the other calls.
pub(crate) async fn renewing_node(s: &Server, peer: &PeerId) -> Result<SpiffeId, ApiError> {
    let id = node(s, peer)?;
    let name = id.to_string();
    if let Some(own) = s.store.node_svids(&name).await? {
        return if own.contains(&peer.serial) {
            Ok(id)
        } else {
            Err(superseded(&id))
        };
    }
    match s.store.node_attested_at(&name).await? {
        Some(at) if peer.not_before + ward_identity::ca::BACKDATE.as_secs() as i64 + 1 >= at => {
            Ok(id)
        }
        Some(_) => Err(superseded(&id)),
        None => Err(ApiError::Forbidden(format!(
            "no record of {id}'s attestation: attest it again (`ward agent token create --node-name NAME`)"
        ))),
    }
}

fn superseded(id: &SpiffeId) -> ApiError {
    ApiError::Forbidden(format!(
        "this SVID is no longer {id}'s: the node was attested again (or renewed) since it was issued; use the current one"
    ))
}

pub(crate) fn agent_actor(id: &SpiffeId) -> String {
    format!("agent:{id}")
}

/// The calling workload, from its verified client certificate: any SVID
/// of this trust domain except node agents'.
pub(crate) fn workload(s: &Server, peer: &PeerId) -> Result<SpiffeId, ApiError> {
    let id = verified_peer(s, peer)?;
    if id.trust_domain() != &s.config.trust_domain || id.path().starts_with("/ward/") {
        return Err(ApiError::Forbidden(format!(
            "{id} is not a workload of this trust domain"
        )));
    }
    Ok(id)
}
