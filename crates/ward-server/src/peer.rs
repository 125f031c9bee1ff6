//! Who is on the other end of a TLS connection to the API. Agents
//! authenticate with their node SVID (mutual TLS); operators with a token and
//! no client certificate. A presented certificate is verified by the one
//! SPIFFE verifier (`ward_identity::tls`): a workload ID of the server's own
//! trust domain, chaining to that domain's current bundle. The bundle
//! follows CA rotations: it is swapped in when the authority is (re)loaded.
//! While sealed it accepts none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
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
    /// The certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// The verifier's trust generation when the connection was verified.
    pub trust_generation: u64,
}

/// A client certificate verifier over the current trust bundle.
#[derive(Debug)]
pub struct BundleClientVerifier {
    provider: Arc<CryptoProvider>,
    trust_domain: TrustDomain,
    inner: RwLock<Option<Trust>>,
    generation: AtomicU64,
}

type Trust = (Arc<BundleSet>, Arc<PeerPolicy>);

/// One snapshot of the trust, for one handshake.
#[derive(Debug)]
struct Snapshot(Option<Trust>);

impl TrustSource for Snapshot {
    fn trust(&self) -> Option<Trust> {
        self.0.clone()
    }
}

impl BundleClientVerifier {
    /// A verifier for workloads of `trust_domain` that accepts no client
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

    /// Forgets the bundle (sealing).
    pub fn clear(&self) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl ClientCertVerifier for BundleClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner()).clone();
        if inner.is_none() {
            return Err(Error::General(
                "the server is sealed and accepts no client certificate".into(),
            ));
        }
        SpiffeClientVerifier::optional(Snapshot(inner), self.provider.clone()).verify_client_cert(
            end_entity,
            intermediates,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
        let v = BundleClientVerifier::new(
            td.clone(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
        v.set_bundle(&m.bundle_pem.concat());
        assert!(v.inner.read().unwrap().is_some());
        v.clear();
        assert!(v.inner.read().unwrap().is_none());
    }
}
