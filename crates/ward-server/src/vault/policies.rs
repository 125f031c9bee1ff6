//! `/v1/sys/policies/cedar/NAME`: the vault's Cedar policies, kept under
//! names and all in force at once (`ward secret policy write|read|list|delete`).
//! Admin only. A policy is validated against the vault schema, and together
//! with every other one, before it is stored: a set that would not load
//! is refused at write time, not discovered at the next decision.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use ward_policy::vault::VaultAccess;
use ward_store::seal::MasterKey;

use super::access::{VaultCaller, caller};
use super::{data, no_content, now_ms, open_json, seal_json};
use crate::error::{ApiError, parse_json};
use crate::state::Server;

const PREFIX: &str = "sys/policy/";

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/sys/policies/cedar", get(list))
        .route(
            "/v1/sys/policies/cedar/{name}",
            get(read).put(write).post(write).delete(delete),
        )
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    text: String,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    policy: String,
}

fn record_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

async fn admin(s: &Server, headers: &HeaderMap) -> Result<(VaultCaller, MasterKey), ApiError> {
    match caller(s, headers).await? {
        c @ VaultCaller::Admin { .. } => Ok((c, s.master()?)),
        VaultCaller::Workload { .. } => Err(ApiError::Forbidden(
            "permission denied: vault policies are managed with the admin token".into(),
        )),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if ward_policy::vault::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid policy name {:?}: use letters, digits, `-`, `_` and `.`",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// Every stored policy, by name.
pub(super) async fn load_all(
    s: &Server,
    master: &MasterKey,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (key, sealed) in s.store.vault_scan(PREFIX).await? {
        let stored: Stored = open_json(master, &key, &sealed)?;
        out.push((key[PREFIX.len()..].to_owned(), stored.text));
    }
    // The rows must be exactly the set the manifest names: a writer who
    // deletes a `forbid` policy's row (or brings back an older text)
    // would otherwise widen access without a trace.
    let manifest: Manifest = super::load_record(s, master, MANIFEST)
        .await?
        .unwrap_or_default();
    let found: BTreeMap<String, String> = out.iter().map(|(n, t)| (n.clone(), sha256(t))).collect();
    if found != manifest.policies {
        tracing::error!(
            "the stored vault policies differ from their manifest: rows were removed, added or rolled back without the master key"
        );
        return Err(super::integrity(MANIFEST));
    }
    Ok(out)
}

/// Which policies exist, with the SHA-256 of each text, written with
/// every policy change (sealed and MACed like every record).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    policies: BTreeMap<String, String>,
}

const MANIFEST: &str = "sys/policy-manifest";

fn sha256(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

async fn update_manifest(
    tx: &mut ward_store::VaultTx,
    master: &MasterKey,
    change: impl FnOnce(&mut Manifest),
) -> Result<(), ApiError> {
    let mut m: Manifest = match tx.get(MANIFEST).await? {
        Some(sealed) => open_json(master, MANIFEST, &sealed)?,
        None => Manifest::default(),
    };
    change(&mut m);
    tx.put(MANIFEST, &seal_json(master, MANIFEST, &m)?).await?;
    Ok(())
}

async fn list(State(s): State<Arc<Server>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, master) = admin(&s, &headers).await?;
    let keys: Vec<String> = load_all(&s, &master)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::NotFound("no vault policies".into()));
    }
    data(serde_json::json!({ "keys": keys }))
}

async fn read(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (_, master) = admin(&s, &headers).await?;
    let key = record_key(&name);
    let stored: Stored = super::load_record(&s, &master, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no vault policy {name}")))?;
    data(serde_json::json!({
        "name": name,
        "policy": stored.text,
        "created_time": super::rfc3339(stored.created_ms),
        "updated_time": super::rfc3339(stored.updated_ms),
    }))
}

async fn write(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (who, master) = admin(&s, &headers).await?;
    let req: WriteBody = parse_json(&body)?;
    if req.policy.len() > ward_policy::MAX_POLICY_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the policy is {} bytes; the limit is {}",
            req.policy.len(),
            ward_policy::MAX_POLICY_BYTES
        )));
    }
    let mut all = load_all(&s, &master).await?;
    all.retain(|(n, _)| n != &name);
    all.push((name.clone(), req.policy.clone()));
    VaultAccess::new(all.iter().map(|(n, t)| (n.as_str(), t.as_str()))).map_err(|e| {
        ApiError::BadRequest(
            e.to_string()
                .replace("`ward policy schema`", "`ward secret policy schema`"),
        )
    })?;
    let key = record_key(&name);
    let mut tx = s.store.vault_begin(MANIFEST).await?;
    let now = now_ms();
    let created_ms = match tx.get(&key).await? {
        Some(old) => open_json::<Stored>(&master, &key, &old)?.created_ms,
        None => now,
    };
    let stored = Stored {
        text: req.policy,
        created_ms,
        updated_ms: now,
    };
    tx.put(&key, &seal_json(&master, &key, &stored)?).await?;
    let digest = sha256(&stored.text);
    update_manifest(&mut tx, &master, |m| {
        m.policies.insert(name.clone(), digest);
    })
    .await?;
    let sha = sha256(&stored.text);
    tx.commit(&[ward_store::AuditEvent::new(
        who.actor(),
        "vault.policy.write",
        &name,
        serde_json::json!({ "sha256": sha, "outcome": "ok" }),
    )])
    .await?;
    s.vault.access.invalidate();
    no_content()
}

async fn delete(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (who, master) = admin(&s, &headers).await?;
    let key = record_key(&name);
    let mut tx = s.store.vault_begin(MANIFEST).await?;
    tx.delete(&key).await?;
    update_manifest(&mut tx, &master, |m| {
        m.policies.remove(&name);
    })
    .await?;
    tx.commit(&[ward_store::AuditEvent::new(
        who.actor(),
        "vault.policy.delete",
        &name,
        serde_json::json!({ "outcome": "ok" }),
    )])
    .await?;
    s.vault.access.invalidate();
    no_content()
}

/// Stored policies must read back; a unit test of the record layout.
#[cfg(test)]
mod tests {
    #[test]
    fn policy_records_live_under_their_name() {
        assert_eq!(super::record_key("orders"), "sys/policy/orders");
    }
}
