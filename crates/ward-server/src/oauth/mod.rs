//! The OAuth 2.0 / OIDC token service: clients and their authentication
//! (`clients`), the signing keys (`keys`), the token endpoint with client
//! credentials (`token`), and around it discovery, the JWKS, introspection
//! (RFC 7662), revocation (RFC 7009) with a list of revoked token IDs for
//! the data plane, and admin minting for tests and drills.
//!
//! Tokens are JWTs (`typ: at+jwt`, RFC 9068) signed ES256 by default
//! (EdDSA allowed), with `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`,
//! `scope` and `client_id`, and `cnf.x5t#S256` when the client proved
//! itself with its SVID. Every issuance is in the audit chain before the
//! token is answered.

mod clients;
mod exchange;
pub(crate) mod keys;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use ward_store::{AuditEvent, now_secs};

use crate::error::{ApiError, parse_json};
use crate::state::Server;
use crate::vault::{open_json, seal_json};

pub(crate) use clients::ClientCache;
pub(crate) use keys::RingCache;

/// The paths (outside `/v1`) the token service answers.
pub(crate) const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub(crate) const JWKS_PATH: &str = "/oauth/jwks";
pub(crate) const TOKEN_PATH: &str = "/oauth/token";
pub(crate) const INTROSPECT_PATH: &str = "/oauth/introspect";
pub(crate) const REVOKE_PATH: &str = "/oauth/revoke";
pub(crate) const REVOKED_PATH: &str = "/oauth/revoked";

/// Revoked token IDs and when each token expires.
type RevokedSet = Arc<HashMap<String, i64>>;

const REVOKED_PREFIX: &str = "oauth/revoked/";
/// How long the revoked set is used before the store is read again.
const REVOKED_TTL: Duration = Duration::from_secs(1);

pub(crate) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(DISCOVERY_PATH, get(discovery))
        .route(JWKS_PATH, get(jwks))
        .route(TOKEN_PATH, post(token::token))
        .route(INTROSPECT_PATH, post(token::introspect))
        .route(REVOKE_PATH, post(token::revoke))
        .route(REVOKED_PATH, get(revoked_list))
        .route(
            "/v1/oauth/exchange-policy",
            get(exchange::read_policy).put(exchange::write_policy),
        )
        .route(
            "/v1/oauth/clients",
            get(clients::list).post(clients::create),
        )
        .route(
            "/v1/oauth/clients/{id}",
            get(clients::show).delete(clients::delete),
        )
        .route(
            "/v1/oauth/clients/{id}/rotate-secret",
            post(clients::rotate_secret),
        )
        .route("/v1/oauth/mint", post(mint))
        .route("/v1/oauth/keys/rotate", post(rotate_keys))
}

/// The token service's in-memory state: caches of what the store holds.
#[derive(Default)]
pub struct OAuthState {
    /// The issuer URL (`iss`), fixed when the listener is bound.
    pub issuer: OnceLock<String>,
    pub(crate) ring: RingCache,
    pub(crate) clients: ClientCache,
    revoked: RwLock<Option<(Instant, RevokedSet)>>,
    pub(crate) exchange_policy: exchange::PolicyCache,
    /// The OIDC issuers whose tokens may be exchanged (`oauth.trusted_issuer`).
    trusted: RwLock<Vec<Arc<ward_oidc::Issuer>>>,
}

impl OAuthState {
    /// The trusted issuers (their keys are kept current in the background).
    pub(crate) fn trusted(&self) -> Vec<Arc<ward_oidc::Issuer>> {
        self.trusted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts watching the configured trusted issuers.
    pub fn watch_trusted(&self, settings: &[ward_oidc::Settings]) -> Result<(), String> {
        let mut list = Vec::new();
        for t in settings {
            let issuer = Arc::new(ward_oidc::Issuer::new(t.clone())?);
            tokio::spawn(issuer.clone().watch());
            list.push(issuer);
        }
        *self.trusted.write().unwrap_or_else(|p| p.into_inner()) = list;
        Ok(())
    }
}

impl Server {
    /// The token service's issuer URL.
    pub fn issuer(&self) -> &str {
        self.oauth
            .issuer
            .get()
            .map(String::as_str)
            .unwrap_or("https://127.0.0.1")
    }
}

fn public_json(status: StatusCode, v: serde_json::Value, cache: bool) -> Response {
    let mut resp = (status, Json(v)).into_response();
    let value = if cache {
        "public, max-age=60"
    } else {
        "no-store"
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    resp
}

/// `GET /.well-known/openid-configuration` (OIDC Discovery 1.0, RFC 8414).
async fn discovery(State(s): State<Arc<Server>>) -> Response {
    let iss = s.issuer();
    public_json(
        StatusCode::OK,
        serde_json::json!({
            "issuer": iss,
            "token_endpoint": format!("{iss}{TOKEN_PATH}"),
            "jwks_uri": format!("{iss}{JWKS_PATH}"),
            "introspection_endpoint": format!("{iss}{INTROSPECT_PATH}"),
            "revocation_endpoint": format!("{iss}{REVOKE_PATH}"),
            "grant_types_supported": ["client_credentials", exchange::GRANT],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"],
            "tls_client_certificate_bound_access_tokens": true,
        }),
        true,
    )
}

/// `GET /oauth/jwks`: every published signing key (`use: sig`).
async fn jwks(State(s): State<Arc<Server>>) -> Result<Response, ApiError> {
    let master = s.master()?;
    let ring = keys::ring(&s, &master).await?;
    let now = now_secs();
    let keys: Vec<_> = ring.published(now).map(keys::Key::jwk).collect();
    Ok(public_json(
        StatusCode::OK,
        serde_json::json!({ "keys": keys }),
        true,
    ))
}

#[derive(Serialize, Deserialize)]
struct Revoked {
    jti: String,
    exp: i64,
}

/// The revoked token IDs still unexpired, through a one-second cache.
pub(crate) async fn revoked(s: &Server) -> Result<Arc<HashMap<String, i64>>, ApiError> {
    if let Some((at, set)) = s
        .oauth
        .revoked
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        && at.elapsed() < REVOKED_TTL
    {
        return Ok(set.clone());
    }
    let master = s.master()?;
    let now = now_secs();
    let mut set = HashMap::new();
    for (key, sealed) in s.store.vault_scan(REVOKED_PREFIX).await? {
        let r: Revoked = open_json(&master, &key, &sealed)?;
        if key != format!("{REVOKED_PREFIX}{}", r.jti) {
            return Err(crate::vault::integrity(&key));
        }
        if r.exp > now {
            set.insert(r.jti, r.exp);
        }
    }
    let set = Arc::new(set);
    *s.oauth.revoked.write().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), set.clone()));
    Ok(set)
}

/// Records `jti` as revoked until `exp`, with its audit record.
pub(crate) async fn revoke_jti(
    s: &Server,
    jti: &str,
    exp: i64,
    event: AuditEvent,
) -> Result<(), ApiError> {
    let master = s.master()?;
    let key = format!("{REVOKED_PREFIX}{jti}");
    let mut tx = s.store.vault_begin(&key).await?;
    let r = Revoked {
        jti: jti.to_owned(),
        exp,
    };
    tx.put(&key, &seal_json(&master, &key, &r)?).await?;
    tx.commit(&[event]).await?;
    *s.oauth.revoked.write().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(())
}

/// Drops revocations and spent assertion IDs whose tokens have expired.
pub(crate) async fn prune(s: &Server) -> Result<(), ApiError> {
    let Ok(master) = s.master() else {
        return Ok(());
    };
    let now = now_secs();
    for prefix in [REVOKED_PREFIX, token::ASSERTION_PREFIX] {
        for (key, sealed) in s.store.vault_scan(prefix).await? {
            let Ok(r) = open_json::<Revoked>(&master, &key, &sealed) else {
                continue;
            };
            if r.exp + 60 < now {
                let mut tx = s.store.vault_begin(&key).await?;
                tx.delete(&key).await?;
                tx.commit(&[]).await?;
            }
        }
    }
    Ok(())
}

/// `GET /oauth/revoked`: the IDs of revoked tokens that have not expired,
/// which gateways and sidecars poll (a token ID is no secret, and a
/// revoked token is worth nothing).
async fn revoked_list(State(s): State<Arc<Server>>) -> Result<Response, ApiError> {
    let set = revoked(&s).await?;
    let mut list: Vec<_> = set
        .iter()
        .map(|(jti, exp)| serde_json::json!({"jti": jti, "exp": exp}))
        .collect();
    list.sort_by(|a, b| a["jti"].as_str().cmp(&b["jti"].as_str()));
    Ok(public_json(
        StatusCode::OK,
        serde_json::json!({"revoked": list, "as_of": now_secs()}),
        false,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    client_id: String,
    /// Claims that override the defaults (or, with `exact`, all of them).
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    exact: bool,
    /// Lifetime, seconds (default: the token lifetime).
    #[serde(default)]
    expires_in: Option<i64>,
    /// `nbf` this many seconds from now.
    #[serde(default)]
    not_before: Option<i64>,
    #[serde(default)]
    audience: Option<String>,
}

/// `POST /v1/oauth/mint` (admin): signs whatever claims it is given with
/// the real key, so that drills can make expired, future, wrong-audience,
/// wrong-issuer and `exp`-less tokens. Audited with the claim names.
async fn mint(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = s.authenticate(&headers).await?;
    let master = s.master()?;
    let req: MintRequest = parse_json(&body)?;
    let Some(client) = clients::client(&s, &req.client_id).await? else {
        return Err(ApiError::NotFound(format!(
            "no client {}: create it with `ward client create`",
            req.client_id
        )));
    };
    let now = now_secs();
    let lifetime = req
        .expires_in
        .unwrap_or(s.config.oauth.token_ttl.as_secs() as i64);
    if !(-(365 * 86400)..=(7 * 86400)).contains(&lifetime) {
        return Err(ApiError::BadRequest(
            "expires_in must be within a year in the past and 7 days ahead".into(),
        ));
    }
    let mut claims = if req.exact {
        serde_json::Map::new()
    } else {
        let aud = req
            .audience
            .clone()
            .or_else(|| client.audiences.first().cloned())
            .unwrap_or_else(|| client.client_id.clone());
        token::default_claims(
            &s,
            &client.client_id,
            &client.client_id,
            &[aud],
            &client.scopes,
            now,
            lifetime,
        )?
    };
    if let Some(nbf) = req.not_before {
        claims.insert("nbf".into(), (now + nbf).into());
    }
    let names: Vec<String> = req.claims.keys().cloned().collect();
    claims.extend(req.claims);
    let ring = keys::ring(&s, &master).await?;
    let key = ring
        .signer(now)
        .ok_or_else(|| ApiError::Internal("no signing key is active".into()))?;
    let token = key.sign("at+jwt", &serde_json::Value::Object(claims.clone()))?;
    let event = AuditEvent::new(
        caller.actor(),
        "oauth.token.mint",
        &client.client_id,
        serde_json::json!({"jti": claims.get("jti"), "claims_given": names, "exact": req.exact}),
    );
    s.audit.append(event).await?;
    Ok(public_json(
        StatusCode::OK,
        serde_json::json!({"access_token": token, "token_type": "Bearer"}),
        false,
    ))
}

/// `POST /v1/oauth/keys/rotate` (admin).
async fn rotate_keys(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.authenticate(&headers).await?;
    let master = s.master()?;
    let ring = keys::rotate(&s, &master, &caller.actor(), false).await?;
    let keys: Vec<_> = ring
        .keys
        .iter()
        .map(|k| {
            serde_json::json!({"kid": k.kid, "alg": k.alg.name(), "created_at": k.created_at, "sign_from": k.sign_from, "retire_at": k.retire_at})
        })
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}
