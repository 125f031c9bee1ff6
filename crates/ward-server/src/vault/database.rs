//! Dynamic database credentials at `database/`, as Vault's database
//! engine answers them (hvac's `secrets.database`), and their leases at
//! `sys/leases/`.
//!
//! A credential's lease is stored before its user is created, so a crash
//! in between leaves a lease whose revocation (`DROP … IF EXISTS`) finds
//! nothing, never a user nobody will drop. Expiry runs on one replica (the
//! holder of an advisory lock, see [`ward_store::Store::try_expiry_leadership`]),
//! a bounded batch at a time so that mass expiry never starves the API,
//! and revocation never gives up: a failure is retried with backoff
//! forever, and a lease that keeps failing is reported as stuck (log,
//! audit, `ward secret lease list --stuck`) instead of being forgotten, as
//! Vault's is after six tries (hashicorp/vault#8602).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ward_dbcreds::{Connection, Databases, Plugin};
use ward_store::seal::MasterKey;
use ward_store::{AuditEvent, LeaseRow, now_secs};
use zeroize::Zeroizing;

use super::access::{Access, VaultCaller, authorize, caller};
use super::paths::name as check_name;
use super::{
    data, load_record, no_content, open_json, parse_body, random_hex, rfc3339, seal_json,
    store_record, vault_json,
};
use crate::error::ApiError;
use crate::state::Server;

/// A lease whose revocation failed this many times is reported as stuck
/// (and still retried).
pub(crate) const STUCK_AFTER: i64 = 6;
/// The longest wait between two revocation attempts.
const MAX_BACKOFF: i64 = 60;
/// Leases revoked per round, and at once.
const BATCH: usize = 64;
const CONCURRENT_REVOCATIONS: usize = 4;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/database/config", get(list_configs))
        .route(
            "/v1/database/config/{name}",
            get(read_config)
                .post(write_config)
                .put(write_config)
                .delete(delete_config),
        )
        .route(
            "/v1/database/rotate-root/{name}",
            post(rotate_root).put(rotate_root),
        )
        .route("/v1/database/roles", get(list_roles))
        .route(
            "/v1/database/roles/{name}",
            get(read_role)
                .post(write_role)
                .put(write_role)
                .delete(delete_role),
        )
        .route("/v1/database/creds/{name}", get(creds))
        .route("/v1/sys/leases", get(ward_lease_list))
        .route("/v1/sys/leases/lookup", post(lookup).put(lookup))
        .route("/v1/sys/leases/lookup/{*prefix}", get(list_leases))
        .route("/v1/sys/leases/renew", post(renew).put(renew))
        .route("/v1/sys/leases/revoke", post(revoke).put(revoke))
        .route(
            "/v1/sys/leases/revoke/{*id}",
            post(revoke_path).put(revoke_path),
        )
        .route(
            "/v1/sys/leases/revoke-prefix/{*prefix}",
            post(revoke_prefix).put(revoke_prefix),
        )
}

/// A connection as stored (sealed: it holds the admin credential).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredConfig {
    plugin: String,
    url: String,
    allowed_roles: Vec<String>,
}

impl StoredConfig {
    fn connection(&self) -> Result<Connection, ApiError> {
        Ok(Connection {
            plugin: Plugin::parse(&self.plugin).map_err(|e| ApiError::Internal(e.to_string()))?,
            url: Zeroizing::new(self.url.clone()),
        })
    }
}

impl Drop for StoredConfig {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.url);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRole {
    db_name: String,
    creation_statements: String,
    revocation_statements: String,
    renew_statements: String,
    default_ttl: u64,
    max_ttl: u64,
}

/// What a lease holds beyond its row: sealed, since it names the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDetail {
    role: String,
    db_name: String,
    username: String,
    revocation_statements: String,
    renew_statements: String,
    issued_at: i64,
    last_renewal: Option<i64>,
    max_expires_at: i64,
    default_ttl: u64,
    /// Who got the credential (`workload:ID` or `token:ID`): a workload
    /// may look up, renew and revoke only its own leases.
    #[serde(default)]
    issued_to: String,
}

fn config_key(name: &str) -> String {
    format!("database/config/{name}")
}

fn role_key(name: &str) -> String {
    format!("database/roles/{name}")
}

fn lease_name(id: &str) -> String {
    format!("lease/{id}")
}

fn strings(field: &str, v: &Option<Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::BadRequest(format!("field `{field}`: expected strings"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(v.join(";\n"))),
        Some(_) => Err(ApiError::BadRequest(format!(
            "field `{field}`: expected a string or a list of strings"
        ))),
    }
}

fn db_error(e: ward_dbcreds::DbError) -> ApiError {
    match e {
        ward_dbcreds::DbError::Config(m) => ApiError::BadRequest(m),
        other => ApiError::BadGateway(other.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    plugin_name: String,
    connection_url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    allowed_roles: Option<Value>,
    #[serde(default)]
    verify_connection: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    password_authentication: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    max_open_connections: Option<u32>,
}

fn path_name(uri: &Uri, prefix: &str) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    check_name("name", raw)?;
    Ok(raw.to_owned())
}

async fn write_config(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/config/")?;
    let target = format!("database/config/{name}");
    let access = authorize(&s, &headers, "update", &target).await?;
    let req: ConfigBody = crate::error::parse_json(&body)?;
    let plugin = Plugin::parse(&req.plugin_name).map_err(db_error)?;
    let url = ward_dbcreds::connection_url(
        plugin,
        &req.connection_url,
        req.username.as_deref(),
        req.password.as_deref(),
    )
    .map_err(db_error)?;
    let conn = Connection { plugin, url };
    if req.verify_connection.unwrap_or(true) {
        Databases::verify(&conn).await.map_err(db_error)?;
    }
    let allowed_roles = match strings("allowed_roles", &req.allowed_roles)? {
        Some(s) => s
            .split([',', ';', '\n'])
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect(),
        None => Vec::new(),
    };
    let stored = StoredConfig {
        plugin: match plugin {
            Plugin::Postgres => "postgresql".into(),
            Plugin::Mysql => "mysql".into(),
        },
        url: conn.url.to_string(),
        allowed_roles,
    };
    let key = config_key(&name);
    let event = access.event(
        "database.config.write",
        &target,
        json!({"plugin": stored.plugin, "url": ward_dbcreds::redact(&stored.url), "outcome": "ok"}),
    );
    store_record(&s, &access, &key, Some(&stored), event).await?;
    s.databases.forget(&name);
    no_content()
}

async fn read_config(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/config/")?;
    let access = authorize(&s, &headers, "read", &format!("database/config/{name}")).await?;
    let c: StoredConfig = load_record(&s, &access.master, &config_key(&name))
        .await?
        .ok_or(ApiError::VaultNotFound)?;
    let plugin = Plugin::parse(&c.plugin).map_err(db_error)?;
    data(json!({
        "plugin_name": plugin.vault_name(),
        "connection_details": {"connection_url": ward_dbcreds::redact(&c.url)},
        "allowed_roles": c.allowed_roles,
    }))
}

async fn list_names(
    s: &Server,
    headers: &HeaderMap,
    prefix: &str,
    target: &str,
) -> Result<Response, ApiError> {
    let _access = authorize(s, headers, "list", target).await?;
    let keys: Vec<String> = s
        .store
        .vault_scan(prefix)
        .await?
        .into_iter()
        .map(|(k, _)| k[prefix.len()..].to_owned())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::VaultNotFound);
    }
    data(json!({ "keys": keys }))
}

async fn list_configs(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list_names(&s, &headers, "database/config/", "database/config").await
}

async fn list_roles(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list_names(&s, &headers, "database/roles/", "database/roles").await
}

async fn delete_config(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/config/")?;
    let target = format!("database/config/{name}");
    let access = authorize(&s, &headers, "delete", &target).await?;
    let key = config_key(&name);
    let event = access.event("database.config.delete", &target, json!({"outcome": "ok"}));
    store_record::<StoredConfig>(&s, &access, &key, None, event).await?;
    s.databases.forget(&name);
    no_content()
}

async fn rotate_root(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/rotate-root/")?;
    let target = format!("database/rotate-root/{name}");
    let access = authorize(&s, &headers, "update", &target).await?;
    let key = config_key(&name);
    // One rotation at a time on this replica, and none inside a store
    // transaction: the database round trips must not hold the store's
    // write lock.
    let _one = s.vault.rotation.lock().await;
    let mut c: StoredConfig = load_record(&s, &access.master, &key)
        .await?
        .ok_or(ApiError::VaultNotFound)?;
    let old_url = c.url.clone();
    let new_url = s
        .databases
        .rotate_root(&name, &c.connection()?)
        .await
        .map_err(db_error)?;
    c.url = new_url.to_string();
    let mut tx = s.store.vault_begin(&key).await?;
    let current: Option<StoredConfig> = match tx.get(&key).await? {
        Some(sealed) => Some(open_json(&access.master, &key, &sealed)?),
        None => None,
    };
    if current.as_ref().map(|k| &k.url) != Some(&old_url) {
        tracing::error!(connection = %name, "the connection changed while its admin password was rotated (another replica?); the new password is not stored: reset it by hand and configure the connection again");
        return Err(ApiError::Conflict(format!(
            "connection {name} changed during the rotation; configure it again"
        )));
    }
    tx.put(&key, &seal_json(&access.master, &key, &c)?).await?;
    // The database already has the new password: if this commit failed the
    // old one would be gone with no record of the new one, so say loudly.
    if let Err(e) = tx
        .commit(&[access.event("database.rotate_root", &target, json!({"outcome": "ok"}))])
        .await
    {
        tracing::error!(connection = %name, error = %e, "the admin password was rotated in the database but could not be stored; reset it by hand and configure the connection again");
        return Err(e.into());
    }
    no_content()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    db_name: String,
    #[serde(default)]
    creation_statements: Option<Value>,
    #[serde(default)]
    revocation_statements: Option<Value>,
    #[serde(default)]
    renew_statements: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    rollback_statements: Option<Value>,
    #[serde(default)]
    default_ttl: Option<Value>,
    #[serde(default)]
    max_ttl: Option<Value>,
}

async fn write_role(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/roles/")?;
    let target = format!("database/roles/{name}");
    let access = authorize(&s, &headers, "update", &target).await?;
    let req: RoleBody = crate::error::parse_json(&body)?;
    check_name("connection", &req.db_name)?;
    let c: StoredConfig = load_record(&s, &access.master, &config_key(&req.db_name))
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "no database connection {:?}: configure it first (database/config/NAME)",
                req.db_name
            ))
        })?;
    let plugin = Plugin::parse(&c.plugin).map_err(db_error)?;
    let creation = strings("creation_statements", &req.creation_statements)?
        .unwrap_or_else(|| plugin.default_creation().to_owned());
    let revocation = strings("revocation_statements", &req.revocation_statements)?
        .unwrap_or_else(|| plugin.default_revocation().to_owned());
    let renew =
        strings("renew_statements", &req.renew_statements)?.unwrap_or_else(|| match plugin {
            Plugin::Postgres => r#"ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';"#.to_owned(),
            Plugin::Mysql => String::new(),
        });
    ward_dbcreds::check_template("creation_statements", &creation).map_err(db_error)?;
    ward_dbcreds::check_template("revocation_statements", &revocation).map_err(db_error)?;
    let vc = &s.config.vault;
    let dur =
        |f: &str, v: &Option<Value>| v.as_ref().map(|v| super::parse_duration(f, v)).transpose();
    let default_ttl = dur("default_ttl", &req.default_ttl)?
        .filter(|t| *t > 0)
        .unwrap_or(vc.lease_default_ttl.as_secs());
    let max_ttl = dur("max_ttl", &req.max_ttl)?
        .filter(|t| *t > 0)
        .unwrap_or(vc.lease_max_ttl.as_secs());
    if max_ttl > vc.lease_max_ttl.as_secs() {
        return Err(ApiError::BadRequest(format!(
            "max_ttl {max_ttl}s is longer than the server's vault.lease_max_ttl ({}s)",
            vc.lease_max_ttl.as_secs()
        )));
    }
    if default_ttl > max_ttl {
        return Err(ApiError::BadRequest(
            "default_ttl is longer than max_ttl".into(),
        ));
    }
    let role = StoredRole {
        db_name: req.db_name,
        creation_statements: creation,
        revocation_statements: revocation,
        renew_statements: renew,
        default_ttl,
        max_ttl,
    };
    let key = role_key(&name);
    let event = access.event(
        "database.role.write",
        &target,
        json!({"db_name": role.db_name, "outcome": "ok"}),
    );
    store_record(&s, &access, &key, Some(&role), event).await?;
    no_content()
}

async fn read_role(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/roles/")?;
    let access = authorize(&s, &headers, "read", &format!("database/roles/{name}")).await?;
    let r: StoredRole = load_record(&s, &access.master, &role_key(&name))
        .await?
        .ok_or(ApiError::VaultNotFound)?;
    data(json!({
        "db_name": r.db_name,
        "creation_statements": [r.creation_statements],
        "revocation_statements": [r.revocation_statements],
        "renew_statements": if r.renew_statements.is_empty() { json!([]) } else { json!([r.renew_statements]) },
        "default_ttl": r.default_ttl,
        "max_ttl": r.max_ttl,
    }))
}

async fn delete_role(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/roles/")?;
    let target = format!("database/roles/{name}");
    let access = authorize(&s, &headers, "delete", &target).await?;
    let key = role_key(&name);
    let event = access.event("database.role.delete", &target, json!({"outcome": "ok"}));
    store_record::<StoredRole>(&s, &access, &key, None, event).await?;
    no_content()
}

async fn creds(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = path_name(&uri, "/v1/database/creds/")?;
    let target = format!("database/creds/{name}");
    let access = authorize(&s, &headers, "read", &target).await?;
    let role: StoredRole = load_record(&s, &access.master, &role_key(&name))
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("unknown role: {name}")))?;
    let config: StoredConfig = load_record(&s, &access.master, &config_key(&role.db_name))
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the role's database connection {:?} no longer exists",
                role.db_name
            ))
        })?;
    if !config.allowed_roles.iter().any(|r| r == "*" || r == &name) {
        return Err(ApiError::BadRequest(format!(
            "role {name:?} is not in the allowed_roles of connection {:?}",
            role.db_name
        )));
    }
    let conn = config.connection()?;
    let user = ward_dbcreds::new_user(conn.plugin, &name).map_err(db_error)?;
    let now = now_secs();
    let expires_at = now + role.default_ttl as i64;
    let detail = LeaseDetail {
        role: name.clone(),
        db_name: role.db_name.clone(),
        username: user.name.clone(),
        revocation_statements: role.revocation_statements.clone(),
        renew_statements: role.renew_statements.clone(),
        issued_at: now,
        last_renewal: None,
        max_expires_at: now + role.max_ttl as i64,
        default_ttl: role.default_ttl,
        issued_to: access.caller.actor(),
    };
    let lease_id = format!("database/creds/{name}/{}", random_hex(12)?);
    let row = LeaseRow {
        id: lease_id.clone(),
        expires_at,
        state: "active".into(),
        attempts: 0,
        next_attempt: expires_at,
        sealed: seal_json(&access.master, &lease_name(&lease_id), &detail)?,
    };
    // The lease first (see the module header), with the issue's audit record.
    s.store
        .put_lease(
            &row,
            &[access.event(
                "database.creds",
                &target,
                json!({"lease_id": lease_id, "username": user.name, "ttl": role.default_ttl, "outcome": "ok"}),
            )],
        )
        .await?;
    let statements = ward_dbcreds::render(
        &role.creation_statements,
        &user.name,
        &user.password,
        &ward_dbcreds::expiration_text(expires_at),
    );
    if let Err(e) = s
        .databases
        .run(&role.db_name, &conn, &statements, &[&user.password])
        .await
    {
        // Nothing to keep: the user was not made (the transaction rolled
        // back). The lease goes through revocation anyway, in case it was.
        let _ = s
            .store
            .put_lease(
                &LeaseRow {
                    state: "revoking".into(),
                    next_attempt: now,
                    ..row
                },
                &[access.event(
                    "database.creds",
                    &target,
                    json!({"lease_id": lease_id, "outcome": "failed", "reason": e.to_string()}),
                )],
            )
            .await;
        s.lease_wake.notify_one();
        return Err(db_error(e));
    }
    Ok(vault_json(
        StatusCode::OK,
        &json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": lease_id,
            "renewable": true,
            "lease_duration": role.default_ttl,
            "data": {"username": user.name, "password": user.password.as_str()},
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    #[serde(default)]
    lease_id: Option<String>,
    #[serde(default)]
    increment: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    sync: Option<bool>,
}

fn check_lease_id(id: &str) -> Result<(), ApiError> {
    super::paths::canonical(id, false)?;
    if !id.starts_with("database/creds/") {
        return Err(ApiError::BadRequest(format!(
            "invalid lease_id {:?}",
            id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

fn lease_id_of(body: &LeaseBody) -> Result<String, ApiError> {
    let id = body
        .lease_id
        .clone()
        .ok_or_else(|| ApiError::BadRequest("missing field `lease_id`".into()))?;
    check_lease_id(&id)?;
    Ok(id)
}

async fn load_lease(
    s: &Server,
    access: &Access,
    id: &str,
) -> Result<(LeaseRow, LeaseDetail), ApiError> {
    let row = s
        .store
        .lease(id)
        .await?
        .ok_or_else(|| ApiError::BadRequest("invalid lease".into()))?;
    let detail: LeaseDetail = open_json(&access.master, &lease_name(id), &row.sealed)?;
    // A workload's grant on sys/leases/... covers its own leases only.
    if matches!(access.caller, VaultCaller::Workload { .. })
        && detail.issued_to != access.caller.actor()
    {
        return Err(ApiError::Forbidden(format!(
            "permission denied: lease {id} was not issued to {}",
            access.caller.actor()
        )));
    }
    Ok((row, detail))
}

/// Listing and revoking by prefix are the admin's (Vault's `sudo`).
fn admin_only(access: &Access, what: &str) -> Result<(), ApiError> {
    match access.caller {
        VaultCaller::Admin { .. } => Ok(()),
        VaultCaller::Workload { .. } => Err(ApiError::Forbidden(format!(
            "permission denied: {what} needs the admin token"
        ))),
    }
}

async fn lookup(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: LeaseBody = parse_body(&body)?;
    let id = lease_id_of(&req)?;
    let access = authorize(&s, &headers, "update", "sys/leases/lookup").await?;
    let (row, d) = load_lease(&s, &access, &id).await?;
    data(json!({
        "id": row.id,
        "issue_time": rfc3339(d.issued_at * 1000),
        "expire_time": rfc3339(row.expires_at * 1000),
        "last_renewal": d.last_renewal.map(|t| rfc3339(t * 1000)),
        "renewable": row.state == "active" && row.expires_at < d.max_expires_at,
        "ttl": (row.expires_at - now_secs()).max(0),
        "state": row.state,
        "revocation_attempts": row.attempts,
    }))
}

async fn list_leases(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = uri
        .path()
        .strip_prefix("/v1/sys/leases/lookup/")
        .unwrap_or("");
    let prefix = super::paths::canonical(raw, true)?;
    let access = authorize(&s, &headers, "list", &format!("sys/leases/lookup/{prefix}")).await?;
    admin_only(&access, "listing leases")?;
    let full = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut keys = std::collections::BTreeSet::new();
    for l in s.store.leases(&full).await? {
        let rest = &l.id[full.len()..];
        keys.insert(match rest.split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => rest.to_owned(),
        });
    }
    if keys.is_empty() {
        return Err(ApiError::VaultNotFound);
    }
    data(json!({ "keys": keys }))
}

#[derive(Debug, Default, Deserialize)]
struct WardListQuery {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    stuck: Option<bool>,
}

/// Ward's own listing with each lease's state (`ward secret lease list`).
async fn ward_lease_list(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<WardListQuery>,
) -> Result<Response, ApiError> {
    let c = caller(&s, &headers).await?;
    if !matches!(c, VaultCaller::Admin { .. }) {
        return Err(ApiError::Forbidden(
            "permission denied: listing leases needs the admin token".into(),
        ));
    }
    let prefix = q.prefix.unwrap_or_default();
    let now = now_secs();
    let leases: Vec<Value> = s
        .store
        .leases(&prefix)
        .await?
        .into_iter()
        .filter(|l| !q.stuck.unwrap_or(false) || l.attempts >= STUCK_AFTER)
        .map(|l| {
            json!({
                "lease_id": l.id,
                "expire_time": rfc3339(l.expires_at * 1000),
                "ttl": (l.expires_at - now).max(0),
                "state": l.state,
                "revocation_attempts": l.attempts,
                "next_attempt": if l.state == "revoking" { json!(rfc3339(l.next_attempt * 1000)) } else { json!(null) },
                "stuck": l.attempts >= STUCK_AFTER,
            })
        })
        .collect();
    data(json!({ "leases": leases }))
}

async fn renew(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: LeaseBody = parse_body(&body)?;
    let id = lease_id_of(&req)?;
    let access = authorize(&s, &headers, "update", "sys/leases/renew").await?;
    let (row, mut d) = load_lease(&s, &access, &id).await?;
    let now = now_secs();
    if row.state != "active" || row.expires_at <= now {
        return Err(ApiError::BadRequest(
            "lease not found or lease is not renewable (it expired or is being revoked)".into(),
        ));
    }
    let increment = match &req.increment {
        Some(v) => super::parse_duration("increment", v)?,
        None => 0,
    };
    let ttl = if increment == 0 {
        d.default_ttl
    } else {
        increment
    };
    let expires_at = (now + ttl as i64).min(d.max_expires_at);
    let config: StoredConfig = load_record(&s, &access.master, &config_key(&d.db_name))
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the lease's database connection {:?} no longer exists",
                d.db_name
            ))
        })?;
    if !d.renew_statements.is_empty() {
        let statements = ward_dbcreds::render(
            &d.renew_statements,
            &d.username,
            "",
            &ward_dbcreds::expiration_text(expires_at),
        );
        s.databases
            .run(&d.db_name, &config.connection()?, &statements, &[])
            .await
            .map_err(db_error)?;
    }
    d.last_renewal = Some(now);
    let updated = LeaseRow {
        expires_at,
        next_attempt: expires_at,
        sealed: seal_json(&access.master, &lease_name(&id), &d)?,
        ..row.clone()
    };
    let renewed = s
        .store
        .renew_lease(
            &row,
            &updated,
            &[access.event(
                "lease.renew",
                &id,
                json!({"expires_at": expires_at, "outcome": "ok"}),
            )],
        )
        .await?;
    if !renewed {
        return Err(ApiError::BadRequest(
            "lease is not renewable: it was revoked or changed meanwhile".into(),
        ));
    }
    let mut out = json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": id,
        "renewable": expires_at < d.max_expires_at,
        "lease_duration": expires_at - now,
        "data": null,
        "warnings": null,
    });
    if expires_at == d.max_expires_at {
        out["warnings"] =
            json!(["the lease reached its max_ttl; request new credentials before it expires"]);
    }
    Ok(vault_json(StatusCode::OK, &out))
}

/// Marks a lease for revocation now and tries once; the expiry worker
/// keeps trying if this attempt fails.
async fn revoke_now(s: &Server, access: &Access, id: &str) -> Result<Response, ApiError> {
    let (row, _) = load_lease(s, access, id).await?;
    let now = now_secs();
    let marked = LeaseRow {
        state: "revoking".into(),
        next_attempt: now,
        ..row
    };
    s.store
        .put_lease(
            &marked,
            &[access.event("lease.revoke", id, json!({"outcome": "requested"}))],
        )
        .await?;
    match revoke_one(s, &access.master, marked).await {
        Ok(()) => no_content(),
        Err(e) => Ok(vault_json(
            StatusCode::OK,
            &json!({"warnings": [format!("the credential could not be revoked yet ({e}); Ward keeps retrying until it is")], "data": null}),
        )),
    }
}

async fn revoke(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: LeaseBody = parse_body(&body)?;
    let id = lease_id_of(&req)?;
    let access = authorize(&s, &headers, "update", "sys/leases/revoke").await?;
    revoke_now(&s, &access, &id).await
}

async fn revoke_path(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = uri
        .path()
        .strip_prefix("/v1/sys/leases/revoke/")
        .unwrap_or("")
        .to_owned();
    check_lease_id(&id)?;
    let access = authorize(&s, &headers, "update", "sys/leases/revoke").await?;
    revoke_now(&s, &access, &id).await
}

async fn revoke_prefix(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = uri
        .path()
        .strip_prefix("/v1/sys/leases/revoke-prefix/")
        .unwrap_or("");
    let prefix = super::paths::canonical(raw, true)?.to_owned();
    let access = authorize(
        &s,
        &headers,
        "update",
        &format!("sys/leases/revoke-prefix/{prefix}"),
    )
    .await?;
    admin_only(&access, "revoking by prefix")?;
    // A prefix is a folder, as in Vault: `database/creds/r1` must not
    // reach `database/creds/r12/...`.
    let folder = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let leases: Vec<LeaseRow> = s
        .store
        .leases(&folder)
        .await?
        .into_iter()
        .filter(|l| l.state != "revoking")
        .collect();
    // Audited before anything changes: a refused record changes nothing.
    s.store
        .append_audit(&[access.event(
            "lease.revoke_prefix",
            &prefix,
            json!({"leases": leases.len(), "outcome": "requested"}),
        )])
        .await?;
    let now = now_secs();
    for l in leases {
        let marked = LeaseRow {
            state: "revoking".into(),
            next_attempt: now,
            ..l
        };
        s.store.put_lease(&marked, &[]).await?;
    }
    s.lease_wake.notify_one();
    no_content()
}

/// Revokes one lease: its revocation statements, then its row. A failure
/// schedules the next attempt (backoff doubling to [`MAX_BACKOFF`]).
async fn revoke_one(s: &Server, master: &MasterKey, row: LeaseRow) -> Result<(), String> {
    let detail: Result<LeaseDetail, _> = open_json(master, &lease_name(&row.id), &row.sealed);
    let attempt = async {
        let d = detail.map_err(|e| e.to_string())?;
        let config: StoredConfig = load_record(s, master, &config_key(&d.db_name))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "its database connection {:?} no longer exists: configure it again",
                    d.db_name
                )
            })?;
        let statements = ward_dbcreds::render(&d.revocation_statements, &d.username, "", "");
        s.databases
            .run(
                &d.db_name,
                &config.connection().map_err(|e| e.to_string())?,
                &statements,
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(d.username)
    }
    .await;
    match attempt {
        Ok(user) => {
            s.store
                .delete_lease(
                    &row.id,
                    &[AuditEvent::new(
                        "system",
                        "lease.revoked",
                        &row.id,
                        json!({"username": user, "attempts": row.attempts + 1, "outcome": "ok"}),
                    )],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        Err(why) => {
            let attempts = row.attempts + 1;
            let now = now_secs();
            let backoff = 1i64 << attempts.clamp(0, 6);
            let next = LeaseRow {
                state: "revoking".into(),
                attempts,
                next_attempt: now + backoff.min(MAX_BACKOFF),
                ..row
            };
            // Audited on the first failure and when it becomes stuck; every
            // failure is logged.
            let mut audit = Vec::new();
            if attempts == 1 || attempts == STUCK_AFTER {
                audit.push(AuditEvent::new(
                    "system",
                    if attempts == STUCK_AFTER {
                        "lease.stuck"
                    } else {
                        "lease.revoke_failed"
                    },
                    &next.id,
                    json!({"attempts": attempts, "reason": why, "outcome": "retrying"}),
                ));
            }
            if attempts >= STUCK_AFTER {
                tracing::error!(lease = %next.id, attempts, reason = %why, "a lease cannot be revoked; still retrying (ward secret lease list --stuck)");
            } else {
                tracing::warn!(lease = %next.id, attempts, reason = %why, "lease revocation failed; retrying");
            }
            s.store
                .put_lease(&next, &audit)
                .await
                .map_err(|e| e.to_string())?;
            Err(why)
        }
    }
}

/// The expiry worker: on the replica that holds expiry leadership, revokes
/// due leases a bounded batch at a time, woken early by revocations.
pub(crate) async fn expiry_task(s: Arc<Server>) {
    let mut leader: Option<ward_store::ExpiryLeader> = None;
    // Lease rows that failed the barrier (never acted on, never reselected).
    let mut forged = std::collections::HashSet::new();
    let mut last_try = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = s.lease_wake.notified() => {}
        }
        let Ok(master) = s.master() else {
            leader = None;
            continue;
        };
        if let Some(l) = &mut leader
            && !l.alive().await
        {
            tracing::warn!("lost lease expiry leadership (database session ended)");
            leader = None;
        }
        if leader.is_none() {
            if last_try.elapsed() < Duration::from_secs(2) {
                continue;
            }
            last_try = tokio::time::Instant::now();
            match s.store.try_expiry_leadership().await {
                Ok(Some(l)) => {
                    tracing::info!("this replica runs lease expiry");
                    leader = Some(l);
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take lease expiry leadership");
                    continue;
                }
            }
        }
        let due = match s.store.due_leases(now_secs(), BATCH, &mut forged).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due leases");
                continue;
            }
        };
        let full = due.len() == BATCH;
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REVOCATIONS));
        let mut tasks = tokio::task::JoinSet::new();
        for row in due {
            let s = s.clone();
            let master = master.clone();
            let sem = sem.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire().await;
                let _ = revoke_one(&s, &master, row).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        if full {
            // More are due: go on at once (the API runs on other tasks).
            s.lease_wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_checked_like_paths() {
        assert!(check_lease_id("database/creds/orders/abc").is_ok());
        assert!(check_lease_id("database/creds/../x").is_err());
        assert!(check_lease_id("secret/data/x").is_err());
        assert!(check_lease_id("database/creds/a%2Fb").is_err());
    }

    #[test]
    fn statements_may_be_one_string_or_a_list() {
        assert_eq!(strings("f", &Some(json!("A; B"))).unwrap().unwrap(), "A; B");
        assert_eq!(
            strings("f", &Some(json!(["A", "B"]))).unwrap().unwrap(),
            "A;\nB"
        );
        assert!(strings("f", &Some(json!(3))).is_err());
        assert!(strings("f", &None).unwrap().is_none());
    }
}
