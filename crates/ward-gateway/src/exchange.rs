//! Identity propagation: the user's token is exchanged (RFC 8693) at Ward's
//! token service for an internal token whose audience is the upstream's
//! SPIFFE ID, and that goes on with the request. The gateway
//! authenticates to the token endpoint with its SVID over mutual TLS, so
//! the internal token is bound to the gateway's certificate (`cnf`) and the
//! upstream's proxy accepts it only from the gateway. Internal tokens are
//! cached per (user token, upstream) until shortly before they expire, and
//! forgotten when the gateway's SVID rotates (they are bound to the old
//! certificate).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use ward_proxy::identity::IdentityWatch;

use crate::config::ExchangeConfig;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Most internal tokens kept; beyond it the expired ones go, then all.
const MAX_CACHED: usize = 50_000;

/// Why no internal token was had.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The token service refused (its exchange policy, or the token).
    #[error("the token service refused the exchange: {0}")]
    Refused(String),
    /// It could not be asked.
    #[error("the token service is unavailable: {0}")]
    Unavailable(String),
}

/// (SVID generation, SHA-256 of the user's token, audience): keyed by the
/// token itself (a `jti` is optional for other issuers, and two users'
/// tokens must never share an entry).
type CacheKey = (u64, [u8; 32], String);

pub struct Exchanger {
    config: ExchangeConfig,
    tls: rustls::ClientConfig,
    generation: Arc<AtomicU64>,
    /// The HTTPS client, made under an SVID generation.
    http: RwLock<(u64, reqwest::Client)>,
    /// (generation, user token's digest, audience) → (internal token, exp).
    cache: Mutex<HashMap<CacheKey, (Arc<str>, i64)>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Exchanger {
    pub fn new(
        config: &ExchangeConfig,
        identity: IdentityWatch,
        provider: Arc<rustls::crypto::CryptoProvider>,
        generation: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.ca)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("[exchange] ca {}: {e}", config.ca.display()))?;
        let tls = ward_proxy::tls::server_api_config(identity, provider, ca)
            .map_err(|e| format!("[exchange]: {e}"))?;
        let g = generation.load(Ordering::SeqCst);
        let http = Self::client(&tls)?;
        Ok(Self {
            config: config.clone(),
            tls,
            generation,
            http: RwLock::new((g, http)),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn client(tls: &rustls::ClientConfig) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())
    }

    /// The client for the current SVID (a new one, with new connections
    /// presenting the new certificate, after a rotation).
    fn http(&self, g: u64) -> Result<reqwest::Client, ExchangeError> {
        {
            let h = self.http.read().unwrap_or_else(|p| p.into_inner());
            if h.0 == g {
                return Ok(h.1.clone());
            }
        }
        let client = Self::client(&self.tls).map_err(ExchangeError::Unavailable)?;
        *self.http.write().unwrap_or_else(|p| p.into_inner()) = (g, client.clone());
        Ok(client)
    }

    /// An internal token for the user token `token` and the upstream
    /// `audience`.
    pub async fn internal_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<Arc<str>, ExchangeError> {
        let g = self.generation.load(Ordering::SeqCst);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
        );
        let key = (g, digest, audience.to_owned());
        let margin = self.config.refresh_before.as_secs() as i64;
        if let Some((t, exp)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *exp - margin > now()
        {
            return Ok(t.clone());
        }
        let http = self.http(g)?;
        let resp = http
            .post(&self.config.token_endpoint)
            .form(&[
                ("grant_type", GRANT),
                ("client_id", self.config.client_id.as_str()),
                ("subject_token", token),
                ("subject_token_type", ACCESS),
                ("audience", audience),
            ])
            .send()
            .await
            .map_err(|e| ExchangeError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| ExchangeError::Unavailable(format!("the answer is not JSON: {e}")))?;
        if status.is_client_error() {
            return Err(ExchangeError::Refused(format!(
                "{}: {}",
                body["error"].as_str().unwrap_or("?"),
                body["error_description"].as_str().unwrap_or("")
            )));
        }
        if !status.is_success() {
            return Err(ExchangeError::Unavailable(format!("status {status}")));
        }
        let internal: Arc<str> = body["access_token"]
            .as_str()
            .ok_or_else(|| ExchangeError::Unavailable("no access_token in the answer".into()))?
            .into();
        let exp = now() + body["expires_in"].as_i64().unwrap_or(0);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let t = now();
            cache.retain(|k, (_, e)| *e > t && k.0 == g);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (internal.clone(), exp));
        Ok(internal)
    }
}
