//! Who is on the other end of a TLS connection to the API. Agents
//! authenticate with their node SVID (mutual TLS); operators with a token and
//! no client certificate. A presented certificate is verified by the one
//! SPIFFE verifier (`ward_identity::tls`): a workload ID of the server's own
//! trust domain, chaining to that domain's current bundle. The bundle
//! follows CA rotations: it is swapped in when the authority is (re)loaded.
//! While sealed it accepts none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use ward_identity::tls::{BundleSet, PeerPolicy, SpiffeClientVerifier, TrustSource};
use ward_identity::{SpiffeId, TrustDomain};

/// What the TLS handshake verified about the client certificate. It is
/// checked again on every request: a connection can outlive the
/// certificate's expiry and a change of the trust bundle (seal, CA
/// rotation), and neither must extend what the certificate allows.
#[derive(Debug, Clone, Default)]
pub struct PeerId {
    /// The SPIFFE ID in the certificate's URI SAN, if a certificate was presented.
    pub id: Option<SpiffeId>,
    /// The certificate's serial, lower-case hex without leading zero bytes.
    pub serial: String,
    /// The certificate's notBefore, Unix seconds.
    pub not_before: i64,
    /// The certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// The verifier's trust generation when the connection was verified.
    pub trust_generation: u64,
    /// SHA-256 of the certificate's DER, base64url (RFC 8705 `x5t#S256`).
    pub x5t_s256: String,
}

/// The trust the API accepts client certificates under: the current CA
/// bundle for the server's own trust domain (none while sealed), and a
/// generation that changes with it.
#[derive(Debug)]
pub struct ClientTrust {
    provider: Arc<CryptoProvider>,
    trust_domain: TrustDomain,
    inner: RwLock<Option<Trust>>,
    generation: AtomicU64,
}

type Trust = (Arc<BundleSet>, Arc<PeerPolicy>);

/// The trust in force at each handshake, for the SPIFFE verifier.
#[derive(Debug)]
struct Current(Arc<ClientTrust>);

impl TrustSource for Current {
    fn trust(&self) -> Option<Trust> {
        self.0
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientTrust {
    /// Trust for workloads of `trust_domain` that accepts no client
    /// certificate until [`Self::set_bundle`].
    pub fn new(trust_domain: TrustDomain, provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(Self {
            provider,
            trust_domain,
            inner: RwLock::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// Trusts the CA certificates in `bundle_pem` (and only those) for the
    /// server's trust domain.
    pub fn set_bundle(&self, bundle_pem: &str) {
        let anchors = CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).flatten();
        let mut set = BundleSet::new();
        let trust = match set.insert(self.trust_domain.clone(), anchors, &self.provider) {
            Ok(()) => Some((
                Arc::new(set),
                Arc::new(PeerPolicy::own_domain(self.trust_domain.clone())),
            )),
            Err(e) => {
                tracing::error!(error = %e, "the CA bundle is unusable for client certificates");
                None
            }
        };
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = trust;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Changes whenever the trusted bundle does; connections verified under
    /// an older generation must reconnect.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The API's client certificate verifier: optional (operators come
    /// with tokens), and a presented certificate must pass the SPIFFE
    /// verifier under the trust in force (none while sealed).
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(SpiffeClientVerifier::optional(
            Current(self.clone()),
            self.provider.clone(),
        ))
    }

    /// Forgets the bundle (sealing).
    pub fn clear(&self) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_ca_bundle_makes_a_verifier() {
        let td = ward_identity::TrustDomain::parse("example.org").unwrap();
        let m = ward_identity::ca::generate_root(
            &td,
            "1",
            std::time::Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let v = ClientTrust::new(
            td.clone(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
        v.set_bundle(&m.bundle_pem.concat());
        assert!(v.inner.read().unwrap().is_some());
        v.clear();
        assert!(v.inner.read().unwrap().is_none());
    }
}
