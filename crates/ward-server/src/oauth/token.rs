//! The token endpoint (`client_credentials`), introspection and
//! revocation, and how each authenticates its client: HTTP Basic or form
//! secret, a `private_key_jwt` assertion (whose `jti` is spent once), or
//! the SVID of the TLS connection (RFC 8705). A request that carries two
//! ways, or the same parameter twice, is refused before anything else.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use ward_store::{AuditEvent, now_secs};

use super::clients::{Client, client};
use super::{keys, public_json};
use crate::auth::token_hash;
use crate::error::ApiError;
use crate::peer::PeerId;
use crate::state::Server;

/// Spent `private_key_jwt` assertion IDs, kept until the assertion expires.
pub(crate) const ASSERTION_PREFIX: &str = "oauth/assertions/";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The furthest ahead an assertion's `exp` may be. RFC 7523 asks for
/// short; Authlib's default is one hour, so that is the bound (the spent
/// `jti` is kept until then).
const ASSERTION_MAX_LIFETIME: i64 = 3600;

/// An OAuth error answer (RFC 6749 §5.2).
pub(crate) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
        }
    }
    pub(crate) fn request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Sealed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the server is sealed",
            ),
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "internal error in the token service");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error; the server log has the details",
                )
            }
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = public_json(
            self.status,
            json!({"error": self.code, "error_description": self.description}),
            false,
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ward\""),
            );
        }
        resp
    }
}

pub(crate) type Form = HashMap<String, String>;

/// Parses an `application/x-www-form-urlencoded` body; a parameter sent
/// twice is refused (RFC 6749 §3.1).
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return Err(OAuthError::request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::request("the form body does not parse"))?;
    let mut form = Form::new();
    for (k, v) in pairs {
        if form.insert(k.clone(), v).is_some() {
            return Err(OAuthError::request(format!(
                "the parameter {k} is given more than once"
            )));
        }
    }
    Ok(form)
}

/// An authenticated client and how it proved itself.
pub(crate) struct Authed {
    pub client: Arc<Client>,
    pub method: &'static str,
    /// The SHA-256 thumbprint of the client certificate, for `cnf` (RFC 8705).
    pub x5t: Option<String>,
}

fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::request("two Authorization headers"));
    }
    let v = v
        .to_str()
        .map_err(|_| OAuthError::client("the Authorization header is not text"))?;
    let Some(b64) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    else {
        return Err(OAuthError::client(
            "the token endpoint takes HTTP Basic client authentication, not this scheme",
        ));
    };
    let raw = STANDARD
        .decode(b64.trim())
        .map_err(|_| OAuthError::client("the Basic credentials are not base64"))?;
    let text = String::from_utf8(raw)
        .map_err(|_| OAuthError::client("the Basic credentials are not UTF-8"))?;
    let (id, secret) = text
        .split_once(':')
        .ok_or_else(|| OAuthError::client("the Basic credentials have no ':'"))?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let dec = |s: &str| {
        percent_decode_form(s)
            .ok_or_else(|| OAuthError::client("bad encoding in Basic credentials"))
    };
    Ok(Some((dec(id)?, dec(secret)?)))
}

fn percent_decode_form(s: &str) -> Option<String> {
    let replaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&replaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn constant_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Authenticates the client of a token, introspection or revocation request.
pub(crate) async fn authenticate(
    s: &Server,
    headers: &HeaderMap,
    form: &Form,
    peer: &PeerId,
) -> Result<Authed, OAuthError> {
    let basic = basic(headers)?;
    let post_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let ways = usize::from(basic.is_some())
        + usize::from(post_secret.is_some())
        + usize::from(assertion.is_some());
    if ways > 1 {
        return Err(OAuthError::request(
            "the request authenticates the client more than one way; use one",
        ));
    }
    let form_id = form.get("client_id");
    let unknown = || OAuthError::client("client authentication failed");
    // Secret (Basic or form).
    let secret_pair = match (&basic, post_secret) {
        (Some((id, secret)), None) => Some((id.clone(), secret.clone())),
        (None, Some(secret)) => Some((
            form_id
                .cloned()
                .ok_or_else(|| OAuthError::client("client_secret without client_id"))?,
            secret.clone(),
        )),
        _ => None,
    };
    if let Some((id, secret)) = secret_pair {
        if let Some(fid) = form_id
            && *fid != id
        {
            return Err(OAuthError::request(
                "client_id in the form differs from the authenticated client",
            ));
        }
        let c = client(s, &id).await?.ok_or_else(unknown)?;
        let Some(want) = &c.secret_sha256 else {
            return Err(unknown());
        };
        if !constant_eq(&token_hash(&secret), want) {
            return Err(unknown());
        }
        let method = if basic.is_some() {
            "client_secret_basic"
        } else {
            "client_secret_post"
        };
        return Ok(Authed {
            client: c,
            method,
            x5t: None,
        });
    }
    if let Some(jwt) = assertion {
        if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
            return Err(OAuthError::client(format!(
                "client_assertion_type must be {ASSERTION_TYPE}"
            )));
        }
        return assertion_client(s, jwt, form_id).await;
    }
    // Mutual TLS: the client names itself; its SVID must be the registered one.
    let Some(id) = form_id else {
        return Err(OAuthError::client(
            "no client authentication: send HTTP Basic credentials, a client assertion, or client_id over mutual TLS with the client's SVID",
        ));
    };
    let c = client(s, id).await?.ok_or_else(unknown)?;
    let Some(want) = &c.spiffe_id else {
        return Err(unknown());
    };
    let presented = crate::auth::workload(s, peer).map_err(|_| unknown())?;
    if presented.to_string() != *want || peer.x5t_s256.is_empty() {
        return Err(unknown());
    }
    Ok(Authed {
        client: c,
        method: "tls_client_auth",
        x5t: Some(peer.x5t_s256.clone()),
    })
}

/// A `private_key_jwt` assertion (RFC 7523 §3): `iss` = `sub` = the client,
/// `aud` the token endpoint or the issuer, `exp` at most an hour
/// ahead, a `jti` never seen before, signed by the registered key.
async fn assertion_client(
    s: &Server,
    jwt: &str,
    form_id: Option<&String>,
) -> Result<Authed, OAuthError> {
    let fail = |why: &str| OAuthError::client(format!("the client assertion is refused: {why}"));
    let unverified = jwt
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(|| fail("not a JWT"))?;
    let id = unverified["iss"].as_str().ok_or_else(|| fail("no iss"))?;
    if let Some(fid) = form_id
        && fid != id
    {
        return Err(OAuthError::request(
            "client_id differs from the assertion's issuer",
        ));
    }
    let c = client(s, id)
        .await?
        .ok_or_else(|| OAuthError::client("client authentication failed"))?;
    let Some(jwk) = &c.jwk else {
        return Err(OAuthError::client("client authentication failed"));
    };
    let mut jwk = jwk.clone();
    if jwk.get("kid").is_none() {
        // The one registered key answers whatever kid the assertion names.
        let header_kid = jwt
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|h| h["kid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "client".into());
        jwk["kid"] = header_kid.into();
    }
    let jwks = json!({"keys": [jwk]});
    let iss = s.issuer().to_owned();
    let audiences = [format!("{iss}{}", super::TOKEN_PATH), iss.clone()];
    let claims = ward_identity::access_token::verify(
        jwt,
        &jwks,
        &ward_identity::access_token::Expect {
            issuer: id,
            audiences: &audiences,
            algorithms: &[
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::EdDSA,
            ],
            leeway: 5,
        },
    )
    .map_err(|e| fail(&e.to_string()))?;
    if claims["sub"].as_str() != Some(id) {
        return Err(fail("sub must equal iss (the client ID)"));
    }
    let exp = claims["exp"].as_i64().ok_or_else(|| fail("exp"))?;
    if exp > now_secs() + ASSERTION_MAX_LIFETIME {
        return Err(fail("exp is more than an hour ahead"));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| fail("no jti"))?;
    // Spend the jti: once per client, across replicas (the store's lock).
    let master = s.master()?;
    let key = format!("{ASSERTION_PREFIX}{}", token_hash(&format!("{id}\0{jti}")));
    let mut tx = s.store.vault_begin(&key).await.map_err(ApiError::from)?;
    if tx.get(&key).await.map_err(ApiError::from)?.is_some() {
        return Err(fail("its jti was used before (a replayed assertion)"));
    }
    let spent = super::Revoked {
        jti: key.trim_start_matches(ASSERTION_PREFIX).to_owned(),
        exp,
    };
    tx.put(&key, &crate::vault::seal_json(&master, &key, &spent)?)
        .await
        .map_err(ApiError::from)?;
    tx.commit(&[]).await.map_err(ApiError::from)?;
    Ok(Authed {
        client: c,
        method: "private_key_jwt",
        x5t: None,
    })
}

/// The claims of a token Ward issues.
pub(crate) fn default_claims(
    s: &Server,
    sub: &str,
    client_id: &str,
    aud: &[String],
    scopes: &[String],
    now: i64,
    lifetime: i64,
) -> Result<Map<String, Value>, ApiError> {
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| ApiError::Internal("random jti".into()))?;
    let mut m = Map::new();
    m.insert("iss".into(), s.issuer().into());
    m.insert("sub".into(), sub.into());
    m.insert(
        "aud".into(),
        if aud.len() == 1 {
            aud[0].clone().into()
        } else {
            aud.to_vec().into()
        },
    );
    m.insert("exp".into(), (now + lifetime).into());
    m.insert("iat".into(), now.into());
    m.insert("nbf".into(), now.into());
    m.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
    m.insert("scope".into(), scopes.join(" ").into());
    m.insert("client_id".into(), client_id.into());
    Ok(m)
}

/// The scopes asked for: a subset of what the client holds (all of them
/// when none are asked for).
fn granted_scopes(c: &Client, form: &Form) -> Result<Vec<String>, OAuthError> {
    let Some(asked) = form.get("scope") else {
        return Ok(c.scopes.clone());
    };
    let mut out = Vec::new();
    for s in asked.split(' ').filter(|s| !s.is_empty()) {
        if !c.scopes.iter().any(|h| h == s) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("the client may not ask for scope {s:?}"),
            ));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

/// The audience asked for (`audience` or RFC 8707 `resource`), which must
/// be one the client is registered for; the first by default.
fn granted_audience(c: &Client, form: &Form) -> Result<String, OAuthError> {
    let asked = match (form.get("audience"), form.get("resource")) {
        (Some(a), Some(r)) if a != r => {
            return Err(OAuthError::request(
                "audience and resource differ; send one",
            ));
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    match asked {
        None => c.audiences.first().cloned().ok_or_else(|| {
            OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "the client has no audience: register one with `ward client create --audience`",
            )
        }),
        Some(a) if c.audiences.iter().any(|x| x == a) => Ok(a.clone()),
        Some(a) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            format!("the client may not ask for audience {a:?}"),
        )),
    }
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(s): State<Arc<Server>>,
    Extension(peer): Extension<PeerId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let form = parse_form(&headers, &body)?;
    let grant = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::request("grant_type is missing"))?
        .clone();
    let authed = match authenticate(&s, &headers, &form, &peer).await {
        Ok(a) => a,
        Err(e) => {
            if e.code == "invalid_client" {
                let event = AuditEvent::new(
                    "anonymous",
                    "oauth.client.auth-failed",
                    form.get("client_id").map(String::as_str).unwrap_or("-"),
                    json!({"reason": e.description}),
                );
                if let Err(err) = s.audit.append(event).await {
                    tracing::warn!(error = %err, "recording a failed client authentication");
                }
            }
            return Err(e);
        }
    };
    if grant == super::exchange::GRANT {
        return super::exchange::exchange(&s, &authed, &form).await;
    }
    if grant != "client_credentials" {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant_type {grant:?} is not supported (client_credentials, or {})",
                super::exchange::GRANT
            ),
        ));
    }
    let c = &authed.client;
    let scopes = granted_scopes(c, &form)?;
    let aud = granted_audience(c, &form)?;
    let now = now_secs();
    let lifetime = s.config.oauth.token_ttl.as_secs() as i64;
    let mut claims = default_claims(
        &s,
        &c.client_id,
        &c.client_id,
        std::slice::from_ref(&aud),
        &scopes,
        now,
        lifetime,
    )?;
    if let Some(x5t) = &authed.x5t {
        claims.insert("cnf".into(), json!({"x5t#S256": x5t}));
    }
    let master = s.master()?;
    let ring = keys::ring(&s, &master).await?;
    let key = ring
        .signer(now)
        .ok_or_else(|| ApiError::Internal("no signing key is active".into()))?;
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    let token = key.sign("at+jwt", &Value::Object(claims))?;
    // The issuance is durable before the token leaves.
    let event = AuditEvent::new(
        format!("client:{}", c.client_id),
        "oauth.token.issue",
        &c.client_id,
        json!({"jti": jti, "aud": aud, "scope": scopes.join(" "), "auth_method": authed.method, "kid": key.kid}),
    );
    s.audit.append(event).await.map_err(ApiError::from)?;
    Ok(public_json(
        StatusCode::OK,
        json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scopes.join(" "),
        }),
        false,
    ))
}

/// Verifies a token Ward issued: signed by a published key, `iss` this
/// issuer, unexpired, not revoked. Returns its claims.
pub(crate) async fn verify_own(s: &Server, token: &str) -> Result<Option<Value>, ApiError> {
    let master = s.master()?;
    let ring = keys::ring(s, &master).await?;
    let now = now_secs();
    let jwks = json!({"keys": ring.published(now).map(keys::Key::jwk).collect::<Vec<_>>()});
    let claims = match ward_identity::access_token::verify(
        token,
        &jwks,
        &ward_identity::access_token::Expect {
            issuer: s.issuer(),
            audiences: &[],
            algorithms: &[
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::EdDSA,
            ],
            leeway: 0,
        },
    ) {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let jti = claims["jti"].as_str().unwrap_or_default();
    if jti.is_empty() || super::revoked(s).await?.contains_key(jti) {
        return Ok(None);
    }
    Ok(Some(claims))
}

/// `POST /oauth/introspect` (RFC 7662): any authenticated client may ask.
pub(crate) async fn introspect(
    State(s): State<Arc<Server>>,
    Extension(peer): Extension<PeerId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let form = parse_form(&headers, &body)?;
    let authed = authenticate(&s, &headers, &form, &peer).await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::request("token is missing"))?;
    let answer = match verify_own(&s, token).await? {
        Some(mut claims) => {
            if let Some(m) = claims.as_object_mut() {
                m.insert("active".into(), true.into());
                m.insert("token_type".into(), "Bearer".into());
            }
            claims
        }
        None => json!({"active": false}),
    };
    let event = AuditEvent::new(
        format!("client:{}", authed.client.client_id),
        "oauth.token.introspect",
        answer["jti"].as_str().unwrap_or("-"),
        json!({"active": answer["active"]}),
    );
    s.audit.append(event).await.map_err(ApiError::from)?;
    Ok(public_json(StatusCode::OK, answer, false))
}

/// `POST /oauth/revoke` (RFC 7009): a client revokes its own tokens. An
/// invalid or unknown token is answered 200 (§2.2); another client's is
/// refused.
pub(crate) async fn revoke(
    State(s): State<Arc<Server>>,
    Extension(peer): Extension<PeerId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let form = parse_form(&headers, &body)?;
    let authed = authenticate(&s, &headers, &form, &peer).await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::request("token is missing"))?;
    let Some(claims) = verify_own(&s, token).await? else {
        return Ok(StatusCode::OK.into_response());
    };
    if claims["client_id"].as_str() != Some(authed.client.client_id.as_str()) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the token was not issued to this client",
        ));
    }
    let jti = claims["jti"].as_str().unwrap_or_default();
    let exp = claims["exp"].as_i64().unwrap_or_default();
    let event = AuditEvent::new(
        format!("client:{}", authed.client.client_id),
        "oauth.token.revoke",
        jti,
        json!({"exp": exp}),
    );
    super::revoke_jti(&s, jti, exp, event).await?;
    Ok(StatusCode::OK.into_response())
}
