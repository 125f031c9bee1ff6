//! The one client for Ward's control-plane API: the operator commands
//! (`ward entry`, `ward x509 mint`, …) authenticate with a token, the node
//! agent with its node SVID, the sidecar with its workload SVID (through a
//! TLS configuration that always presents the current one). It trusts only
//! the CA it is given (`WARD_CACERT`): no system roots, no "insecure"
//! switch. [`Backoff`] is the one retry schedule all of them use.

mod backoff;

pub use backoff::Backoff;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ward_api::*;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client is not configured well enough to connect.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached.
    #[error("cannot reach the Ward server at {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("the server refused ({status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server's answer did not parse.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// The error for a vault answer that is not 2xx: Vault's `errors`
    /// (`{"errors": ["…"]}`), or the status's reason when it gives none,
    /// as Vault's bare 404 does.
    pub fn from_vault(status: u16, body: &serde_json::Value) -> Self {
        let reasons: Vec<&str> = body
            .get("errors")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::Api {
            status: status.as_u16(),
            message: or_reason(status, reasons.join("; ")),
        }
    }
}

/// A connection to one Ward server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: Option<String>,
}

impl Client {
    /// A client for `addr` (`https://host:port`) trusting the CA certificates
    /// in `cacert`, authenticating with `token` when given.
    pub fn new(addr: &str, token: Option<String>, cacert: &Path) -> Result<Self, ClientError> {
        let addr = addr.trim_end_matches('/').to_owned();
        if !addr.starts_with("https://") {
            return Err(ClientError::Config(format!(
                "the server address {addr:?} must start with https:// (set WARD_ADDR or --addr)"
            )));
        }
        let pem = std::fs::read(cacert).map_err(|e| {
            ClientError::Config(format!("cannot read the CA file {}: {e}", cacert.display()))
        })?;
        let roots = roots(&pem, &cacert.display().to_string())?;
        let tls = tls_builder()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self { http, addr, token })
    }

    /// A client that authenticates with an X.509-SVID (chain PEM and
    /// PKCS#8 DER key), or with nothing (`None`: only the open endpoints,
    /// such as attestation), trusting the CA certificates in `cacert_pem`.
    pub fn with_svid(
        addr: &str,
        cacert_pem: &[u8],
        identity: Option<(&str, &[u8])>,
    ) -> Result<Self, ClientError> {
        let roots = roots(cacert_pem, "the server CA")?;
        let builder = tls_builder()?.with_root_certificates(roots);
        let tls = match identity {
            Some((chain_pem, key_der)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                        .collect::<Result<_, _>>()
                        .map_err(|_| ClientError::Config("the SVID is not PEM".into()))?;
                let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
                    rustls_pki_types::PrivatePkcs8KeyDer::from(key_der.to_vec()),
                );
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Config(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Self::checked(addr, http)
    }

    /// A client over a TLS configuration the caller built (the sidecar's,
    /// which resolves its client certificate to the current SVID at each
    /// handshake). No connection is kept idle, so that every request makes
    /// a fresh handshake and presents the SVID of the moment.
    pub fn with_tls(addr: &str, tls: rustls::ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Self::checked(addr, http)
    }

    fn checked(addr: &str, http: reqwest::Client) -> Result<Self, ClientError> {
        let addr = addr.trim_end_matches('/').to_owned();
        if !addr.starts_with("https://") {
            return Err(ClientError::Config(format!(
                "the server address {addr:?} must start with https://"
            )));
        }
        Ok(Self {
            http,
            addr,
            token: None,
        })
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<reqwest::Response, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(|v| ("application/json", v)))
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send_raw(method, path, body, None).await
    }

    /// Sends `body` as (content type, bytes).
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.addr));
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((content_type, bytes)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let resp = req.send().await.map_err(|e| ClientError::Connect {
            addr: self.addr.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(api_error(status, &text))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Validates and stores a new policy version (`PUT /v1/policy`).
    pub async fn push_policy(&self, text: &str) -> Result<PolicyVersion, ClientError> {
        let resp = self
            .send_raw(
                Method::PUT,
                "/v1/policy",
                Some(("text/plain", text.as_bytes().to_vec())),
                None,
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The current policy set.
    pub async fn current_policy(&self) -> Result<PolicyCurrent, ClientError> {
        self.json(Method::GET, "/v1/policy", None::<&()>).await
    }

    /// Call totals per edge, reported by proxies since `since` (Unix seconds).
    pub async fn edge_totals(&self, since: i64) -> Result<EdgeTotals, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/telemetry/edges?since={since}"),
            None::<&()>,
        )
        .await
    }

    /// `GET path` returning raw JSON, for `--output json` passthrough.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.json(Method::GET, path, None::<&()>).await
    }

    /// The seal status.
    pub async fn seal_status(&self) -> Result<SealStatus, ClientError> {
        self.json(Method::GET, "/v1/sys/seal-status", None::<&()>)
            .await
    }

    /// Submits one unseal share.
    pub async fn unseal(&self, req: &UnsealRequest) -> Result<SealStatus, ClientError> {
        self.json(Method::POST, "/v1/sys/unseal", Some(req)).await
    }

    /// Seals the server.
    pub async fn seal(&self) -> Result<(), ClientError> {
        self.send(Method::POST, "/v1/sys/seal", None::<&()>)
            .await
            .map(drop)
    }

    /// The trust bundle as PEM.
    pub async fn bundle_pem(&self) -> Result<String, ClientError> {
        let resp = self.send(Method::GET, "/v1/bundle", None::<&()>).await?;
        resp.text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The trust bundle as a SPIFFE bundle (JWKS).
    pub async fn bundle_spiffe(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json("/v1/bundle?format=spiffe").await
    }

    /// Signs a CSR.
    pub async fn sign_x509(&self, req: &X509SvidRequest) -> Result<X509SvidResponse, ClientError> {
        self.json(Method::POST, "/v1/svid/x509", Some(req)).await
    }

    /// Mints a JWT-SVID.
    pub async fn sign_jwt(&self, req: &JwtSvidRequest) -> Result<JwtSvidResponse, ClientError> {
        self.json(Method::POST, "/v1/svid/jwt", Some(req)).await
    }

    /// Creates an entry.
    pub async fn create_entry(&self, req: &EntryCreate) -> Result<Entry, ClientError> {
        self.json(Method::POST, "/v1/entries", Some(req)).await
    }

    /// Lists entries (optionally under one parent, changed after `since`).
    pub async fn list_entries(
        &self,
        parent: Option<&str>,
        since: i64,
    ) -> Result<EntryList, ClientError> {
        let mut path = format!("/v1/entries?since={since}");
        if let Some(p) = parent {
            path.push_str(&format!("&parent_id={}", urlencode(p)));
        }
        self.json(Method::GET, &path, None::<&()>).await
    }

    /// Reads one entry.
    pub async fn entry(&self, id: &str) -> Result<Entry, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/entries/{}", urlencode(id)),
            None::<&()>,
        )
        .await
    }

    /// Updates an entry.
    pub async fn update_entry(&self, id: &str, req: &EntryUpdate) -> Result<Entry, ClientError> {
        self.json(
            Method::PATCH,
            &format!("/v1/entries/{}", urlencode(id)),
            Some(req),
        )
        .await
    }

    /// Deletes an entry.
    pub async fn delete_entry(&self, id: &str) -> Result<(), ClientError> {
        self.send(
            Method::DELETE,
            &format!("/v1/entries/{}", urlencode(id)),
            None::<&()>,
        )
        .await
        .map(drop)
    }

    /// Creates a join token, optionally bound to one node name.
    pub async fn create_join_token(
        &self,
        ttl_secs: u64,
        node_name: Option<String>,
    ) -> Result<JoinTokenResponse, ClientError> {
        self.json(
            Method::POST,
            "/v1/join-tokens",
            Some(&JoinTokenRequest {
                ttl: ttl_secs,
                node_name,
            }),
        )
        .await
    }

    /// Lists CA generations.
    pub async fn cas(&self) -> Result<CaList, ClientError> {
        self.json(Method::GET, "/v1/ca", None::<&()>).await
    }

    /// Prepares the next CA.
    pub async fn prepare_ca(&self) -> Result<serde_json::Value, ClientError> {
        self.json(Method::POST, "/v1/ca/prepare", None::<&()>).await
    }

    /// Activates the prepared CA.
    pub async fn activate_ca(&self) -> Result<serde_json::Value, ClientError> {
        self.json(Method::POST, "/v1/ca/activate", None::<&()>)
            .await
    }

    /// One page of audit records after `after`.
    pub async fn audit_page(&self, after: i64, limit: i64) -> Result<AuditPage, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/audit?after={after}&limit={limit}"),
            None::<&()>,
        )
        .await
    }

    /// The server's check of the keyed audit chain.
    pub async fn audit_verify(&self) -> Result<AuditVerification, ClientError> {
        self.json(Method::GET, "/v1/audit/verify", None::<&()>)
            .await
    }

    /// A checkpoint of the audit chain, signed by the server.
    pub async fn audit_checkpoint(&self) -> Result<Checkpoint, ClientError> {
        self.json(Method::POST, "/v1/audit/checkpoint", None::<&()>)
            .await
    }

    /// The key audit checkpoints are signed with.
    pub async fn audit_checkpoint_key(&self) -> Result<CheckpointKey, ClientError> {
        self.json(Method::GET, "/v1/audit/checkpoint-key", None::<&()>)
            .await
    }

    /// `GET` of JSON with a deadline of its own (long polls).
    async fn get_waiting<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let resp = self
            .send_raw(Method::GET, path, None, Some(timeout))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    // ---- node agents (authenticated by the node SVID) ----------------------

    /// The server's trust domain (public).
    pub async fn trust_domain(&self) -> Result<String, ClientError> {
        Ok(self.seal_status().await?.trust_domain)
    }

    /// Spends a join token for a node SVID.
    pub async fn attest(
        &self,
        join_token: &str,
        csr: String,
    ) -> Result<X509SvidResponse, ClientError> {
        let req = AttestRequest {
            join_token: join_token.to_owned(),
            csr,
        };
        self.json(Method::POST, "/v1/agent/attest", Some(&req))
            .await
    }

    /// Renews the node SVID.
    pub async fn renew(&self, csr: String) -> Result<X509SvidResponse, ClientError> {
        self.json(Method::POST, "/v1/agent/renew", Some(&RenewRequest { csr }))
            .await
    }

    /// The node's entry changes after `since`, waiting up to `wait` for one.
    pub async fn agent_sync(&self, since: i64, wait: Duration) -> Result<AgentSync, ClientError> {
        let path = format!("/v1/agent/sync?since={since}&wait={}", wait.as_secs());
        self.get_waiting(&path, wait + Duration::from_secs(30))
            .await
    }

    /// Signs a batch of workload CSRs for the node's entries.
    pub async fn agent_svids(
        &self,
        requests: Vec<AgentSvidRequest>,
    ) -> Result<AgentSvidBatchResponse, ClientError> {
        self.json(
            Method::POST,
            "/v1/agent/svids",
            Some(&AgentSvidBatch { requests }),
        )
        .await
    }

    /// Mints a JWT-SVID for one of the node's entries.
    pub async fn agent_jwt(
        &self,
        entry_id: &str,
        audience: Vec<String>,
    ) -> Result<JwtSvidResponse, ClientError> {
        let req = AgentJwtRequest {
            entry_id: entry_id.to_owned(),
            audience,
        };
        self.json(Method::POST, "/v1/agent/jwt", Some(&req)).await
    }

    // ---- sidecars (authenticated by the workload SVID) ---------------------

    /// The policies for the caller's service, after revision `since`,
    /// waiting up to `wait` for a change.
    pub async fn proxy_policy(
        &self,
        since: i64,
        wait: Duration,
    ) -> Result<ProxyPolicy, ClientError> {
        let path = format!("/v1/proxy/policy?since={since}&wait={}", wait.as_secs());
        self.get_waiting(&path, wait + Duration::from_secs(15))
            .await
    }

    /// Reports call edges.
    pub async fn report_telemetry(
        &self,
        batch: &TelemetryBatch,
    ) -> Result<TelemetryAccepted, ClientError> {
        self.post_report("/v1/proxy/telemetry", batch).await
    }

    /// `POST /v1/gateway/denials` (with the gateway's SVID).
    pub async fn report_denials(
        &self,
        batch: &DenialBatch,
    ) -> Result<DenialsRecorded, ClientError> {
        self.post_report("/v1/gateway/denials", batch).await
    }

    /// Posts one report batch from the data plane (a 10 s deadline).
    async fn post_report<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        batch: &T,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(batch).map_err(|e| ClientError::Decode(e.to_string()))?;
        let resp = self
            .send_raw(
                Method::POST,
                path,
                Some(("application/json", body)),
                Some(Duration::from_secs(10)),
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    // ---- the vault (Vault's HTTP API, with any vault token) ----------------

    /// Sends one request to the vault's Vault-compatible API and returns
    /// the status and the JSON body (`Null` when the body is empty),
    /// whatever the status: for callers that read a 404's body, as KV's
    /// answer for a deleted version (its metadata) must be read.
    ///
    /// `method` is an HTTP method or Vault's `LIST`; `path` starts with
    /// `/v1/` and is sent as written (the server refuses encoded paths
    /// rather than decoding them). The token goes in `X-Vault-Token`,
    /// marked sensitive so that no debug output shows it.
    pub async fn vault_any_status(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Config(format!("{method:?} is not an HTTP method")))?;
        let mut req = self.http.request(method, format!("{}{path}", self.addr));
        if let Some(t) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(t).map_err(|_| {
                ClientError::Config(
                    "the token holds characters an HTTP header cannot carry (check WARD_TOKEN)"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            req = req.header("X-Vault-Token", value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Connect {
            addr: self.addr.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok((status.as_u16(), serde_json::Value::Null));
        }
        match serde_json::from_str(&text) {
            Ok(v) => Ok((status.as_u16(), v)),
            Err(_) if !status.is_success() => Err(api_error(status, &text)),
            Err(e) => Err(ClientError::Decode(format!(
                "{path} answered {status} with a body that is not JSON: {e}"
            ))),
        }
    }

    /// As [`Client::vault_any_status`], with any status but 2xx an error:
    /// [`ClientError::Api`] carrying Vault's `errors`, or the status's
    /// reason when there are none (as in Vault's bare 404).
    pub async fn vault(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let (status, value) = self.vault_any_status(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        Err(ClientError::from_vault(status, &value))
    }

    /// True if the error is the server saying 401 or 403.
    pub fn is_auth_error(e: &ClientError) -> bool {
        matches!(e, ClientError::Api { status, .. } if *status == StatusCode::UNAUTHORIZED.as_u16() || *status == StatusCode::FORBIDDEN.as_u16())
    }
}

/// TLS 1.2 and 1.3 with aws-lc-rs, Ward's one crypto provider.
fn tls_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, ClientError> {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Config(e.to_string()))
}

/// The CA certificates in `pem` (`what` names it in errors).
fn roots(pem: &[u8], what: &str) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert =
            cert.map_err(|_| ClientError::Config(format!("{what} is not a PEM certificate file")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Config(format!("{what}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Config(format!("{what} holds no certificate")));
    }
    Ok(roots)
}

/// The error for a non-2xx answer: the reasons of a Vault-shaped body
/// (`{"errors": [...]}`), else the start of the body, else the status's
/// own reason.
fn api_error(status: StatusCode, text: &str) -> ClientError {
    let message = match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => b.errors.join("; "),
        Err(_) => text.chars().take(200).collect(),
    };
    ClientError::Api {
        status: status.as_u16(),
        message: or_reason(status, message),
    }
}

/// `message`, or the status's reason when it is empty.
fn or_reason(status: StatusCode, message: String) -> String {
    if message.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned()
    } else {
        message
    }
}

/// Percent-encodes `s` for a query value or a path segment.
pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
