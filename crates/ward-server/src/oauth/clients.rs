//! OAuth clients: registered by an operator, each with the scopes and
//! audiences it may ask for and one way to authenticate: a secret Ward
//! generates (256 bits, shown once, stored as SHA-256: a random secret
//! needs no slow hash, and no user-chosen secret is accepted), its SVID
//! over mutual TLS (RFC 8705), or a public key for `private_key_jwt`
//! (RFC 7523).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use ward_store::{AuditEvent, now_secs};

use crate::auth::token_hash;
use crate::error::{ApiError, parse_json};
use crate::state::Server;
use crate::vault::{load_record, open_json, seal_json};

const PREFIX: &str = "oauth/clients/";
/// How long a client record is trusted without reading the store again
/// (a deleted client or rotated secret stops working within this).
const CLIENT_TTL: Duration = Duration::from_secs(2);
const CLIENT_CACHE_MAX: usize = 10_000;

/// A client as stored (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Client {
    pub client_id: String,
    /// SHA-256 of the secret, hex; `None` for mTLS and key clients.
    pub secret_sha256: Option<String>,
    /// The SPIFFE ID whose SVID authenticates it (RFC 8705).
    pub spiffe_id: Option<String>,
    /// The public JWK its assertions are signed with (RFC 7523).
    pub jwk: Option<serde_json::Value>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub created_at: i64,
}

impl Client {
    pub(crate) fn auth_method(&self) -> &'static str {
        if self.spiffe_id.is_some() {
            "tls_client_auth"
        } else if self.jwk.is_some() {
            "private_key_jwt"
        } else {
            "client_secret_basic"
        }
    }
    fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "client_id": self.client_id,
            "auth_method": self.auth_method(),
            "spiffe_id": self.spiffe_id,
            "jwk": self.jwk,
            "scopes": self.scopes,
            "audiences": self.audiences,
            "created_at": self.created_at,
        })
    }
}

/// Known clients by ID, each trusted for [`CLIENT_TTL`].
#[derive(Default)]
pub struct ClientCache(Mutex<HashMap<String, (Instant, Arc<Client>)>>);

pub(crate) fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn valid_scope(s: &str) -> bool {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// A client by ID, through the cache; unknown IDs always go to the store,
/// so only real clients fill the cache.
pub(crate) async fn client(s: &Server, id: &str) -> Result<Option<Arc<Client>>, ApiError> {
    if !valid_client_id(id) {
        return Ok(None);
    }
    if let Some((at, c)) = s
        .oauth
        .clients
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        && at.elapsed() < CLIENT_TTL
    {
        return Ok(Some(c.clone()));
    }
    let master = s.master()?;
    let key = format!("{PREFIX}{id}");
    let found: Option<Client> = load_record(s, &master, &key).await?;
    let Some(c) = found else { return Ok(None) };
    if c.client_id != id {
        return Err(crate::vault::integrity(&key));
    }
    let c = Arc::new(c);
    let mut cache = s.oauth.clients.0.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CLIENT_CACHE_MAX {
        cache.clear();
    }
    cache.insert(id.to_owned(), (Instant::now(), c.clone()));
    Ok(Some(c))
}

fn forget(s: &Server, id: &str) {
    s.oauth
        .clients
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateClient {
    client_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    /// Authenticate by this SVID over mTLS instead of a secret.
    #[serde(default)]
    spiffe_id: Option<String>,
    /// Authenticate by assertions signed with this public JWK (EC P-256 or Ed25519).
    #[serde(default)]
    jwk: Option<serde_json::Value>,
}

fn new_secret() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ApiError::Internal("random secret".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// Checks a public JWK for `private_key_jwt`: only EC P-256 or Ed25519
/// public keys (no private part, nothing symmetric).
fn check_jwk(jwk: &serde_json::Value) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::BadRequest(format!("jwk: {m}"));
    let obj = jwk
        .as_object()
        .ok_or_else(|| bad("must be a JSON object"))?;
    if obj.contains_key("d") || obj.contains_key("k") {
        return Err(bad(
            "holds private or symmetric key material; register the public key only",
        ));
    }
    match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("EC"), Some("P-256")) => {
            jsonwebtoken::DecodingKey::from_ec_components(
                jwk["x"].as_str().unwrap_or(""),
                jwk["y"].as_str().unwrap_or(""),
            )
            .map_err(|e| bad(&format!("not a usable P-256 key: {e}")))?;
        }
        (Some("OKP"), Some("Ed25519")) => {
            jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap_or(""))
                .map_err(|e| bad(&format!("not a usable Ed25519 key: {e}")))?;
        }
        _ => return Err(bad("kty/crv must be EC/P-256 or OKP/Ed25519")),
    }
    Ok(())
}

/// `POST /v1/oauth/clients`.
pub(crate) async fn create(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = s.authenticate(&headers).await?;
    let master = s.master()?;
    let req: CreateClient = parse_json(&body)?;
    if !valid_client_id(&req.client_id) {
        return Err(ApiError::BadRequest(
            "client_id: 1-64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    if let Some(bad) = req.scopes.iter().find(|s| !valid_scope(s)) {
        return Err(ApiError::BadRequest(format!(
            "scope {bad:?} is not a scope token (printable ASCII, no spaces, quotes or backslashes)"
        )));
    }
    if req.scopes.len() > 64 || req.audiences.len() > 16 {
        return Err(ApiError::BadRequest(
            "at most 64 scopes and 16 audiences".into(),
        ));
    }
    if let Some(bad) = req
        .audiences
        .iter()
        .find(|a| a.is_empty() || a.len() > 512 || a.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(format!(
            "audience {bad:?} is empty, too long or holds control characters"
        )));
    }
    if req.spiffe_id.is_some() && req.jwk.is_some() {
        return Err(ApiError::BadRequest(
            "give spiffe_id or jwk, not both: a client has one way to authenticate".into(),
        ));
    }
    if let Some(id) = &req.spiffe_id {
        let parsed = ward_identity::SpiffeId::parse(id)
            .map_err(|e| ApiError::BadRequest(format!("spiffe_id {id:?}: {e}")))?;
        if parsed.trust_domain() != &s.config.trust_domain {
            return Err(ApiError::BadRequest(format!(
                "spiffe_id {id:?} is not in trust domain {}",
                s.config.trust_domain
            )));
        }
    }
    if let Some(jwk) = &req.jwk {
        check_jwk(jwk)?;
    }
    let secret = if req.spiffe_id.is_none() && req.jwk.is_none() {
        Some(new_secret()?)
    } else {
        None
    };
    let client = Client {
        client_id: req.client_id.clone(),
        secret_sha256: secret.as_deref().map(token_hash),
        spiffe_id: req.spiffe_id,
        jwk: req.jwk,
        scopes: req.scopes,
        audiences: req.audiences,
        created_at: now_secs(),
    };
    let key = format!("{PREFIX}{}", client.client_id);
    let mut tx = s.store.vault_begin(&key).await?;
    if tx.get(&key).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "client {} exists: delete it first, or rotate its secret",
            client.client_id
        )));
    }
    tx.put(&key, &seal_json(&master, &key, &client)?).await?;
    let event = AuditEvent::new(
        caller.actor(),
        "oauth.client.create",
        &client.client_id,
        serde_json::json!({"auth_method": client.auth_method(), "scopes": client.scopes, "audiences": client.audiences}),
    );
    tx.commit(&[event]).await?;
    forget(&s, &client.client_id);
    let mut out = client.public();
    out["client_secret"] = secret.into();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `GET /v1/oauth/clients`.
pub(crate) async fn list(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authenticate(&headers).await?;
    let master = s.master()?;
    let mut out = Vec::new();
    for (key, sealed) in s.store.vault_scan(PREFIX).await? {
        let c: Client = open_json(&master, &key, &sealed)?;
        out.push(c.public());
    }
    Ok(Json(serde_json::json!({"clients": out})).into_response())
}

/// `GET /v1/oauth/clients/{id}`.
pub(crate) async fn show(
    State(s): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authenticate(&headers).await?;
    let master = s.master()?;
    let key = format!("{PREFIX}{id}");
    match load_record::<Client>(&s, &master, &key).await? {
        Some(c) => Ok(Json(c.public()).into_response()),
        None => Err(ApiError::NotFound(format!("no client {id}"))),
    }
}

/// `POST /v1/oauth/clients/{id}/rotate-secret`: a new secret, shown once;
/// the old one stops working at once.
pub(crate) async fn rotate_secret(
    State(s): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.authenticate(&headers).await?;
    let master = s.master()?;
    let key = format!("{PREFIX}{id}");
    let mut tx = s.store.vault_begin(&key).await?;
    let Some(sealed) = tx.get(&key).await? else {
        return Err(ApiError::NotFound(format!("no client {id}")));
    };
    let mut c: Client = open_json(&master, &key, &sealed)?;
    if c.secret_sha256.is_none() {
        return Err(ApiError::BadRequest(format!(
            "client {id} authenticates with {}, not a secret",
            c.auth_method()
        )));
    }
    let secret = new_secret()?;
    c.secret_sha256 = Some(token_hash(&secret));
    tx.put(&key, &seal_json(&master, &key, &c)?).await?;
    let event = AuditEvent::new(
        caller.actor(),
        "oauth.client.rotate-secret",
        &id,
        serde_json::json!({}),
    );
    tx.commit(&[event]).await?;
    forget(&s, &id);
    let mut out = c.public();
    out["client_secret"] = secret.into();
    Ok(Json(out).into_response())
}

/// `DELETE /v1/oauth/clients/{id}`.
pub(crate) async fn delete(
    State(s): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.authenticate(&headers).await?;
    s.master()?;
    let key = format!("{PREFIX}{id}");
    let mut tx = s.store.vault_begin(&key).await?;
    if tx.get(&key).await?.is_none() {
        return Err(ApiError::NotFound(format!("no client {id}")));
    }
    tx.delete(&key).await?;
    let event = AuditEvent::new(
        caller.actor(),
        "oauth.client.delete",
        &id,
        serde_json::json!({}),
    );
    tx.commit(&[event]).await?;
    forget(&s, &id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
