//! `/v1/audit/...`: the audit log, its verification, and signed checkpoints
//! (sequence, head, time) that a verifier outside the store can hold the
//! log to.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use ward_api::{AuditPage, AuditVerification, Checkpoint, CheckpointKey};
use ward_store::barrier::CheckpointSigner;

use super::{ApiResult, S, ok};
use crate::error::ApiError;
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/audit", get(audit_page))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/audit/checkpoint", post(checkpoint))
        .route("/v1/audit/checkpoint-key", get(checkpoint_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn audit_page(
    State(s): S,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    s.authenticate(&headers).await?;
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(500).clamp(1, 1000);
    // Read the head first: records appended meanwhile are beyond it and are
    // simply not part of this page's promise.
    let (head_seq, head_hash) = s.store.audit_head().await?;
    let records = s
        .store
        .audit_records(q.after.unwrap_or(0).max(0), limit)
        .await?;
    ok(&AuditPage {
        records,
        head_seq,
        head_hash,
    })
}

async fn verify(State(s): S, headers: HeaderMap) -> ApiResult {
    s.authenticate(&headers).await?;
    let (head_seq, _) = s.store.audit_head().await?;
    let result = s.store.verify_audit().await?;
    ok(&match result {
        Ok(head) => AuditVerification {
            intact: true,
            records: head.records,
            head_seq: head.seq,
            first_bad_seq: None,
            reason: None,
        },
        Err(e) => AuditVerification {
            intact: false,
            records: 0,
            head_seq,
            first_bad_seq: Some(e.seq),
            reason: Some(e.reason),
        },
    })
}

/// Signs the current head, after checking the keyed chain up to it: a
/// checkpoint vouches only for a chain this server wrote.
pub async fn sign_current(s: &Server) -> Result<Checkpoint, ApiError> {
    let master = s.master()?;
    // The head signed is the one just verified, not a second read.
    let (seq, head) = match s.store.verify_audit().await? {
        Ok(h) => (h.seq, h.hash),
        Err(e) => {
            return Err(ApiError::Conflict(format!(
                "no checkpoint signed: the audit chain fails at record {}: {}",
                e.seq, e.reason
            )));
        }
    };
    let signer = CheckpointSigner::derive(&master, s.config.trust_domain.as_str());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Ok(signer.sign(seq, &head, now_ms))
}

async fn checkpoint(State(s): S, headers: HeaderMap) -> ApiResult {
    s.authenticate(&headers).await?;
    ok(&sign_current(&s).await?)
}

async fn checkpoint_key(State(s): S) -> ApiResult {
    // Public, like a JWKS; served only while unsealed. It never changes
    // (the master key does not), so it is derived once, not per request:
    // this endpoint takes no token.
    let public_key = match s.checkpoint_public_key.get() {
        Some(k) => k.clone(),
        None => {
            let master = s.master()?;
            let key =
                CheckpointSigner::derive(&master, s.config.trust_domain.as_str()).public_key();
            s.checkpoint_public_key.get_or_init(|| key).clone()
        }
    };
    s.authority()?;
    ok(&CheckpointKey { public_key })
}

/// Appends one checkpoint line to `path` and syncs it.
pub fn append_checkpoint(path: &std::path::Path, cp: &Checkpoint) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// Every `interval`, while unsealed and when the chain has grown, signs a
/// checkpoint and appends it to `path`.
pub async fn checkpoint_task(
    s: Arc<Server>,
    path: std::path::PathBuf,
    interval: std::time::Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seq = -1;
    loop {
        tick.tick().await;
        let Ok((seq, _)) = s.store.audit_head().await else {
            continue;
        };
        if seq == last_seq || s.master().is_err() {
            continue;
        }
        match sign_current(&s).await {
            Ok(cp) => match append_checkpoint(&path, &cp) {
                Ok(()) => last_seq = cp.seq,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot append an audit checkpoint")
                }
            },
            Err(e) => tracing::error!(error = %e, "no audit checkpoint signed"),
        }
    }
}
