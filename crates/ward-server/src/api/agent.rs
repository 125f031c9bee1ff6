//! The API of node agents, `/v1/agent/...`. A new node attests once with a
//! single-use join token; after that it authenticates with its node SVID
//! (mutual TLS) and may only see and obtain what its own entries allow:
//! entries whose parent is its SPIFFE ID.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use time::OffsetDateTime;
use ward_api::*;
use ward_identity::{SpiffeId, validate_csr};
use ward_store::{AuditEvent, JoinTokenUse, now_secs};

use super::{ApiResult, S, ok};
use crate::auth::{agent_actor, current_node, is_agent_id, renewing_node, token_hash};
use crate::error::{ApiError, parse_json};
use crate::issuance;
use crate::long_poll::{LongPoll, LongPollQuery};
use crate::peer::PeerId;
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/agent/attest", post(attest))
        .route("/v1/agent/renew", post(renew))
        .route("/v1/agent/sync", get(sync))
        .route("/v1/agent/svids", post(svids))
        .route("/v1/agent/jwt", post(jwt))
}

/// The most SVIDs signed in one batch request.
const MAX_BATCH: usize = 1000;

async fn attest(State(s): S, body: Bytes) -> ApiResult {
    let authority = s.authority()?;
    let req: AttestRequest = parse_json(&body)?;
    // Check the CSR before spending the token: a typo must not burn it.
    let csr = validate_csr(req.csr.as_bytes(), &s.config.trust_domain)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !is_agent_id(&s, csr.spiffe_id()) {
        return Err(ApiError::BadRequest(format!(
            "the CSR's SPIFFE ID {} is not a node ID (spiffe://{}/ward/agent/NODE-NAME)",
            csr.spiffe_id(),
            s.config.trust_domain
        )));
    }
    let audit = AuditEvent::new(
        agent_actor(csr.spiffe_id()),
        "agent.attest",
        csr.spiffe_id().to_string(),
        serde_json::json!({"method": "join_token"}),
    );
    match s
        .store
        .consume_join_token(
            &token_hash(req.join_token.trim()),
            &csr.spiffe_id().to_string(),
            now_secs(),
            audit,
        )
        .await?
    {
        JoinTokenUse::Consumed(_) => {}
        JoinTokenUse::Unknown => {
            return Err(ApiError::Forbidden(
                "the join token is not valid; create one with `ward agent token create`".into(),
            ));
        }
        JoinTokenUse::Spent => {
            return Err(ApiError::Forbidden(
                "the join token was already used; join tokens are single-use, create a new one"
                    .into(),
            ));
        }
        JoinTokenUse::WrongNode(bound) => {
            return Err(ApiError::Forbidden(format!(
                "this join token is bound to {bound}, not {}",
                csr.spiffe_id()
            )));
        }
        JoinTokenUse::NodeExists => {
            return Err(ApiError::Forbidden(format!(
                "{} is already attested; to attest it again, create a token bound to it (`ward agent token create --node-name NAME`)",
                csr.spiffe_id()
            )));
        }
        JoinTokenUse::NodeRecordsMissing => {
            return Err(ApiError::Forbidden(
                "the store holds fewer node records than names ever attested (a row was deleted outside Ward), so an unbound join token could take over a node's name; until an operator looks, only tokens bound to a node name are accepted (`ward agent token create --node-name NAME`)".into(),
            ));
        }
        JoinTokenUse::Expired => {
            return Err(ApiError::Forbidden(
                "the join token has expired; create a new one".into(),
            ));
        }
    }
    let svid = issuance::sign_x509(&authority, &csr, s.config.ca.svid_default_ttl)?;
    // This attestation's SVID is now the node's only one: any earlier node
    // SVID (an old machine's) is refused from here on. If this record
    // cannot be written the SVID still works (a node with none on record
    // is held to its attestation time instead).
    if let Err(e) = s
        .store
        .record_node_svid(&csr.spiffe_id().to_string(), &svid.serial_hex, None)
        .await
    {
        tracing::warn!(node = %svid.spiffe_id, error = %e, "cannot record the node's SVID");
    }
    tracing::info!(node = %svid.spiffe_id, "node attested");
    ok(&issuance::x509_response(&authority, svid))
}

async fn renew(State(s): S, Extension(peer): Extension<PeerId>, body: Bytes) -> ApiResult {
    let node = renewing_node(&s, &peer).await?;
    let authority = s.authority()?;
    let req: RenewRequest = parse_json(&body)?;
    let csr = validate_csr(req.csr.as_bytes(), &s.config.trust_domain)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if csr.spiffe_id() != &node {
        return Err(ApiError::Forbidden(format!(
            "{node} may only renew its own SVID, not {}",
            csr.spiffe_id()
        )));
    }
    let svid = issuance::sign_x509(&authority, &csr, s.config.ca.svid_default_ttl)?;
    s.audit
        .append(AuditEvent::new(
            agent_actor(&node),
            "agent.renew",
            node.to_string(),
            serde_json::json!({"serial": svid.serial_hex, "expires_at": svid.not_after.unix_timestamp()}),
        ))
        .await?;
    // From now on this SVID is the node's, and the one it replaces stays
    // usable only until this answer has surely arrived (its next renewal).
    s.store
        .record_node_svid(&node.to_string(), &svid.serial_hex, Some(&peer.serial))
        .await?;
    ok(&issuance::x509_response(&authority, svid))
}

async fn sync(
    State(s): S,
    Extension(peer): Extension<PeerId>,
    q: Result<Query<LongPollQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let node = current_node(&s, &peer).await?;
    s.authority()?;
    let poll = LongPoll::from_query(q)?;
    let since = poll.since;
    let node_str = node.to_string();
    loop {
        // Only this node's entries, and only its own deletions (an entry
        // moved to another node is one): a node learns nothing of others.
        let changes = s.store.entry_changes(Some(&node_str), since).await?;
        if changes.revision > since || poll.expired() {
            let authority = s.authority()?;
            return ok(&AgentSync {
                entries: changes.entries,
                deleted: changes.deleted,
                revision: changes.revision,
                bundle_pem: authority.bundle_pem().to_owned(),
                jwt_bundle: authority.spiffe_bundle(),
            });
        }
        poll.wait(s.store.changes().notified()).await;
    }
}

async fn svids(State(s): S, Extension(peer): Extension<PeerId>, body: Bytes) -> ApiResult {
    let node = current_node(&s, &peer).await?;
    let authority = s.authority()?;
    let req: AgentSvidBatch = parse_json(&body)?;
    if req.requests.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "field `requests`: at most {MAX_BATCH} per batch"
        )));
    }
    let entries: HashMap<String, ward_store::EntryRecord> = s
        .store
        .entry_changes(Some(&node.to_string()), 0)
        .await?
        .entries
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let now = OffsetDateTime::now_utc();
    let mut results = Vec::with_capacity(req.requests.len());
    let mut events = Vec::new();
    for r in &req.requests {
        let result = (|| {
            let entry = entries.get(&r.entry_id).ok_or_else(|| {
                format!("entry {} does not exist or is not under {node}", r.entry_id)
            })?;
            let csr = validate_csr(r.csr.as_bytes(), &s.config.trust_domain)
                .map_err(|e| e.to_string())?;
            if is_agent_id(&s, csr.spiffe_id()) {
                return Err(format!(
                    "{} is a node identity; entries cannot issue it",
                    csr.spiffe_id()
                ));
            }
            if csr.spiffe_id().to_string() != entry.spiffe_id {
                return Err(format!(
                    "the CSR's SPIFFE ID {} differs from the entry's {}",
                    csr.spiffe_id(),
                    entry.spiffe_id
                ));
            }
            // An entry made under a higher maximum is clamped, not refused:
            // refusing would take its workloads down at their next rotation.
            let ttl =
                Duration::from_secs(entry.x509_ttl.max(1) as u64).min(s.config.ca.svid_max_ttl);
            authority
                .signer()
                .sign_x509_svid(&csr, ttl, now)
                .map_err(|e| e.to_string())
        })();
        match result {
            Ok(svid) => {
                let expires_at = svid.not_after.unix_timestamp();
                events.push(AuditEvent::new(
                    agent_actor(&node),
                    "svid.x509",
                    svid.spiffe_id.to_string(),
                    serde_json::json!({"serial": svid.serial_hex, "expires_at": expires_at, "entry_id": r.entry_id}),
                ));
                results.push(AgentSvidResult {
                    entry_id: r.entry_id.clone(),
                    cert_chain_pem: Some(svid.chain_pem()),
                    expires_at: Some(expires_at),
                    error: None,
                });
            }
            Err(e) => results.push(AgentSvidResult {
                entry_id: r.entry_id.clone(),
                cert_chain_pem: None,
                expires_at: None,
                error: Some(e),
            }),
        }
    }
    // Every SVID handed out is in the audit log before the answer leaves.
    s.store.append_audit(&events).await?;
    ok(&AgentSvidBatchResponse { svids: results })
}

async fn jwt(State(s): S, Extension(peer): Extension<PeerId>, body: Bytes) -> ApiResult {
    let node = current_node(&s, &peer).await?;
    let authority = s.authority()?;
    let req: AgentJwtRequest = parse_json(&body)?;
    let entry = s.store.entry(&req.entry_id).await?;
    if entry.parent_id != node.to_string() {
        return Err(ApiError::Forbidden(format!(
            "entry {} is not under {node}",
            req.entry_id
        )));
    }
    let id = SpiffeId::parse(&entry.spiffe_id).map_err(|e| ApiError::Internal(e.to_string()))?;
    let ttl = Duration::from_secs(entry.jwt_ttl.max(1) as u64).min(s.config.ca.jwt_max_ttl);
    ok(&issuance::issue_jwt(
        &s,
        &authority,
        &id,
        &req.audience,
        ttl,
        agent_actor(&node),
        Some(&req.entry_id),
    )
    .await?)
}
