//! A token issuer as a relying party sees it: discovery
//! (`/.well-known/openid-configuration`, whose `issuer` must be the one
//! configured), the JWKS (cached, read again every few minutes, and on a
//! `kid` it does not know at a bounded rate, so made-up `kid`s cost one
//! fetch per interval, not one per request), and — for an issuer that
//! publishes one, as Ward does — the list of revoked token IDs, polled;
//! when that list goes stale the issuer's tokens are refused (fail
//! closed). Tokens are checked with the one verifier,
//! [`ward_identity::access_token::verify`]. Used by the gateway, by the
//! sidecar for internal tokens, and by the token service for the subject
//! tokens of external issuers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ward_identity::access_token::{Algorithm, Expect, TokenError};

/// How an issuer is trusted (`[[issuer]]` in gateway.toml, a trusted
/// issuer in the server's `[oauth]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub name: String,
    /// `iss`, exactly; discovery is read from `ISSUER/.well-known/openid-configuration`.
    pub issuer: String,
    /// CA certificates for the issuer's HTTPS endpoints.
    pub ca: PathBuf,
    /// The JWKS (default: discovery's `jwks_uri`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Revoked token IDs (default: `ISSUER/oauth/revoked`, Ward's; `none`
    /// for an issuer without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_uri: Option<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// One of these must be in `aud`.
    pub audiences: Vec<String>,
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// How often the revoked list is read (a revoked token is refused
    /// within this, plus a request).
    #[serde(default = "default_revoked_poll", with = "duration")]
    pub revoked_poll: Duration,
    /// Tokens are refused (the caller is told to retry) when the revoked
    /// list could not be read for this long.
    #[serde(default = "default_revoked_stale", with = "duration")]
    pub revoked_max_stale: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["ES256".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_revoked_poll() -> Duration {
    Duration::from_secs(2)
}
fn default_revoked_stale() -> Duration {
    Duration::from_secs(30)
}

/// Durations as humantime strings ("10s", "1m 30s").
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration such as \"10s\": {e}"))
        })
    }
}

impl Settings {
    /// What is wrong with these settings, if anything.
    pub fn check(&self) -> Result<(), String> {
        let at = format!("issuer {}", self.name);
        if !self.issuer.starts_with("https://") {
            return Err(format!(
                "{at}: issuer {:?} must be an https:// URL",
                self.issuer
            ));
        }
        if self.audiences.is_empty() {
            return Err(format!(
                "{at}: audiences is empty (a token for any audience would pass)"
            ));
        }
        if self.algorithms.is_empty() {
            return Err(format!("{at}: algorithms is empty"));
        }
        for a in &self.algorithms {
            a.parse::<Algorithm>()
                .map_err(|_| format!("{at}: unknown algorithm {a:?}"))?;
            if a.starts_with("HS") {
                return Err(format!(
                    "{at}: {a} is refused: a relying party must not hold the key that signs tokens"
                ));
            }
        }
        for (what, u) in [
            ("jwks_uri", &self.jwks_uri),
            ("revoked_uri", &self.revoked_uri),
        ] {
            if let Some(u) = u
                && u != "none"
                && !u.starts_with("https://")
            {
                return Err(format!("{at}: {what} {u:?} must be an https:// URL"));
            }
        }
        Ok(())
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token refused: {0}")]
    Token(TokenError),
    #[error("the token was revoked")]
    Revoked,
    #[error("the issuer's revoked list is stale; its tokens are refused until it is read again")]
    RevocationStale,
}

/// What is known of one issuer: its keys and revoked tokens.
pub struct Issuer {
    pub config: Settings,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    jwks_uri: RwLock<Option<String>>,
    revoked_uri: RwLock<Option<String>>,
    jwks: RwLock<Arc<serde_json::Value>>,
    /// When the JWKS was last fetched (refreshes on an unknown kid are
    /// at most one per `KID_REFRESH`).
    jwks_at: RwLock<Option<Instant>>,
    refresh: tokio::sync::Mutex<()>,
    /// When a fetch for an unknown `kid` was last tried (success or not:
    /// a failing issuer must not turn made-up kids into a fetch each).
    kid_attempt_at: RwLock<Option<Instant>>,
    revoked: RwLock<(Option<Instant>, Arc<HashSet<String>>)>,
    /// Tokens whose signature and claims were verified: SHA-256 of the
    /// token → (claims, exp). A client sends the same token for minutes;
    /// its signature is checked once (as Envoy's jwt_authn cache does).
    /// Time and revocation are checked on every use.
    verified: std::sync::Mutex<VerifiedTokens>,
}

/// SHA-256 of a verified token → its claims and `exp`.
type VerifiedTokens = std::collections::HashMap<[u8; 32], (Arc<serde_json::Value>, i64)>;

/// Most verified tokens remembered per issuer.
const MAX_VERIFIED: usize = 20_000;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
    pub fn new(config: Settings) -> Result<Self, String> {
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
            kid_attempt_at: RwLock::new(None),
            revoked: RwLock::new((None, Arc::new(HashSet::new()))),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
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
        let changed = **self.jwks.read().unwrap_or_else(|p| p.into_inner()) != jwks;
        *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(jwks);
        if changed {
            // A key withdrawn from the JWKS must stop vouching for tokens
            // now, not when they expire.
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
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
    pub async fn verify(&self, token: &str) -> Result<serde_json::Value, VerifyError> {
        let digest: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let claims = match cached {
            // Still within its lifetime (the leeway is not extended: a
            // cached token expires at its exp).
            Some((claims, exp)) if exp > now_secs() => (*claims).clone(),
            Some(_) => return Err(VerifyError::Token(TokenError::Expired)),
            None => {
                let claims = self.verify_signature(token).await?;
                let exp = claims["exp"].as_i64().unwrap_or(0);
                let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if v.len() >= MAX_VERIFIED {
                    let now = now_secs();
                    v.retain(|_, (_, e)| *e > now);
                    if v.len() >= MAX_VERIFIED {
                        v.clear();
                    }
                }
                v.insert(digest, (Arc::new(claims.clone()), exp));
                claims
            }
        };
        self.check_use(claims)
    }

    /// Signature and claims, against the issuer's keys.
    async fn verify_signature(&self, token: &str) -> Result<serde_json::Value, VerifyError> {
        let jwks = self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let claims = match ward_identity::access_token::verify(token, &jwks, &self.expect()) {
            Err(TokenError::UnknownKid(kid)) => {
                // A key published since the last fetch: fetch again, at a
                // bounded rate (an attacker's made-up kids cost one fetch
                // per KID_REFRESH, not one per request).
                let _one = self.refresh.lock().await;
                let recent = self
                    .kid_attempt_at
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some_and(|t| t.elapsed() < KID_REFRESH);
                if !recent {
                    *self
                        .kid_attempt_at
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    if let Err(e) = self.refresh_keys().await {
                        tracing::warn!(issuer = %self.config.name, error = %e, "cannot read the issuer's keys");
                    }
                }
                let jwks = self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
                ward_identity::access_token::verify(token, &jwks, &self.expect()).map_err(|e| {
                    match e {
                        TokenError::UnknownKid(_) => {
                            VerifyError::Token(TokenError::UnknownKid(kid))
                        }
                        e => VerifyError::Token(e),
                    }
                })?
            }
            r => r.map_err(VerifyError::Token)?,
        };
        Ok(claims)
    }

    /// What every use of a token is checked for, cached or not.
    fn check_use(&self, claims: serde_json::Value) -> Result<serde_json::Value, VerifyError> {
        // An event token (for queued work) is checked by its consumer, never
        // accepted as an access token.
        if claims["token_use"].as_str() == Some("event") {
            return Err(VerifyError::Token(TokenError::Invalid(
                "an event token is not an access token".into(),
            )));
        }
        if self.has_revoked_list() {
            let (at, set) = self
                .revoked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if at.is_none_or(|t| t.elapsed() > self.config.revoked_max_stale) {
                return Err(VerifyError::RevocationStale);
            }
            match claims["jti"].as_str() {
                Some(jti) if set.contains(jti) => return Err(VerifyError::Revoked),
                Some(_) => {}
                // Without a jti a token cannot be revoked: refused where
                // revocation is in force.
                None => return Err(VerifyError::Token(TokenError::Missing("jti"))),
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
