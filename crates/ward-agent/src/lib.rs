//! Ward's node agent, `ward agent`: attests its node to the server once
//! (single-use join token), attests local workloads from the kernel, and
//! serves them short-lived SVIDs through the SPIFFE Workload API on a unix
//! socket, so that go-spiffe, py-spiffe and the `spiffe` crate work
//! unchanged. Workload keys are generated here; only CSRs go to the server.
//!
//! Static stability: everything served is cached in memory and on disk. With
//! the server down the agent keeps serving until the SVIDs expire, retries
//! with backoff, and catches up when the server returns.

pub mod attest;
pub mod authority_fix;
pub mod cache;
pub mod client;
mod rotation;
mod sync;
pub mod workload;

/// Generated Workload API messages, server and client.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use ward_identity::SpiffeId;
use ward_identity::csr::generate_key_and_csr;
use zeroize::Zeroizing;

use crate::cache::{Cache, WorkloadSvid, jwt_keys_only, pem_to_der_list};
use ward_client::{Backoff, Client as ServerClient, ClientError as ServerError};

/// How the agent is run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server address, `https://host:port`.
    pub server: String,
    /// The server's API CA certificate file.
    pub cacert: PathBuf,
    /// Single-use join token, needed on the first start only.
    pub join_token: Option<Zeroizing<String>>,
    /// Where the agent keeps its key and state.
    pub data_dir: PathBuf,
    /// The Workload API socket.
    pub socket: PathBuf,
    /// This node's name: its SPIFFE ID is `spiffe://<td>/ward/agent/<name>`.
    pub node_name: String,
}

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Configuration or local state is unusable.
    #[error("{0}")]
    Setup(String),
    /// Node attestation failed.
    #[error("node attestation failed: {0}")]
    Attestation(String),
}

/// A cached JWT-SVID.
#[derive(Clone)]
struct CachedJwt {
    token: String,
    issued_at: i64,
    expires_at: i64,
}

/// The running agent's shared parts.
pub struct Agent {
    config: AgentConfig,
    cache: Cache,
    cacert_pem: Vec<u8>,
    client: RwLock<Option<ServerClient>>,
    attestor: attest::DigestCache,
    jwts: Mutex<HashMap<(String, Vec<String>), CachedJwt>>,
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh key and CSR for `id`; the key as PKCS#8 DER.
pub(crate) fn key_and_csr(id: &SpiffeId) -> Result<(Zeroizing<Vec<u8>>, String), String> {
    let (key_pem, csr) = generate_key_and_csr(id).map_err(|e| e.to_string())?;
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    Ok((Zeroizing::new(der.secret_pkcs8_der().to_vec()), csr))
}

pub(crate) fn svid_from_response(
    chain_pem: String,
    key_der: Zeroizing<Vec<u8>>,
    spiffe_id: String,
    expires_at: i64,
) -> WorkloadSvid {
    WorkloadSvid {
        spiffe_id,
        chain_der: pem_to_der_list(&chain_pem),
        chain_pem,
        key_der,
        issued_at: now(),
        expires_at,
        sealed: Default::default(),
    }
}

impl Agent {
    /// The client authenticated as this node, if it has attested.
    pub(crate) fn client(&self) -> Option<ServerClient> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuilds the server client with the current node SVID.
    pub(crate) fn refresh_client(&self) -> Result<(), ServerError> {
        let client = self.cache.read(|s| {
            s.node
                .as_ref()
                .map(|n| {
                    ServerClient::with_svid(
                        &self.config.server,
                        &self.cacert_pem,
                        Some((&n.chain_pem, &n.key_der)),
                    )
                })
                .transpose()
        })?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        Ok(())
    }

    /// Reacts to a failed server call: a 401 means the server no longer
    /// accepts this connection's verification (the node SVID was renewed, or
    /// the trust bundle changed), so drop pooled connections and reconnect.
    pub(crate) fn on_server_error(&self, e: &ServerError) {
        if matches!(e, ServerError::Api { status: 401, .. })
            && let Err(e) = self.refresh_client()
        {
            tracing::warn!(error = %e, "cannot rebuild the server client");
        }
    }

    /// The state cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Spends the join token for a node SVID (first start only).
    async fn attest_node(&self) -> Result<(), AgentError> {
        let token = self.config.join_token.clone().ok_or_else(|| {
            AgentError::Attestation(format!(
                "{} holds no node identity: the first start needs --join-token (create one with `ward agent token create`)",
                self.config.data_dir.display()
            ))
        })?;
        let anon = ServerClient::with_svid(&self.config.server, &self.cacert_pem, None)
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        let td = anon
            .trust_domain()
            .await
            .map_err(|e| AgentError::Attestation(e.to_string()))?;
        let td = ward_identity::TrustDomain::parse(&td)
            .map_err(|e| AgentError::Attestation(e.to_string()))?;
        let node_id = SpiffeId::from_parts(&td, &format!("/ward/agent/{}", self.config.node_name))
            .map_err(|e| {
                AgentError::Setup(format!("--node-name {:?}: {e}", self.config.node_name))
            })?;
        let (key, csr) = key_and_csr(&node_id).map_err(AgentError::Attestation)?;
        let resp = anon
            .attest(&token, csr)
            .await
            .map_err(|e| AgentError::Attestation(e.to_string()))?;
        self.cache
            .update(|s| {
                s.trust_domain = td.to_string();
                s.bundle_der = pem_to_der_list(&resp.bundle_pem);
                s.bundle_pem = resp.bundle_pem.clone();
                s.node = Some(svid_from_response(
                    resp.cert_chain_pem.clone(),
                    key,
                    resp.spiffe_id.clone(),
                    resp.expires_at,
                ));
            })
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        tracing::info!(node = %resp.spiffe_id, "node attested");
        Ok(())
    }

    /// A JWT-SVID for an entry and audience: cached until half its lifetime,
    /// served from the cache while the server is unreachable.
    pub(crate) async fn jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<String, String> {
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        if aud.len() > MAX_AUDIENCES {
            return Err(format!(
                "at most {MAX_AUDIENCES} audiences per JWT-SVID, got {}",
                aud.len()
            ));
        }
        let key = (entry_id.to_owned(), aud.clone());
        let now = now();
        let cached = self
            .jwts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(c) = &cached
            && now < c.issued_at + (c.expires_at - c.issued_at) / 2
        {
            return Ok(c.token.clone());
        }
        let client = self.client().ok_or("the node has no identity yet")?;
        match client.agent_jwt(entry_id, aud).await {
            Ok(r) => {
                let mut jwts = self.jwts.lock().unwrap_or_else(|p| p.into_inner());
                // One workload asking for ever new audience sets is served
                // but not cached beyond its share.
                let sets = jwts.keys().filter(|(e, _)| e == entry_id).count();
                if !jwts.contains_key(&key) && sets >= MAX_AUDIENCE_SETS_PER_ENTRY {
                    return Ok(r.token);
                }
                if jwts.len() >= MAX_CACHED_JWTS {
                    jwts.retain(|_, c| c.expires_at > now);
                }
                if jwts.len() >= MAX_CACHED_JWTS {
                    // Still full: the least recently issued tenth goes.
                    let mut issued: Vec<i64> = jwts.values().map(|c| c.issued_at).collect();
                    issued.sort_unstable();
                    let cut = issued[issued.len() / 10];
                    jwts.retain(|_, c| c.issued_at > cut);
                }
                jwts.insert(
                    key,
                    CachedJwt {
                        token: r.token.clone(),
                        issued_at: now,
                        expires_at: r.expires_at,
                    },
                );
                Ok(r.token)
            }
            Err(e) => match cached {
                Some(c) if c.expires_at > now => Ok(c.token),
                _ => Err(e.to_string()),
            },
        }
    }

    /// Forgets cached JWT-SVIDs of entries that are gone.
    pub(crate) fn drop_jwts(&self, entry_ids: &[String]) {
        self.jwts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _), _| !entry_ids.contains(id));
    }
}

/// Most audiences one JWT-SVID may name.
pub(crate) const MAX_AUDIENCES: usize = 16;
/// Most JWT-SVIDs the agent keeps cached.
const MAX_CACHED_JWTS: usize = 10_000;
/// Most distinct audience sets cached for one entry.
const MAX_AUDIENCE_SETS_PER_ENTRY: usize = 64;

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    // Before anything is spent (a join token) or served.
    workload::check_socket_dir(&config.socket).map_err(AgentError::Setup)?;
    let cache = Cache::open(&config.data_dir).map_err(|e| AgentError::Setup(e.to_string()))?;
    let cacert_pem = std::fs::read(&config.cacert)
        .map_err(|e| AgentError::Setup(format!("cannot read {}: {e}", config.cacert.display())))?;
    let agent = Arc::new(Agent {
        config,
        cache,
        cacert_pem,
        client: RwLock::new(None),
        attestor: attest::DigestCache::default(),
        jwts: Mutex::new(HashMap::new()),
    });
    let node_expiry = agent.cache.read(|s| s.node.as_ref().map(|n| n.expires_at));
    match node_expiry {
        None => agent.attest_node().await?,
        // The node SVID lapsed while the agent was stopped: it can no longer
        // authenticate, so a new join token is the way back in.
        Some(exp) if exp <= now() && agent.config.join_token.is_some() => {
            tracing::warn!("the stored node SVID has expired; attesting again with the join token");
            agent.attest_node().await?;
        }
        Some(exp) if exp <= now() => tracing::error!(
            "the stored node SVID has expired, so the server will refuse this agent; serving what is cached until it expires. Restart with a new --join-token"
        ),
        Some(_) => tracing::info!("using the stored node identity"),
    }
    agent
        .refresh_client()
        .map_err(|e| AgentError::Setup(e.to_string()))?;

    let listener = workload::bind(&agent.config.socket).map_err(AgentError::Setup)?;
    let sync_task = tokio::spawn(sync::run(agent.clone()));
    let rotation_task = tokio::spawn(rotation::run(agent.clone()));
    tracing::info!(socket = %agent.config.socket.display(), "Workload API listening");
    let result = workload::serve(agent.clone(), listener, shutdown).await;
    sync_task.abort();
    rotation_task.abort();
    let _ = std::fs::remove_file(&agent.config.socket);
    result.map_err(AgentError::Setup)
}

pub(crate) fn apply_sync(
    agent: &Agent,
    sync: ward_api::AgentSync,
    full: bool,
) -> Result<bool, cache::CacheError> {
    let jwt_bundle = jwt_keys_only(&sync.jwt_bundle);
    let changed = agent.cache.read(|s| {
        full || sync.revision != s.revision
            || sync.bundle_pem != s.bundle_pem
            || jwt_bundle != s.jwt_bundle
    });
    if !changed {
        return Ok(false);
    }
    let mut gone: Vec<String> = sync.deleted.clone();
    agent.cache.update(|s| {
        if full {
            let keep: Vec<&String> = sync.entries.iter().map(|e| &e.id).collect();
            let stale: Vec<String> = s
                .entries
                .keys()
                .filter(|id| !keep.contains(id))
                .cloned()
                .collect();
            gone.extend(stale);
        }
        for id in &gone {
            s.entries.remove(id);
            s.svids.remove(id);
        }
        for e in sync.entries {
            // An entry whose SPIFFE ID changed needs a new SVID at once.
            if s.svids
                .get(&e.id)
                .is_some_and(|v| v.spiffe_id != e.spiffe_id)
            {
                s.svids.remove(&e.id);
            }
            s.entries.insert(e.id.clone(), e);
        }
        s.revision = sync.revision;
        s.bundle_der = pem_to_der_list(&sync.bundle_pem);
        s.bundle_pem = sync.bundle_pem;
        s.jwt_bundle = jwt_bundle;
    })?;
    agent.drop_jwts(&gone);
    Ok(true)
}

/// The agent's retry schedule towards the server.
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(15))
}
