//! Authentication at the edge: which credential a request carries (and
//! refusing a request that carries two that disagree), bearer JWTs checked
//! offline against each trusted issuer's JWKS with
//! [`ward_identity::access_token::verify`] (refreshed on an unknown `kid`
//! at a bounded rate) and its revoked list (polled; fail closed when it
//! goes stale), API keys by hash, client certificates from the handshake.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use ward_identity::access_token::{Algorithm, Expect, TokenError};
use ward_policy::edge::Subject;

use crate::config::{ApiKeyConfig, IssuerConfig};

/// Why a request was not authenticated. Only the status reaches the
/// client; the label goes to the log, `/metrics` and the audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential")]
    Missing,
    #[error("two credentials that disagree")]
    Conflicting,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("token refused: {0}")]
    Token(TokenError),
    #[error("the token's issuer is not trusted on this route")]
    UntrustedIssuer,
    #[error("the token was revoked")]
    Revoked,
    #[error("the issuer's revoked list is stale; its tokens are refused until it is read again")]
    RevocationStale,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("no client certificate")]
    NoClientCertificate,
}

impl AuthError {
    /// The bounded label for `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "no_credential",
            Self::Conflicting => "conflicting_credentials",
            Self::NotBearer => "not_bearer",
            Self::Token(TokenError::Expired) => "token_expired",
            Self::Token(TokenError::NotYetValid) => "token_not_yet_valid",
            Self::Token(TokenError::Audience) => "token_audience",
            Self::Token(TokenError::Issuer) => "token_issuer",
            Self::Token(TokenError::Signature) => "token_signature",
            Self::Token(TokenError::Algorithm(_)) => "token_algorithm",
            Self::Token(TokenError::UnknownKid(_) | TokenError::NoKid) => "token_kid",
            Self::Token(TokenError::KeyInHeader(_)) => "token_key_in_header",
            Self::Token(TokenError::Missing(_)) => "token_claim_missing",
            Self::Token(_) => "token_invalid",
            Self::UntrustedIssuer => "token_issuer",
            Self::Revoked => "token_revoked",
            Self::RevocationStale => "revocation_stale",
            Self::UnknownApiKey => "api_key_unknown",
            Self::NoClientCertificate => "no_client_certificate",
        }
    }

    /// 400 for a request that is malformed as such, 503 when the gateway
    /// cannot check, 401 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Conflicting => http::StatusCode::BAD_REQUEST,
            Self::RevocationStale => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// The credentials one request carries, read once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presented {
    /// The bearer token (header, `access_token` query parameter or cookie:
    /// all that were sent agree).
    pub bearer: Option<String>,
    /// The API key (`X-API-Key` or `api_key` query parameter).
    pub api_key: Option<String>,
    /// Whether an `Authorization` header that is not `Bearer` was sent.
    pub other_authorization: bool,
}

fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = String> + 'q {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_encoding::percent_decode_str(k).decode_utf8().ok()?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Reads every credential place; refuses two values that differ in one
/// kind (two `Authorization` headers, header and query, header and
/// cookie), and a bearer token beside an API key.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Result<Presented, AuthError> {
    let mut bearers: Vec<String> = Vec::new();
    let mut other_authorization = false;
    let auth: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
    if auth.len() > 1 {
        return Err(AuthError::Conflicting);
    }
    if let Some(v) = auth.first() {
        let v = v.to_str().map_err(|_| AuthError::NotBearer)?;
        match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                bearers.push(token.trim().to_owned())
            }
            _ => other_authorization = true,
        }
    }
    bearers.extend(query_values(query, "access_token"));
    for c in headers.get_all(COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        for pair in c.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == "access_token" {
                    bearers.push(v.to_owned());
                }
            }
        }
    }
    let mut keys: Vec<String> = headers
        .get_all("x-api-key")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    keys.extend(query_values(query, "api_key"));
    let one = |mut v: Vec<String>| -> Result<Option<String>, AuthError> {
        v.dedup();
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(AuthError::Conflicting),
        }
    };
    let bearer = one(bearers)?;
    let api_key = one(keys)?;
    if (bearer.is_some() || other_authorization) && api_key.is_some() {
        return Err(AuthError::Conflicting);
    }
    Ok(Presented {
        bearer,
        api_key,
        other_authorization,
    })
}

/// Credentials must not travel on to the upstream: the query parameters
/// that carry them are dropped (`access_token`, `api_key`).
pub fn strip_credential_params(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
            k != "access_token" && k != "api_key"
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A verified API key.
pub struct ApiKeys {
    by_hash: HashMap<String, ApiKeyConfig>,
}

impl ApiKeys {
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        Self {
            by_hash: keys.iter().map(|k| (k.sha256.clone(), k.clone())).collect(),
        }
    }

    /// The subject of `key`, if it is one of ours. Looked up by its hash:
    /// the comparison is of digests, so it leaks nothing about the key.
    pub fn check(&self, key: &str) -> Result<Subject, AuthError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let k = self.by_hash.get(&hex).ok_or(AuthError::UnknownApiKey)?;
        Ok(Subject {
            sub: k.name.clone(),
            credential: "api_key",
            client_id: k.name.clone(),
            scopes: k.scopes.clone(),
            ..Default::default()
        })
    }
}

/// What the gateway knows of one issuer: its keys and revoked tokens.
pub struct Issuer {
    pub config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    jwks_uri: RwLock<Option<String>>,
    revoked_uri: RwLock<Option<String>>,
    jwks: RwLock<Arc<serde_json::Value>>,
    /// When the JWKS was last fetched (refreshes on an unknown kid are
    /// at most one per `KID_REFRESH`).
    jwks_at: RwLock<Option<Instant>>,
    refresh: tokio::sync::Mutex<()>,
    revoked: RwLock<(Option<Instant>, Arc<HashSet<String>>)>,
}

/// The least time between two JWKS fetches caused by unknown `kid`s.
const KID_REFRESH: Duration = Duration::from_secs(10);
/// How often the JWKS is read anyway.
const JWKS_REFRESH: Duration = Duration::from_secs(300);

/// Why an issuer's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("{url}: {message}")]
    Body { url: String, message: String },
}

impl Issuer {
    pub fn new(config: IssuerConfig) -> Result<Self, String> {
        let pem = std::fs::read(&config.ca).map_err(|e| {
            format!(
                "issuer {}: cannot read {}: {e}",
                config.name,
                config.ca.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let c =
                c.map_err(|e| format!("issuer {}: {}: {e}", config.name, config.ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("issuer {}: {}: {e}", config.name, config.ca.display()))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(5))
            // Metadata comes from the issuer itself, never from where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let revoked_uri = match config.revoked_uri.as_deref() {
            Some("none") => None,
            Some(u) => Some(u.to_owned()),
            None => Some(format!(
                "{}/oauth/revoked",
                config.issuer.trim_end_matches('/')
            )),
        };
        Ok(Self {
            jwks_uri: RwLock::new(config.jwks_uri.clone()),
            revoked_uri: RwLock::new(revoked_uri),
            config,
            algorithms,
            http,
            jwks: RwLock::new(Arc::new(serde_json::json!({"keys": []}))),
            jwks_at: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            revoked: RwLock::new((None, Arc::new(HashSet::new()))),
        })
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::Http(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(FetchError::Body {
                url: url.into(),
                message: format!("answered {}", resp.status()),
            });
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| FetchError::Http(format!("{url}: {e}")))?;
        if bytes.len() > 4 << 20 {
            return Err(FetchError::Body {
                url: url.into(),
                message: "larger than 4 MiB".into(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| FetchError::Body {
            url: url.into(),
            message: format!("not JSON: {e}"),
        })
    }

    /// Reads discovery (when no `jwks_uri` is configured) and the JWKS.
    pub async fn refresh_keys(&self) -> Result<(), FetchError> {
        let configured = self
            .jwks_uri
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let uri = match configured {
            Some(u) => u,
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let d = self.get_json(&url).await?;
                if d["issuer"].as_str() != Some(self.config.issuer.as_str()) {
                    return Err(FetchError::Body {
                        url,
                        message: "its issuer is not the configured issuer".into(),
                    });
                }
                let u = d["jwks_uri"].as_str().ok_or_else(|| FetchError::Body {
                    url: url.clone(),
                    message: "no jwks_uri".into(),
                })?;
                if !u.starts_with("https://") {
                    return Err(FetchError::Body {
                        url,
                        message: "jwks_uri is not https".into(),
                    });
                }
                *self.jwks_uri.write().unwrap_or_else(|p| p.into_inner()) = Some(u.to_owned());
                u.to_owned()
            }
        };
        let jwks = self.get_json(&uri).await?;
        if !jwks["keys"].is_array() {
            return Err(FetchError::Body {
                url: uri,
                message: "no keys array".into(),
            });
        }
        *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(jwks);
        *self.jwks_at.write().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Reads the revoked list.
    pub async fn refresh_revoked(&self) -> Result<(), FetchError> {
        let Some(uri) = self
            .revoked_uri
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let body = self.get_json(&uri).await?;
        let list = body["revoked"].as_array().ok_or_else(|| FetchError::Body {
            url: uri.clone(),
            message: "no revoked array".into(),
        })?;
        let set: HashSet<String> = list
            .iter()
            .filter_map(|e| e["jti"].as_str().map(str::to_owned))
            .collect();
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) =
            (Some(Instant::now()), Arc::new(set));
        Ok(())
    }

    /// Whether the JWKS has been read at least once.
    pub fn has_keys(&self) -> bool {
        self.jwks_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn has_revoked_list(&self) -> bool {
        self.revoked_uri
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Keeps the keys and the revoked list current, until the process ends.
    pub async fn watch(self: Arc<Self>) {
        let mut last_keys = Instant::now();
        loop {
            if last_keys.elapsed() >= JWKS_REFRESH
                || self
                    .jwks_at
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none()
            {
                match self.refresh_keys().await {
                    Ok(()) => last_keys = Instant::now(),
                    Err(e) => {
                        tracing::warn!(issuer = %self.config.name, error = %e, "cannot read the issuer's keys; keeping the last ones")
                    }
                }
            }
            if self.has_revoked_list() {
                if let Err(e) = self.refresh_revoked().await {
                    tracing::warn!(issuer = %self.config.name, error = %e, "cannot read the issuer's revoked list");
                }
            }
            tokio::time::sleep(self.config.revoked_poll).await;
        }
    }

    fn expect(&self) -> Expect<'_> {
        Expect {
            issuer: &self.config.issuer,
            audiences: &self.config.audiences,
            algorithms: &self.algorithms,
            leeway: self.config.leeway.as_secs(),
        }
    }

    /// Verifies `token`: signature by one of the issuer's keys, claims,
    /// then the revoked list.
    pub async fn verify(&self, token: &str) -> Result<serde_json::Value, AuthError> {
        let jwks = self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let claims = match ward_identity::access_token::verify(token, &jwks, &self.expect()) {
            Err(TokenError::UnknownKid(kid)) => {
                // A key published since the last fetch: fetch again, at a
                // bounded rate (an attacker's made-up kids cost one fetch
                // per KID_REFRESH, not one per request).
                let _one = self.refresh.lock().await;
                let recent = self
                    .jwks_at
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some_and(|t| t.elapsed() < KID_REFRESH);
                if !recent {
                    if let Err(e) = self.refresh_keys().await {
                        tracing::warn!(issuer = %self.config.name, error = %e, "cannot read the issuer's keys");
                    }
                }
                let jwks = self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
                ward_identity::access_token::verify(token, &jwks, &self.expect()).map_err(|e| {
                    match e {
                        TokenError::UnknownKid(_) => AuthError::Token(TokenError::UnknownKid(kid)),
                        e => AuthError::Token(e),
                    }
                })?
            }
            r => r.map_err(AuthError::Token)?,
        };
        if self.has_revoked_list() {
            let (at, set) = self
                .revoked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if at.is_none_or(|t| t.elapsed() > self.config.revoked_max_stale) {
                return Err(AuthError::RevocationStale);
            }
            match claims["jti"].as_str() {
                Some(jti) if set.contains(jti) => return Err(AuthError::Revoked),
                Some(_) => {}
                // Without a jti a token cannot be revoked: refused where
                // revocation is in force.
                None => return Err(AuthError::Token(TokenError::Missing("jti"))),
            }
        }
        Ok(claims)
    }
}

/// The `iss` of a token, read without trusting it, to pick the issuer
/// whose keys then verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    if payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["iss"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn two_credentials_that_disagree_are_refused() {
        let one = presented(&headers(&[("authorization", "Bearer a")]), None).unwrap();
        assert_eq!(one.bearer.as_deref(), Some("a"));
        // The same token twice is one credential.
        let same = presented(
            &headers(&[("authorization", "Bearer a")]),
            Some("access_token=a"),
        )
        .unwrap();
        assert_eq!(same.bearer.as_deref(), Some("a"));
        for (h, q) in [
            (vec![("authorization", "Bearer a")], Some("access_token=b")),
            (
                vec![("authorization", "Bearer a"), ("authorization", "Bearer a")],
                None,
            ),
            (
                vec![
                    ("authorization", "Bearer a"),
                    ("cookie", "x=1; access_token=b"),
                ],
                None,
            ),
            (
                vec![("authorization", "Bearer a"), ("x-api-key", "k")],
                None,
            ),
            (vec![("x-api-key", "k1")], Some("api_key=k2")),
            (vec![], Some("access_token=a&access_token=b")),
        ] {
            assert_eq!(
                presented(&headers(&h), q),
                Err(AuthError::Conflicting),
                "{h:?} {q:?}"
            );
        }
        let basic = presented(&headers(&[("authorization", "Basic Zm9vOmJhcg==")]), None).unwrap();
        assert!(basic.other_authorization && basic.bearer.is_none());
    }

    #[test]
    fn credential_parameters_do_not_travel_upstream() {
        assert_eq!(
            strip_credential_params("a=1&access_token=t&api%5Fkey=k&b=2"),
            "a=1&b=2"
        );
    }

    #[test]
    fn api_keys_are_matched_by_hash() {
        let key = "k-123";
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let keys = ApiKeys::new(&[ApiKeyConfig {
            name: "ci".into(),
            sha256: hex,
            scopes: vec!["deploy".into()],
        }]);
        let s = keys.check(key).unwrap();
        assert_eq!((s.sub.as_str(), s.credential), ("ci", "api_key"));
        assert_eq!(keys.check("k-124").unwrap_err(), AuthError::UnknownApiKey);
    }
}
