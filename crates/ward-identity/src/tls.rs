//! The one SPIFFE TLS module: how every Ward role that speaks mutual TLS
//! decides whether the peer is who it may be.
//!
//! Trust bundles are kept **per trust domain** ([`BundleSet`], like
//! go-spiffe's `x509bundle.Set`): a peer certificate is read once for its
//! SPIFFE ID, the ID must be a workload ID of a trust domain the peer is
//! allowed from ([`PeerPolicy`]: our own by default, federated domains only
//! when named), and only then is its chain verified — by rustls' WebPKI
//! verifiers, which this module decorates rather than re-implements —
//! against *that* domain's anchors alone. A certificate for
//! `spiffe://other.test/…` signed by an anchor we share with other.test (a
//! corporate root, say) is therefore refused: the anchor is not other.test's
//! bundle in our set, and other.test is not a domain we accept.
//!
//! Refusals are typed ([`PeerError`]) and carried through rustls as
//! `CertificateError::Other`, so a refused handshake logs exactly why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{SpiffeId, TrustDomain};

/// Why a peer was refused. Shown in logs; never sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The certificate does not parse as X.509.
    #[error("the peer certificate does not parse")]
    Malformed,
    /// No single URI SAN holding a valid SPIFFE ID.
    #[error("the peer certificate carries no single SPIFFE ID URI SAN")]
    NoSpiffeId,
    /// The ID names a trust domain, not a workload (`spiffe://td`).
    #[error("{presented} is not a workload ID (it has no path)")]
    NotAWorkload { presented: SpiffeId },
    /// The ID's trust domain is not one this endpoint accepts.
    #[error("{presented} is not from an allowed trust domain (allowed: {allowed})")]
    ForeignTrustDomain {
        presented: SpiffeId,
        allowed: DomainList,
    },
    /// An allowed trust domain for which no bundle is known yet.
    #[error("no trust bundle for {0} is known")]
    NoBundle(TrustDomain),
    /// A valid SVID, but not one of the IDs this connection expects.
    #[error("the peer presented {presented}, expected one of {expected}")]
    UnexpectedPeer {
        expected: IdList,
        presented: SpiffeId,
    },
}

/// Trust domains, printed comma-separated (for [`PeerError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainList(pub Vec<TrustDomain>);

impl fmt::Display for DomainList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(TrustDomain::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// SPIFFE IDs, printed comma-separated (for [`PeerError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<SpiffeId>);

impl fmt::Display for IdList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&ids.join(", "))
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// What one read of a peer's leaf certificate tells: its SPIFFE ID and
/// when it expires. Read once per connection and kept with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub id: SpiffeId,
    /// The serial number, lower-case hex without leading zero bytes.
    pub serial_hex: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl PeerCert {
    /// Parses a leaf: exactly one SAN, a URI holding a valid SPIFFE ID.
    pub fn parse(der: &[u8]) -> Result<Self, PeerError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| PeerError::Malformed)?;
        let san = cert
            .subject_alternative_name()
            .map_err(|_| PeerError::Malformed)?
            .ok_or(PeerError::NoSpiffeId)?;
        let id = match san.value.general_names.as_slice() {
            [x509_parser::extensions::GeneralName::URI(uri)] => {
                SpiffeId::parse(uri).map_err(|_| PeerError::NoSpiffeId)?
            }
            _ => return Err(PeerError::NoSpiffeId),
        };
        let serial = cert.raw_serial();
        let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        let serial_hex = serial[first..].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            id,
            serial_hex,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// One trust domain's anchors, with a WebPKI client verifier built once.
#[derive(Debug)]
struct DomainBundle {
    roots: Arc<RootCertStore>,
    client: Arc<dyn ClientCertVerifier>,
}

/// Trust bundles by trust domain. Immutable: a change of trust builds a
/// new set (and bumps nothing in place), so a verifier holds one
/// consistent view for a whole handshake.
#[derive(Debug, Default)]
pub struct BundleSet {
    domains: BTreeMap<TrustDomain, DomainBundle>,
}

impl BundleSet {
    /// An empty set (trusts nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `td`'s bundle. Certificates that are not usable
    /// anchors are skipped; a bundle with none is an error.
    pub fn insert(
        &mut self,
        td: TrustDomain,
        anchors: impl IntoIterator<Item = CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(), BundleError> {
        let mut roots = RootCertStore::empty();
        for der in anchors {
            let _ = roots.add(der);
        }
        if roots.is_empty() {
            return Err(BundleError::NoAnchor(td));
        }
        let roots = Arc::new(roots);
        let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| BundleError::Verifier(td.clone(), e.to_string()))?;
        self.domains.insert(td, DomainBundle { roots, client });
        Ok(())
    }

    /// The trust domains this set has bundles for.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.keys()
    }

    /// Whether `td` has a bundle here.
    pub fn contains(&self, td: &TrustDomain) -> bool {
        self.domains.contains_key(td)
    }

    fn get(&self, td: &TrustDomain) -> Result<&DomainBundle, PeerError> {
        self.domains
            .get(td)
            .ok_or_else(|| PeerError::NoBundle(td.clone()))
    }

    /// Verifies a client certificate chain against `td`'s anchors.
    fn verify_client(
        &self,
        td: &TrustDomain,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        self.get(td)?
            .client
            .verify_client_cert(end_entity, intermediates, now)?;
        Ok(())
    }

    /// Verifies a server certificate chain against `td`'s anchors (no
    /// host name: SVIDs are matched by SPIFFE ID).
    fn verify_server(
        &self,
        td: &TrustDomain,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<(), Error> {
        let roots = &self.get(td)?.roots;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )
    }

    /// Re-checks a connection's peer under this set, as a handshake now
    /// would: used to close connections a change of trust no longer covers.
    pub fn still_chains(
        &self,
        policy: &PeerPolicy,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<PeerCert, Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
        let peer = PeerCert::parse(leaf)?;
        policy.admit(&peer.id)?;
        self.verify_client(peer.id.trust_domain(), leaf, intermediates, now)?;
        Ok(peer)
    }
}

/// Why a bundle could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the trust bundle of {0} holds no usable CA certificate")]
    NoAnchor(TrustDomain),
    #[error("cannot build a verifier for {0}: {1}")]
    Verifier(TrustDomain, String),
}

/// Which peers an endpoint accepts: workload IDs of its own trust domain
/// and of the federated domains named in its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    allowed: BTreeSet<TrustDomain>,
}

impl PeerPolicy {
    /// Accepts workloads of `own` only.
    pub fn own_domain(own: TrustDomain) -> Self {
        Self {
            allowed: [own].into(),
        }
    }

    /// Also accepts workloads of `federated` (each still needs its own bundle).
    pub fn with_federated(mut self, federated: impl IntoIterator<Item = TrustDomain>) -> Self {
        self.allowed.extend(federated);
        self
    }

    /// The domains accepted.
    pub fn allowed(&self) -> impl Iterator<Item = &TrustDomain> {
        self.allowed.iter()
    }

    /// Checks an ID against the policy (not its chain).
    pub fn admit(&self, id: &SpiffeId) -> Result<(), PeerError> {
        if !id.is_workload() {
            return Err(PeerError::NotAWorkload {
                presented: id.clone(),
            });
        }
        if !self.allowed.contains(id.trust_domain()) {
            return Err(PeerError::ForeignTrustDomain {
                presented: id.clone(),
                allowed: DomainList(self.allowed.iter().cloned().collect()),
            });
        }
        Ok(())
    }
}

/// Where a verifier finds the trust in force at each handshake (the
/// proxy's current identity, the server's current CA bundle). `None`
/// while there is none: every peer is refused.
pub trait TrustSource: Send + Sync + fmt::Debug {
    fn trust(&self) -> Option<(Arc<BundleSet>, Arc<PeerPolicy>)>;
}

/// The server side of mutual TLS: requires (or, with `optional`, accepts)
/// a client SVID admitted by the policy and chaining to its domain's bundle.
#[derive(Debug)]
pub struct SpiffeClientVerifier<T> {
    trust: T,
    provider: Arc<CryptoProvider>,
    optional: bool,
}

impl<T: TrustSource> SpiffeClientVerifier<T> {
    /// A verifier that requires a client certificate.
    pub fn required(trust: T, provider: Arc<CryptoProvider>) -> Self {
        Self {
            trust,
            provider,
            optional: false,
        }
    }

    /// A verifier that lets clients without a certificate through (the
    /// server's API, where operators use tokens); a presented certificate
    /// is verified exactly as with [`Self::required`].
    pub fn optional(trust: T, provider: Arc<CryptoProvider>) -> Self {
        Self {
            trust,
            provider,
            optional: true,
        }
    }
}

impl<T: TrustSource> ClientCertVerifier for SpiffeClientVerifier<T> {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.optional
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
        let (bundles, policy) = self
            .trust
            .trust()
            .ok_or_else(|| Error::General("no trust bundle is in force".into()))?;
        let peer = PeerCert::parse(end_entity)?;
        policy.admit(&peer.id)?;
        bundles.verify_client(peer.id.trust_domain(), end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// The client side of mutual TLS: the server must present an SVID admitted
/// by the policy, chaining to its domain's bundle, naming one of `expected`.
/// Host names are never consulted.
#[derive(Debug)]
pub struct SpiffeServerVerifier<T> {
    trust: T,
    expected: Vec<SpiffeId>,
    provider: Arc<CryptoProvider>,
}

impl<T: TrustSource> SpiffeServerVerifier<T> {
    pub fn new(trust: T, expected: Vec<SpiffeId>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            trust,
            expected,
            provider,
        }
    }
}

impl<T: TrustSource> ServerCertVerifier for SpiffeServerVerifier<T> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let (bundles, policy) = self
            .trust
            .trust()
            .ok_or_else(|| Error::General("no trust bundle is in force".into()))?;
        let peer = PeerCert::parse(end_entity)?;
        policy.admit(&peer.id)?;
        bundles.verify_server(
            peer.id.trust_domain(),
            end_entity,
            intermediates,
            now,
            &self.provider,
        )?;
        if !self.expected.contains(&peer.id) {
            return Err(PeerError::UnexpectedPeer {
                expected: IdList(self.expected.clone()),
                presented: peer.id,
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

    fn td(s: &str) -> TrustDomain {
        TrustDomain::parse(s).unwrap()
    }

    #[test]
    fn the_policy_admits_only_workloads_of_allowed_domains() {
        let p = PeerPolicy::own_domain(td("a.test")).with_federated([td("b.test")]);
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        assert!(p.admit(&id("spiffe://a.test/ns/x/sa/y")).is_ok());
        assert!(p.admit(&id("spiffe://b.test/w")).is_ok());
        assert!(matches!(
            p.admit(&id("spiffe://c.test/w")),
            Err(PeerError::ForeignTrustDomain { .. })
        ));
        assert!(matches!(
            p.admit(&id("spiffe://a.test")),
            Err(PeerError::NotAWorkload { .. })
        ));
        let msg = p.admit(&id("spiffe://c.test/w")).unwrap_err().to_string();
        assert!(
            msg.contains("c.test") && msg.contains("a.test, b.test"),
            "{msg}"
        );
    }

    #[test]
    fn a_set_refuses_a_domain_it_has_no_bundle_for() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let m = crate::ca::generate_root(
            &td("a.test"),
            "1",
            std::time::Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let anchors: Vec<CertificateDer<'static>> = m
            .bundle_pem
            .iter()
            .flat_map(|p| {
                use rustls_pki_types::pem::PemObject;
                CertificateDer::pem_slice_iter(p.as_bytes()).flatten()
            })
            .collect();
        let mut set = BundleSet::new();
        set.insert(td("a.test"), anchors, &provider).unwrap();
        assert!(set.contains(&td("a.test")));
        assert!(matches!(
            set.get(&td("b.test")),
            Err(PeerError::NoBundle(_))
        ));
        assert!(matches!(
            BundleSet::new().insert(td("a.test"), [], &provider),
            Err(BundleError::NoAnchor(_))
        ));
    }
}
