//! `/v1/ca` and `/v1/bundle`: the CA generations, their rotation, and the
//! trust bundle every agent and proxy trusts.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use ward_api::*;
use ward_store::{AuditEvent, now_secs};

use super::{ApiResult, S, ok};
use crate::authority::new_ca_record;
use crate::error::ApiError;
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/bundle", get(bundle))
        .route("/v1/ca", get(list_cas))
        .route("/v1/ca/prepare", post(prepare_ca))
        .route("/v1/ca/activate", post(activate_ca))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleQuery {
    format: Option<String>,
}

async fn bundle(
    State(s): S,
    q: Result<Query<BundleQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> ApiResult {
    // A bad query is a JSON error like every other (axum's own rejection is
    // plain text).
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let authority = s.authority()?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    match q.format.as_deref() {
        Some("spiffe") | Some("jwks") => ok(&authority.spiffe_bundle()),
        None if wants_json => ok(&authority.spiffe_bundle()),
        Some("pem") | None => {
            let mut resp = authority.bundle_pem().to_owned().into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            Ok(resp)
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "unknown bundle format {other:?}: use pem or spiffe"
        ))),
    }
}

async fn list_cas(State(s): S, headers: HeaderMap) -> ApiResult {
    s.authenticate(&headers).await?;
    let authority = s.authority()?;
    let cas = authority
        .cas()
        .iter()
        .map(|c| CaInfo {
            id: c.record.id.clone(),
            generation: c.record.generation,
            state: c.record.state.clone(),
            subject: c.subject.clone(),
            not_after: c.record.not_after,
            activated_at: c.record.activated_at,
            drop_after: c.record.drop_after,
            jwt_kid: c.record.jwt_kid.clone(),
        })
        .collect();
    ok(&CaList { cas })
}

async fn prepare_ca(State(s): S, headers: HeaderMap) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    let master = s.master()?;
    let stored = s.store.meta(crate::authority::UPSTREAM_CERTS).await?;
    let verified = s
        .store
        .meta_verified(crate::authority::UPSTREAM_CERTS)
        .await?;
    // Without the upstream certificates the next CA would be a root of its
    // own. A deleted row must not do that to a trust domain whose CAs chain
    // to an upstream (the CA rows say so, and they are authenticated).
    let under_upstream = s
        .store
        .cas()
        .await?
        .iter()
        .any(|c| c.state == "active" && !c.chain_pem.is_empty());
    if verified.is_none() && under_upstream {
        return Err(ApiError::Conflict(
            "the active CA chains to an upstream CA, but the upstream certificates are missing from the store (removed without the master key?); restore the store from a backup".into(),
        ));
    }
    if stored.is_some() && verified.is_none() {
        // Treating a forged chain as absent would make a root CA where an
        // intermediate belongs: refuse instead.
        return Err(ApiError::Conflict(
            "the stored upstream certificates fail authentication (changed without the master key); restore the store from a backup".into(),
        ));
    }
    let upstream = match verified {
        None => None,
        Some(certs) => {
            let certs: Vec<String> =
                serde_json::from_str(&certs).map_err(|e| ApiError::Internal(e.to_string()))?;
            let sealed = s
                .store
                .sealed_blob(crate::authority::UPSTREAM_KEY)
                .await?
                .ok_or_else(|| {
                    ApiError::Internal("the upstream key is missing from the store".into())
                })?;
            let key = master
                .open(crate::authority::UPSTREAM_KEY, &sealed)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Some(
                ward_identity::UpstreamCa::from_stored(&certs, &key)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            )
        }
    };
    let record = new_ca_record(
        &s.config.trust_domain,
        &master,
        upstream.as_ref(),
        s.config.ca.validity,
        "prepared",
    )?;
    let audit = AuditEvent::new(
        caller.actor(),
        "ca.prepare",
        record.id.clone(),
        serde_json::json!({}),
    );
    let record = s.store.insert_prepared_ca(record, audit).await?;
    s.reload_authority().await?;
    ok(&CaChange {
        id: record.id,
        generation: record.generation,
        state: record.state,
    })
}

async fn activate_ca(State(s): S, headers: HeaderMap) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let now = now_secs();
    // The old CA may have signed SVIDs up to the longest TTL just before
    // this moment; it stays in the bundle until they have all expired.
    let linger = s
        .config
        .ca
        .svid_max_ttl
        .max(s.config.ca.jwt_max_ttl)
        .as_secs() as i64;
    let audit = AuditEvent::new(
        caller.actor(),
        "ca.activate",
        "-",
        serde_json::json!({"old_drop_after": now + linger}),
    );
    let record = s
        .store
        .activate_prepared_ca(now, now + linger, audit)
        .await?;
    s.reload_authority().await?;
    ok(&CaChange {
        id: record.id,
        generation: record.generation,
        state: record.state,
    })
}
