//! `/v1/policy` and `/v1/proxy/policy`: the Cedar policy, pushed by an
//! administrator and long-polled by proxies (each sees only the policies
//! that can match its own service).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Router};
use ward_api::*;
use ward_store::AuditEvent;

use super::{ApiResult, S, ok};
use crate::auth::workload;
use crate::error::ApiError;
use crate::long_poll::{LongPoll, LongPollQuery};
use crate::peer::PeerId;
use crate::state::{Labels, Server};

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(POLICY_PATH, get(current).put(push).post(push))
        .route("/v1/proxy/policy", get(watch))
}

pub(crate) const POLICY_PATH: &str = "/v1/policy";

fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

async fn push(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the policy text is not UTF-8".into()))?;
    let set = ward_policy::validate(text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let count = set.policies().count();
    let sha = sha256_hex(text);
    let audit = AuditEvent::new(
        caller.actor(),
        "policy.push",
        "policy",
        serde_json::json!({"sha256": sha, "policies": count}),
    );
    let record = s
        .store
        .push_policy(text, &sha, &caller.actor(), audit)
        .await?;
    tracing::info!(version = record.version, policies = count, "policy pushed");
    ok(&PolicyVersion {
        version: record.version,
        revision: record.revision,
        sha256: record.sha256,
        policies: count,
        created_at: record.created_at,
    })
}

async fn current(State(s): S, headers: HeaderMap) -> ApiResult {
    s.authenticate(&headers).await?;
    s.authority()?;
    let p = s.current_policy().await?;
    ok(&PolicyCurrent {
        version: p.as_ref().map_or(0, |p| p.version),
        sha256: p
            .as_ref()
            .map_or_else(|| sha256_hex(""), |p| p.sha256.clone()),
        text: p.map(|p| p.text).unwrap_or_default(),
    })
}

async fn watch(
    State(s): S,
    Extension(peer): Extension<PeerId>,
    q: Result<Query<LongPollQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let me = workload(&s, &peer)?;
    s.authority()?;
    let poll = LongPoll::from_query(q)?;
    loop {
        // Register for a wake-up before reading, so a change in between is not missed.
        let wake = s.store.changes().notified();
        let revision = s.store.revision().await?;
        if revision > poll.since || poll.expired() {
            let policy = s.current_policy().await?;
            let labels = labels_at(&s, revision).await?;
            return ok(&ProxyPolicy {
                revision,
                version: policy.as_ref().map_or(0, |p| p.version),
                sha256: policy
                    .as_ref()
                    .map_or_else(|| sha256_hex(""), |p| p.sha256.clone()),
                // Only the policies that can apply to this proxy's service.
                text: match policy {
                    Some(p) => ward_policy::scoped_text(&p.text, &me.to_string()).map_err(|e| {
                        ApiError::Internal(format!("the stored policy does not validate: {e}"))
                    })?,
                    None => String::new(),
                },
                labels: (*labels).clone(),
                scoped_for: me.to_string(),
            });
        }
        poll.wait(wake).await;
    }
}

/// Every workload's labels, by SPIFFE ID, as of `revision` or later:
/// read (and every entry verified) once per revision, not once per proxy
/// poll.
pub(crate) async fn labels_at(
    s: &Server,
    revision: i64,
) -> Result<std::sync::Arc<Labels>, ApiError> {
    if let Some((at, labels)) = &*s.labels_cache.lock().unwrap_or_else(|p| p.into_inner())
        && *at == revision
    {
        return Ok(labels.clone());
    }
    let mut labels = Labels::new();
    for e in s.store.entry_changes(None, 0).await?.entries {
        if !e.labels.is_empty() {
            labels.entry(e.spiffe_id).or_default().extend(e.labels);
        }
    }
    let labels = std::sync::Arc::new(labels);
    *s.labels_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((revision, labels.clone()));
    Ok(labels)
}
