//! The HTTP API, `/v1/...`. Each handler reads in the same order:
//! authenticate, require unsealed, parse and validate the body, act, audit,
//! answer. Nothing is changed before every check has passed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use ward_api::*;
use ward_identity::{SpiffeId, validate_csr};
use ward_store::{AuditEvent, EntryRecord, now_secs};

use crate::authority::new_ca_record;
use crate::error::{ApiError, json_response, parse_json};
use crate::issuance;
use crate::state::Server;

type S = State<Arc<Server>>;
type ApiResult = Result<Response, ApiError>;

/// The largest request body accepted; CSRs and entries are small.
const MAX_BODY: usize = 64 * 1024;
/// The largest policy text, plus room for nothing else: the body is the text.
const MAX_POLICY_BYTES: usize = ward_policy::MAX_POLICY_BYTES;

/// The API router.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/unseal", post(unseal).put(unseal))
        .route("/v1/sys/seal", post(seal).put(seal))
        .route("/v1/bundle", get(bundle))
        .route("/v1/svid/x509", post(sign_x509))
        .route("/v1/svid/jwt", post(sign_jwt))
        .route("/v1/entries", post(create_entry).get(list_entries))
        .route(
            "/v1/entries/{id}",
            get(show_entry).patch(update_entry).delete(delete_entry),
        )
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/ca", get(list_cas))
        .route("/v1/ca/prepare", post(prepare_ca))
        .route("/v1/ca/activate", post(activate_ca))
        .route("/v1/audit", get(audit_page))
        .merge(crate::agent_routes::router())
        .merge(crate::audit_routes::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Policy texts and telemetry batches are larger than any other body: they get their own limit.
        .merge(crate::policy_routes::router().layer(DefaultBodyLimit::max(MAX_POLICY_BYTES)))
        .fallback(|| async { ApiError::NotFound("no such API path".into()) })
        .layer(axum::middleware::from_fn(reject_oversized))
        .layer(axum::middleware::from_fn_with_state(
            server.limits.clone(),
            crate::limits::limit,
        ))
        .with_state(server)
}

/// Refuses a body whose declared length is over the limit before anything
/// reads it (and before hyper answers `Expect: 100-continue`); bodies without
/// a length are cut off at the limit by `DefaultBodyLimit`.
async fn reject_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = if crate::policy_routes::LARGE_BODY_PATHS.contains(&req.uri().path()) {
        MAX_POLICY_BYTES
    } else {
        MAX_BODY
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::TooLarge(limit).into_response();
    }
    next.run(req).await
}

pub(crate) fn ok<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, body))
}

async fn health(State(s): S) -> Response {
    let st = s.seal_status();
    let code = if st.sealed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(code, &st)
}

async fn seal_status(State(s): S) -> Response {
    json_response(StatusCode::OK, &s.seal_status())
}

async fn unseal(State(s): S, body: Bytes) -> ApiResult {
    let req: UnsealRequest = parse_json(&body)?;
    if req.key.is_none() && !req.reset {
        return Err(ApiError::BadRequest(
            "missing field `key`: pass one unseal share".into(),
        ));
    }
    let status = s.submit_share(req.key, req.reset).await?;
    ok(&status)
}

async fn seal(State(s): S, headers: HeaderMap) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    s.store
        .append_audit(&[AuditEvent::new(
            caller.actor(),
            "server.seal",
            "-",
            serde_json::json!({}),
        )])
        .await?;
    s.seal();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct BundleQuery {
    format: Option<String>,
}

async fn bundle(State(s): S, Query(q): Query<BundleQuery>, headers: HeaderMap) -> ApiResult {
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

pub(crate) fn ttl_within(
    requested: Option<u64>,
    default: Duration,
    max: Duration,
    what: &str,
) -> Result<Duration, ApiError> {
    let ttl = requested.map(Duration::from_secs).unwrap_or(default);
    if ttl.is_zero() {
        return Err(ApiError::BadRequest(format!(
            "{what} must be at least 1 second"
        )));
    }
    if ttl > max {
        return Err(ApiError::BadRequest(format!(
            "{what} {}s is longer than the server's maximum {}s",
            ttl.as_secs(),
            max.as_secs()
        )));
    }
    Ok(ttl)
}

async fn sign_x509(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    let authority = s.authority()?;
    let req: X509SvidRequest = parse_json(&body)?;
    let csr = validate_csr(req.csr.as_bytes(), &s.config.trust_domain)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut default_ttl = s.config.ca.svid_default_ttl;
    if let Some(entry_id) = &req.entry_id {
        let entry = s.store.entry(entry_id).await?;
        if entry.spiffe_id != csr.spiffe_id().to_string() {
            return Err(ApiError::BadRequest(format!(
                "the CSR's SPIFFE ID {} differs from entry {entry_id}'s {}",
                csr.spiffe_id(),
                entry.spiffe_id
            )));
        }
        default_ttl = Duration::from_secs(entry.x509_ttl as u64);
    }
    let ttl = ttl_within(req.ttl, default_ttl, s.config.ca.svid_max_ttl, "ttl")?;
    let svid = issuance::sign_x509(&authority, &csr, ttl)?;
    s.audit
        .append(AuditEvent::new(
            caller.actor(),
            "svid.x509",
            svid.spiffe_id.to_string(),
            serde_json::json!({"serial": svid.serial_hex, "expires_at": svid.not_after.unix_timestamp(), "entry_id": req.entry_id}),
        ))
        .await?;
    ok(&issuance::x509_response(&authority, svid))
}

fn workload_id(s: &Server, field: &str, value: &str) -> Result<SpiffeId, ApiError> {
    let id = SpiffeId::parse(value)
        .map_err(|e| ApiError::BadRequest(format!("{field} {value:?}: {e}")))?;
    if id.trust_domain() != &s.config.trust_domain {
        return Err(ApiError::BadRequest(format!(
            "{field} {value:?} is not in trust domain {}",
            s.config.trust_domain
        )));
    }
    if !id.is_workload() {
        return Err(ApiError::BadRequest(format!(
            "{field} {value:?} has no path"
        )));
    }
    Ok(id)
}

async fn sign_jwt(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    let authority = s.authority()?;
    let req: JwtSvidRequest = parse_json(&body)?;
    let id = workload_id(&s, "spiffe_id", &req.spiffe_id)?;
    let ttl = ttl_within(
        req.ttl,
        s.config.ca.jwt_default_ttl,
        s.config.ca.jwt_max_ttl,
        "ttl",
    )?;
    ok(&issuance::issue_jwt(
        &s,
        &authority,
        &id,
        &req.audience,
        ttl,
        caller.actor(),
        None,
    )
    .await?)
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
    s.changes.notify_waiters();
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
    s.changes.notify_waiters();
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
    s.changes.notify_waiters();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The longest join token lifetime: join tokens are bootstrap secrets.
const MAX_JOIN_TOKEN_TTL: u64 = 24 * 3600;

async fn create_join_token(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let req: JoinTokenRequest = parse_json(&body)?;
    if req.ttl == 0 || req.ttl > MAX_JOIN_TOKEN_TTL {
        return Err(ApiError::BadRequest(format!(
            "field `ttl`: {} is not between 1 and {MAX_JOIN_TOKEN_TTL} seconds",
            req.ttl
        )));
    }
    let node_id = match &req.node_name {
        None => None,
        Some(name) => Some(
            SpiffeId::from_parts(&s.config.trust_domain, &format!("/ward/agent/{name}"))
                .ok()
                .filter(|id| id.path().matches('/').count() == 3)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "field `node_name`: {name:?} is not a valid node name"
                    ))
                })?
                .to_string(),
        ),
    };
    let token = crate::init::new_token();
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let expires_at = now_secs() + req.ttl as i64;
    let audit = AuditEvent::new(
        caller.actor(),
        "jointoken.create",
        id.clone(),
        serde_json::json!({"expires_at": expires_at, "node_id": node_id}),
    );
    s.store
        .create_join_token(
            &id,
            &crate::state::token_hash(&token),
            expires_at,
            node_id.as_deref(),
            audit,
        )
        .await?;
    ok(&JoinTokenResponse {
        token: token.to_string(),
        id,
        expires_at,
    })
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
    ok(
        &serde_json::json!({"id": record.id, "generation": record.generation, "state": record.state}),
    )
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
    ok(
        &serde_json::json!({"id": record.id, "generation": record.generation, "state": record.state}),
    )
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
