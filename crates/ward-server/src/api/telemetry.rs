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
        .route("/v1/telemetry/edges", get(edges))
}

pub(super) const TELEMETRY_PATH: &str = "/v1/proxy/telemetry";

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
