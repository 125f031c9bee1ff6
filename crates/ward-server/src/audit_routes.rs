//! The audit log's integrity over the API: the server's check of the
//! keyed chain, signed checkpoints and their public key, and the task that
//! appends checkpoints to a file outside the store (`[audit]`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use ward_api::{AuditVerification, Checkpoint, CheckpointKey};
use ward_store::barrier::CheckpointSigner;

use crate::error::{ApiError, json_response};
use crate::state::Server;

type S = State<Arc<Server>>;
type ApiResult = Result<axum::response::Response, ApiError>;

pub fn router() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/audit/verify", get(verify))
        .route("/v1/audit/checkpoint", post(checkpoint))
        .route("/v1/audit/checkpoint-key", get(checkpoint_key))
}

fn ok<T: serde::Serialize>(v: &T) -> ApiResult {
    Ok(json_response(axum::http::StatusCode::OK, v))
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
    // Public, like a JWKS; it exists only while unsealed.
    let master = s.master()?;
    let signer = CheckpointSigner::derive(&master, s.config.trust_domain.as_str());
    ok(&CheckpointKey {
        public_key: signer.public_key(),
    })
}

/// Appends one checkpoint line to `path` and syncs it.
pub fn append_checkpoint(path: &Path, cp: &Checkpoint) -> std::io::Result<()> {
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
