//! `/v1/proxy/telemetry` and `/v1/telemetry/edges`: call edges reported by
//! proxies, folded per edge and minute, bounded per reporter.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use ward_api::*;
use ward_store::now_secs;

use super::{ApiResult, S, ok};
use crate::auth::workload;
use crate::error::{ApiError, parse_json};
use crate::peer::PeerId;
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(TELEMETRY_PATH, post(telemetry))
        .route(DENIALS_PATH, post(denials))
        .route("/v1/telemetry/edges", get(edges))
}

pub(super) const TELEMETRY_PATH: &str = "/v1/proxy/telemetry";
pub(super) const DENIALS_PATH: &str = "/v1/gateway/denials";

/// The most denial counts in one batch.
const MAX_DENIALS: usize = 500;

/// `POST /v1/gateway/denials`: a gateway's refusals, by route, reason and
/// client, into the audit chain as one record per batch (the reporter,
/// by its SVID, is the actor). What the gateway says is its own account:
/// checked for shape, never trusted beyond naming who said it.
async fn denials(State(s): S, Extension(peer): Extension<PeerId>, body: Bytes) -> ApiResult {
    let reporter = workload(&s, &peer)?.to_string();
    s.authority()?;
    // Each record is a durable audit append: a reporter gets a few a
    // second (gateways send one every few seconds), not the chain.
    static PER_REPORTER: std::sync::OnceLock<governor::DefaultKeyedRateLimiter<String>> =
        std::sync::OnceLock::new();
    let limiter = PER_REPORTER.get_or_init(|| {
        governor::RateLimiter::keyed(
            governor::Quota::per_second(std::num::NonZeroU32::MIN.saturating_add(1))
                .allow_burst(std::num::NonZeroU32::MIN.saturating_add(9)),
        )
    });
    if limiter.len() > 10_000 {
        limiter.retain_recent();
    }
    if limiter.check_key(&reporter).is_err() {
        return Err(ApiError::TooMany(
            "too many denial reports from this reporter; send one batch every few seconds".into(),
        ));
    }
    let batch: DenialBatch = parse_json(&body)?;
    if batch.denials.is_empty() || batch.denials.len() > MAX_DENIALS {
        return Err(ApiError::BadRequest(format!(
            "field `denials`: between 1 and {MAX_DENIALS} counts per batch"
        )));
    }
    let label = |v: &str| {
        !v.is_empty()
            && v.len() <= 128
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/[]".contains(&b))
    };
    for (i, d) in batch.denials.iter().enumerate() {
        let bad = |what: &str| ApiError::BadRequest(format!("field `denials[{i}]`: {what}"));
        if !label(&d.route) || !label(&d.reason) || !label(&d.client) {
            return Err(bad(
                "route, reason and client must be 1-128 letters, digits or -_.:/[]",
            ));
        }
        if d.count == 0 || d.window_end < d.window_start {
            return Err(bad(
                "a count is above zero and its window ends after it starts",
            ));
        }
    }
    let total: u64 = batch.denials.iter().map(|d| d.count).sum();
    let event = ward_store::AuditEvent::new(
        reporter.clone(),
        "gateway.denials",
        "edge",
        serde_json::json!({"total": total, "denials": batch.denials}),
    );
    let seq = s.audit.append(event).await?;
    ok(&DenialsRecorded {
        recorded: batch.denials.len(),
        seq,
    })
}

/// The most edges in one telemetry batch, and the longest field.
const MAX_EDGES: usize = 2000;

const MAX_FIELD: usize = 512;

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
    ok(&TelemetryAccepted {
        accepted: batch.edges.len(),
        folded,
    })
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
