//! KV version 2 at `secret/`, as Vault serves it: versions with
//! check-and-set, soft delete and undelete, destroy, metadata (max
//! versions, required check-and-set, delete-after, custom metadata), and
//! listing with the `LIST` method (or `?list=true`).
//!
//! Records: `kv/secret/meta/PATH` (the versions and settings) and
//! `kv/secret/data/PATH#vN` (one version's data), each sealed under its own
//! key, so a data row copied to another path or version does not open.
//! Writes lock the path's metadata record, read it, and write data,
//! metadata and the audit record in one transaction; reads are audited
//! (durably, in group commits) before the value is answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::access::{Access, authorize, caller};
use super::batch::Outcome;
use super::paths::canonical;
use super::{data, no_content, now_ms, open_json, parse_body, rfc3339, seal_json, vault_json};
use crate::error::{ApiError, parse_json};
use crate::state::Server;

/// The mount.
const MOUNT: &str = "secret";
/// The longest `delete_version_after` accepted (100 years, in seconds).
const MAX_DELETE_AFTER: u64 = 100 * 365 * 86400;

/// `delete_version_after`, bounded.
fn delete_after(v: &Value) -> Result<u64, ApiError> {
    let d = super::parse_duration("delete_version_after", v)?;
    if d > MAX_DELETE_AFTER {
        return Err(ApiError::BadRequest(
            "field `delete_version_after`: at most 100 years (876000h)".into(),
        ));
    }
    Ok(d)
}
/// The mount's own settings record.
const CONFIG_KEY: &str = "kv/secret/config";

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(
            "/v1/secret/data/{*path}",
            get(read_data)
                .post(write_data)
                .put(write_data)
                .patch(patch_data)
                .delete(delete_latest),
        )
        .route("/v1/secret/metadata", get(read_metadata))
        .route("/v1/secret/metadata/", get(read_metadata))
        .route(
            "/v1/secret/metadata/{*path}",
            get(read_metadata)
                .post(write_metadata)
                .put(write_metadata)
                .patch(patch_metadata)
                .delete(delete_metadata),
        )
        .route(
            "/v1/secret/delete/{*path}",
            post(delete_versions).put(delete_versions),
        )
        .route("/v1/secret/undelete/{*path}", post(undelete).put(undelete))
        .route("/v1/secret/destroy/{*path}", post(destroy).put(destroy))
        .route(
            "/v1/secret/config",
            get(read_config).post(write_config).put(write_config),
        )
}

/// One version's bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Version {
    created_ms: i64,
    #[serde(default)]
    deletion_ms: Option<i64>,
    #[serde(default)]
    destroyed: bool,
}

impl Version {
    fn deleted(&self, now: i64) -> bool {
        self.deletion_ms.is_some_and(|d| d <= now)
    }

    fn json(&self, version: u64, custom: &BTreeMap<String, String>) -> Value {
        json!({
            "created_time": rfc3339(self.created_ms),
            "custom_metadata": if custom.is_empty() { Value::Null } else { json!(custom) },
            "deletion_time": self.deletion_ms.map(rfc3339).unwrap_or_default(),
            "destroyed": self.destroyed,
            "version": version,
        })
    }
}

/// A secret's metadata record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    created_ms: i64,
    updated_ms: i64,
    current_version: u64,
    oldest_version: u64,
    /// 0: the mount's setting.
    max_versions: u32,
    cas_required: bool,
    /// Seconds; 0: never.
    delete_version_after: u64,
    custom_metadata: BTreeMap<String, String>,
    versions: BTreeMap<u64, Version>,
    /// Random, new each time the secret is created: part of its data
    /// records' keys, so that after a delete and a re-create a writer
    /// cannot put an old `v1` row back as the new secret's `v1`.
    #[serde(default)]
    lifetime: String,
    /// The current version's sealed data (the same bytes as its data
    /// record, base64), so that reading the latest version is one store
    /// read, not two. Sealed under the data record's own key, so it opens
    /// only as that version of this secret.
    #[serde(default)]
    latest: Option<String>,
}

impl Meta {
    fn fresh(now: i64) -> Result<Self, ApiError> {
        Ok(Self {
            created_ms: now,
            lifetime: super::random_hex(8)?,
            ..Default::default()
        })
    }

    fn data_key(&self, path: &str, version: u64) -> String {
        data_key(path, &self.lifetime, version)
    }
}

/// The mount's settings (`secret/config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MountConfig {
    max_versions: u32,
    cas_required: bool,
    delete_version_after: u64,
}

fn meta_key(path: &str) -> String {
    format!("kv/{MOUNT}/meta/{path}")
}

fn data_key(path: &str, lifetime: &str, version: u64) -> String {
    format!("kv/{MOUNT}/data/{path}#{lifetime}v{version}")
}

/// The canonical path after `/v1/secret/<kind>/` in the raw request URI
/// (not the percent-decoded one: an encoded character is refused, never
/// decoded into another path).
fn path_of<'a>(uri: &'a Uri, kind: &str, listing: bool) -> Result<&'a str, ApiError> {
    let raw = uri.path();
    let prefix = format!("/v1/{MOUNT}/{kind}");
    let rest = raw
        .strip_prefix(&prefix)
        .map(|r| r.strip_prefix('/').unwrap_or(r))
        .ok_or_else(|| ApiError::NotFound("no such API path".into()))?;
    canonical(rest, listing)
}

fn api_path(kind: &str, path: &str) -> String {
    if path.is_empty() {
        format!("{MOUNT}/{kind}")
    } else {
        format!("{MOUNT}/{kind}/{path}")
    }
}

/// The mount's settings, reused for a moment (every write reads them;
/// another replica's change applies within [`CONFIG_TTL`], this one's at once).
#[derive(Default)]
pub struct ConfigCache(std::sync::Mutex<Option<(std::time::Instant, MountConfig)>>);

const CONFIG_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl ConfigCache {
    fn get(&self) -> Option<MountConfig> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < CONFIG_TTL)
            .map(|(_, c)| c.clone())
    }

    fn put(&self, c: Option<MountConfig>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            c.map(|c| (std::time::Instant::now(), c));
    }
}

async fn mount_config(
    s: &Server,
    master: &ward_store::seal::MasterKey,
) -> Result<MountConfig, ApiError> {
    if let Some(c) = s.vault.kv_config.get() {
        return Ok(c);
    }
    let c = load_mount_config(s, master).await?;
    s.vault.kv_config.put(Some(c.clone()));
    Ok(c)
}

async fn load_mount_config(
    s: &Server,
    master: &ward_store::seal::MasterKey,
) -> Result<MountConfig, ApiError> {
    Ok(match super::load_record(s, master, CONFIG_KEY).await? {
        Some(cfg) => cfg,
        None => MountConfig {
            max_versions: s.config.vault.kv_max_versions,
            cas_required: false,
            delete_version_after: 0,
        },
    })
}

async fn load_meta(s: &Server, access: &Access, path: &str) -> Result<Option<Meta>, ApiError> {
    super::load_record(s, &access.master, &meta_key(path)).await
}

/// Audits a read durably before its answer goes out (fail closed).
async fn audit_read(
    s: &Server,
    access: &Access,
    action: &str,
    target: &str,
    detail: Value,
) -> Result<(), ApiError> {
    s.audit
        .append(access.event(action, target, detail))
        .await
        .map_err(|e| {
            ApiError::Internal(format!(
                "the audit record could not be written, so the read is refused: {e}"
            ))
        })?;
    Ok(())
}

/// The capability a write needs: `create` for a new secret, `update` for
/// an existing one (as in Vault's policies).
async fn write_capability(
    s: &Server,
    headers: &HeaderMap,
    path: &str,
) -> Result<&'static str, ApiError> {
    // Only workloads are decided on; the admin needs no lookup.
    if matches!(caller(s, headers).await?, super::VaultCaller::Admin { .. }) {
        return Ok("update");
    }
    let exists = s.store.vault_get(&meta_key(path)).await?.is_some();
    Ok(if exists { "update" } else { "create" })
}

#[derive(Debug, Default, Deserialize)]
struct ReadQuery {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    list: Option<String>,
}

async fn read_data(
    State(s): State<Arc<Server>>,
    uri: Uri,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "data", false)?;
    let target = api_path("data", path);
    let access = authorize(&s, &headers, "read", &target).await?;
    let wanted = match q.version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("query `version`: {v:?} is not a version number"))
        })?),
    };
    let Some(meta) = load_meta(&s, &access, path).await? else {
        audit_read(
            &s,
            &access,
            "secret.read",
            &target,
            json!({"outcome": "not_found"}),
        )
        .await?;
        return Err(ApiError::VaultNotFound);
    };
    let version = wanted.unwrap_or(meta.current_version);
    let Some(info) = meta.versions.get(&version) else {
        audit_read(
            &s,
            &access,
            "secret.read",
            &target,
            json!({"version": version, "outcome": "not_found"}),
        )
        .await?;
        return Err(ApiError::VaultNotFound);
    };
    let now = now_ms();
    if info.deleted(now) || info.destroyed {
        audit_read(
            &s,
            &access,
            "secret.read",
            &target,
            json!({"version": version, "outcome": "deleted"}),
        )
        .await?;
        // Vault answers a deleted version 404 with its metadata, so that
        // clients can tell "deleted" from "never written".
        return Ok(vault_json(
            StatusCode::NOT_FOUND,
            &json!({"data": {"data": null, "metadata": info.json(version, &meta.custom_metadata)}}),
        ));
    }
    let key = meta.data_key(path, version);
    let inline = (version == meta.current_version)
        .then_some(meta.latest.as_deref())
        .flatten()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let sealed = match inline {
        Some(sealed) => sealed,
        None => s
            .store
            .vault_get(&key)
            .await?
            .ok_or_else(|| super::integrity(&key))?,
    };
    let value: Value = open_json(&access.master, &key, &sealed)?;
    audit_read(
        &s,
        &access,
        "secret.read",
        &target,
        json!({"version": version, "outcome": "ok"}),
    )
    .await?;
    data(json!({"data": value, "metadata": info.json(version, &meta.custom_metadata)}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteOptions {
    #[serde(default)]
    cas: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    data: Map<String, Value>,
    #[serde(default)]
    options: WriteOptions,
    /// Vault accepts and ignores it on writes.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<u64>,
}

/// Stores a new version of `path` with `value`: on SQLite through the
/// write batcher (group commit), on PostgreSQL in a transaction of its own.
/// A write decided as a create that finds the secret there is decided
/// again as an update (and audited if refused).
async fn put_version<F>(
    s: &Arc<Server>,
    access: &Access,
    decided: &str,
    path: &str,
    cas: Option<u64>,
    action: &'static str,
    value: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<Value>) -> Result<Map<String, Value>, ApiError> + Send + Clone + 'static,
{
    let target = api_path("data", path);
    let mut decided = decided.to_owned();
    let mut rounds = 0;
    // Read before any transaction: a transaction waiting for a second pool
    // connection, with every connection held by such transactions, would
    // wait forever.
    let cfg = mount_config(s, &access.master).await?;
    loop {
        let outcome = match s.store.backend() {
            ward_store::Backend::Sqlite => {
                let (c2, a2, p2, d2, v2) = (
                    cfg.clone(),
                    access.clone(),
                    path.to_owned(),
                    decided.clone(),
                    value.clone(),
                );
                let op: super::batch::Op = Box::new(move |tx| {
                    Box::pin(async move {
                        put_version_in(tx, &c2, &a2, &d2, &p2, cas, action, v2).await
                    })
                });
                s.vault.batcher(&s.store).write(op).await?
            }
            ward_store::Backend::Postgres => {
                let mut tx = s.store.vault_begin(&meta_key(path)).await?;
                match put_version_in(
                    &mut tx,
                    &cfg,
                    access,
                    &decided,
                    path,
                    cas,
                    action,
                    value.clone(),
                )
                .await?
                {
                    Outcome::Written(resp, events) => {
                        tx.commit(&events).await?;
                        Outcome::Written(resp, Vec::new())
                    }
                    other => other,
                }
            }
        };
        match outcome {
            Outcome::Written(resp, _) => return Ok(resp),
            Outcome::NeedsGrant(capability) => {
                rounds += 1;
                if rounds > 3 {
                    return Err(ApiError::Conflict(format!(
                        "{target} keeps being created and deleted meanwhile; retry the write"
                    )));
                }
                super::access::authorize_caller(
                    s,
                    access.caller.clone(),
                    access.master.clone(),
                    capability,
                    &target,
                )
                .await?;
                decided = capability.into();
            }
        }
    }
}

/// The write itself, inside `tx` (the caller commits): check-and-set, the
/// version limit and delete-after applied, under the path's lock.
#[allow(clippy::too_many_arguments)]
async fn put_version_in(
    tx: &mut ward_store::VaultTx,
    cfg: &MountConfig,
    access: &Access,
    decided: &str,
    path: &str,
    cas: Option<u64>,
    action: &str,
    value: impl FnOnce(Option<Value>) -> Result<Map<String, Value>, ApiError>,
) -> Result<Outcome, ApiError> {
    let target = api_path("data", path);
    let mkey = meta_key(path);
    tx.lock(&mkey).await?;
    let now = now_ms();
    let existing = tx.get(&mkey).await?;
    // Decided as a create, but the secret appeared meanwhile: that is an
    // update; decided as an update, but it is gone: that is a create.
    // (The admin is never decided on: its writes are all "update".)
    let workload = matches!(access.caller, super::VaultCaller::Workload { .. });
    if decided == "create" && existing.is_some() {
        return Ok(Outcome::NeedsGrant("update"));
    }
    if workload && decided == "update" && existing.is_none() {
        return Ok(Outcome::NeedsGrant("create"));
    }
    let mut meta: Meta = match existing {
        Some(sealed) => open_json(&access.master, &mkey, &sealed)?,
        None => Meta::fresh(now)?,
    };
    if (meta.cas_required || cfg.cas_required) && cas.is_none() {
        return Err(ApiError::BadRequest(
            "check-and-set parameter required for this call: pass options.cas with the current version (0 for a new secret)".into(),
        ));
    }
    if let Some(c) = cas
        && c != meta.current_version
    {
        return Err(ApiError::BadRequest(format!(
            "check-and-set parameter did not match the current version: it is {}, options.cas was {c}",
            meta.current_version
        )));
    }
    // A patch merges into the current version, which must be readable.
    let current = if action == "secret.patch" {
        let live = meta
            .versions
            .get(&meta.current_version)
            .filter(|v| !v.deleted(now) && !v.destroyed);
        if live.is_none() {
            return Err(ApiError::VaultNotFound);
        }
        let key = meta.data_key(path, meta.current_version);
        let sealed = tx.get(&key).await?.ok_or_else(|| super::integrity(&key))?;
        Some(open_json::<Value>(&access.master, &key, &sealed)?)
    } else {
        None
    };
    let value = value(current)?;
    let version = meta.current_version + 1;
    let dva = if meta.delete_version_after > 0 {
        meta.delete_version_after
    } else {
        cfg.delete_version_after
    };
    let info = Version {
        created_ms: now,
        deletion_ms: (dva > 0)
            .then(|| now.saturating_add((dva.min(MAX_DELETE_AFTER) as i64) * 1000)),
        destroyed: false,
    };
    let dkey = meta.data_key(path, version);
    let sealed = seal_json(&access.master, &dkey, &Value::Object(value))?;
    meta.latest = Some(base64::engine::general_purpose::STANDARD.encode(&sealed));
    tx.put(&dkey, &sealed).await?;
    meta.versions.insert(version, info.clone());
    meta.current_version = version;
    meta.updated_ms = now;
    let max = if meta.max_versions > 0 {
        meta.max_versions
    } else {
        cfg.max_versions
    };
    trim(tx, &mut meta, path, max).await?;
    tx.put(&mkey, &seal_json(&access.master, &mkey, &meta)?)
        .await?;
    let event = access.event(
        action,
        &target,
        json!({"version": version, "outcome": "ok"}),
    );
    Ok(Outcome::Written(
        data(info.json(version, &meta.custom_metadata))?,
        vec![event],
    ))
}

/// Drops the oldest versions beyond `max` (their data rows go).
async fn trim(
    tx: &mut ward_store::VaultTx,
    meta: &mut Meta,
    path: &str,
    max: u32,
) -> Result<(), ApiError> {
    while meta.versions.len() > max.max(1) as usize {
        let Some((&oldest, _)) = meta.versions.iter().next() else {
            break;
        };
        meta.versions.remove(&oldest);
        tx.delete(&meta.data_key(path, oldest)).await?;
    }
    meta.oldest_version = meta.versions.keys().next().copied().unwrap_or(0);
    Ok(())
}

async fn write_data(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "data", false)?;
    let capability = write_capability(&s, &headers, path).await?;
    let access = authorize(&s, &headers, capability, &api_path("data", path)).await?;
    let req: WriteBody = parse_json(&body)?;
    put_version(
        &s,
        &access,
        capability,
        path,
        req.options.cas,
        "secret.write",
        |_| Ok(req.data),
    )
    .await
}

async fn patch_data(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "data", false)?;
    let access = authorize(&s, &headers, "patch", &api_path("data", path)).await?;
    let req: WriteBody = parse_json(&body)?;
    put_version(
        &s,
        &access,
        "patch",
        path,
        req.options.cas,
        "secret.patch",
        |current| {
            // JSON merge patch (RFC 7396) of the top-level keys: null removes.
            let mut merged = match current {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for (k, v) in req.data {
                if v.is_null() {
                    merged.remove(&k);
                } else {
                    merged.insert(k, v);
                }
            }
            Ok(merged)
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionsBody {
    #[serde(default)]
    versions: Vec<u64>,
}

/// Changes the bookkeeping of some versions under the path's lock.
async fn change_versions(
    s: &Server,
    access: &Access,
    path: &str,
    action: &str,
    versions: Option<Vec<u64>>,
    change: fn(&mut Version, i64) -> bool,
) -> Result<Response, ApiError> {
    let mkey = meta_key(path);
    let mut tx = s.store.vault_begin(&mkey).await?;
    let Some(sealed) = tx.get(&mkey).await? else {
        return no_content();
    };
    let mut meta: Meta = open_json(&access.master, &mkey, &sealed)?;
    let versions = versions.unwrap_or_else(|| vec![meta.current_version]);
    if versions.is_empty() {
        return Err(ApiError::BadRequest(
            "no versions provided: pass `versions`, e.g. [1, 2]".into(),
        ));
    }
    let now = now_ms();
    let mut changed = Vec::new();
    for v in &versions {
        let key = meta.data_key(path, *v);
        if let Some(info) = meta.versions.get_mut(v)
            && change(info, now)
        {
            changed.push(*v);
            if action == "secret.destroy" {
                tx.delete(&key).await?;
            }
            if action == "secret.destroy" && *v == meta.current_version {
                meta.latest = None;
            }
        }
    }
    meta.updated_ms = now;
    tx.put(&mkey, &seal_json(&access.master, &mkey, &meta)?)
        .await?;
    tx.commit(&[access.event(
        action,
        &api_path("data", path),
        json!({"versions": changed, "outcome": "ok"}),
    )])
    .await?;
    no_content()
}

fn soft_delete(v: &mut Version, now: i64) -> bool {
    if v.destroyed || v.deleted(now) {
        return false;
    }
    v.deletion_ms = Some(now);
    true
}

fn restore(v: &mut Version, _now: i64) -> bool {
    if v.destroyed || v.deletion_ms.is_none() {
        return false;
    }
    v.deletion_ms = None;
    true
}

fn destroy_version(v: &mut Version, _now: i64) -> bool {
    if v.destroyed {
        return false;
    }
    v.destroyed = true;
    true
}

async fn delete_latest(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "data", false)?;
    let access = authorize(&s, &headers, "delete", &api_path("data", path)).await?;
    change_versions(&s, &access, path, "secret.delete", None, soft_delete).await
}

async fn delete_versions(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "delete", false)?;
    let access = authorize(&s, &headers, "update", &api_path("delete", path)).await?;
    let req: VersionsBody = parse_body(&body)?;
    change_versions(
        &s,
        &access,
        path,
        "secret.delete",
        Some(req.versions),
        soft_delete,
    )
    .await
}

async fn undelete(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "undelete", false)?;
    let access = authorize(&s, &headers, "update", &api_path("undelete", path)).await?;
    let req: VersionsBody = parse_body(&body)?;
    change_versions(
        &s,
        &access,
        path,
        "secret.undelete",
        Some(req.versions),
        restore,
    )
    .await
}

async fn destroy(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "destroy", false)?;
    let access = authorize(&s, &headers, "update", &api_path("destroy", path)).await?;
    let req: VersionsBody = parse_body(&body)?;
    change_versions(
        &s,
        &access,
        path,
        "secret.destroy",
        Some(req.versions),
        destroy_version,
    )
    .await
}

fn meta_json(meta: &Meta, cfg_max: u32) -> Value {
    let versions: Map<String, Value> = meta
        .versions
        .iter()
        .map(|(v, i)| {
            (
                v.to_string(),
                json!({
                    "created_time": rfc3339(i.created_ms),
                    "deletion_time": i.deletion_ms.map(rfc3339).unwrap_or_default(),
                    "destroyed": i.destroyed,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": meta.cas_required,
        "created_time": rfc3339(meta.created_ms),
        "current_version": meta.current_version,
        "custom_metadata": if meta.custom_metadata.is_empty() { Value::Null } else { json!(meta.custom_metadata) },
        "delete_version_after": super::duration_text(meta.delete_version_after),
        "max_versions": if meta.max_versions > 0 { meta.max_versions } else { 0 },
        "mount_max_versions": cfg_max,
        "oldest_version": meta.oldest_version,
        "updated_time": rfc3339(meta.updated_ms),
        "versions": versions,
    })
}

async fn read_metadata(
    State(s): State<Arc<Server>>,
    uri: Uri,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let listing = q.list.as_deref().is_some_and(|v| v == "true" || v == "1")
        || uri.path().ends_with('/')
        || uri.path() == "/v1/secret/metadata";
    if listing {
        return list(&s, &uri, &headers).await;
    }
    let path = path_of(&uri, "metadata", false)?;
    let target = api_path("metadata", path);
    let access = authorize(&s, &headers, "read", &target).await?;
    let Some(meta) = load_meta(&s, &access, path).await? else {
        return Err(ApiError::VaultNotFound);
    };
    let cfg = mount_config(&s, &access.master).await?;
    audit_read(
        &s,
        &access,
        "secret.metadata.read",
        &target,
        json!({"outcome": "ok"}),
    )
    .await?;
    data(meta_json(&meta, cfg.max_versions))
}

async fn list(s: &Server, uri: &Uri, headers: &HeaderMap) -> Result<Response, ApiError> {
    let path = path_of(uri, "metadata", true)?;
    let target = api_path("metadata", path);
    let access = authorize(s, headers, "list", &target).await?;
    let prefix = if path.is_empty() {
        meta_key("")
    } else {
        format!("{}/", meta_key(path))
    };
    let mut keys = std::collections::BTreeSet::new();
    for (key, _) in s.store.vault_scan(&prefix).await? {
        let rest = &key[prefix.len()..];
        keys.insert(match rest.split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => rest.to_owned(),
        });
    }
    audit_read(
        s,
        &access,
        "secret.list",
        &target,
        json!({"keys": keys.len(), "outcome": "ok"}),
    )
    .await?;
    if keys.is_empty() {
        return Err(ApiError::VaultNotFound);
    }
    data(json!({ "keys": keys }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaBody {
    #[serde(default)]
    max_versions: Option<u32>,
    #[serde(default)]
    cas_required: Option<bool>,
    #[serde(default)]
    delete_version_after: Option<Value>,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, Option<String>>>,
}

/// The most custom metadata keys, and the longest key and value (Vault's limits).
const MAX_CUSTOM_KEYS: usize = 64;
const MAX_CUSTOM_KEY: usize = 128;
const MAX_CUSTOM_VALUE: usize = 512;

async fn change_metadata(
    s: &Server,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
    merge: bool,
) -> Result<Response, ApiError> {
    let path = path_of(uri, "metadata", false)?;
    let target = api_path("metadata", path);
    let capability = if merge {
        "patch"
    } else if s.store.vault_get(&meta_key(path)).await?.is_some() {
        "update"
    } else {
        "create"
    };
    let access = authorize(s, headers, capability, &target).await?;
    let req: MetaBody = parse_body(body)?;
    let dva = req
        .delete_version_after
        .as_ref()
        .map(delete_after)
        .transpose()?;
    let cfg = mount_config(s, &access.master).await?;
    let mkey = meta_key(path);
    let mut rechecked = false;
    let (mut tx, existing) = loop {
        let mut tx = s.store.vault_begin(&mkey).await?;
        let existing = tx.get(&mkey).await?;
        // Decided as a create, but the secret appeared meanwhile: decide
        // again as an update, outside the transaction (the decision reads
        // the store and audits a refusal).
        if capability == "create" && existing.is_some() && !rechecked {
            drop(tx);
            super::access::authorize_caller(
                s,
                access.caller.clone(),
                access.master.clone(),
                "update",
                &target,
            )
            .await?;
            rechecked = true;
            continue;
        }
        break (tx, existing);
    };
    let now = now_ms();
    if merge && existing.is_none() {
        return Err(ApiError::VaultNotFound);
    }
    let mut meta: Meta = match existing {
        Some(sealed) => open_json(&access.master, &mkey, &sealed)?,
        None => Meta::fresh(now)?,
    };
    if let Some(m) = req.max_versions {
        meta.max_versions = m;
    }
    if let Some(c) = req.cas_required {
        meta.cas_required = c;
    }
    if let Some(d) = dva {
        meta.delete_version_after = d;
    }
    if let Some(custom) = req.custom_metadata {
        if !merge {
            meta.custom_metadata.clear();
        }
        for (k, v) in custom {
            match v {
                Some(v) => {
                    if k.is_empty() || k.len() > MAX_CUSTOM_KEY || v.len() > MAX_CUSTOM_VALUE {
                        return Err(ApiError::BadRequest(format!(
                            "custom_metadata: keys must be 1 to {MAX_CUSTOM_KEY} bytes and values at most {MAX_CUSTOM_VALUE}"
                        )));
                    }
                    meta.custom_metadata.insert(k, v);
                }
                None => {
                    meta.custom_metadata.remove(&k);
                }
            }
        }
        if meta.custom_metadata.len() > MAX_CUSTOM_KEYS {
            return Err(ApiError::BadRequest(format!(
                "custom_metadata: at most {MAX_CUSTOM_KEYS} keys"
            )));
        }
    }
    meta.updated_ms = now;
    let max = if meta.max_versions > 0 {
        meta.max_versions
    } else {
        cfg.max_versions
    };
    trim(&mut tx, &mut meta, path, max).await?;
    tx.put(&mkey, &seal_json(&access.master, &mkey, &meta)?)
        .await?;
    tx.commit(&[access.event("secret.metadata.write", &target, json!({"outcome": "ok"}))])
        .await?;
    no_content()
}

async fn write_metadata(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_metadata(&s, &headers, &uri, &body, false).await
}

async fn patch_metadata(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_metadata(&s, &headers, &uri, &body, true).await
}

async fn delete_metadata(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = path_of(&uri, "metadata", false)?;
    let target = api_path("metadata", path);
    let access = authorize(&s, &headers, "delete", &target).await?;
    let mkey = meta_key(path);
    let mut tx = s.store.vault_begin(&mkey).await?;
    if let Some(sealed) = tx.get(&mkey).await? {
        let meta: Meta = open_json(&access.master, &mkey, &sealed)?;
        for v in meta.versions.keys() {
            tx.delete(&meta.data_key(path, *v)).await?;
        }
        tx.delete(&mkey).await?;
    }
    tx.commit(&[access.event("secret.metadata.delete", &target, json!({"outcome": "ok"}))])
        .await?;
    no_content()
}

async fn read_config(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = authorize(&s, &headers, "read", "secret/config").await?;
    let cfg = mount_config(&s, &access.master).await?;
    data(json!({
        "max_versions": cfg.max_versions,
        "cas_required": cfg.cas_required,
        "delete_version_after": super::duration_text(cfg.delete_version_after),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    #[serde(default)]
    max_versions: Option<u32>,
    #[serde(default)]
    cas_required: Option<bool>,
    #[serde(default)]
    delete_version_after: Option<Value>,
}

async fn write_config(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = authorize(&s, &headers, "update", "secret/config").await?;
    let req: ConfigBody = parse_body(&body)?;
    let mut cfg = load_mount_config(&s, &access.master).await?;
    if let Some(m) = req.max_versions {
        cfg.max_versions = if m == 0 {
            s.config.vault.kv_max_versions
        } else {
            m
        };
    }
    if let Some(c) = req.cas_required {
        cfg.cas_required = c;
    }
    if let Some(d) = &req.delete_version_after {
        cfg.delete_version_after = delete_after(d)?;
    }
    let event = access.event(
        "secret.config.write",
        "secret/config",
        json!({"outcome": "ok"}),
    );
    super::store_record(&s, &access, CONFIG_KEY, Some(&cfg), event).await?;
    s.vault.kv_config.put(None);
    no_content()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_name_mount_path_and_version() {
        assert_eq!(meta_key("orders/db"), "kv/secret/meta/orders/db");
        assert_eq!(
            data_key("orders/db", "ab12", 3),
            "kv/secret/data/orders/db#ab12v3"
        );
        // No path and version pair shares a data key with another.
        assert_ne!(data_key("a/1", "x", 1), data_key("a", "x", 11));
        assert_ne!(
            data_key("a", "x", 1),
            data_key("a", "y", 1),
            "another lifetime"
        );
    }

    #[test]
    fn raw_paths_are_checked_before_decoding() {
        let uri: Uri = "/v1/secret/data/orders%2F..%2Fpayments".parse().unwrap();
        assert!(path_of(&uri, "data", false).is_err());
        let uri: Uri = "/v1/secret/data/orders/../payments".parse().unwrap();
        assert!(path_of(&uri, "data", false).is_err());
        let uri: Uri = "/v1/secret/data/orders/db".parse().unwrap();
        assert_eq!(path_of(&uri, "data", false).unwrap(), "orders/db");
        let uri: Uri = "/v1/secret/metadata/".parse().unwrap();
        assert_eq!(path_of(&uri, "metadata", true).unwrap(), "");
    }

    #[test]
    fn soft_delete_undelete_and_destroy_follow_vault() {
        let mut v = Version {
            created_ms: 1,
            deletion_ms: None,
            destroyed: false,
        };
        assert!(soft_delete(&mut v, 10));
        assert!(v.deleted(10));
        assert!(!soft_delete(&mut v, 11), "already deleted");
        assert!(restore(&mut v, 12));
        assert!(!v.deleted(12));
        assert!(destroy_version(&mut v, 13));
        assert!(!restore(&mut v, 14), "a destroyed version stays destroyed");
        let future = Version {
            created_ms: 1,
            deletion_ms: Some(100),
            destroyed: false,
        };
        assert!(
            !future.deleted(99) && future.deleted(100),
            "delete_version_after"
        );
    }
}
