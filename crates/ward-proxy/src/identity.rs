//! The proxy's own SVID and trust bundle, from the agent's Workload API
//! (streamed: rotations arrive as they happen) or from PEM files (re-read
//! when they change). The newest good identity is published on a watch
//! channel; TLS reads it at every handshake, so rotation applies to new
//! connections while open ones continue. If the source fails, the last
//! good identity stays in use until its certificate expires.
//!
//! Trust is per trust domain: the identity's own domain with its bundle,
//! plus the federated domains named in config, each with its own bundle
//! (a file, or what the Workload API sends for that domain).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use ward_dataplane::listener::Trust;
use ward_identity::ca::not_after_of_cert;
use ward_identity::tls::{BundleSet, PeerPolicy};
use ward_identity::{SpiffeId, TrustDomain, spiffe_id_of_cert};

use crate::config::FederationConfig;

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the SVID chain is empty")]
    NoCertificate,
    #[error("the SVID's leaf certificate has no single SPIFFE ID URI SAN")]
    NoSpiffeId,
    #[error("the private key is unusable or does not match the SVID: {0}")]
    Key(String),
    #[error("the trust bundle holds no usable CA certificate")]
    NoBundle,
    #[error("federated trust domain {0}: {1}")]
    Federation(String, String),
    #[error("Workload API: {0}")]
    WorkloadApi(String),
}

/// One SVID with its key and the bundle to verify peers with.
pub struct Identity {
    pub spiffe_id: SpiffeId,
    /// `spiffe_id` as text (used on every request).
    pub id: String,
    pub certified_key: Arc<CertifiedKey>,
    /// Bundles by trust domain and which domains peers may come from.
    pub trust: Arc<Trust>,
    /// The SVID's notAfter, Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl Identity {
    /// Builds an identity from DER parts, checking that they fit together.
    /// `federated` are the other domains' bundles, by trust domain.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: Vec<CertificateDer<'static>>,
        federated: Vec<(TrustDomain, Vec<CertificateDer<'static>>)>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let spiffe_id = spiffe_id_of_cert(leaf).ok_or(IdentityError::NoSpiffeId)?;
        let not_after = not_after_of_cert(leaf).unwrap_or(0);
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        certified_key
            .keys_match()
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let own = spiffe_id.trust_domain().clone();
        let mut bundles = BundleSet::new();
        bundles
            .insert(own.clone(), bundle, provider)
            .map_err(|_| IdentityError::NoBundle)?;
        let mut domains = Vec::new();
        for (td, anchors) in federated {
            if td == own {
                return Err(IdentityError::Federation(
                    td.to_string(),
                    "is the proxy's own trust domain".into(),
                ));
            }
            bundles
                .insert(td.clone(), anchors, provider)
                .map_err(|e| IdentityError::Federation(td.to_string(), e.to_string()))?;
            domains.push(td);
        }
        let peers = PeerPolicy::own_domain(own).with_federated(domains);
        Ok(Self {
            id: spiffe_id.to_string(),
            spiffe_id,
            certified_key: Arc::new(certified_key),
            trust: Arc::new(Trust {
                bundles: Arc::new(bundles),
                peers: Arc::new(peers),
            }),
            not_after,
        })
    }

    /// Reads PEM files: the SVID chain (leaf first), its key, the bundle,
    /// and the federated domains' bundle files.
    pub fn from_files(
        svid: &Path,
        key: &Path,
        bundle: &Path,
        federation: &[FederationConfig],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, IdentityError> {
        let chain = read_certs(svid)?;
        let bundle = read_certs(bundle)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| IdentityError::Read {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        let federated = federated_bundles(federation, &|_| None)?;
        Self::from_der(chain, key, bundle, federated, provider)
    }
}

fn read_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(p)
        .map_err(|e| IdentityError::Read {
            path: p.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    certs.map_err(|e| IdentityError::Read {
        path: p.to_owned(),
        reason: e.to_string(),
    })
}

/// The federated domains' anchors: from each entry's file, or else from
/// `from_api` (the Workload API's bundle for that domain).
fn federated_bundles(
    federation: &[FederationConfig],
    from_api: &dyn Fn(&TrustDomain) -> Option<Vec<CertificateDer<'static>>>,
) -> Result<Vec<(TrustDomain, Vec<CertificateDer<'static>>)>, IdentityError> {
    let mut out = Vec::new();
    for f in federation {
        // Checked when the config was loaded.
        let td = TrustDomain::parse(&f.trust_domain)
            .map_err(|e| IdentityError::Federation(f.trust_domain.clone(), e.to_string()))?;
        let anchors = match &f.bundle {
            Some(path) => read_certs(path)?,
            None => match from_api(&td) {
                Some(a) => a,
                None => {
                    // Not (yet) offered: that domain's peers are refused.
                    tracing::warn!(trust_domain = %td, "the Workload API offers no bundle for this federated trust domain");
                    continue;
                }
            },
        };
        out.push((td, anchors));
    }
    Ok(out)
}

/// The current identity; `None` until the first one is loaded.
pub type IdentityWatch = watch::Receiver<Option<Arc<Identity>>>;

/// Starts keeping `tx` current from the source `[identity]` names: the
/// Workload API, or PEM files.
pub fn spawn_watch(
    id: &crate::config::IdentityConfig,
    provider: Arc<CryptoProvider>,
    tx: watch::Sender<Option<Arc<Identity>>>,
) -> Result<(), String> {
    match (&id.workload_api, &id.svid, &id.key, &id.bundle) {
        (Some(socket), ..) => {
            tokio::spawn(watch_workload_api(
                socket.clone(),
                id.spiffe_id.clone(),
                id.federation.clone(),
                provider,
                tx,
            ));
        }
        (None, Some(svid), Some(key), Some(bundle)) => {
            tokio::spawn(watch_files(
                svid.clone(),
                key.clone(),
                bundle.clone(),
                id.federation.clone(),
                provider,
                tx,
            ));
        }
        _ => {
            return Err(
                "[identity]: set either `workload_api`, or all of `svid`, `key` and `bundle`"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Keeps an identity from PEM files current: polls their modification
/// times and reloads on change. A bad reload keeps the previous identity.
pub async fn watch_files(
    svid: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
    federation: Vec<FederationConfig>,
    provider: Arc<CryptoProvider>,
    tx: watch::Sender<Option<Arc<Identity>>>,
) {
    let mut paths: Vec<PathBuf> = vec![svid.clone(), key.clone(), bundle.clone()];
    paths.extend(federation.iter().filter_map(|f| f.bundle.clone()));
    let stamp = |paths: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        paths
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    };
    let mut last = None;
    loop {
        let now = stamp(&paths);
        if last.as_ref() != Some(&now) {
            match Identity::from_files(&svid, &key, &bundle, &federation, &provider) {
                Ok(id) => {
                    tracing::info!(spiffe_id = %id.id, "identity loaded from files");
                    tx.send_replace(Some(Arc::new(id)));
                    last = Some(now);
                }
                // A writer may be midway through replacing the files: retry next tick.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the identity files; keeping the previous identity")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps an identity from the Workload API current: one long-lived stream,
/// reconnecting with backoff if the agent goes away.
pub async fn watch_workload_api(
    socket: String,
    want: Option<String>,
    federation: Vec<FederationConfig>,
    provider: Arc<CryptoProvider>,
    tx: watch::Sender<Option<Arc<Identity>>>,
) {
    let endpoint = if socket.starts_with("unix:") {
        socket
    } else {
        format!("unix:{socket}")
    };
    let mut backoff = ward_client::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match stream_once(&endpoint, want.as_deref(), &federation, &provider, &tx).await {
            Ok(()) => {
                // It was up: the next failure starts from a short wait again.
                backoff.reset();
                tracing::warn!("the Workload API stream ended; reconnecting")
            }
            Err(e) => {
                tracing::warn!(error = %e, "Workload API unavailable; keeping the current identity")
            }
        }
        backoff.wait().await;
    }
}

async fn stream_once(
    endpoint: &str,
    want: Option<&str>,
    federation: &[FederationConfig],
    provider: &Arc<CryptoProvider>,
    tx: &watch::Sender<Option<Arc<Identity>>>,
) -> Result<(), IdentityError> {
    let client = spiffe::WorkloadApiClient::connect_to(endpoint)
        .await
        .map_err(|e| IdentityError::WorkloadApi(e.to_string()))?;
    let mut stream = client
        .stream_x509_contexts()
        .await
        .map_err(|e| IdentityError::WorkloadApi(e.to_string()))?;
    while let Some(ctx) = stream.next().await {
        let ctx = ctx.map_err(|e| IdentityError::WorkloadApi(e.to_string()))?;
        let svid = match want {
            Some(w) => ctx.svids().iter().find(|s| s.spiffe_id().to_string() == w),
            None => ctx.default_svid(),
        };
        let Some(svid) = svid else {
            tracing::warn!(wanted = ?want, "the Workload API offers no such SVID to this process");
            continue;
        };
        let chain = svid
            .cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            svid.private_key().as_bytes().to_vec(),
        ));
        let bundle = ctx
            .bundle_set()
            .get(svid.spiffe_id().trust_domain())
            .map(|b| {
                b.authorities()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let from_api = |td: &TrustDomain| -> Option<Vec<CertificateDer<'static>>> {
            let td = spiffe::TrustDomain::new(td.as_str()).ok()?;
            let b = ctx.bundle_set().get(&td)?;
            Some(
                b.authorities()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let federated = match federated_bundles(federation, &from_api) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a federated bundle; keeping the current identity");
                continue;
            }
        };
        match Identity::from_der(chain, key, bundle, federated, provider) {
            Ok(id) => {
                tracing::info!(spiffe_id = %id.id, not_after = id.not_after, "identity received from the Workload API");
                tx.send_replace(Some(Arc::new(id)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the Workload API sent an unusable SVID; keeping the current one")
            }
        }
    }
    Ok(())
}
