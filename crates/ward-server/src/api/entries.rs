//! `/v1/entries`: registration entries (who is which SPIFFE ID on which node).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use ward_api::*;
use ward_identity::SpiffeId;
use ward_store::{AuditEvent, EntryRecord, now_secs};

use super::svid::workload_id;
use super::{ApiResult, S, ok, ttl_within};
use crate::error::{ApiError, parse_json};
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/entries", post(create_entry).get(list_entries))
        .route(
            "/v1/entries/{id}",
            get(show_entry).patch(update_entry).delete(delete_entry),
        )
}

/// An entry's SPIFFE ID: a workload ID outside `/ward/`, which Ward keeps
/// for its own identities (a workload holding a node ID could act as that
/// node towards the agent API).
fn entry_id_field(s: &Server, value: &str) -> Result<SpiffeId, ApiError> {
    let id = workload_id(s, "spiffe_id", value)?;
    if id.path().starts_with("/ward/") {
        return Err(ApiError::BadRequest(format!(
            "spiffe_id {value:?}: paths under /ward/ are reserved for Ward's own identities (node agents)"
        )));
    }
    Ok(id)
}

fn validate_selectors(selectors: &[String]) -> Result<(), ApiError> {
    if selectors.is_empty() {
        return Err(ApiError::BadRequest(
            "field `selectors`: at least one selector is required".into(),
        ));
    }
    for sel in selectors {
        match sel.split_once(':') {
            Some((t, v))
                if !t.is_empty()
                    && !v.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {}
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "field `selectors`: {sel:?} is not TYPE:VALUE (such as unix:uid:1000)"
                )));
            }
        }
    }
    Ok(())
}

/// Labels become Cedar tags: short, printable keys and values, few of them.
fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 32 {
        return Err(ApiError::BadRequest(
            "field `labels`: at most 32 labels".into(),
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !key_ok || v.len() > 253 || v.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(format!(
                "field `labels`: {k:?} is not a valid label (keys: 1-63 of A-Z a-z 0-9 - _ . /; values: up to 253 printable characters)"
            )));
        }
    }
    Ok(())
}

async fn create_entry(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let req: EntryCreate = parse_json(&body)?;
    let id = entry_id_field(&s, &req.spiffe_id)?;
    let parent = workload_id(&s, "parent_id", &req.parent_id)?;
    validate_selectors(&req.selectors)?;
    validate_labels(&req.labels)?;
    let x509 = ttl_within(
        req.x509_ttl,
        s.config.ca.svid_default_ttl,
        s.config.ca.svid_max_ttl,
        "x509_ttl",
    )?;
    let jwt = ttl_within(
        req.jwt_ttl,
        s.config.ca.jwt_default_ttl,
        s.config.ca.jwt_max_ttl,
        "jwt_ttl",
    )?;
    let now = now_secs();
    let entry = EntryRecord {
        id: uuid::Uuid::new_v4().to_string(),
        spiffe_id: id.to_string(),
        parent_id: parent.to_string(),
        selectors: req.selectors,
        labels: req.labels,
        x509_ttl: x509.as_secs() as i64,
        jwt_ttl: jwt.as_secs() as i64,
        created_at: now,
        updated_at: now,
        revision: 0,
    };
    let audit = AuditEvent::new(
        caller.actor(),
        "entry.create",
        entry.id.clone(),
        serde_json::json!({"spiffe_id": entry.spiffe_id, "parent_id": entry.parent_id, "selectors": entry.selectors, "labels": entry.labels}),
    );
    let entry = s.store.create_entry(entry, audit).await?;
    ok(&entry)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    parent_id: Option<String>,
    since: Option<i64>,
}

async fn list_entries(
    State(s): S,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    s.authenticate(&headers).await?;
    s.authority()?;
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let changes = s
        .store
        .entry_changes(q.parent_id.as_deref(), q.since.unwrap_or(0).max(0))
        .await?;
    ok(&EntryList {
        entries: changes.entries,
        deleted: changes.deleted,
        revision: changes.revision,
    })
}

async fn show_entry(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.authenticate(&headers).await?;
    s.authority()?;
    ok(&s.store.entry(&id).await?)
}

async fn update_entry(
    State(s): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let req: EntryUpdate = parse_json(&body)?;
    let mut entry = s.store.entry(&id).await?;
    if let Some(v) = &req.spiffe_id {
        entry.spiffe_id = entry_id_field(&s, v)?.to_string();
    }
    if let Some(v) = &req.parent_id {
        entry.parent_id = workload_id(&s, "parent_id", v)?.to_string();
    }
    if let Some(v) = req.selectors {
        validate_selectors(&v)?;
        entry.selectors = v;
    }
    if let Some(v) = req.labels {
        validate_labels(&v)?;
        entry.labels = v;
    }
    if req.x509_ttl.is_some() {
        entry.x509_ttl = ttl_within(
            req.x509_ttl,
            s.config.ca.svid_default_ttl,
            s.config.ca.svid_max_ttl,
            "x509_ttl",
        )?
        .as_secs() as i64;
    }
    if req.jwt_ttl.is_some() {
        entry.jwt_ttl = ttl_within(
            req.jwt_ttl,
            s.config.ca.jwt_default_ttl,
            s.config.ca.jwt_max_ttl,
            "jwt_ttl",
        )?
        .as_secs() as i64;
    }
    entry.updated_at = now_secs();
    let audit = AuditEvent::new(
        caller.actor(),
        "entry.update",
        id.clone(),
        serde_json::json!({"spiffe_id": entry.spiffe_id, "parent_id": entry.parent_id, "selectors": entry.selectors, "labels": entry.labels}),
    );
    let entry = s.store.update_entry(entry, audit).await?;
    ok(&entry)
}

async fn delete_entry(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let audit = AuditEvent::new(
        caller.actor(),
        "entry.delete",
        id.clone(),
        serde_json::json!({}),
    );
    s.store.delete_entry(&id, audit).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
