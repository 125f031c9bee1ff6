//! Policies and what proxies need: `PUT /v1/policy` validates a Cedar
//! policy set against Ward's schema and stores it as a new version;
//! proxies (authenticated by their workload SVID) long-poll
//! `/v1/proxy/policy` for it and report call edges to
//! `/v1/proxy/telemetry`; operators read the totals at `/v1/telemetry/edges`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use ward_api::*;
use ward_identity::SpiffeId;
use ward_store::{AuditEvent, now_secs};

use crate::agent_routes::verified_peer;
use crate::error::{ApiError, parse_json};
use crate::long_poll::{LongPoll, LongPollQuery};
use crate::peer::PeerId;
use crate::routes::ok;
use crate::state::Server;

type S = State<Arc<Server>>;
type ApiResult = Result<Response, ApiError>;

pub(crate) const POLICY_PATH: &str = "/v1/policy";
const TELEMETRY_PATH: &str = "/v1/proxy/telemetry";
/// The paths whose bodies may be as large as a policy text.
pub(crate) const LARGE_BODY_PATHS: [&str; 2] = [POLICY_PATH, TELEMETRY_PATH];
/// The most edges in one telemetry batch, and the longest field.
const MAX_EDGES: usize = 2000;
const MAX_FIELD: usize = 512;

pub(crate) fn router() -> Router<Arc<Server>> {
    Router::new()
        .route(POLICY_PATH, get(current).put(push).post(push))
        .route("/v1/proxy/policy", get(watch))
        .route(TELEMETRY_PATH, post(telemetry))
        .route("/v1/telemetry/edges", get(edges))
}

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
    s.changes.notify_waiters();
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

/// The calling workload, from its verified client certificate: any SVID
/// of this trust domain except node agents'.
fn workload(s: &Server, peer: &PeerId) -> Result<SpiffeId, ApiError> {
    let id = verified_peer(s, peer)?;
    if id.trust_domain() != &s.config.trust_domain || id.path().starts_with("/ward/") {
        return Err(ApiError::Forbidden(format!(
            "{id} is not a workload of this trust domain"
        )));
    }
    Ok(id)
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
        let wake = s.changes.notified();
        let revision = s.store.revision().await?;
        if revision > poll.since || poll.expired() {
            let policy = s.current_policy().await?;
            let mut labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for e in s.store.entry_changes(None, 0).await?.entries {
                if !e.labels.is_empty() {
                    labels.entry(e.spiffe_id).or_default().extend(e.labels);
                }
            }
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
                labels,
                scoped_for: me.to_string(),
            });
        }
        poll.wait(wake).await;
    }
}

async fn telemetry(State(s): S, Extension(peer): Extension<PeerId>, body: Bytes) -> ApiResult {
    let reporter = workload(&s, &peer)?.to_string();
    s.authority()?;
    let batch: TelemetryBatch = parse_json(&body)?;
    if batch.edges.len() > MAX_EDGES {
        return Err(ApiError::BadRequest(format!(
            "field `edges`: at most {MAX_EDGES} edges per batch"
        )));
    }
    for (i, e) in batch.edges.iter().enumerate() {
        let bad = |what: &str| ApiError::BadRequest(format!("field `edges[{i}]`: {what}"));
        for f in [
            &e.source,
            &e.destination,
            &e.method,
            &e.route,
            &e.status_class,
        ] {
            if f.len() > MAX_FIELD {
                return Err(bad("a field is longer than 512 bytes"));
            }
        }
        // A proxy reports only edges it is an end of.
        if e.source != reporter && e.destination != reporter {
            return Err(bad(
                "a proxy may only report calls to or from its own identity",
            ));
        }
        if e.decision != "allow" && e.decision != "deny" {
            return Err(bad("`decision` must be allow or deny"));
        }
        if e.requests < 0 || e.latency_us_sum < 0 {
            return Err(bad("counts cannot be negative"));
        }
    }
    let folded = s
        .store
        .record_edges(
            &reporter,
            &batch.edges,
            s.config.telemetry.max_edges_per_reporter,
        )
        .await?;
    if folded > 0 {
        tracing::warn!(%reporter, folded, "a reporter sent more distinct edges this minute than allowed; the rest are counted as (other)");
    }
    ok(&serde_json::json!({"accepted": batch.edges.len(), "folded": folded}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgesQuery {
    since: Option<i64>,
}

async fn edges(
    State(s): S,
    headers: HeaderMap,
    q: Result<Query<EdgesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    s.authenticate(&headers).await?;
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let since = q.since.unwrap_or_else(|| now_secs() - 3600);
    ok(&EdgeTotals {
        edges: s.store.edge_totals(since).await?,
    })
}
