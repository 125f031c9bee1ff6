//! The secrets vault, speaking the part of Vault's HTTP API that hvac and
//! other Vault clients use: KV version 2 at `secret/`, transit at
//! `transit/`, dynamic database credentials at `database/`, workload logins
//! at `auth/cert` and `auth/jwt`, tokens at `auth/token`, and the Cedar
//! policies that say which workload may do what (`sys/policies/cedar`).
//!
//! Every handler reads in the same order: who is calling (the admin token,
//! or a workload token bound to a SPIFFE ID), the canonical path, the
//! capability the request needs, the decision (admins may do anything, as
//! Vault's root token; workloads only what a policy grants), then the work,
//! then the audit record, before anything is answered. Values are sealed
//! per record under the master key with the record's key (mount, path,
//! version) as associated data, so the store holds no secret and a row
//! moved anywhere else fails to open.

mod access;
mod auth;
mod batch;
pub(crate) mod database;
mod kv;
mod paths;
mod policies;
mod transit;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ward_store::seal::MasterKey;

use crate::error::ApiError;
use crate::state::Server;

pub(crate) use access::VaultCaller;
pub(crate) use database::expiry_task;

/// The vault's routes (under `/v1/`).
pub(crate) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .merge(kv::routes())
        .merge(auth::routes())
        .merge(policies::routes())
        .merge(transit::routes())
        .merge(database::routes())
        .route("/v1/sys/mounts", axum::routing::get(mounts))
        .route("/v1/sys/metrics", axum::routing::get(metrics))
}

/// The mounts and prefixes the vault serves (for body limits).
const VAULT_PREFIXES: [&str; 6] = [
    "/v1/secret/",
    "/v1/transit/",
    "/v1/database/",
    "/v1/auth/",
    "/v1/sys/policies/",
    "/v1/sys/leases",
];

/// Whether `path` is one of the vault's.
pub(crate) fn is_vault_path(path: &str) -> bool {
    VAULT_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Vault's `LIST` method is a `GET` with `list=true` (which is how the
/// handlers tell a listing from a read). Applied before routing: the
/// router knows no `LIST`.
pub(crate) fn rewrite_list<B>(req: &mut axum::http::Request<B>) {
    if req.method().as_str() != "LIST" {
        return;
    }
    *req.method_mut() = axum::http::Method::GET;
    let uri = req.uri();
    let pq = match uri.query() {
        Some(q) => format!("{}?{q}&list=true", uri.path()),
        None => format!("{}?list=true", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(u) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
}

/// `GET /v1/sys/mounts`: the vault's engines, in Vault's shape.
async fn mounts(
    axum::extract::State(s): axum::extract::State<Arc<Server>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let _ = access::caller(&s, &headers).await?;
    let mount = |ty: &str, desc: &str, options: serde_json::Value| {
        serde_json::json!({
            "type": ty,
            "description": desc,
            "options": options,
            "config": {"default_lease_ttl": 0, "max_lease_ttl": 0},
            "local": false,
            "seal_wrap": false,
        })
    };
    let engines = serde_json::json!({
        "secret/": mount("kv", "key/value secrets, versioned", serde_json::json!({"version": "2"})),
        "transit/": mount("transit", "encryption as a service", serde_json::Value::Null),
        "database/": mount("database", "dynamic database credentials", serde_json::Value::Null),
        "sys/": mount("system", "system endpoints", serde_json::Value::Null),
    });
    let mut body = engines.clone();
    body["data"] = engines;
    Ok(vault_json(StatusCode::OK, &body))
}

/// `GET /v1/sys/metrics` (admin token): the control plane's gauges in
/// Prometheus text. Label values are fixed words, never caller input.
async fn metrics(
    axum::extract::State(s): axum::extract::State<Arc<Server>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !matches!(
        access::caller(&s, &headers).await?,
        VaultCaller::Admin { .. }
    ) {
        return Err(ApiError::Forbidden(
            "permission denied: metrics need the admin token".into(),
        ));
    }
    let (sealed, _) = (s.seal_status().sealed, ());
    let mut active = 0u64;
    let mut revoking = 0u64;
    let mut stuck = 0u64;
    if !sealed {
        for l in s.store.leases("").await? {
            match l.state.as_str() {
                "active" => active += 1,
                _ => revoking += 1,
            }
            if l.attempts >= database::STUCK_AFTER {
                stuck += 1;
            }
        }
    }
    let text = format!(
        "# HELP ward_sealed Whether the server is sealed.\n# TYPE ward_sealed gauge\nward_sealed {}\n\
         # HELP ward_barrier_rejected_rows_total Stored rows that failed authentication since start.\n# TYPE ward_barrier_rejected_rows_total counter\nward_barrier_rejected_rows_total {}\n\
         # HELP ward_vault_leases Dynamic credential leases by state.\n# TYPE ward_vault_leases gauge\nward_vault_leases{{state=\"active\"}} {active}\nward_vault_leases{{state=\"revoking\"}} {revoking}\n\
         # HELP ward_vault_leases_stuck Leases whose revocation failed at least {} times (still retried).\n# TYPE ward_vault_leases_stuck gauge\nward_vault_leases_stuck {stuck}\n",
        u8::from(sealed),
        s.store.barrier().rejected(),
        database::STUCK_AFTER,
    );
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(resp)
}

/// The vault's in-memory state: caches of what the store holds, each
/// short-lived so that another replica's change shows within seconds.
#[derive(Default)]
pub struct VaultState {
    pub(crate) access: access::AccessCache,
    pub(crate) transit: transit::KeyCache,
    pub(crate) kv_config: kv::ConfigCache,
    batcher: std::sync::OnceLock<batch::WriteBatcher>,
    /// One root rotation at a time.
    pub(crate) rotation: tokio::sync::Mutex<()>,
}

impl VaultState {
    /// The write batcher, started on first use (inside the runtime).
    pub(crate) fn batcher(&self, store: &ward_store::Store) -> &batch::WriteBatcher {
        self.batcher
            .get_or_init(|| batch::WriteBatcher::spawn(store.clone()))
    }
}

/// Seals `value` as the record `key`: a fresh data key per record, wrapped
/// by the master key, with `key` as associated data.
pub(crate) fn seal_json<T: Serialize>(
    master: &MasterKey,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, ApiError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    master
        .seal(key, &plain)
        .map_err(|e| ApiError::Internal(format!("sealing {key}: {e}")))
}

/// Opens the record `key`; a record that was altered, or moved from
/// another key, is an integrity error, never another record's value.
pub(crate) fn open_json<T: DeserializeOwned>(
    master: &MasterKey,
    key: &str,
    sealed: &[u8],
) -> Result<T, ApiError> {
    let plain = master.open(key, sealed).map_err(|_| integrity(key))?;
    serde_json::from_slice(&plain).map_err(|_| integrity(key))
}

/// The record `key`, opened, if there is one.
pub(crate) async fn load_record<T: DeserializeOwned>(
    s: &Server,
    master: &MasterKey,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match s.store.vault_get(key).await? {
        Some(sealed) => Ok(Some(open_json(master, key, &sealed)?)),
        None => Ok(None),
    }
}

/// Writes the record `key` (sealed), or with `None` deletes it, in one
/// transaction with its audit record.
pub(crate) async fn store_record<T: Serialize>(
    s: &Server,
    access: &access::Access,
    key: &str,
    value: Option<&T>,
    event: ward_store::AuditEvent,
) -> Result<(), ApiError> {
    let mut tx = s.store.vault_begin(key).await?;
    match value {
        Some(v) => tx.put(key, &seal_json(&access.master, key, v)?).await?,
        None => tx.delete(key).await?,
    }
    tx.commit(&[event]).await?;
    Ok(())
}

pub(crate) fn integrity(key: &str) -> ApiError {
    tracing::error!(
        record = key,
        "a vault record failed to decrypt: it was altered or moved"
    );
    ApiError::Integrity(format!(
        "the stored record {key} failed its integrity check (it was altered, or copied from another path or version); restore it from a backup"
    ))
}

/// A Vault response envelope around `data`, status 200.
pub(crate) fn data<T: Serialize>(data: T) -> Result<Response, ApiError> {
    Ok(vault_json(
        StatusCode::OK,
        &serde_json::json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        }),
    ))
}

/// A JSON response with `Content-Type: application/json` exactly.
pub(crate) fn vault_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 204, as Vault answers writes that return nothing.
pub(crate) fn no_content() -> Result<Response, ApiError> {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A body that may be empty (Vault clients send none on some POSTs).
pub(crate) fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    crate::error::parse_json(body)
}

/// RFC 3339 with nanoseconds, as Vault writes times.
pub(crate) fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 32 random bytes, hex (tokens, passwords, lease IDs).
pub(crate) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ApiError::Internal("random".into()))?;
    Ok(hex::encode(b))
}

/// Parses Vault's durations: seconds as a number, or "30m", "1h", "0s".
pub(crate) fn parse_duration(field: &str, v: &serde_json::Value) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "field `{field}`: expected seconds or a duration like \"30m\""
        ))
    };
    match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(bad),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(0),
        serde_json::Value::String(s) => match s.trim().parse::<u64>() {
            Ok(n) => Ok(n),
            Err(_) => humantime::parse_duration(s.trim())
                .map(|d| d.as_secs())
                .map_err(|_| bad()),
        },
        serde_json::Value::Null => Ok(0),
        _ => Err(bad()),
    }
}

/// Vault's duration output ("0s", "1h0m0s" style, simplified to seconds).
pub(crate) fn duration_text(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_moved_to_another_key_does_not_open() {
        let m = MasterKey::generate().unwrap();
        let sealed = seal_json(&m, "kv/secret/data/a#v1", &serde_json::json!({"p": "x"})).unwrap();
        let back: serde_json::Value = open_json(&m, "kv/secret/data/a#v1", &sealed).unwrap();
        assert_eq!(back["p"], "x");
        for other in [
            "kv/secret/data/a#v2",
            "kv/secret/data/b#v1",
            "kv/other/data/a#v1",
        ] {
            let e = open_json::<serde_json::Value>(&m, other, &sealed).unwrap_err();
            assert!(matches!(e, ApiError::Integrity(_)), "{other}: {e}");
        }
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            open_json::<serde_json::Value>(&m, "kv/secret/data/a#v1", &tampered),
            Err(ApiError::Integrity(_))
        ));
    }

    #[test]
    fn durations_read_as_vault_writes_them() {
        assert_eq!(parse_duration("d", &serde_json::json!(30)).unwrap(), 30);
        assert_eq!(parse_duration("d", &serde_json::json!("1h")).unwrap(), 3600);
        assert_eq!(parse_duration("d", &serde_json::json!("0s")).unwrap(), 0);
        assert_eq!(parse_duration("d", &serde_json::json!("45")).unwrap(), 45);
        assert!(parse_duration("d", &serde_json::json!("soon")).is_err());
        assert!(parse_duration("d", &serde_json::json!(-1)).is_err());
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(3725), "1h2m5s");
        assert_eq!(duration_text(90), "1m30s");
    }
}
