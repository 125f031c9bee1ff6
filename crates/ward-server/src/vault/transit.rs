//! Transit ("encryption as a service") at `transit/`, as Vault serves it to
//! hvac's `secrets.transit`: named keys, encrypt, decrypt, rewrap, datakey,
//! sign, verify, rotate, config and trim. The cryptography is
//! `ward-transit`'s; this module stores each key ring sealed under its own
//! record (`transit/keys/NAME`), caches opened rings for a moment so that
//! encryption does not pay a store read and an unseal per call, and audits
//! every operation (never the plaintext).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use ward_transit::{
    HashAlgorithm, KeyRing, KeyType, Marshaling, SignatureOptions, TransitError, decode_b64_input,
};

use super::access::{Access, authorize};
use super::paths::name as check_name;
use super::{data, no_content, open_json, parse_body, seal_json};
use crate::error::ApiError;
use crate::state::Server;

/// How long an opened key ring is reused (a rotation on another replica
/// reaches this one within it; this replica's own changes at once).
const CACHE_TTL: Duration = Duration::from_secs(2);
/// The most items in one batch request.
const MAX_BATCH: usize = 1000;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/transit/keys", get(list_keys))
        .route(
            "/v1/transit/keys/{name}",
            get(read_key)
                .post(create_key)
                .put(create_key)
                .delete(delete_key),
        )
        .route(
            "/v1/transit/keys/{name}/config",
            post(config_key).put(config_key),
        )
        .route(
            "/v1/transit/keys/{name}/rotate",
            post(rotate_key).put(rotate_key),
        )
        .route("/v1/transit/keys/{name}/trim", post(trim_key).put(trim_key))
        .route("/v1/transit/encrypt/{name}", post(encrypt).put(encrypt))
        .route("/v1/transit/decrypt/{name}", post(decrypt).put(decrypt))
        .route("/v1/transit/rewrap/{name}", post(rewrap).put(rewrap))
        .route(
            "/v1/transit/datakey/{kind}/{name}",
            post(datakey).put(datakey),
        )
        .route("/v1/transit/sign/{name}", post(sign).put(sign))
        .route("/v1/transit/sign/{name}/{hash}", post(sign).put(sign))
        .route("/v1/transit/verify/{name}", post(verify).put(verify))
        .route("/v1/transit/verify/{name}/{hash}", post(verify).put(verify))
}

/// Opened key rings by name.
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, (Instant, Arc<KeyRing>)>>);

impl KeyCache {
    fn get(&self, name: &str) -> Option<Arc<KeyRing>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, name: &str, ring: Arc<KeyRing>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(name.to_owned(), (Instant::now(), ring));
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Drops every opened key (on seal).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn record_key(name: &str) -> String {
    format!("transit/keys/{name}")
}

fn transit_error(e: TransitError) -> ApiError {
    match e {
        TransitError::Crypto { .. } => ApiError::Internal(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// The `{name}` (and more) segments after `/v1/transit/<op>/`, checked.
fn segments<'a>(uri: &'a Uri, op: &str) -> Result<Vec<&'a str>, ApiError> {
    let rest = uri
        .path()
        .strip_prefix(&format!("/v1/transit/{op}/"))
        .ok_or_else(|| ApiError::NotFound("no such API path".into()))?;
    let parts: Vec<&str> = rest.split('/').collect();
    for p in &parts {
        check_name("key", p)?;
    }
    Ok(parts)
}

async fn ring(s: &Server, access: &Access, name: &str) -> Result<Arc<KeyRing>, ApiError> {
    if let Some(r) = s.vault.transit.get(name) {
        return Ok(r);
    }
    let key = record_key(name);
    let ring: KeyRing = super::load_record(s, &access.master, &key)
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "encryption key not found: create it with transit/keys/{name}"
            ))
        })?;
    let ring = Arc::new(ring);
    s.vault.transit.put(name, ring.clone());
    Ok(ring)
}

/// Changes a stored ring under its record's lock.
async fn change(
    s: &Server,
    access: &Access,
    name: &str,
    action: &str,
    f: impl FnOnce(&mut KeyRing) -> Result<(), ApiError>,
) -> Result<KeyRing, ApiError> {
    let key = record_key(name);
    let mut tx = s.store.vault_begin(&key).await?;
    let Some(sealed) = tx.get(&key).await? else {
        return Err(ApiError::BadRequest(format!(
            "encryption key not found: {name}"
        )));
    };
    let mut ring: KeyRing = open_json(&access.master, &key, &sealed)?;
    f(&mut ring)?;
    tx.put(&key, &seal_json(&access.master, &key, &ring)?)
        .await?;
    tx.commit(&[access.event(
        action,
        &format!("transit/keys/{name}"),
        json!({"latest_version": ring.latest_version(), "outcome": "ok"}),
    )])
    .await?;
    s.vault.transit.forget(name);
    Ok(ring)
}

fn now_unix() -> u64 {
    ward_store::now_secs().max(0) as u64
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    exportable: Option<bool>,
    #[serde(default)]
    derived: Option<bool>,
    #[serde(default)]
    convergent_encryption: Option<bool>,
    #[serde(default)]
    allow_plaintext_backup: Option<bool>,
    #[serde(default)]
    auto_rotate_period: Option<Value>,
}

async fn create_key(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = segments(&uri, "keys")?[0].to_owned();
    let target = format!("transit/keys/{name}");
    let access = authorize(&s, &headers, "update", &target).await?;
    let req: CreateBody = parse_body(&body)?;
    for (field, on) in [
        ("exportable", req.exportable),
        ("derived", req.derived),
        ("convergent_encryption", req.convergent_encryption),
        ("allow_plaintext_backup", req.allow_plaintext_backup),
    ] {
        if on == Some(true) {
            return Err(ApiError::BadRequest(format!(
                "`{field}` keys are not supported: key material never leaves Ward, and keys are not derived"
            )));
        }
    }
    if let Some(p) = &req.auto_rotate_period
        && super::parse_duration("auto_rotate_period", p)? != 0
    {
        return Err(ApiError::BadRequest(
            "`auto_rotate_period` is not supported: rotate with transit/keys/NAME/rotate".into(),
        ));
    }
    let key_type: KeyType = req
        .key_type
        .as_deref()
        .unwrap_or("aes256-gcm96")
        .parse()
        .map_err(transit_error)?;
    let key = record_key(&name);
    let mut tx = s.store.vault_begin(&key).await?;
    if tx.get(&key).await?.is_some() {
        // As Vault: creating an existing key changes nothing.
        return no_content();
    }
    let ring = KeyRing::new(key_type, now_unix()).map_err(transit_error)?;
    tx.put(&key, &seal_json(&access.master, &key, &ring)?)
        .await?;
    tx.commit(&[access.event(
        "transit.key.create",
        &target,
        json!({"type": key_type.as_str(), "outcome": "ok"}),
    )])
    .await?;
    s.vault.transit.forget(&name);
    no_content()
}

async fn read_key(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = segments(&uri, "keys")?[0].to_owned();
    let access = authorize(&s, &headers, "read", &format!("transit/keys/{name}")).await?;
    let key = record_key(&name);
    let ring: KeyRing = super::load_record(&s, &access.master, &key)
        .await?
        .ok_or(ApiError::VaultNotFound)?;
    data(ring.describe(&name).map_err(transit_error)?)
}

async fn list_keys(State(s): State<Arc<Server>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let _access = authorize(&s, &headers, "list", "transit/keys").await?;
    let keys: Vec<String> = s
        .store
        .vault_scan("transit/keys/")
        .await?
        .into_iter()
        .map(|(k, _)| k["transit/keys/".len()..].to_owned())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::VaultNotFound);
    }
    data(json!({ "keys": keys }))
}

async fn delete_key(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = segments(&uri, "keys")?[0].to_owned();
    let target = format!("transit/keys/{name}");
    let access = authorize(&s, &headers, "delete", &target).await?;
    let key = record_key(&name);
    let mut tx = s.store.vault_begin(&key).await?;
    let Some(sealed) = tx.get(&key).await? else {
        return no_content();
    };
    let ring: KeyRing = open_json(&access.master, &key, &sealed)?;
    ring.ensure_deletable().map_err(transit_error)?;
    tx.delete(&key).await?;
    tx.commit(&[access.event("transit.key.delete", &target, json!({"outcome": "ok"}))])
        .await?;
    s.vault.transit.forget(&name);
    no_content()
}

#[derive(Debug, Default, Deserialize)]
struct ConfigBody {
    #[serde(default)]
    min_decryption_version: Option<u32>,
    #[serde(default)]
    min_encryption_version: Option<u32>,
    #[serde(default)]
    deletion_allowed: Option<bool>,
    #[serde(default)]
    exportable: Option<bool>,
    #[serde(default)]
    allow_plaintext_backup: Option<bool>,
    #[serde(default)]
    auto_rotate_period: Option<Value>,
}

async fn config_key(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parts = segments(&uri, "keys")?;
    let name = parts[0].to_owned();
    let access = authorize(
        &s,
        &headers,
        "update",
        &format!("transit/keys/{name}/config"),
    )
    .await?;
    let req: ConfigBody = parse_body(&body)?;
    if req.exportable == Some(true) || req.allow_plaintext_backup == Some(true) {
        return Err(ApiError::BadRequest(
            "key material never leaves Ward: exportable keys are not supported".into(),
        ));
    }
    if let Some(p) = &req.auto_rotate_period
        && super::parse_duration("auto_rotate_period", p)? != 0
    {
        return Err(ApiError::BadRequest(
            "`auto_rotate_period` is not supported".into(),
        ));
    }
    let ring = change(&s, &access, &name, "transit.key.config", |r| {
        r.set_config(
            req.min_decryption_version,
            req.min_encryption_version,
            req.deletion_allowed,
        )
        .map_err(transit_error)
    })
    .await?;
    data(ring.describe(&name).map_err(transit_error)?)
}

async fn rotate_key(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = segments(&uri, "keys")?[0].to_owned();
    let access = authorize(
        &s,
        &headers,
        "update",
        &format!("transit/keys/{name}/rotate"),
    )
    .await?;
    let ring = change(&s, &access, &name, "transit.key.rotate", |r| {
        r.rotate(now_unix()).map(|_| ()).map_err(transit_error)
    })
    .await?;
    data(ring.describe(&name).map_err(transit_error)?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrimBody {
    min_available_version: u32,
}

async fn trim_key(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = segments(&uri, "keys")?[0].to_owned();
    let access = authorize(&s, &headers, "update", &format!("transit/keys/{name}/trim")).await?;
    let req: TrimBody = crate::error::parse_json(&body)?;
    let ring = change(&s, &access, &name, "transit.key.trim", |r| {
        r.trim(req.min_available_version).map_err(transit_error)
    })
    .await?;
    data(ring.describe(&name).map_err(transit_error)?)
}

/// One encrypt, decrypt or rewrap item (alone or in `batch_input`).
#[derive(Debug, Default, Deserialize)]
struct Item {
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    key_version: Option<u32>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct CryptBody {
    #[serde(flatten)]
    item: Item,
    #[serde(default)]
    batch_input: Option<Vec<Item>>,
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    convergent_encryption: Option<bool>,
    #[serde(default)]
    partial_failure_response_code: Option<u16>,
}

fn aad(item: &Item) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ApiError> {
    if item.context.as_deref().is_some_and(|c| !c.is_empty())
        || item.nonce.as_deref().is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::BadRequest(
            "`context` and `nonce` are for derived or convergent keys, which Ward does not make; use associated_data".into(),
        ));
    }
    item.associated_data
        .as_deref()
        .map(|a| decode_b64_input("associated_data", a).map_err(transit_error))
        .transpose()
}

/// Runs `op` on the single item or on each of `batch_input`, answering as
/// Vault does (`batch_results`, with per-item errors).
async fn crypt(
    s: &Server,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    op: &'static str,
    f: fn(&KeyRing, &Item) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let name = segments(uri, op)?[0].to_owned();
    let target = format!("transit/{op}/{name}");
    let access = authorize(s, headers, "update", &target).await?;
    let req: CryptBody = parse_body(body)?;
    if req.convergent_encryption == Some(true) {
        return Err(ApiError::BadRequest(
            "convergent encryption is not supported".into(),
        ));
    }
    let _ = (req.key_type, req.partial_failure_response_code);
    let ring = ring(s, &access, &name).await?;
    let answer = match req.batch_input {
        Some(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(ApiError::BadRequest(format!(
                    "batch_input must hold 1 to {MAX_BATCH} items"
                )));
            }
            let results: Vec<Value> = items
                .iter()
                .map(|it| {
                    let mut r = f(&ring, it).unwrap_or_else(|e| json!({"error": e.to_string()}));
                    if let Some(reference) = &it.reference {
                        r["reference"] = reference.clone().into();
                    }
                    r
                })
                .collect();
            json!({ "batch_results": results })
        }
        None => f(&ring, &req.item)?,
    };
    s.audit
        .append(access.event(&format!("transit.{op}"), &target, json!({"outcome": "ok"})))
        .await
        .map_err(|e| ApiError::Internal(format!("the audit record could not be written: {e}")))?;
    data(answer)
}

fn do_encrypt(ring: &KeyRing, it: &Item) -> Result<Value, ApiError> {
    let plain = decode_b64_input(
        "plaintext",
        it.plaintext
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("missing field `plaintext` (base64)".into()))?,
    )
    .map_err(transit_error)?;
    let aad = aad(it)?;
    let ct = ring
        .encrypt(&plain, aad.as_deref().map(|v| v.as_slice()), it.key_version)
        .map_err(transit_error)?;
    let version = ward_transit::parse_ciphertext(&ct)
        .map(|(v, _)| v)
        .unwrap_or(0);
    Ok(json!({"ciphertext": ct, "key_version": version}))
}

fn do_decrypt(ring: &KeyRing, it: &Item) -> Result<Value, ApiError> {
    let ct = it
        .ciphertext
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("missing field `ciphertext`".into()))?;
    let aad = aad(it)?;
    let plain = ring
        .decrypt(ct, aad.as_deref().map(|v| v.as_slice()))
        .map_err(transit_error)?;
    Ok(json!({"plaintext": STANDARD.encode(plain.as_slice())}))
}

fn do_rewrap(ring: &KeyRing, it: &Item) -> Result<Value, ApiError> {
    let ct = it
        .ciphertext
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("missing field `ciphertext`".into()))?;
    let aad = aad(it)?;
    let out = ring
        .rewrap(ct, aad.as_deref().map(|v| v.as_slice()), it.key_version)
        .map_err(transit_error)?;
    let version = ward_transit::parse_ciphertext(&out)
        .map(|(v, _)| v)
        .unwrap_or(0);
    Ok(json!({"ciphertext": out, "key_version": version}))
}

async fn encrypt(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crypt(&s, &uri, &headers, &body, "encrypt", do_encrypt).await
}

async fn decrypt(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crypt(&s, &uri, &headers, &body, "decrypt", do_decrypt).await
}

async fn rewrap(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crypt(&s, &uri, &headers, &body, "rewrap", do_rewrap).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatakeyBody {
    #[serde(default)]
    bits: Option<u32>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

async fn datakey(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parts = segments(&uri, "datakey")?;
    let (kind, name) = match parts.as_slice() {
        [kind, name] => (kind.to_string(), name.to_string()),
        _ => {
            return Err(ApiError::NotFound(
                "use transit/datakey/plaintext/NAME or transit/datakey/wrapped/NAME".into(),
            ));
        }
    };
    if kind != "plaintext" && kind != "wrapped" {
        return Err(ApiError::BadRequest(format!(
            "datakey type {kind:?}: use plaintext or wrapped"
        )));
    }
    let target = format!("transit/datakey/{kind}/{name}");
    let access = authorize(&s, &headers, "update", &target).await?;
    let req: DatakeyBody = parse_body(&body)?;
    if req.context.is_some() || req.nonce.is_some() {
        return Err(ApiError::BadRequest(
            "`context` and `nonce` are not supported".into(),
        ));
    }
    let ring = ring(&s, &access, &name).await?;
    let (plain, ct) = ring
        .datakey(req.bits.unwrap_or(256))
        .map_err(transit_error)?;
    let version = ward_transit::parse_ciphertext(&ct)
        .map(|(v, _)| v)
        .unwrap_or(0);
    s.audit
        .append(access.event("transit.datakey", &target, json!({"outcome": "ok"})))
        .await
        .map_err(|e| ApiError::Internal(format!("the audit record could not be written: {e}")))?;
    let mut out = json!({"ciphertext": ct, "key_version": version});
    if kind == "plaintext" {
        out["plaintext"] = STANDARD.encode(plain.as_slice()).into();
    }
    data(out)
}

#[derive(Debug, Default, Deserialize)]
struct SignBody {
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    hash_algorithm: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    prehashed: Option<bool>,
    #[serde(default)]
    marshaling_algorithm: Option<String>,
    #[serde(default)]
    signature_algorithm: Option<String>,
    #[serde(default)]
    key_version: Option<u32>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    hmac: Option<String>,
}

fn sign_options(hash_in_path: Option<&str>, req: &SignBody) -> Result<SignatureOptions, ApiError> {
    let hash = hash_in_path
        .or(req.hash_algorithm.as_deref())
        .or(req.algorithm.as_deref())
        .unwrap_or("sha2-256");
    if req.context.is_some() || req.hmac.is_some() {
        return Err(ApiError::BadRequest(
            "`context` and `hmac` are not supported".into(),
        ));
    }
    if req
        .signature_algorithm
        .as_deref()
        .is_some_and(|a| a != "pkcs1v15" && a != "pss")
    {
        return Err(ApiError::BadRequest(
            "`signature_algorithm` applies to RSA keys, which Ward does not make".into(),
        ));
    }
    Ok(SignatureOptions {
        hash_algorithm: hash.parse::<HashAlgorithm>().map_err(transit_error)?,
        prehashed: req.prehashed.unwrap_or(false),
        marshaling: req
            .marshaling_algorithm
            .as_deref()
            .unwrap_or("asn1")
            .parse::<Marshaling>()
            .map_err(transit_error)?,
    })
}

async fn sign_or_verify(
    s: &Server,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    op: &'static str,
) -> Result<Response, ApiError> {
    let parts = segments(uri, op)?;
    let name = parts[0].to_owned();
    let hash = parts.get(1).map(|h| h.to_string());
    if parts.len() > 2 {
        return Err(ApiError::NotFound("no such API path".into()));
    }
    let target = format!("transit/{op}/{name}");
    let access = authorize(s, headers, "update", &target).await?;
    let req: SignBody = parse_body(body)?;
    let opts = sign_options(hash.as_deref(), &req)?;
    let input = decode_b64_input(
        "input",
        req.input
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("missing field `input` (base64)".into()))?,
    )
    .map_err(transit_error)?;
    let ring = ring(s, &access, &name).await?;
    let answer = if op == "sign" {
        let sig = ring
            .sign(&input, &opts, req.key_version)
            .map_err(transit_error)?;
        let version = sig
            .strip_prefix("vault:v")
            .and_then(|r| r.split(':').next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        json!({"signature": sig, "key_version": version})
    } else {
        let sig = req
            .signature
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("missing field `signature`".into()))?;
        json!({"valid": ring.verify(&input, sig, &opts).map_err(transit_error)?})
    };
    s.audit
        .append(access.event(&format!("transit.{op}"), &target, json!({"outcome": "ok"})))
        .await
        .map_err(|e| ApiError::Internal(format!("the audit record could not be written: {e}")))?;
    data(answer)
}

async fn sign(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    sign_or_verify(&s, &uri, &headers, &body, "sign").await
}

async fn verify(
    State(s): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    sign_or_verify(&s, &uri, &headers, &body, "verify").await
}
