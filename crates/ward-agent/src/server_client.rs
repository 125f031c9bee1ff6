//! The agent's connection to the control plane: HTTPS trusting only the
//! server's CA file, with the node SVID as client certificate once the node
//! has attested.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ward_api::*;

/// A failed call to the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The client could not be set up.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached (it may be down: keep serving the cache).
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server refused.
    #[error("the server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// An HTTPS client for `/v1/agent/...`.
#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    addr: String,
}

impl ServerClient {
    /// A client trusting `cacert_pem`, presenting `identity` (chain PEM and
    /// PKCS#8 DER key) when given.
    pub fn new(
        addr: &str,
        cacert_pem: &[u8],
        identity: Option<(&str, &[u8])>,
    ) -> Result<Self, ServerError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cacert_pem) {
            let c = c.map_err(|_| ServerError::Config("the server CA file is not PEM".into()))?;
            roots
                .add(c)
                .map_err(|e| ServerError::Config(e.to_string()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(e.to_string()))?
        .with_root_certificates(roots);
        let tls = match identity {
            Some((chain_pem, key_der)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                        .collect::<Result<_, _>>()
                        .map_err(|_| ServerError::Config("the node SVID is not PEM".into()))?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ServerError::Config(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Ok(Self {
            http,
            addr: addr.trim_end_matches('/').to_owned(),
        })
    }

    /// Reads the server's CA file.
    pub fn read_cacert(path: &Path) -> Result<Vec<u8>, ServerError> {
        std::fs::read(path)
            .map_err(|e| ServerError::Config(format!("cannot read {}: {e}", path.display())))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ServerError> {
        let resp = req.send().await.map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            ServerError::Unreachable(s)
        })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.errors.join("; "))
                .unwrap_or(text);
            return Err(ServerError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        resp.json()
            .await
            .map_err(|e| ServerError::Unreachable(e.to_string()))
    }

    fn post<B: Serialize>(&self, path: &str, body: &B) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.addr)).json(body)
    }

    /// The server's trust domain (public).
    pub async fn trust_domain(&self) -> Result<String, ServerError> {
        let st: SealStatus = self
            .call(self.http.get(format!("{}/v1/sys/seal-status", self.addr)))
            .await?;
        Ok(st.trust_domain)
    }

    /// Spends a join token for a node SVID.
    pub async fn attest(
        &self,
        join_token: &str,
        csr: String,
    ) -> Result<X509SvidResponse, ServerError> {
        self.call(self.post(
            "/v1/agent/attest",
            &AttestRequest {
                join_token: join_token.to_owned(),
                csr,
            },
        ))
        .await
    }

    /// Renews the node SVID.
    pub async fn renew(&self, csr: String) -> Result<X509SvidResponse, ServerError> {
        self.call(self.post("/v1/agent/renew", &RenewRequest { csr }))
            .await
    }

    /// Changes after `since`, waiting up to `wait` for one.
    pub async fn sync(&self, since: i64, wait: Duration) -> Result<AgentSync, ServerError> {
        let url = format!(
            "{}/v1/agent/sync?since={since}&wait={}",
            self.addr,
            wait.as_secs()
        );
        self.call(self.http.get(url).timeout(wait + Duration::from_secs(30)))
            .await
    }

    /// Signs a batch of workload CSRs.
    pub async fn svids(
        &self,
        requests: Vec<AgentSvidRequest>,
    ) -> Result<AgentSvidBatchResponse, ServerError> {
        self.call(self.post("/v1/agent/svids", &AgentSvidBatch { requests }))
            .await
    }

    /// Mints a JWT-SVID for an entry.
    pub async fn jwt(
        &self,
        entry_id: &str,
        audience: Vec<String>,
    ) -> Result<JwtSvidResponse, ServerError> {
        self.call(self.post(
            "/v1/agent/jwt",
            &AgentJwtRequest {
                entry_id: entry_id.to_owned(),
                audience,
            },
        ))
        .await
    }
}
